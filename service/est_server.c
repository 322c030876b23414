/* SPDX-License-Identifier: Apache-2.0 */
/*
 * EST (RFC 7030) on the CA service (est_server.h): the request's path and base64 body, the
 * station or device behind the TLS client certificate, and the issue path of
 * provisioner/pki/issue.c with the CA index's rules (the same as CMP's, cmp_server.c).
 */
#include "est_server.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pkcs7.h>
#include <openssl/x509v3.h>

#include "ca.h"
#include "ca_index.h"
#include "ca_registry.h"
#include "error.h"
#include "hex.h"
#include "keytype.h"

#define TYPE_PKCS7 "application/pkcs7-mime; smime-type=certs-only"
#define TYPE_CSRATTRS "application/csrattrs"
#define TYPE_TEXT "text/plain; charset=utf-8"
#define TYPE_PKCS10 "application/pkcs10"
#define LOT_MAX 64

/* What a request reads: a copy taken when it begins (prov_est_server_handle). */
struct est_state {
    const struct prov_config *cfg;
    struct prov_ca *ca;
    const struct prov_profile *profile;
    X509_STORE *trust;          /* the root: a station's or device's certificate chains to it */
    STACK_OF(X509) *chain;      /* intermediate(s) then root */
    unsigned char *cacerts;     /* the cacerts answer, base64, made once */
    size_t cacerts_len;
    unsigned char *csrattrs;    /* the csrattrs answer, base64 (replaced by set_config) */
    size_t csrattrs_len;
};

/*
 * Requests are answered on the event loop and by the CMP workers at once (enrollments:
 * service/http.c). ca_lock is read-held for a whole request and written by set_ca, so the CA
 * stays as it is until the requests being answered are; lock guards cfg, profile and
 * csrattrs, which set_config replaces (a request copies cfg and profile when it begins and
 * answers csrattrs under it). trust, chain and cacerts never change.
 */
struct prov_est_server {
    struct est_state s;
    pthread_rwlock_t ca_lock;
    pthread_mutex_t lock;
};

static void set_result(struct prov_cmp_outcome *oc, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void set_result(struct prov_cmp_outcome *oc, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(oc->result, sizeof(oc->result), fmt, ap);
    va_end(ap);
}

/* ---- parsing ------------------------------------------------------------------------- */

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }
    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }
    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }
    if (c == '+') {
        return 62;
    }
    if (c == '/') {
        return 63;
    }
    return -1;
}

int prov_est_base64_decode(const unsigned char *in, size_t len, unsigned char **out,
                           size_t *out_len)
{
    unsigned char *buf = malloc(len / 4 * 3 + 3);
    unsigned acc = 0;
    size_t bits = 0;
    size_t n = 0;
    size_t chars = 0;
    size_t pad = 0;

    *out = NULL;
    *out_len = 0;
    if (buf == NULL) {
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = in[i];
        int v;

        if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
            continue;
        }
        if (c == '=') {
            pad++;
            chars++;
            continue;
        }
        v = b64_value(c);
        if (v < 0 || pad > 0) {
            free(buf);
            return -1;
        }
        chars++;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            buf[n++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    /* whole groups of four, at most two '=', and no bits left over that are not zero */
    if (chars == 0 || chars % 4 != 0 || pad > 2 || acc != 0) {
        free(buf);
        return -1;
    }
    *out = buf;
    *out_len = n;
    return 0;
}

/*
 * Lines of 64 characters, each ending in LF (what `base64 -d` and `openssl base64 -d` read;
 * RFC 7030 section 4 asks for base64 without saying which line end).
 */
static int base64_encode(const unsigned char *in, size_t len, unsigned char **out,
                         size_t *out_len)
{
    size_t full = (len + 2) / 3 * 4;
    size_t lines = (full + 63) / 64;
    unsigned char *buf = malloc(full + lines + 1);
    size_t o = 0;

    *out = NULL;
    if (buf == NULL || len > INT32_MAX / 2) {
        free(buf);
        return -1;
    }
    for (size_t i = 0; i < len; i += 48) {
        size_t chunk = len - i < 48 ? len - i : 48;

        o += (size_t)EVP_EncodeBlock(buf + o, in + i, (int)chunk);
        buf[o++] = '\n';
    }
    *out = buf;
    *out_len = o;
    return 0;
}

static bool lot_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '_' || c == '-';
}

