/* SPDX-License-Identifier: Apache-2.0 */
#include "chain.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "cert_der.h"
#include "error.h"
#include "memo.h"

/* A chain file is a handful of certificates; anything this large is not one. */
#define CHAIN_MAX_BYTES (4 * 1024 * 1024)

static int load_pem(const unsigned char *buf, size_t len, const char *what,
                    STACK_OF(X509) **out)
{
    STACK_OF(X509) *certs = sk_X509_new_null();
    BIO *bio = BIO_new_mem_buf(buf, (int)len);
    char *name = NULL;
    char *header = NULL;
    unsigned char *data = NULL;
    long data_len = 0;
    int r = PROV_ERR_NOMEM;

    *out = NULL;
    if (certs == NULL || bio == NULL || len > CHAIN_MAX_BYTES) {
        r = len > CHAIN_MAX_BYTES ? prov_fail(PROV_ERR_INPUT, "%s: too large for a chain", what)
                                  : prov_fail(PROV_ERR_NOMEM, "%s: out of memory", what);
        goto out;
    }
    for (int index = 0;; index++) {
        const unsigned char *p;
        X509 *cert;

        if (PEM_read_bio(bio, &name, &header, &data, &data_len) != 1) {
            unsigned long e = ERR_peek_last_error();

            /* Running out of PEM blocks is the normal end of the file. */
            if (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE) {
                ERR_clear_error();
                break;
            }
            r = prov_fail_ossl(PROV_ERR_INPUT, "%s: PEM block %d is malformed", what, index);
            goto out;
        }
        if (strcmp(name, PEM_STRING_X509) != 0 && strcmp(name, PEM_STRING_X509_OLD) != 0) {
            r = prov_fail(PROV_ERR_INPUT, "%s: PEM block %d is \"%s\", not a certificate", what,
                          index, name);
            goto out;
        }
        p = data;
        cert = d2i_X509(NULL, &p, data_len);
        if (cert == NULL || p != data + data_len || sk_X509_push(certs, cert) <= 0) {
            X509_free(cert);
            r = prov_fail_ossl(PROV_ERR_INPUT, "%s: PEM block %d is not a valid certificate",
                               what, index);
            goto out;
        }
        OPENSSL_free(name);
        OPENSSL_free(header);
        OPENSSL_free(data);
        name = header = NULL;
        data = NULL;
    }
    *out = certs;
    certs = NULL;
    r = 0;
out:
    OPENSSL_free(name);
    OPENSSL_free(header);
    OPENSSL_free(data);
    BIO_free(bio);
    sk_X509_pop_free(certs, X509_free);
    return r;
}

int prov_chain_load_pem_buf(const unsigned char *buf, size_t len, STACK_OF(X509) **out)
{
    return load_pem(buf, len, "chain", out);
}

/* The whole file, at most CHAIN_MAX_BYTES + 1 bytes (load_pem refuses more). */
static int read_chain_file(const char *path, unsigned char **out, size_t *out_len)
{
    FILE *f = NULL;
    unsigned char *buf = NULL;
    int r = PROV_ERR_IO;

    *out = NULL;
    *out_len = 0;
    f = fopen(path, "rb");
    if (f == NULL) {
        return prov_fail(PROV_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    }
    buf = malloc(CHAIN_MAX_BYTES + 1);
    if (buf == NULL) {
        r = prov_fail(PROV_ERR_NOMEM, "%s: out of memory", path);
        goto out;
    }
    *out_len = fread(buf, 1, CHAIN_MAX_BYTES + 1, f);
    if (ferror(f)) {
        r = prov_fail(PROV_ERR_IO, "%s: cannot read: %s", path, strerror(errno));
        goto out;
    }
    *out = buf;
    buf = NULL;
    r = 0;
out:
    free(buf);
    fclose(f);
    return r;
}

int prov_chain_load_pem(const char *path, STACK_OF(X509) **out)
{
    unsigned char *buf = NULL;
    size_t len = 0;
    int r;

    *out = NULL;
    r = read_chain_file(path, &buf, &len);
    if (r == 0) {
        r = load_pem(buf, len, path, out);
    }
    free(buf);
    return r;
}

/* ---- findings ---------------------------------------------------------------------------- */

static char *one_line_subject(X509 *cert)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *data = NULL;
    char *s = NULL;
    long len;

    /* RFC 2253 order and escaping, but UTF-8 kept readable rather than \XX escaped. */
    if (bio != NULL &&
        X509_NAME_print_ex(bio, X509_get_subject_name(cert), 0,
                           XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) >= 0) {
        len = BIO_get_mem_data(bio, &data);
        s = len >= 0 ? strndup(data, (size_t)len) : NULL;
    }
    BIO_free(bio);
    return s;
}

static int add_finding_v(struct prov_chain_report *rep, STACK_OF(X509) *chain, int index,
                         const char *rule, const char *fmt, va_list ap)
    __attribute__((format(printf, 5, 0)));

