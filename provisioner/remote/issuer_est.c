/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The EST issuer behind issuer.h (issuer_est.h): cacerts when it opens, then one
 * simpleenroll per certificate, on one libcurl handle (a kept-alive connection) that a lock
 * makes one request at a time. The station's key stays in its token: the TLS handshake signs
 * through the same EVP_PKEY the CMP issuer signs with (station_identity.h). The CA index is the
 * service's: nothing is recorded here.
 */
#include "issuer_est.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pkcs7.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "curl_api.h"
#include "error.h"
#include "remote_ops.h"
#include "station_identity.h"

/* An answer larger than this is not EST's. */
#define EST_ANSWER_MAX (1024 * 1024)

struct est_issuer {
    struct prov_remote_issuer remote; /* first: a prov_issuer * is one of these */
    char base_url[512];      /* https://HOST:PORT/.well-known/est */
    CURL *curl;
};

struct answer {
    unsigned char *data;
    size_t len;
    bool is_too_long;
};

static struct est_issuer *est_of(struct prov_issuer *is)
{
    return (struct est_issuer *)is;
}

/* est://HOST:PORT[/PATH] or https://HOST:PORT/PATH into https://HOST:PORT/PATH. */
static int parse_url(const char *url, struct est_issuer *ei)
{
    bool is_est = strncmp(url, "est://", 6) == 0;
    const char *hp = url + (is_est ? 6 : 8);
    const char *slash = strchr(hp, '/');
    const char *path = slash != NULL && slash[1] != '\0' ? slash : "/.well-known/est";
    size_t hl = slash != NULL ? (size_t)(slash - hp) : strlen(hp);
    size_t pl = strlen(path);
    const char *colon = memchr(hp, ':', hl);

    while (pl > 1 && path[pl - 1] == '/') {
        pl--;
    }
    if (hl == 0 || colon == NULL || colon == hp || colon + 1 == hp + hl ||
        strspn(colon + 1, "0123456789") != (size_t)(hp + hl - colon - 1) ||
        hl + pl + 9 >= sizeof(ei->base_url)) {
        return prov_fail(PROV_ERR_CONFIG,
                         "[ca] url \"%s\": expected est://HOST:PORT or https://HOST:PORT/PATH",
                         url);
    }
    snprintf(ei->base_url, sizeof(ei->base_url), "https://%.*s%.*s", (int)hl, hp, (int)pl,
             path);
    return 0;
}

static size_t on_data(char *p, size_t size, size_t n, void *arg)
{
    struct answer *a = arg;
    size_t len = size * n;
    unsigned char *grown;

    if (a->len + len > EST_ANSWER_MAX) {
        a->is_too_long = true;
        return 0;
    }
    grown = realloc(a->data, a->len + len + 1);
    if (grown == NULL) {
        return 0;
    }
    memcpy(grown + a->len, p, len);
    a->data = grown;
    a->len += len;
    a->data[a->len] = '\0';
    return len;
}

/* The station's identity on the TLS connection: its certificate and its key in the token. */
static CURLcode on_ssl_ctx(CURL *curl, void *ssl_ctx, void *arg)
{
    struct est_issuer *ei = arg;

    (void)curl;
    if (SSL_CTX_use_certificate(ssl_ctx, ei->remote.id.cert) != 1 ||
        SSL_CTX_use_PrivateKey(ssl_ctx, ei->remote.id.pkey) != 1) {
        ERR_clear_error();
        return CURLE_SSL_CERTPROBLEM;
    }
    return CURLE_OK;
}

/*
 * One request: GET (body NULL) or POST of body (base64 PKCS#10) to base_url/op. *status the
 * HTTP status; the answer in a. A request that got no HTTP answer is PROV_ERR_NOT_FOUND.
 */
static int request(struct est_issuer *ei, const char *op, const char *body, long *status,
                   struct answer *a)
{
    struct curl_slist *hdr = NULL;
    char url[600];
    CURLcode c;