static int parse_path(const char *path, struct prov_est_request *rq, char *why, size_t cap)
{
    const char *rest;
    const char *slash;
    const char *op;
    static const struct {
        const char *name;
        enum prov_est_op op;
    } ops[] = {
        {"cacerts", PROV_EST_CACERTS},
        {"csrattrs", PROV_EST_CSRATTRS},
        {"simpleenroll", PROV_EST_SIMPLEENROLL},
        {"simplereenroll", PROV_EST_SIMPLEREENROLL},
    };

    if (strncmp(path, PROV_EST_PREFIX, strlen(PROV_EST_PREFIX)) != 0) {
        snprintf(why, cap, "not an EST path");
        return 404;
    }
    /* only now: a shorter path has no byte there (fuzz_est found it) */
    rest = path + strlen(PROV_EST_PREFIX);
    slash = strchr(rest, '/');
    op = rest;
    if (slash != NULL) {
        size_t n = (size_t)(slash - rest);

        if (n == 0 || n > LOT_MAX || strchr(slash + 1, '/') != NULL ||
            (n == 1 && rest[0] == '.') || (n == 2 && rest[0] == '.' && rest[1] == '.')) {
            snprintf(why, cap, "no such EST path");
            return 404;
        }
        for (size_t i = 0; i < n; i++) {
            if (!lot_char(rest[i])) {
                snprintf(why, cap, "no such EST path");
                return 404;
            }
        }
        memcpy(rq->lot, rest, n);
        rq->lot[n] = '\0';
        op = slash + 1;
    }
    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
        if (strcmp(op, ops[i].name) == 0) {
            rq->op = ops[i].op;
            return 0;
        }
    }
    snprintf(why, cap, "no such EST operation");
    return 404;
}

static bool type_is(const char *type, const char *want)
{
    size_t n = strlen(want);

    return type != NULL && strncasecmp(type, want, n) == 0 &&
           (type[n] == '\0' || type[n] == ';' || type[n] == ' ');
}

int prov_est_parse(const char *path, bool is_post, const char *content_type,
                   const unsigned char *body, size_t len, struct prov_est_request *rq,
                   char *why, size_t why_cap)
{
    unsigned char *der = NULL;
    const unsigned char *p;
    size_t der_len = 0;
    bool is_enroll;
    int st;

    memset(rq, 0, sizeof(*rq));
    st = parse_path(path, rq, why, why_cap);
    if (st != 0) {
        return st;
    }
    is_enroll = rq->op == PROV_EST_SIMPLEENROLL || rq->op == PROV_EST_SIMPLEREENROLL;
    if (is_enroll != is_post) {
        snprintf(why, why_cap, "%s", is_enroll ? "not a POST" : "not a GET");
        return 405;
    }
    if (!is_enroll) {
        return 0;
    }
    if (!type_is(content_type, TYPE_PKCS10)) {
        snprintf(why, why_cap, "Content-Type is not " TYPE_PKCS10);
        return 415;
    }
    if (prov_est_base64_decode(body, len, &der, &der_len) < 0) {
        snprintf(why, why_cap, "the body is not base64");
        return 400;
    }
    p = der;
    rq->csr = der_len <= INT32_MAX ? d2i_X509_REQ(NULL, &p, (long)der_len) : NULL;
    if (rq->csr == NULL || p != der + der_len) {
        X509_REQ_free(rq->csr);
        rq->csr = NULL;
        free(der);
        ERR_clear_error();
        snprintf(why, why_cap, "the body is not a PKCS#10 certification request (DER)");
        return 400;
    }
    free(der);
    return 0;
}

void prov_est_request_clear(struct prov_est_request *rq)
{
    X509_REQ_free(rq->csr);
    rq->csr = NULL;
}

/* ---- answers ------------------------------------------------------------------------- */