static int add_finding_v(struct prov_chain_report *rep, STACK_OF(X509) *chain, int index,
                         const char *rule, const char *fmt, va_list ap)
{
    struct prov_chain_finding *items;
    struct prov_chain_finding f = {.index = index, .rule = rule};
    int n;

    n = vasprintf(&f.detail, fmt, ap);
    if (n < 0) {
        return prov_fail(PROV_ERR_NOMEM, "chain check: out of memory");
    }
    if (index >= 0 && index < sk_X509_num(chain)) {
        f.subject = one_line_subject(sk_X509_value(chain, index));
    }
    items = realloc(rep->items, (rep->n + 1) * sizeof(*items));
    if (items == NULL) {
        free(f.detail);
        free(f.subject);
        return prov_fail(PROV_ERR_NOMEM, "chain check: out of memory");
    }
    rep->items = items;
    rep->items[rep->n++] = f;
    return 0;
}

int prov_chain_report_add(struct prov_chain_report *rep, STACK_OF(X509) *chain, int index,
                          const char *rule, const char *fmt, ...)
{
    va_list ap;
    int r;

    va_start(ap, fmt);
    r = add_finding_v(rep, chain, index, rule, fmt, ap);
    va_end(ap);
    return r;
}

/* Is there a finding of rule (since from) on certificate index; index ANY_INDEX: on any. */
#define ANY_INDEX (-2)

static bool has_finding(const struct prov_chain_report *rep, size_t from, int index,
                        const char *rule)
{
    for (size_t i = from; i < rep->n; i++) {
        if ((index == ANY_INDEX || rep->items[i].index == index) &&
            strcmp(rep->items[i].rule, rule) == 0) {
            return true;
        }
    }
    return false;
}

void prov_chain_report_free(struct prov_chain_report *rep)
{
    if (rep == NULL) {
        return;
    }
    for (size_t i = 0; i < rep->n; i++) {
        free(rep->items[i].subject);
        free(rep->items[i].detail);
    }
    free(rep->items);
    rep->items = NULL;
    rep->n = 0;
}

/* ---- chain files in any form (chain verify) ------------------------------------------------ */

static bool is_blank(const unsigned char *buf, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (!isspace(buf[i])) {
            return false;
        }
    }
    return true;
}

/* DER certificates back to back; the reason in why (no path) when it is not that. */
static int load_der(const unsigned char *buf, size_t len, STACK_OF(X509) **out, char *why,
                    size_t why_len)
{
    STACK_OF(X509) *certs = sk_X509_new_null();
    const unsigned char *p = buf;
    int r = PROV_ERR_INPUT;

    *out = NULL;
    if (certs == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "chain: out of memory");
    }
    while (p < buf + len) {
        const unsigned char *start = p;
        X509 *cert = d2i_X509(NULL, &p, (long)(buf + len - start));

        if (cert == NULL) {
            size_t rest = (size_t)(buf + len - start);

            if (start == buf) {
                snprintf(why, why_len, "DER data (%zu bytes), but not a certificate", len);
            } else {
                snprintf(why, why_len, "DER certificate %d is followed by %zu bytes that are "
                         "not a certificate", sk_X509_num(certs) - 1, rest);
            }
            ERR_clear_error();
            goto out;
        }
        if (sk_X509_push(certs, cert) <= 0) {
            X509_free(cert);
            r = prov_fail(PROV_ERR_NOMEM, "chain: out of memory");
            goto out;
        }
    }
    *out = certs;
    certs = NULL;
    r = 0;
out:
    sk_X509_pop_free(certs, X509_free);
    return r;
}

/* What a file that is neither PEM nor DER holds, for the finding: its start, made printable. */
static void describe_other(const unsigned char *buf, size_t len, char *why, size_t why_len)
{
    char text[40];
    size_t n = 0;
    size_t printable = 0;

    for (size_t i = 0; i < len && i < 256; i++) {
        printable += buf[i] == '\t' || buf[i] == '\n' || buf[i] == '\r' ||
                     (buf[i] >= 0x20 && buf[i] < 0x7f);
    }
    if (printable < (len < 256 ? len : 256)) {
        snprintf(why, why_len, "neither PEM nor DER: %zu bytes of binary data starting %02x %02x",
                 len, buf[0], len > 1 ? buf[1] : 0);
        return;
    }
    while (n < len && n + 1 < sizeof(text) && buf[n] != '\n' && buf[n] != '\r') {
        text[n] = buf[n] == '\t' ? ' ' : (char)buf[n];
        n++;
    }
    text[n] = '\0';
    snprintf(why, why_len, "neither PEM nor DER: text starting \"%s%s\"", text,
             n < len && buf[n] != '\n' && buf[n] != '\r' ? "..." : "");
}

/*
 * The recorded reason without its leading "PATH: ": a finding on a file is printed after the
 * file's name already.
 */
static const char *reason_without(const char *path, const char *fallback)
{
    const char *msg = prov_error_message();
    size_t skip = strlen(path);

    if (msg == NULL) {
        return fallback;
    }
    if (strncmp(msg, path, skip) == 0 && strncmp(msg + skip, ": ", 2) == 0) {
        msg += skip + 2;
    }
    return msg;
}

