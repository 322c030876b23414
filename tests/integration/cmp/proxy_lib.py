# SPDX-License-Identifier: Apache-2.0
"""What the CMP test proxies (interleave_proxy.py, tamper_proxy.py, split_proxy.py) share:
a handler that numbers the requests, passing a request on to a CMP server on 127.0.0.1,
answering the client, and listening on a port the kernel chooses, written to a file once it
listens."""
import http.server
import os
import urllib.request


class Handler(http.server.BaseHTTPRequestHandler):
    """A proxy's handler: each POST's body and its number (from 1, one server, one request at
    a time) go to self.answer(count, body), which answers the client."""
    protocol_version = "HTTP/1.0"
    count = 0

    def do_POST(self):
        Handler.count += 1
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.answer(Handler.count, body)

    def log_message(self, fmt, *args):
        pass


def forward(handler, upstream, body):
    """(status, answer) of `ca serve` on port upstream for the handler's request and body."""
    req = urllib.request.Request(
        "http://127.0.0.1:%s%s" % (upstream, handler.path), data=body,
        headers={"Content-Type": handler.headers["Content-Type"]})
    with urllib.request.urlopen(req, timeout=60) as rsp:
        return rsp.status, rsp.read()


def reply(handler, status, answer):
    handler.send_response(status)
    handler.send_header("Content-Type", "application/pkixcmp")
    handler.send_header("Content-Length", str(len(answer)))
    handler.end_headers()
    handler.wfile.write(answer)


def serve(handler_class, port_file):
    """Listens on 127.0.0.1 (a port the kernel chooses, written to port_file) for ever."""
    server = http.server.HTTPServer(("127.0.0.1", 0), handler_class)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.rename(port_file + ".tmp", port_file)
    server.serve_forever()
