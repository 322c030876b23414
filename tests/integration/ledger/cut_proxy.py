#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""A TCP proxy for the ledger tests that can cut every connection at once.

cut_proxy.py PORT_FILE TARGET_PORT: listens on 127.0.0.1 on a free port (written to
PORT_FILE once it listens), forwards each connection to 127.0.0.1:TARGET_PORT, and on
SIGUSR1 closes every connection it carries (both ends) while it keeps listening, so that a
client's next connection goes through again. Stopped by its PID (SIGTERM).
"""
import os
import signal
import socket
import sys
import threading

conns = []
lock = threading.Lock()


def pump(src, dst):
    """src to dst until either end closes or is cut, then both ends down."""
    try:
        for data in iter(lambda: src.recv(65536), b""):
            dst.sendall(data)
    except OSError:
        pass
    shut(src, dst)


def shut(*socks):
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def cut(_signum, _frame):
    with lock:
        shut(*conns)
        conns.clear()


def main():
    port_file, target = sys.argv[1], int(sys.argv[2])
    signal.signal(signal.SIGUSR1, cut)
    lsn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsn.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsn.bind(("127.0.0.1", 0))
    lsn.listen(64)
    tmp = port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % lsn.getsockname()[1])
    os.rename(tmp, port_file)
    while True:
        client, _ = lsn.accept()
        upstream = socket.create_connection(("127.0.0.1", target))
        with lock:
            conns.extend((client, upstream))
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=pump, args=(a, b), daemon=True).start()


if __name__ == "__main__":
    main()