/* A certs-only PKCS#7 (a signedData without signers) of certs, base64. */
static int certs_only(STACK_OF(X509) *certs, unsigned char **out, size_t *out_len)
{
    PKCS7 *p7 = PKCS7_new();
    unsigned char *der = NULL;
    int n = -1;
    int r = -1;

    if (p7 != NULL && PKCS7_set_type(p7, NID_pkcs7_signed) &&
        PKCS7_content_new(p7, NID_pkcs7_data)) {
        n = 0;
        for (int i = 0; i < sk_X509_num(certs) && n == 0; i++) {
            n = PKCS7_add_certificate(p7, sk_X509_value(certs, i)) ? 0 : -1;
        }
        if (n == 0) {
            n = i2d_PKCS7(p7, &der);
        }
    }
    if (n > 0) {
        r = base64_encode(der, (size_t)n, out, out_len);
    }
    OPENSSL_free(der);
    PKCS7_free(p7);
    return r;
}

/*
 * CsrAttrs (RFC 7030 section 4.5.2): the signature algorithm, and the key type as an
 * attribute whose value names the curve (EC) or the modulus size (RSA).
 */
static int make_csrattrs(const struct prov_profile *pf, unsigned char **out, size_t *out_len)
{
    enum prov_key_type kt = pf->key_type;
    int sig = prov_key_type_is_ec(kt)
                  ? (kt == PROV_KEY_EC_P384 ? NID_ecdsa_with_SHA384 : NID_ecdsa_with_SHA256)
                  : NID_sha256WithRSAEncryption;
    X509_ATTRIBUTE *attr = NULL;
    ASN1_INTEGER *bits = NULL;
    unsigned char *seq = NULL;
    unsigned char *p;
    int a;
    int b;
    int total;
    int r = -1;

    if (prov_key_type_is_ec(kt)) {
        attr = X509_ATTRIBUTE_create(NID_X9_62_id_ecPublicKey, V_ASN1_OBJECT,
                                     OBJ_nid2obj(prov_key_type_curve_nid(kt)));
    } else {
        bits = ASN1_INTEGER_new();
        if (bits != NULL && ASN1_INTEGER_set(bits, prov_key_type_rsa_bits(kt))) {
            attr = X509_ATTRIBUTE_create(NID_rsaEncryption, V_ASN1_INTEGER, bits);
            bits = attr != NULL ? NULL : bits;
        }
    }
    a = i2d_ASN1_OBJECT(OBJ_nid2obj(sig), NULL);
    b = attr != NULL ? i2d_X509_ATTRIBUTE(attr, NULL) : -1;
    if (a <= 0 || b <= 0) {
        goto out;
    }
    total = ASN1_object_size(1, a + b, V_ASN1_SEQUENCE);
    seq = total > 0 ? malloc((size_t)total) : NULL;
    if (seq == NULL) {
        goto out;
    }
    p = seq;
    ASN1_put_object(&p, 1, a + b, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL);
    i2d_ASN1_OBJECT(OBJ_nid2obj(sig), &p);
    i2d_X509_ATTRIBUTE(attr, &p);
    r = base64_encode(seq, (size_t)total, out, out_len);
out:
    free(seq);
    ASN1_INTEGER_free(bits);
    X509_ATTRIBUTE_free(attr);
    return r;
}

static int reply_text(struct prov_est_reply *rep, struct prov_cmp_outcome *oc, int status,
                      const char *why)
{
    size_t n = strlen(why);

    rep->status = status;
    rep->type = TYPE_TEXT;
    rep->is_base64 = false;
    rep->body = malloc(n + 1);
    rep->len = rep->body != NULL ? n + 1 : 0;
    if (rep->body != NULL) {
        memcpy(rep->body, why, n);
        rep->body[n] = '\n';
    }
    if (oc->result[0] == '\0') {
        set_result(oc, "refused: %s", why);
    }
    return 0;
}

static int reply_copy(struct prov_est_reply *rep, const char *type, const unsigned char *b,
                      size_t n)
{
    rep->status = 200;
    rep->type = type;
    rep->is_base64 = true;
    rep->body = malloc(n);
    if (rep->body == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "EST: out of memory");
    }
    memcpy(rep->body, b, n);
    rep->len = n;
    return 0;
}

/* The printable CN of name into out ("-" without one). */
static void cn_of(const X509_NAME *name, char *out, size_t cap)
{
    int at = name != NULL ? X509_NAME_get_index_by_NID(name, NID_commonName, -1) : -1;
    const ASN1_STRING *s = at >= 0 ? X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, at)) : NULL;
    int len = s != NULL ? ASN1_STRING_length(s) : 0;
    const unsigned char *d = s != NULL ? ASN1_STRING_get0_data(s) : NULL;

    snprintf(out, cap, "-");
    if (len <= 0 || (size_t)len >= cap) {
        return;
    }
    for (int i = 0; i < len; i++) {
        if (d[i] <= 0x20 || d[i] >= 0x7f) {
            return;
        }
    }
    memcpy(out, d, (size_t)len);
    out[len] = '\0';
}

