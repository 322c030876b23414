/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_CHAIN_H
#define PROV_CHAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include <openssl/x509.h>

/*
 * The chain rules of doc/chains.md, checked one by one so that every failure names the
 * certificate (index in the file, 0 first, and subject) and the rule. Rule names are stable
 * (they appear in --json output and tests):
 *   "parse"          a PEM block is not a certificate
 *   "empty"          no certificate at all
 *   "order"          the next certificate is not this one's issuer (but another one is)
 *   "issuer-name"    issuer DN differs from the next certificate's subject DN
 *   "signature"      the signature does not verify with the next certificate's key
 *   "root"           the chain does not end in a self-signed root or a --trust certificate
 *   "basic-constraints"  a CA certificate lacks a critical basicConstraints CA:TRUE
 *   "key-usage"      a CA certificate lacks keyUsage keyCertSign
 *   "path-length"    a pathLenConstraint is exceeded
 *   "validity"       not yet valid or expired at the check time
 *   "validity-nesting" notAfter later than the issuer's notAfter
 *   "purpose"        the leaf does not allow the purpose (clientAuth / serverAuth)
 *   "x509-strict"    anything else `openssl verify -x509_strict` rejects (its text kept)
 */
struct prov_chain_finding {
    int index;          /* certificate index, -1 for the file as a whole */
    char *subject;      /* one-line RFC 2253 subject, or NULL */
    const char *rule;   /* one of the names above */
    char *detail;       /* human text */
};

struct prov_chain_report {
    struct prov_chain_finding *items;
    size_t n;
};

enum prov_chain_purpose {
    PROV_PURPOSE_ANY,
    PROV_PURPOSE_CLIENT, /* leaf must allow clientAuth (device certificates) */
    PROV_PURPOSE_SERVER,
};

/* Reads every certificate of a PEM file in order. PROV_ERR_IO / PROV_ERR_INPUT ("parse"). */
int prov_chain_load_pem(const char *path, STACK_OF(X509) **out);
int prov_chain_load_pem_buf(const unsigned char *buf, size_t len, STACK_OF(X509) **out);

/*
 * Reads a chain file as `chain verify` takes it: PEM (text around the blocks is fine) or DER
 * (one certificate, or several back to back). A file that yields no certificate is reported
 * as one finding on the file as a whole (index -1) that says what the file holds, without
 * repeating its path: rule "empty" for an empty or blank file, "parse" for anything else (an
 * unreadable file, a PEM block that is not a certificate, DER that is not one, other data).
 * Returns 0, PROV_ERR_VERIFY with that finding in rep, or PROV_ERR_NOMEM.
 */
int prov_chain_load_file(const char *path, STACK_OF(X509) **out, struct prov_chain_report *rep);
int prov_chain_load_any_buf(const unsigned char *buf, size_t len, STACK_OF(X509) **out,
                            struct prov_chain_report *rep);

/*
 * Checks chain (leaf first) by every rule, collecting all findings into rep. trust (may be
 * NULL) are extra anchors. now is the check time. Returns 0 when there are no findings,
 * PROV_ERR_VERIFY when there are, another error on failure to check.
 */
int prov_chain_verify(STACK_OF(X509) *chain, STACK_OF(X509) *trust,
                      enum prov_chain_purpose purpose, time_t now, struct prov_chain_report *rep);

void prov_chain_report_free(struct prov_chain_report *rep);

/*
 * cert was signed a moment ago by this process with the key of issuer's certificate (the CA
 * issuing it): prov_chain_verify takes that signature as verified instead of verifying it
 * again. Remembered by the digest of cert's DER and issuer's public key, in a few slots.
 */
void prov_chain_note_issued(X509 *cert, X509 *issuer);

/*
 * Adds a finding of another check on the same certificates (`ca show` adds its own lint):
 * certificate index in chain (its subject is taken from there), a rule name, the detail.
 */
int prov_chain_report_add(struct prov_chain_report *rep, STACK_OF(X509) *chain, int index,
                          const char *rule, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/*
 * The purpose to check a chain for when the caller names none (`chain verify` without
 * --purpose): a chain whose first certificate is a CA (basicConstraints CA:TRUE, such as a CA
 * directory's chain.pem) is checked as CA certificates, by the CA rules and no TLS purpose
 * (PROV_PURPOSE_ANY); any other chain as a device's (PROV_PURPOSE_CLIENT).
 */
enum prov_chain_purpose prov_chain_purpose_of(STACK_OF(X509) *chain);

/*
 * A CA directory's chain.pem as `chain export` and `lot export --format edge` hand it out:
 * loaded and checked by every rule as CA certificates at the current time. A chain with a
 * finding is refused with PROV_ERR_VERIFY naming path, the first certificate at fault and its
 * rule ("...; not exported"). Errors of prov_chain_load_pem otherwise.
 */
int prov_chain_load_verified(const char *path, STACK_OF(X509) **out);

/* Writes certificates as concatenated PEM to a memory buffer (caller frees). */
int prov_chain_to_pem(STACK_OF(X509) *certs, char **out, size_t *out_len);

#endif