    memset(a, 0, sizeof(*a));
    *status = 0;
    snprintf(url, sizeof(url), "%s/%s", ei->base_url, op);
    curl_easy_setopt(ei->curl, CURLOPT_URL, url);
    curl_easy_setopt(ei->curl, CURLOPT_WRITEDATA, a);
    if (body != NULL) {
        hdr = curl_slist_append(NULL, "Content-Type: application/pkcs10");
        if (hdr == NULL) {
            return prov_fail(PROV_ERR_NOMEM, "EST: out of memory");
        }
        curl_easy_setopt(ei->curl, CURLOPT_HTTPHEADER, hdr);
        curl_easy_setopt(ei->curl, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(ei->curl, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    } else {
        curl_easy_setopt(ei->curl, CURLOPT_HTTPHEADER, NULL);
        curl_easy_setopt(ei->curl, CURLOPT_HTTPGET, 1L);
    }
    c = curl_easy_perform(ei->curl);
    curl_easy_setopt(ei->curl, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(hdr);
    if (c != CURLE_OK) {
        free(a->data);
        a->data = NULL;
        return prov_fail(PROV_ERR_NOT_FOUND, "CA service %s/%s: %s", ei->base_url, op,
                         a->is_too_long ? "the answer is too long" : curl_easy_strerror(c));
    }
    curl_easy_getinfo(ei->curl, CURLINFO_RESPONSE_CODE, status);
    return 0;
}

/* The certificates of a base64 certs-only PKCS#7 (an EST answer); NULL when it is not one. */
static STACK_OF(X509) *certs_of(const struct answer *a)
{
    EVP_ENCODE_CTX *dc = EVP_ENCODE_CTX_new();
    unsigned char *der = malloc(a->len + 1);
    const unsigned char *p;
    STACK_OF(X509) *out = NULL;
    PKCS7 *p7 = NULL;
    int n = 0;
    int tail = 0;

    if (dc != NULL && der != NULL && a->len <= INT32_MAX) {
        EVP_DecodeInit(dc);
        if (EVP_DecodeUpdate(dc, der, &n, a->data, (int)a->len) >= 0 &&
            EVP_DecodeFinal(dc, der + n, &tail) == 1) {
            p = der;
            p7 = d2i_PKCS7(NULL, &p, n + tail);
        }
    }
    if (p7 != NULL && PKCS7_type_is_signed(p7) && p7->d.sign != NULL &&
        sk_X509_num(p7->d.sign->cert) > 0) {
        out = X509_chain_up_ref(p7->d.sign->cert);
    }
    ERR_clear_error();
    PKCS7_free(p7);
    free(der);
    EVP_ENCODE_CTX_free(dc);
    return out;
}

/* A refusal's text (the service's one line), printable and short. */
static void refusal_text(const struct answer *a, char *out, size_t cap)
{
    size_t n = 0;

    for (size_t i = 0; a->data != NULL && i < a->len && n + 1 < cap; i++) {
        unsigned char c = a->data[i];

        if (c == '\n' || c == '\r') {
            break;
        }
        out[n++] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    out[n] = '\0';
    if (n == 0) {
        snprintf(out, cap, "no reason given");
    }
}

/* cacerts: the chain, the root last and equal to root_cert, the rest chaining to it. */
static int fetch_chain(struct est_issuer *ei)
{
    STACK_OF(X509) *certs = NULL;
    STACK_OF(X509) *chain = sk_X509_new_null();
    X509_STORE_CTX *vc = X509_STORE_CTX_new();
    struct answer a;
    long status = 0;
    int r;

    r = request(ei, "cacerts", NULL, &status, &a);
    if (r == 0 && status != 200) {
        r = prov_fail(PROV_ERR_NOT_FOUND, "CA service %s/cacerts: HTTP %ld", ei->base_url,
                      status);
    }
    certs = r == 0 ? certs_of(&a) : NULL;
    free(a.data);
    if (r < 0) {
        goto out;
    }
    r = prov_fail(PROV_ERR_VERIFY, "CA service %s: its cacerts do not chain to %s", ei->base_url,
                  ei->remote.base.cfg->root_cert);
    for (int i = 0; certs != NULL && chain != NULL && i < sk_X509_num(certs); i++) {
        X509 *c = sk_X509_value(certs, i);

        if (X509_cmp(c, ei->remote.id.root) != 0 && X509_up_ref(c) && !sk_X509_push(chain, c)) {
            X509_free(c);
        }
    }
    if (chain != NULL && sk_X509_num(chain) >= 1 && X509_up_ref(ei->remote.id.root) &&
        !sk_X509_push(chain, ei->remote.id.root)) {
        X509_free(ei->remote.id.root);
    }
    if (chain != NULL && sk_X509_num(chain) >= 2 && sk_X509_num(chain) == sk_X509_num(certs) &&
        vc != NULL &&
        X509_STORE_CTX_init(vc, ei->remote.id.trust, sk_X509_value(chain, 0), chain) &&
        X509_verify_cert(vc) == 1) {
        prov_error_clear();
        ei->remote.chain = chain;
        chain = NULL;
        r = 0;
    }
out:
    ERR_clear_error();
    X509_STORE_CTX_free(vc);
    sk_X509_pop_free(chain, X509_free);
    sk_X509_pop_free(certs, X509_free);
    return r;
}

/* The CSR, DER then base64 on one line (RFC 7030 section 4.2.1). */
static char *csr_base64(X509_REQ *req)
{
    unsigned char *der = NULL;
    int n = i2d_X509_REQ(req, &der);
    char *b64 = n > 0 ? malloc((size_t)(n + 2) / 3 * 4 + 1) : NULL;

    if (b64 != NULL) {
        EVP_EncodeBlock((unsigned char *)b64, der, n);
    }
    OPENSSL_free(der);
    return b64;
}

static int curl_new(struct est_issuer *ei, const struct prov_config *cfg);

/*
 * The station's identity, the HTTP client, then the chain from the service: at open, or at
 * the first issue of an issuer opened deferred (`sign` applies the CSR policy first).
 */
static int est_connect(struct est_issuer *ei)
{
    int r = 0;

    if (ei->remote.id.cert == NULL) {
        r = prov_station_identity_open(ei->remote.base.cfg, &ei->remote.id);
    }
    if (r == 0 && ei->curl == NULL) {
        r = curl_new(ei, ei->remote.base.cfg);
    }
    if (r == 0) {
        /* Before anything else: a service that does not answer stops the run here (exit 4). */
        r = fetch_chain(ei);
    }
    return r;
}

static int est_issue(struct prov_issuer *is, X509_REQ *req, const struct prov_request *rq,
                     X509 **out)
{
    struct est_issuer *ei = est_of(is);
    STACK_OF(X509) *certs = NULL;
    X509 *cert = NULL;
    struct answer a = {0};
    char why[256];
    long status = 0;
    char *body;
    int r;

    *out = NULL;
    r = prov_remote_check(is, rq, req);
    if (r < 0) {
        return r;
    }
    if (ei->remote.chain == NULL) {
        r = est_connect(ei); /* opened deferred: the service is asked now */
        if (r < 0) {
            return r;
        }
    }
    body = csr_base64(req);
    if (body == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "EST: out of memory");
    }
    pthread_mutex_lock(&ei->remote.lock);
    /* a station's reissue is a simplereenroll with its own certificate (doc/ca-service.md) */
    r = request(ei, rq->record.is_reissue ? "simplereenroll" : "simpleenroll", body, &status,
                &a);
    pthread_mutex_unlock(&ei->remote.lock);
    free(body);
    if (r == 0 && status != 200) {
        refusal_text(&a, why, sizeof(why));
        r = prov_fail(status == 409 ? PROV_ERR_ALREADY_ISSUED
                      : status >= 500 ? PROV_ERR_NOT_FOUND : PROV_ERR_POLICY,
                      "CA service %s refused the certificate of %s: HTTP %ld: %s",
                      ei->base_url, rq->serial, status, why);
    }
    certs = r == 0 ? certs_of(&a) : NULL;
    free(a.data);
    if (r < 0) {
        return r;
    }
    cert = sk_X509_value(certs, 0);
    if (cert == NULL || X509_check_issued(sk_X509_value(ei->remote.chain, 0), cert) != X509_V_OK ||
        EVP_PKEY_eq(X509_get0_pubkey(cert), X509_REQ_get0_pubkey(req)) != 1 || !X509_up_ref(cert)) {
        sk_X509_pop_free(certs, X509_free);
        return prov_fail(PROV_ERR_VERIFY, "CA service %s: the certificate of %s is not for the "
                         "CSR's key or not issued by its intermediate", ei->base_url,
                         rq->serial);
    }
    sk_X509_pop_free(certs, X509_free);
    *out = cert;
    return 0;
}

static int est_delivered(struct prov_issuer *is, X509 *cert)
{
    (void)is;
    (void)cert;
    return 0; /* EST has no confirmation: the service's record stays "issued" */
}

static void est_close(struct prov_issuer *is)
{
    struct est_issuer *ei = est_of(is);

    if (ei->curl != NULL) {
        curl_easy_cleanup(ei->curl);
    }
    prov_remote_free(&ei->remote);
}

static const struct prov_issuer_ops est_ops = {
    .name = "est",
    .is_remote = true,
    .check_device = prov_remote_check_device,
    .check = prov_remote_check,
    .issue = est_issue,
    .chain = prov_remote_chain,
    .delivered = est_delivered,
    .record = prov_remote_record,
    .close = est_close,
};

static int curl_new(struct est_issuer *ei, const struct prov_config *cfg)
{
    const char *tls_ca = cfg->ca_tls_ca != NULL ? cfg->ca_tls_ca : cfg->root_cert;

    /* libcurl is loaded at the first EST service opened, not at start (curl_api.h) */
    if (prov_curl_load() < 0) {
        return prov_fail(PROV_ERR_INTERNAL, "EST: %s", prov_curl_why());
    }
    ei->curl = curl_easy_init();
    if (ei->curl == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "EST: cannot start libcurl");
    }
    curl_easy_setopt(ei->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(ei->curl, CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(ei->curl, CURLOPT_CAINFO, tls_ca);
    curl_easy_setopt(ei->curl, CURLOPT_CAPATH, NULL);
    curl_easy_setopt(ei->curl, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(ei->curl, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(ei->curl, CURLOPT_SSL_CTX_FUNCTION, on_ssl_ctx);
    curl_easy_setopt(ei->curl, CURLOPT_SSL_CTX_DATA, ei);
    curl_easy_setopt(ei->curl, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(ei->curl, CURLOPT_CONNECTTIMEOUT, 30L);
    curl_easy_setopt(ei->curl, CURLOPT_TIMEOUT, 60L);
    return 0;
}

int prov_issuer_est_open(const struct prov_config *cfg, bool is_deferred,
                         struct prov_issuer **out)
{
    struct est_issuer *ei = prov_remote_new(sizeof(*ei), &est_ops, cfg);
    int r;

    *out = NULL;
    if (ei == NULL) {
        return PROV_ERR_NOMEM;
    }
    r = parse_url(cfg->ca_url, ei);
    if (r == 0 && is_deferred) {
        *out = &ei->remote.base;
        return 0;
    }
    if (r == 0) {
        r = est_connect(ei);
    }
    if (r < 0) {
        est_close(&ei->remote.base);
        return r;
    }
    *out = &ei->remote.base;
    return 0;
}
