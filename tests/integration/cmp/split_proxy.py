# SPDX-License-Identifier: Apache-2.0
"""An HTTP proxy in front of two CMP servers (tests/integration/cmp/test_cmp_mock.sh): the
first N requests go to FIRST_PORT, every later one to THEN_PORT, so that a client's
exchange is answered by one server up to a point and by the other after it (one of them
signing with a certificate that is not a CMP signer's). Each request adds the port it went
to as a line to LOG_FILE.

Usage: split_proxy.py PORT_FILE FIRST_PORT N THEN_PORT LOG_FILE
  PORT_FILE  where the port it listens on (127.0.0.1, chosen by the kernel) is written
"""
import sys

import proxy_lib

port_file, first, n, then, log_file = sys.argv[1:6]


class Proxy(proxy_lib.Handler):
    def answer(self, count, body):
        upstream = first if count <= int(n) else then
        with open(log_file, "a") as f:
            f.write("%s\n" % upstream)
        status, answer = proxy_lib.forward(self, upstream, body)
        proxy_lib.reply(self, status, answer)


proxy_lib.serve(Proxy, port_file)
