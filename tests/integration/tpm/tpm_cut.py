#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""A TPM that stops mid-operation, for tests: a TCP proxy in front of swtpm.

    tpm_cut.py LISTEN_PORT SWTPM_PORT CUT_AT COUNT_FILE

Listens on 127.0.0.1:LISTEN_PORT (TPM commands) and LISTEN_PORT+1 (swtpm control) and
forwards to SWTPM_PORT / SWTPM_PORT+1. Every TPM command (a request: 10-byte header with
its size) is counted; the CUT_AT-th and every later one is not forwarded: the connection
is closed instead, as when the TPM loses power or its daemon dies. COUNT_FILE gets the
number of commands seen, rewritten after each one (CUT_AT 0: never cut, to record).
"""
import socket
import struct
import sys
import threading

listen_port, target_port, cut_at = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
count_file = sys.argv[4]
lock = threading.Lock()
seen = 0


def read_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def pipe(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def commands(client):
    """TPM command channel: request by request, counting, cutting at CUT_AT."""
    global seen
    upstream = socket.create_connection(("127.0.0.1", target_port))
    try:
        while True:
            head = read_exact(client, 10)
            if head is None:
                return
            size = struct.unpack(">I", head[2:6])[0]
            body = read_exact(client, size - 10) if size > 10 else b""
            if body is None:
                return
            with lock:
                seen += 1
                n = seen
                with open(count_file, "w") as f:
                    f.write("%d\n" % n)
            if cut_at and n >= cut_at:
                return
            upstream.sendall(head + body)
            rhead = read_exact(upstream, 10)
            if rhead is None:
                return
            rsize = struct.unpack(">I", rhead[2:6])[0]
            rbody = read_exact(upstream, rsize - 10) if rsize > 10 else b""
            client.sendall(rhead + (rbody or b""))
    except OSError:
        pass
    finally:
        client.close()
        upstream.close()


def control(client):
    upstream = socket.create_connection(("127.0.0.1", target_port + 1))
    threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()
    pipe(client, upstream)


def serve(port, handler):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(16)
    while True:
        client, _ = srv.accept()
        threading.Thread(target=handler, args=(client,), daemon=True).start()


threading.Thread(target=serve, args=(listen_port + 1, control), daemon=True).start()
serve(listen_port, commands)