static int load_any(const unsigned char *buf, size_t len, const char *path, STACK_OF(X509) **out,
                    struct prov_chain_report *rep)
{
    static const char begin[] = "-----BEGIN ";
    char why[160];
    int r;

    *out = NULL;
    if (len == 0) {
        r = prov_chain_report_add(rep, NULL, -1, "empty", "the file is empty (0 bytes)");
        return r < 0 ? r : PROV_ERR_VERIFY;
    }
    if (is_blank(buf, len)) {
        r = prov_chain_report_add(rep, NULL, -1, "empty",
                                  "the file holds only whitespace (%zu bytes), no certificate",
                                  len);
        return r < 0 ? r : PROV_ERR_VERIFY;
    }
    if (memmem(buf, len, begin, sizeof(begin) - 1) != NULL) {
        r = load_pem(buf, len, path, out);
        if (r != PROV_ERR_INPUT) {
            return r;
        }
        r = prov_chain_report_add(rep, NULL, -1, "parse", "%s",
                                  reason_without(path, "not a PEM chain"));
        return r < 0 ? r : PROV_ERR_VERIFY;
    }
    if (len > CHAIN_MAX_BYTES) {
        snprintf(why, sizeof(why), "too large for a chain (more than %d bytes)", CHAIN_MAX_BYTES);
        r = PROV_ERR_INPUT;
    } else if (buf[0] == 0x30) {
        r = load_der(buf, len, out, why, sizeof(why));
    } else {
        describe_other(buf, len, why, sizeof(why));
        r = PROV_ERR_INPUT;
    }
    if (r == PROV_ERR_INPUT) {
        r = prov_chain_report_add(rep, NULL, -1, "parse", "%s", why);
        return r < 0 ? r : PROV_ERR_VERIFY;
    }
    return r;
}

int prov_chain_load_any_buf(const unsigned char *buf, size_t len, STACK_OF(X509) **out,
                            struct prov_chain_report *rep)
{
    return load_any(buf, len, "chain", out, rep);
}

int prov_chain_load_file(const char *path, STACK_OF(X509) **out, struct prov_chain_report *rep)
{
    unsigned char *buf = NULL;
    size_t len = 0;
    int r;

    *out = NULL;
    r = read_chain_file(path, &buf, &len);
    if (r == PROV_ERR_IO) {
        r = prov_chain_report_add(rep, NULL, -1, "parse", "%s",
                                  reason_without(path, "cannot read"));
        return r < 0 ? r : PROV_ERR_VERIFY;
    }
    if (r == 0) {
        r = load_any(buf, len, path, out, rep);
    }
    free(buf);
    return r;
}

/* ---- the rules --------------------------------------------------------------------------- */

struct checker {
    STACK_OF(X509) *chain;
    STACK_OF(X509) *trust;
    enum prov_chain_purpose purpose;
    time_t now;
    struct prov_chain_report *rep;
    size_t first; /* this call's findings start here in rep */
    /* signatures verified in this call, by object: OpenSSL's cross-check asks again */
    struct {
        X509 *cert;
        X509 *issuer;
    } verified[16];
    size_t n_verified;
};

static const char *time_text(const ASN1_TIME *t, char *buf, size_t len)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *data = NULL;
    long n;

    snprintf(buf, len, "?");
    if (bio != NULL && ASN1_TIME_print_ex(bio, t, ASN1_DTFLGS_ISO8601) == 1) {
        n = BIO_get_mem_data(bio, &data);
        snprintf(buf, len, "%.*s", (int)n, data);
    }
    BIO_free(bio);
    return buf;
}

static bool names_issuer(X509 *cert, X509 *issuer)
{
    return X509_NAME_cmp(X509_get_issuer_name(cert), X509_get_subject_name(issuer)) == 0;
}

/*
 * CA certificate signatures this process has verified, by the digest of (SHA-256 of the
 * certificate's DER, SHA-256 of the issuer's public key). A batch checks every device's
 * written chain, which is the same intermediate and root each time, and a P-384 verification
 * costs about as many instructions as a device's key generation in SoftHSM2 (callgrind).
 * Leaves are new every time and are not kept.
 */
static struct prov_memo sig_memo = PROV_MEMO_INIT;

/*
 * Certificates this process's CA has just signed (prov_chain_note_issued), by the same digest:
 * the CA's signature on a device certificate is made by the CA key whose public half is the
 * CA certificate's (checked when the CA opens), and verifying it again in the chain check of
 * the identity written from it cost an ECDSA verification per device, a third of the tool's
 * own instructions (bench/README.md, "Profile"). Leaves verified here are not added.
 */
static struct prov_memo issued_memo = PROV_MEMO_INIT;

/*
 * The certificate's SHA-256 is the one kept with the object (cert_der.h): the chain check
 * asks for the same CA certificates' on every device, and for the certificate just signed,
 * whose DER OpenSSL would encode afresh each time.
 */