/* Does peer chain to this CA (its root, through the CA's intermediates)? */
static bool peer_verifies(const struct est_state *srv, X509 *peer, STACK_OF(X509) *peer_chain)
{
    X509_STORE_CTX *vc = X509_STORE_CTX_new();
    STACK_OF(X509) *untrusted = X509_chain_up_ref(srv->chain);
    bool ok = false;

    for (int i = 0; untrusted != NULL && i < sk_X509_num(peer_chain); i++) {
        X509 *c = sk_X509_value(peer_chain, i);

        if (X509_up_ref(c) && !sk_X509_push(untrusted, c)) {
            X509_free(c);
        }
    }
    if (vc != NULL && untrusted != NULL &&
        X509_STORE_CTX_init(vc, srv->trust, peer, untrusted)) {
        ok = X509_verify_cert(vc) == 1;
    }
    ERR_clear_error();
    X509_STORE_CTX_free(vc);
    sk_X509_pop_free(untrusted, X509_free);
    return ok;
}

static int status_of_issue_error(int r)
{
    switch (r) {
    case PROV_ERR_POLICY: return 400;
    case PROV_ERR_ALREADY_ISSUED: return 409;
    case PROV_ERR_DEVICE_REMOVED:
    case PROV_ERR_DEVICE:
    case PROV_ERR_NOT_FOUND: return 503;
    default: return 500;
    }
}

static int reply_cert(struct prov_est_reply *rep, struct prov_cmp_outcome *oc, X509 *cert,
                      const char *result)
{
    STACK_OF(X509) *one = sk_X509_new_null();
    const ASN1_INTEGER *sn = X509_get0_serialNumber(cert);
    int r;

    if (one == NULL || !sk_X509_push(one, cert)) {
        sk_X509_free(one);
        return prov_fail(PROV_ERR_NOMEM, "EST: out of memory");
    }
    r = certs_only(one, &rep->body, &rep->len);
    sk_X509_free(one);
    if (r < 0) {
        return prov_fail_ossl(PROV_ERR_CRYPTO, "EST: cannot encode the certificate");
    }
    rep->status = 200;
    rep->type = TYPE_PKCS7;
    rep->is_base64 = true;
    if ((size_t)ASN1_STRING_length(sn) * 2 < sizeof(oc->cert_serial)) {
        prov_hex_encode(ASN1_STRING_get0_data(sn), (size_t)ASN1_STRING_length(sn),
                        oc->cert_serial);
    }
    set_result(oc, "%s", result);
    return 0;
}

/*
 * simpleenroll: the station behind peer asks for the device its CSR's CN names; with
 * is_reissue (a station's simplereenroll), a certificate that supersedes the device's current
 * one, where the lot allows a reissue (doc/ca-service.md).
 */
static int enroll(const struct est_state *srv, struct prov_est_request *rq, X509 *peer,
                  STACK_OF(X509) *peer_chain, bool is_reissue, struct prov_est_reply *rep,
                  struct prov_cmp_outcome *oc)
{
    struct prov_request ir;
    struct prov_ca_ask ask;
    char station[65];
    char by[80];
    char spki[65];
    X509 *cert = NULL;
    bool station_refused; /* EST keeps no cache of stations */
    int r;

