# SPDX-License-Identifier: Apache-2.0
"""An HTTP proxy in front of `ca serve` that spoils the protection of the answers it passes
on (tests/integration/cmp/test_cmp_unavail.sh): of every pkiConf, or of every answer that
holds TEXT (a refusal's words). The last byte of the message's protection (PKIMessage's [0]
BIT STRING, the signature's end) is flipped, so the message still parses but its protection
does not verify. Each spoiled answer adds a line to MARK_FILE.

Usage: tamper_proxy.py PORT_FILE UPSTREAM_PORT MARK_FILE [TEXT]
  PORT_FILE  where the port it listens on (127.0.0.1, chosen by the kernel) is written
"""
import sys

import proxy_lib

port_file, upstream, mark_file = sys.argv[1:4]
# PKIBody pkiconf [19] EXPLICIT NULL (RFC 4210 section 5.1.2), as DER
PKICONF = b"\xb3\x02\x05\x00"
MARK = sys.argv[4].encode() if len(sys.argv) > 4 else PKICONF
WHAT = "answer holding %r" % sys.argv[4] if len(sys.argv) > 4 else "pkiConf"


def tlv(der, at):
    """(tag, start of value, end of value) of the DER element at offset at."""
    tag, n = der[at], der[at + 1]
    at += 2
    if n & 0x80:
        k = n & 0x7F
        n = int.from_bytes(der[at:at + k], "big")
        at += k
    return tag, at, at + n


def spoil_protection(der):
    """der with the last byte of its protection flipped, or None when it has none."""
    _, at, end = tlv(der, 0)  # PKIMessage SEQUENCE
    while at < end:
        tag, start, stop = tlv(der, at)
        if tag == 0xA0:  # protection [0]
            return der[:stop - 1] + bytes([der[stop - 1] ^ 0x01]) + der[stop:]
        at = stop
    return None


class Proxy(proxy_lib.Handler):
    def answer(self, count, body):
        status, answer = proxy_lib.forward(self, upstream, body)
        spoiled = spoil_protection(answer) if MARK in answer else None
        if spoiled is not None:
            answer = spoiled
            with open(mark_file, "a") as f:
                f.write("%s spoiled\n" % WHAT)
        proxy_lib.reply(self, status, answer)


proxy_lib.serve(Proxy, port_file)