static bool sig_digest(X509 *cert, X509 *issuer, unsigned char d[32])
{
    unsigned char c[32];
    unsigned char k[32];
    unsigned int m = 0;

    if (prov_cert_sha256(cert, c) < 0) {
        prov_error_clear();
        return false;
    }
    return X509_pubkey_digest(issuer, EVP_sha256(), k, &m) == 1 && m == 32 &&
           prov_memo_digest(d, c, 32, k, 32);
}

void prov_chain_note_issued(X509 *cert, X509 *issuer)
{
    unsigned char d[32];

    if (cert != NULL && issuer != NULL && sig_digest(cert, issuer, d)) {
        prov_memo_add(&issued_memo, d);
    }
    ERR_clear_error();
}

static bool signed_by(X509 *cert, X509 *issuer)
{
    EVP_PKEY *key = X509_get0_pubkey(issuer);
    struct prov_memo *memo = X509_check_ca(cert) > 0 ? &sig_memo : &issued_memo;
    unsigned char d[32];
    bool is_memo = sig_digest(cert, issuer, d);
    bool ok;

    if (is_memo && prov_memo_has(memo, d)) {
        ERR_clear_error();
        return true;
    }
    ok = key != NULL && X509_verify(cert, key) == 1;
    ERR_clear_error();
    if (ok && is_memo && memo == &sig_memo) {
        prov_memo_add(&sig_memo, d);
    }
    return ok;
}

/* signed_by, remembered for this call by object (leaves too: the memo above keeps CAs only). */
static bool link_verifies(struct checker *c, X509 *cert, X509 *issuer)
{
    size_t cap = sizeof(c->verified) / sizeof(c->verified[0]);

    for (size_t k = 0; k < c->n_verified; k++) {
        if (c->verified[k].cert == cert && c->verified[k].issuer == issuer) {
            return true;
        }
    }
    if (!signed_by(cert, issuer)) {
        return false;
    }
    if (c->n_verified < cap) {
        c->verified[c->n_verified].cert = cert;
        c->verified[c->n_verified].issuer = issuer;
        c->n_verified++;
    }
    return true;
}

static bool is_self_signed(X509 *cert)
{
    return names_issuer(cert, cert) && signed_by(cert, cert);
}

/* A certificate presented as a CA: any but the leaf, or a leaf that claims CA:TRUE. */
static bool is_ca_position(X509 *cert, int index)
{
    return index > 0 || (X509_get_extension_flags(cert) & EXFLAG_CA) != 0;
}

/* The index of another certificate in the file that names cert's issuer, or -1. */
static int find_issuer_elsewhere(struct checker *c, int index)
{
    X509 *cert = sk_X509_value(c->chain, index);
    int by_name = -1;

    for (int j = 0; j < sk_X509_num(c->chain); j++) {
        X509 *cand = sk_X509_value(c->chain, j);

        if (j == index || j == index + 1 || !names_issuer(cert, cand)) {
            continue;
        }
        if (link_verifies(c, cert, cand)) {
            return j;
        }
        by_name = by_name < 0 ? j : by_name;
    }
    return by_name;
}

/* A --trust certificate that is cert itself or its issuer. */
static X509 *trusted_issuer(struct checker *c, X509 *cert)
{
    for (int j = 0; j < sk_X509_num(c->trust); j++) {
        X509 *t = sk_X509_value(c->trust, j);

        if (X509_cmp(t, cert) == 0 || (names_issuer(cert, t) && link_verifies(c, cert, t))) {
            return t;
        }
    }
    return NULL;
}

/*
 * Rules 1-4 for one certificate. Returns (in *issuer) the certificate that actually issued it,
 * for the nesting check, or NULL when there is none.
 */
static int check_link(struct checker *c, int i, X509 **issuer)
{
    int n = sk_X509_num(c->chain);
    X509 *cert = sk_X509_value(c->chain, i);
    X509 *next = i + 1 < n ? sk_X509_value(c->chain, i + 1) : NULL;
    bool self = names_issuer(cert, cert);
    int other;

    *issuer = NULL;
    if (next != NULL && names_issuer(cert, next)) {
        *issuer = next;
        if (!link_verifies(c, cert, next)) {
            return prov_chain_report_add(c->rep, c->chain, i, "signature",
                                         "signature does not verify with the key of certificate %d",
                                         i + 1);
        }
        return 0;
    }
    if (self) {
        if (!link_verifies(c, cert, cert)) {
            return prov_chain_report_add(c->rep, c->chain, i, "signature",
                                         "self-signed certificate whose signature does not verify");
        }
        if (next != NULL) {
            return prov_chain_report_add(
                c->rep, c->chain, i, "order",
                "self-signed root is followed by certificate %d; a root must "
                "be last",
                i + 1);
        }
        return 0;
    }
    other = find_issuer_elsewhere(c, i);
    if (other >= 0) {
        *issuer = sk_X509_value(c->chain, other);
        return prov_chain_report_add(c->rep, c->chain, i, "order",
                                     "issuer is certificate %d, but it is followed by %s", other,
                                     next != NULL ? "another certificate" : "nothing");
    }
    if (next == NULL) {
        *issuer = trusted_issuer(c, cert);
        if (*issuer == NULL) {
            return prov_chain_report_add(
                c->rep, c->chain, i, "root",
                "the chain ends in a certificate that is not self-signed and "
                "not issued by a trusted certificate");
        }
        return 0;
    }
    if (prov_chain_report_add(c->rep, c->chain, i, "issuer-name",
                              "issuer DN differs from the subject DN of certificate %d",
                              i + 1) < 0) {
        return PROV_ERR_NOMEM;
    }
    if (link_verifies(c, cert, next)) {
        *issuer = next;
        return 0;
    }
    return prov_chain_report_add(c->rep, c->chain, i, "signature",
                                 "signature does not verify with the key of certificate %d", i + 1);
}

