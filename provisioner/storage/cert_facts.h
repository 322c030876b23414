/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_CERT_FACTS_H
#define PROV_CERT_FACTS_H

#include <openssl/x509.h>

/* Certificate facts used in identity.json, results and --json output. */
struct prov_cert_facts {
    char serial_hex[2 * 32 + 1]; /* lower-case hex, no colons */
    char sha256_hex[65];         /* SHA-256 of the DER, lower-case hex */
    char not_before[32];         /* RFC 3339 UTC, "2026-11-26T19:40:00Z" */
    char not_after[32];
    char issuer[512];            /* RFC 2253 one-line */
    char subject[512];
};
/*
 * Fills f from cert. PROV_ERR_INPUT (no certificate, a serial number that is missing,
 * negative or longer than 32 bytes), PROV_ERR_CRYPTO, or a date's or name's error; f is then
 * all empty strings. The result must be used: a caller that ignores it prints empty facts.
 */
int prov_cert_facts(X509 *cert, struct prov_cert_facts *f) __attribute__((warn_unused_result));

#endif