    if (peer == NULL) {
        prov_ca_registry_refused(srv->ca->index, "est simpleenroll",
                                 "no TLS client certificate");
        return reply_text(rep, oc, 403, "a TLS client certificate (the station's) is required");
    }
    cn_of(X509_get_subject_name(peer), station, sizeof(station));
    snprintf(oc->station, sizeof(oc->station), "%s", station);
    if (!peer_verifies(srv, peer, peer_chain) || strcmp(station, "-") == 0) {
        prov_ca_registry_refused(srv->ca->index, "est simpleenroll",
                                 "the TLS client certificate is not a station of this CA");
        return reply_text(rep, oc, 403, "the TLS client certificate is not a station of this CA");
    }
    cn_of(X509_REQ_get_subject_name(rq->csr), oc->serial, sizeof(oc->serial));
    if (!prov_serial_is_valid(oc->serial)) {
        return reply_text(rep, oc, 400,
                          "the subject's CN must be the device serial, " PROV_SERIAL_RULE);
    }
    snprintf(by, sizeof(by), "est:%s", station);
    memset(&ask, 0, sizeof(ask));
    ask.serial = oc->serial;
    ask.lot = rq->lot[0] != '\0' ? rq->lot : NULL;
    ask.profile = srv->profile->name;
    ask.is_reissue = is_reissue;
    /* As CMP (cmp_server.c): the station; then a retry gets what it was given; then a lot. */
    prov_error_clear();
    r = prov_ca_registry_admit(srv->ca->index, station, peer, X509_REQ_get0_pubkey(rq->csr), by,
                               &ask, spki, &cert, &station_refused);
    if (r < 0 && ask.retry_after > 0) {
        rep->retry_after = ask.retry_after;
        return reply_text(rep, oc, 429, prov_error_message());
    }
    if (r < 0) {
        return reply_text(rep, oc, r == PROV_ERR_POLICY ? 403 : 500, prov_error_message());
    }
    if (cert != NULL) {
        r = reply_cert(rep, oc, cert, "issued before (a retry)");
        X509_free(cert);
        return r;
    }
    prov_ca_registry_request(&ask, srv->profile, by, spki, &ir);
    ir.is_signed_unlocked = true; /* the CA index not held across the signature (issue.h) */
    prov_error_clear();
    r = prov_issue_certificate(srv->cfg, srv->ca, rq->csr, &ir, &cert);
    if (r == PROV_ERR_ALREADY_ISSUED &&
        prov_ca_registry_retry(srv->ca->index, oc->serial, by, spki, &cert) == 0 && cert != NULL) {
        /* signed, then refused: the same request certified meanwhile (a CA pair's other host) */
        prov_error_clear();
        r = reply_cert(rep, oc, cert, "issued before (a retry)");
        X509_free(cert);
        return r;
    }
    if (r < 0) {
        r = reply_text(rep, oc, status_of_issue_error(r), prov_error_message());
        if (rep->status == 400 || rep->status == 409) {
            /* the CSR policy or the CA index refused the station's request: audited too */
            prov_ca_registry_refused(srv->ca->index, oc->serial, oc->result);
        }
        return r;
    }
    r = reply_cert(rep, oc, cert, is_reissue ? "reissued" : "issued");
    X509_free(cert);
    return r;
}

/* Is peer a registered station's certificate (a station's simplereenroll is a reissue)? */
static bool is_station(const struct est_state *srv, X509 *peer, STACK_OF(X509) *peer_chain)
{
    const ASN1_INTEGER *sn = peer != NULL ? X509_get0_serialNumber(peer) : NULL;
    char name[65];
    char hex[72];
    char peer_hex[72] = "";

    if (sn == NULL || (size_t)ASN1_STRING_length(sn) * 2 >= sizeof(peer_hex) ||
        !peer_verifies(srv, peer, peer_chain)) {
        return false;
    }
    prov_hex_encode(ASN1_STRING_get0_data(sn), (size_t)ASN1_STRING_length(sn), peer_hex);
    cn_of(X509_get_subject_name(peer), name, sizeof(name));
    prov_error_clear();
    if (strcmp(name, "-") == 0 ||
        prov_ca_registry_station_cert(srv->ca->index, name, hex, sizeof(hex)) < 0) {
        prov_error_clear();
        return false;
    }
    return strcmp(hex, peer_hex) == 0;
}

/* simplereenroll: a device renews with its current certificate, for the same subject. */
static int reenroll(const struct est_state *srv, struct prov_est_request *rq, X509 *peer,
                    STACK_OF(X509) *peer_chain, struct prov_est_reply *rep,
                    struct prov_cmp_outcome *oc)
{
    static const char by[] = "est:reenroll";
    char spki[65];
    struct prov_request ir;
    bool current = false;
    X509 *cert = NULL;
    int r;