static int check_ca(struct checker *c, int i)
{
    X509 *cert = sk_X509_value(c->chain, i);
    int crit = -1;
    BASIC_CONSTRAINTS *bc = X509_get_ext_d2i(cert, NID_basic_constraints, &crit, NULL);
    long pathlen = X509_get_pathlen(cert);
    uint32_t kusage;
    int below = 0;
    int r = 0;

    if (bc == NULL) {
        r = prov_chain_report_add(c->rep, c->chain, i, "basic-constraints",
                                  "CA certificate without basicConstraints");
    } else if (!bc->ca) {
        r = prov_chain_report_add(c->rep, c->chain, i, "basic-constraints",
                                  "CA certificate with basicConstraints CA:FALSE");
    } else if (crit != 1) {
        r = prov_chain_report_add(c->rep, c->chain, i, "basic-constraints",
                                  "basicConstraints is not marked critical");
    }
    BASIC_CONSTRAINTS_free(bc);
    if (r < 0) {
        return r;
    }
    kusage = X509_get_key_usage(cert);
    if (!(X509_get_extension_flags(cert) & EXFLAG_KUSAGE)) {
        r = prov_chain_report_add(c->rep, c->chain, i, "key-usage",
                                  "CA certificate without keyUsage");
    } else if (!(kusage & KU_KEY_CERT_SIGN)) {
        r = prov_chain_report_add(c->rep, c->chain, i, "key-usage", "keyUsage lacks keyCertSign");
    }
    if (r < 0 || pathlen < 0) {
        return r;
    }
    /* RFC 5280 4.2.1.9: non-self-issued intermediates below this one, the leaf not counted. */
    for (int j = 1; j < i; j++) {
        X509 *below_cert = sk_X509_value(c->chain, j);

        below += names_issuer(below_cert, below_cert) ? 0 : 1;
    }
    if (below > pathlen) {
        r = prov_chain_report_add(c->rep, c->chain, i, "path-length",
                                  "pathLenConstraint %ld, but %d intermediate CA(s) follow",
                                  pathlen, below);
    }
    return r;
}

static int check_validity(struct checker *c, int i, X509 *issuer)
{
    X509 *cert = sk_X509_value(c->chain, i);
    const ASN1_TIME *nb = X509_get0_notBefore(cert);
    const ASN1_TIME *na = X509_get0_notAfter(cert);
    char t1[40];
    char t2[40];
    int r = 0;

    if (X509_cmp_time(nb, &c->now) > 0) {
        r = prov_chain_report_add(c->rep, c->chain, i, "validity", "not valid before %s",
                                  time_text(nb, t1, sizeof(t1)));
    } else if (X509_cmp_time(na, &c->now) < 0) {
        r = prov_chain_report_add(c->rep, c->chain, i, "validity", "expired at %s",
                                  time_text(na, t1, sizeof(t1)));
    }
    if (r == 0 && issuer != NULL && issuer != cert &&
        ASN1_TIME_compare(na, X509_get0_notAfter(issuer)) > 0) {
        r = prov_chain_report_add(c->rep, c->chain, i, "validity-nesting",
                                  "notAfter %s is after the issuer's notAfter %s",
                                  time_text(na, t1, sizeof(t1)),
                                  time_text(X509_get0_notAfter(issuer), t2, sizeof(t2)));
    }
    return r;
}

static int check_purpose(struct checker *c)
{
    X509 *leaf = sk_X509_value(c->chain, 0);
    uint32_t flags = X509_get_extension_flags(leaf);
    bool is_client = c->purpose == PROV_PURPOSE_CLIENT;
    uint32_t xku_needed = is_client ? XKU_SSL_CLIENT : XKU_SSL_SERVER;
    /* TLS servers with RSA key transport sign nothing, so keyEncipherment is enough there. */
    uint32_t ku_needed = is_client ? KU_DIGITAL_SIGNATURE
                                   : (KU_DIGITAL_SIGNATURE | KU_KEY_ENCIPHERMENT);
    int r = 0;

    if (c->purpose == PROV_PURPOSE_ANY) {
        return 0;
    }
    if ((flags & EXFLAG_XKUSAGE) && !(X509_get_extended_key_usage(leaf) & xku_needed)) {
        r = prov_chain_report_add(c->rep, c->chain, 0, "purpose", "extendedKeyUsage lacks %s",
                                  is_client ? "clientAuth" : "serverAuth");
    }
    if (r == 0 && (flags & EXFLAG_KUSAGE) && !(X509_get_key_usage(leaf) & ku_needed)) {
        r = prov_chain_report_add(c->rep, c->chain, 0, "purpose",
                                  "keyUsage lacks digitalSignature");
    }
    return r;
}

