# SPDX-License-Identifier: Apache-2.0
"""An HTTP proxy for one CMP client that holds its messages until another client has gone
ahead (tests/integration/cmp/test_cmp_concurrent.sh): two `openssl cmp` clients, each
through its own proxy, then reach `ca serve` interleaved: A's ir, B's ir, A's certConf,
B's certConf, so that both transactions are open at once.

Usage: interleave_proxy.py PORT_FILE UPSTREAM_PORT NAME WAIT_FOR_2 DONE_DIR
  PORT_FILE    where the port it listens on (127.0.0.1, chosen by the kernel) is written
  NAME         this client's name: after forwarding its Nth request and the answer, it
               creates DONE_DIR/NAME-N
  WAIT_FOR_2   the file (in DONE_DIR) that must exist before its 2nd request goes on, or -
"""
import os
import sys
import time

import proxy_lib

port_file, upstream, name, wait_for_2, done_dir = sys.argv[1:6]


class Proxy(proxy_lib.Handler):
    def answer(self, count, body):
        if count == 2 and wait_for_2 != "-":
            path = os.path.join(done_dir, wait_for_2)
            for _ in range(600):
                if os.path.exists(path):
                    break
                time.sleep(0.05)
            else:
                self.send_error(504, "the other client never went ahead")
                return
        status, answer = proxy_lib.forward(self, upstream, body)
        proxy_lib.reply(self, status, answer)
        open(os.path.join(done_dir, "%s-%d" % (name, count)), "w").close()


proxy_lib.serve(Proxy, port_file)