    if (peer == NULL) {
        prov_ca_registry_refused(srv->ca->index, "est simplereenroll",
                                 "no TLS client certificate");
        return reply_text(rep, oc, 403, "a TLS client certificate (the device's) is required");
    }
    cn_of(X509_get_subject_name(peer), oc->serial, sizeof(oc->serial));
    if (!peer_verifies(srv, peer, peer_chain) || !prov_serial_is_valid(oc->serial) ||
        prov_ca_registry_is_current(srv->ca->index, peer, oc->serial, srv->profile->name,
                                    &current) < 0 ||
        !current) {
        prov_ca_registry_refused(srv->ca->index, "est simplereenroll",
                                 "the TLS client certificate is not a current device "
                                 "certificate of this CA");
        return reply_text(rep, oc, 403,
                          "the TLS client certificate is not a current device certificate of "
                          "this CA");
    }
    if (X509_NAME_cmp(X509_REQ_get_subject_name(rq->csr), X509_get_subject_name(peer)) != 0) {
        return reply_text(rep, oc, 400,
                          "the CSR's subject is not the one of the certificate renewed");
    }
    prov_error_clear();
    r = prov_ca_index_spki_sha256(X509_REQ_get0_pubkey(rq->csr), spki);
    if (r == 0) {
        r = prov_ca_registry_retry(srv->ca->index, oc->serial, by, spki, &cert);
    }
    if (r < 0) {
        return reply_text(rep, oc, 500, prov_error_message());
    }
    if (cert != NULL) {
        r = reply_cert(rep, oc, cert, "renewed before (a retry)");
        X509_free(cert);
        return r;
    }
    memset(&ir, 0, sizeof(ir));
    ir.serial = oc->serial;
    ir.profile = srv->profile;
    ir.record.issued_by = by;
    ir.record.is_reissue = true;
    ir.record.pubkey_sha256 = spki;
    ir.is_signed_unlocked = true;
    prov_error_clear();
    r = prov_issue_certificate(srv->cfg, srv->ca, rq->csr, &ir, &cert);
    if (r < 0) {
        return reply_text(rep, oc, status_of_issue_error(r), prov_error_message());
    }
    r = reply_cert(rep, oc, cert, "renewed");
    X509_free(cert);
    return r;
}

static const char *op_name(enum prov_est_op op)
{
    switch (op) {
    case PROV_EST_CACERTS: return "cacerts";
    case PROV_EST_CSRATTRS: return "csrattrs";
    case PROV_EST_SIMPLEENROLL: return "simpleenroll";
    case PROV_EST_SIMPLEREENROLL: return "simplereenroll";
    }
    return "-";
}

int prov_est_server_handle(struct prov_est_server *srv, const char *path, bool is_post,
                           const char *content_type, const unsigned char *body, size_t len,
                           X509 *peer, STACK_OF(X509) *peer_chain, struct prov_est_reply *rep,
                           struct prov_cmp_outcome *oc)
{
    struct prov_est_request rq;
    struct est_state view;
    char why[160];
    int st;
    int r = 0;

    memset(rep, 0, sizeof(*rep));
    memset(oc, 0, sizeof(*oc));
    snprintf(oc->body, sizeof(oc->body), "est");
    snprintf(oc->station, sizeof(oc->station), "-");
    snprintf(oc->serial, sizeof(oc->serial), "-");
    st = prov_est_parse(path, is_post, content_type, body, len, &rq, why, sizeof(why));
    if (st != 0) {
        return reply_text(rep, oc, st, why);
    }
    snprintf(oc->body, sizeof(oc->body), "%s", op_name(rq.op));
    /* the CA stays as it is until this request is answered (prov_est_server_set_ca waits) */
    pthread_rwlock_rdlock(&srv->ca_lock);
    pthread_mutex_lock(&srv->lock);
    view = srv->s;
    if (rq.op == PROV_EST_CSRATTRS) {
        r = reply_copy(rep, TYPE_CSRATTRS, srv->s.csrattrs, srv->s.csrattrs_len);
        set_result(oc, "csrattrs");
    }
    pthread_mutex_unlock(&srv->lock);
    if (view.ca == NULL && (rq.op == PROV_EST_SIMPLEENROLL || rq.op == PROV_EST_SIMPLEREENROLL)) {
        /* the CA went away while the request waited for a worker (service/http.c) */
        set_result(oc, "unavailable: the CA is not open");
        r = PROV_ERR_DEVICE_REMOVED;
        goto out;
    }
    switch (rq.op) {
    case PROV_EST_CACERTS:
        r = reply_copy(rep, TYPE_PKCS7, view.cacerts, view.cacerts_len);
        set_result(oc, "cacerts");
        break;
    case PROV_EST_CSRATTRS: break; /* answered above */
    case PROV_EST_SIMPLEENROLL:
        r = enroll(&view, &rq, peer, peer_chain, false, rep, oc);
        break;
    case PROV_EST_SIMPLEREENROLL:
        r = is_station(&view, peer, peer_chain)
                ? enroll(&view, &rq, peer, peer_chain, true, rep, oc)
                : reenroll(&view, &rq, peer, peer_chain, rep, oc);
        break;
    }
out:
    pthread_rwlock_unlock(&srv->ca_lock);
    prov_est_request_clear(&rq);
    return r;
}