/* ---- the cross-check with OpenSSL's own verifier ------------------------------------------- */

/*
 * The rules a verifier error is already explained by. A finding of one of these rules on the
 * same certificate (or anywhere, for chain-building errors) means the error is not news.
 */
static const char *const *rules_for_error(int err, bool *anywhere)
{
    static const char *const linkage[] = {"order", "issuer-name", "signature", "root", NULL};
    static const char *const sig[] = {"signature", "order", "issuer-name", NULL};
    static const char *const validity[] = {"validity", NULL};
    static const char *const ca[] = {"basic-constraints", "key-usage", NULL};
    static const char *const pathlen[] = {"path-length", NULL};
    static const char *const purpose[] = {"purpose", NULL};

    *anywhere = false;
    switch (err) {
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_UNABLE_TO_DECRYPT_CERT_SIGNATURE:
    case X509_V_ERR_AKID_SKID_MISMATCH:
    case X509_V_ERR_AKID_ISSUER_SERIAL_MISMATCH:
    case X509_V_ERR_SUBJECT_ISSUER_MISMATCH:
        *anywhere = true;
        return linkage;
    case X509_V_ERR_CERT_SIGNATURE_FAILURE:
        return sig;
    case X509_V_ERR_CERT_NOT_YET_VALID:
    case X509_V_ERR_CERT_HAS_EXPIRED:
        return validity;
    case X509_V_ERR_INVALID_CA:
    case X509_V_ERR_KEYUSAGE_NO_CERTSIGN:
    case X509_V_ERR_CA_BCONS_NOT_CRITICAL:
    case X509_V_ERR_CA_CERT_MISSING_KEY_USAGE:
        return ca;
    case X509_V_ERR_PATH_LENGTH_EXCEEDED:
        return pathlen;
    case X509_V_ERR_INVALID_PURPOSE:
        return purpose;
    default:
        return NULL;
    }
}

struct verify_error {
    int err;
    int index;
};

struct verify_errors {
    struct verify_error items[32];
    size_t n;
    struct checker *c;
};

static int verify_errors_index = -1;
static CRYPTO_ONCE verify_errors_once = CRYPTO_ONCE_STATIC_INIT;