int prov_est_server_set_config(struct prov_est_server *srv, const struct prov_config *cfg)
{
    const struct prov_profile *p;
    unsigned char *attrs = NULL;
    unsigned char *old;
    size_t len = 0;

    pthread_mutex_lock(&srv->lock);
    p = prov_config_profile(cfg, srv->s.profile->name);
    pthread_mutex_unlock(&srv->lock);
    if (p == NULL) {
        return prov_fail(PROV_ERR_CONFIG, "profile \"%s\": not in %s (no [profile_%s] section)",
                         srv->s.profile->name, cfg->path, srv->s.profile->name);
    }
    if (make_csrattrs(p, &attrs, &len) < 0) {
        return prov_fail_ossl(PROV_ERR_NOMEM, "EST: cannot make the csrattrs answer");
    }
    pthread_mutex_lock(&srv->lock);
    old = srv->s.csrattrs;
    srv->s.csrattrs = attrs;
    srv->s.csrattrs_len = len;
    srv->s.cfg = cfg;
    srv->s.profile = p;
    pthread_mutex_unlock(&srv->lock);
    free(old);
    return 0;
}

int prov_est_server_new(const struct prov_config *cfg, struct prov_ca *ca, const char *profile,
                        struct prov_est_server **out)
{
    struct prov_est_server *srv = calloc(1, sizeof(*srv));
    const char *name = profile != NULL ? profile : "device";
    pthread_rwlockattr_t attr;

    *out = NULL;
    if (srv == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "EST: out of memory");
    }
    /* a CA change waits for the requests being answered, then goes before the next ones */
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&srv->ca_lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    pthread_mutex_init(&srv->lock, NULL);
    srv->s.cfg = cfg;
    srv->s.ca = ca;
    srv->s.profile = prov_config_profile(cfg, name);
    if (srv->s.profile == NULL) {
        prov_est_server_free(srv);
        return prov_fail(PROV_ERR_CONFIG, "profile \"%s\": not in %s (no [profile_%s] section)",
                         name, cfg->path, name);
    }
    srv->s.trust = X509_STORE_new();
    srv->s.chain = X509_chain_up_ref(ca->chain);
    if (srv->s.trust == NULL || srv->s.chain == NULL ||
        !X509_STORE_add_cert(srv->s.trust, ca->root) ||
        certs_only(srv->s.chain, &srv->s.cacerts, &srv->s.cacerts_len) < 0 ||
        make_csrattrs(srv->s.profile, &srv->s.csrattrs, &srv->s.csrattrs_len) < 0) {
        prov_est_server_free(srv);
        return prov_fail_ossl(PROV_ERR_NOMEM, "EST: cannot make the CA's answers");
    }
    *out = srv;
    return 0;
}

void prov_est_server_set_ca(struct prov_est_server *srv, struct prov_ca *ca)
{
    pthread_rwlock_wrlock(&srv->ca_lock);
    srv->s.ca = ca;
    pthread_rwlock_unlock(&srv->ca_lock);
}

void prov_est_server_free(struct prov_est_server *srv)
{
    if (srv == NULL) {
        return;
    }
    X509_STORE_free(srv->s.trust);
    sk_X509_pop_free(srv->s.chain, X509_free);
    free(srv->s.cacerts);
    free(srv->s.csrattrs);
    pthread_rwlock_destroy(&srv->ca_lock);
    pthread_mutex_destroy(&srv->lock);
    free(srv);
}