static void make_verify_errors_index(void)
{
    verify_errors_index = X509_STORE_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

/* Records every error and carries on, so that one run reports all of them. */
static int collect_error(int ok, X509_STORE_CTX *ctx)
{
    struct verify_errors *errs = X509_STORE_CTX_get_ex_data(ctx, verify_errors_index);
    STACK_OF(X509) *chain;
    X509 *cur = X509_STORE_CTX_get_current_cert(ctx);
    int err = X509_STORE_CTX_get_error(ctx);
    int index = -1;

    if (ok || errs == NULL) {
        return ok;
    }
    /* The index in the file, not OpenSSL's depth: it may have built the chain differently. */
    chain = X509_STORE_CTX_get0_untrusted(ctx);
    if (cur != NULL && cur == X509_STORE_CTX_get0_cert(ctx)) {
        index = 0;
    }
    for (int j = 0; index < 0 && cur != NULL && j < sk_X509_num(chain); j++) {
        if (X509_cmp(sk_X509_value(chain, j), cur) == 0) {
            index = j + 1;
        }
    }
    for (size_t k = 0; k < errs->n; k++) {
        if (errs->items[k].err == err && errs->items[k].index == index) {
            return 1;
        }
    }
    if (errs->n < sizeof(errs->items) / sizeof(errs->items[0])) {
        errs->items[errs->n++] = (struct verify_error){.err = err, .index = index};
    }
    return 1;
}

/* One error as OpenSSL's own verifier reports it: to the callback, at a depth, for a cert. */
static int report_verify_error(X509_STORE_CTX *ctx, X509 *cert, int depth, int err)
{
    X509_STORE_CTX_set_error_depth(ctx, depth);
    X509_STORE_CTX_set_current_cert(ctx, cert);
    X509_STORE_CTX_set_error(ctx, err);
    return X509_STORE_CTX_get_verify_cb(ctx)(0, ctx);
}

/*
 * The signature and validity step of OpenSSL's verification (X509_STORE_CTX_set_verify) on
 * the chain OpenSSL built: each issuer may sign certificates (X509_check_issued: key usage),
 * each signature verifies with the issuer's key, and every certificate is valid at the check
 * time, as OpenSSL does it (the anchor's own signature is not checked). The difference is
 * that a signature this call (or, for a CA certificate, this process) has already verified
 * is not verified again: a batch checks the same intermediate and root for every device.
 * Everything else (extensions under X509_STRICT, purpose, name constraints) stays OpenSSL's.
 */
static int verify_signatures_and_times(X509_STORE_CTX *ctx)
{
    struct verify_errors *errs = X509_STORE_CTX_get_ex_data(ctx, verify_errors_index);
    STACK_OF(X509) *chain = X509_STORE_CTX_get0_chain(ctx);
    int n = sk_X509_num(chain);

    if (errs == NULL || errs->c == NULL) {
        return 0;
    }
    for (int i = n - 1; i >= 0; i--) {
        X509 *xs = sk_X509_value(chain, i);
        X509 *xi = i + 1 < n ? sk_X509_value(chain, i + 1) : NULL;
        time_t now = errs->c->now;
        int err = X509_V_OK;
        int when;

        if (xi != NULL && (err = X509_check_issued(xi, xs)) != X509_V_OK &&
            !report_verify_error(ctx, xi, i + 1, err)) {
            return 0;
        }
        if (xi != NULL && X509_get0_pubkey(xi) == NULL) {
            if (!report_verify_error(ctx, xi, i + 1,
                                     X509_V_ERR_UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY)) {
                return 0;
            }
        } else if (xi != NULL && !link_verifies(errs->c, xs, xi) &&
                   !report_verify_error(ctx, xs, i, X509_V_ERR_CERT_SIGNATURE_FAILURE)) {
            return 0;
        }
        when = X509_cmp_time(X509_get0_notBefore(xs), &now);
        err = when == 0 ? X509_V_ERR_ERROR_IN_CERT_NOT_BEFORE_FIELD
              : when > 0 ? X509_V_ERR_CERT_NOT_YET_VALID
                         : X509_V_OK;
        if (err != X509_V_OK && !report_verify_error(ctx, xs, i, err)) {
            return 0;
        }
        when = X509_cmp_time(X509_get0_notAfter(xs), &now);
        err = when == 0 ? X509_V_ERR_ERROR_IN_CERT_NOT_AFTER_FIELD
              : when < 0 ? X509_V_ERR_CERT_HAS_EXPIRED
                         : X509_V_OK;
        if (err != X509_V_OK && !report_verify_error(ctx, xs, i, err)) {
            return 0;
        }
    }
    ERR_clear_error();
    return 1;
}

static bool is_covered(struct checker *c, const struct verify_error *e)
{
    bool anywhere;
    const char *const *rules = rules_for_error(e->err, &anywhere);

    for (size_t k = 0; rules != NULL && rules[k] != NULL; k++) {
        if (has_finding(c->rep, c->first, anywhere ? ANY_INDEX : e->index, rules[k])) {
            return true;
        }
    }
    return false;
}

static int build_store(struct checker *c, X509_STORE **out, bool *is_partial)
{
    X509_STORE *store = X509_STORE_new();
    int r = PROV_ERR_NOMEM;

    *out = NULL;
    *is_partial = false;
    if (store == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "chain check: out of memory");
    }
    /* The file's own roots are its anchors (rule 4); --trust adds more. */
    for (int i = 0; i < sk_X509_num(c->chain); i++) {
        X509 *cert = sk_X509_value(c->chain, i);

        if (is_self_signed(cert) && X509_STORE_add_cert(store, cert) != 1) {
            goto fail;
        }
    }
    for (int i = 0; i < sk_X509_num(c->trust); i++) {
        X509 *cert = sk_X509_value(c->trust, i);

        if (X509_STORE_add_cert(store, cert) != 1) {
            goto fail;
        }
        *is_partial = *is_partial || !is_self_signed(cert);
    }
    *out = store;
    return 0;
fail:
    r = prov_fail_ossl(PROV_ERR_CRYPTO, "chain check: cannot build the trust store");
    X509_STORE_free(store);
    return r;
}

static int strict_cross_check(struct checker *c)
{
    struct verify_errors errs = {.c = c};
    STACK_OF(X509) *untrusted = NULL;
    X509_STORE *store = NULL;
    X509_STORE_CTX *ctx = NULL;
    X509_VERIFY_PARAM *param;
    bool is_partial;
    int r;

    r = build_store(c, &store, &is_partial);
    if (r < 0) {
        return r;
    }
    r = PROV_ERR_CRYPTO;
    ctx = X509_STORE_CTX_new();
    untrusted = sk_X509_new_null();
    for (int i = 1; untrusted != NULL && i < sk_X509_num(c->chain); i++) {
        if (sk_X509_push(untrusted, sk_X509_value(c->chain, i)) <= 0) {
            goto out;
        }
    }
    if (CRYPTO_THREAD_run_once(&verify_errors_once, make_verify_errors_index) != 1 ||
        verify_errors_index < 0 || ctx == NULL || untrusted == NULL ||
        X509_STORE_CTX_init(ctx, store, sk_X509_value(c->chain, 0), untrusted) != 1 ||
        X509_STORE_CTX_set_ex_data(ctx, verify_errors_index, &errs) != 1) {
        r = prov_fail_ossl(PROV_ERR_CRYPTO, "chain check: cannot set up the verifier");
        goto out;
    }
    param = X509_STORE_CTX_get0_param(ctx);
    X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_X509_STRICT |
                                           (is_partial ? X509_V_FLAG_PARTIAL_CHAIN : 0));
    X509_VERIFY_PARAM_set_time(param, c->now);
    if (c->purpose != PROV_PURPOSE_ANY) {
        X509_STORE_CTX_set_purpose(ctx, c->purpose == PROV_PURPOSE_CLIENT
                                            ? X509_PURPOSE_SSL_CLIENT
                                            : X509_PURPOSE_SSL_SERVER);
    }
    X509_STORE_CTX_set_verify_cb(ctx, collect_error);
    X509_STORE_CTX_set_verify(ctx, verify_signatures_and_times);
    if (X509_verify_cert(ctx) != 1 && errs.n == 0) {
        /* A failure that bypassed the callback (internal error): still one finding. */
        int err = X509_STORE_CTX_get_error(ctx);

        errs.items[errs.n++] = (struct verify_error){
            .err = err != X509_V_OK ? err : X509_V_ERR_UNSPECIFIED, .index = -1};
    }
    ERR_clear_error();
    r = 0;
    for (size_t k = 0; k < errs.n && r == 0; k++) {
        if (!is_covered(c, &errs.items[k])) {
            r = prov_chain_report_add(
                c->rep, c->chain, errs.items[k].index, "x509-strict", "%s (verify error %d)",
                X509_verify_cert_error_string(errs.items[k].err), errs.items[k].err);
        }
    }
out:
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    sk_X509_free(untrusted);
    return r;
}

enum prov_chain_purpose prov_chain_purpose_of(STACK_OF(X509) *chain)
{
    X509 *first = sk_X509_num(chain) > 0 ? sk_X509_value(chain, 0) : NULL;

    return first != NULL && (X509_get_extension_flags(first) & EXFLAG_CA) ? PROV_PURPOSE_ANY
                                                                           : PROV_PURPOSE_CLIENT;
}

/*
 * Findings are the result, not a failure to record: callers report them (with their own
 * context) from rep, so PROV_ERR_VERIFY comes back without a prov_fail() message.
 */
int prov_chain_verify(STACK_OF(X509) *chain, STACK_OF(X509) *trust,
                      enum prov_chain_purpose purpose, time_t now, struct prov_chain_report *rep)
{
    struct checker c = {chain, trust, purpose, now, rep, rep->n};
    int n = sk_X509_num(chain);
    int r = 0;

    if (n <= 0) {
        r = prov_chain_report_add(rep, chain, -1, "empty", "no certificate in the chain");
        return r < 0 ? r : PROV_ERR_VERIFY;
    }
    for (int i = 0; i < n && r == 0; i++) {
        X509 *issuer = NULL;

        r = check_link(&c, i, &issuer);
        if (r == 0 && is_ca_position(sk_X509_value(chain, i), i)) {
            r = check_ca(&c, i);
        }
        if (r == 0) {
            r = check_validity(&c, i, issuer);
        }
    }
    if (r == 0) {
        r = check_purpose(&c);
    }
    if (r == 0) {
        r = strict_cross_check(&c);
    }
    if (r < 0) {
        return r;
    }
    return rep->n > c.first ? PROV_ERR_VERIFY : 0;
}

int prov_chain_to_pem(STACK_OF(X509) *certs, char **out, size_t *out_len)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *data = NULL;
    char *copy = NULL;
    long len;
    int r = PROV_ERR_CRYPTO;

    *out = NULL;
    *out_len = 0;
    if (bio == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "chain: out of memory");
    }
    for (int i = 0; i < sk_X509_num(certs); i++) {
        if (PEM_write_bio_X509(bio, sk_X509_value(certs, i)) != 1) {
            r = prov_fail_ossl(PROV_ERR_CRYPTO, "chain: cannot encode certificate %d", i);
            goto out;
        }
    }
    len = BIO_get_mem_data(bio, &data);
    copy = malloc((size_t)len + 1);
    if (len < 0 || copy == NULL) {
        r = prov_fail(PROV_ERR_NOMEM, "chain: out of memory");
        goto out;
    }
    if (len > 0) {
        memcpy(copy, data, (size_t)len);
    }
    copy[len] = '\0';
    *out = copy;
    *out_len = (size_t)len;
    copy = NULL;
    r = 0;
out:
    free(copy);
    BIO_free(bio);
    return r;
}

int prov_chain_load_verified(const char *path, STACK_OF(X509) **out)
{
    struct prov_chain_report rep = {0};
    STACK_OF(X509) *chain = NULL;
    int r;

    *out = NULL;
    r = prov_chain_load_pem(path, &chain);
    if (r == 0) {
        r = prov_chain_verify(chain, NULL, PROV_PURPOSE_ANY, time(NULL), &rep);
        if (r == PROV_ERR_VERIFY && rep.n > 0) {
            prov_fail(r, "%s: certificate %d (%s): %s: %s; not exported", path,
                      rep.items[0].index, rep.items[0].subject ? rep.items[0].subject : "-",
                      rep.items[0].rule, rep.items[0].detail);
        }
    }
    if (r == 0) {
        *out = chain;
        chain = NULL;
    }
    prov_chain_report_free(&rep);
    sk_X509_pop_free(chain, X509_free);
    return r;
}
