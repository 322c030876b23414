/* SPDX-License-Identifier: Apache-2.0 */
/* Protection certificates whose chain verified, by the SHA-256 of their DER: cmp_station_cache.h */
#include "cmp_station_cache.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/asn1.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <openssl/x509_vfy.h>

#include "error.h"

struct entry {
    unsigned char digest[SHA256_DIGEST_LENGTH];
    X509 *cert;    /* NULL: a free slot */
    uint64_t used; /* the look-up that last found or added it: the least recent goes first */
};

/* Used by the CA service's workers at once (service/http.c): lock guards entries and clock. */
struct prov_cmp_station_cache {
    pthread_mutex_t lock;
    struct entry *entries;
    size_t cap;
    uint64_t clock;
};

int prov_cmp_station_cache_new(size_t cap, struct prov_cmp_station_cache **out)
{
    struct prov_cmp_station_cache *c = calloc(1, sizeof(*c));

    *out = NULL;
    if (c == NULL || cap == 0 || (c->entries = calloc(cap, sizeof(*c->entries))) == NULL) {
        free(c);
        return prov_fail(PROV_ERR_NOMEM, "CMP: out of memory");
    }
    c->cap = cap;
    pthread_mutex_init(&c->lock, NULL);
    *out = c;
    return 0;
}

void prov_cmp_station_cache_clear(struct prov_cmp_station_cache *c)
{
    if (c == NULL) {
        return;
    }
    pthread_mutex_lock(&c->lock);
    for (size_t i = 0; i < c->cap; i++) {
        X509_free(c->entries[i].cert);
        c->entries[i].cert = NULL;
    }
    pthread_mutex_unlock(&c->lock);
}

void prov_cmp_station_cache_free(struct prov_cmp_station_cache *c)
{
    if (c == NULL) {
        return;
    }
    prov_cmp_station_cache_clear(c);
    pthread_mutex_destroy(&c->lock);
    free(c->entries);
    free(c);
}

/* One DER TLV at *p (definite length, within end): its tag, class and contents; *p past it. */
static bool next_tlv(const unsigned char **p, const unsigned char *end, int *tag, int *cls,
                     const unsigned char **contents, long *len)
{
    const unsigned char *q = *p;
    int ret;

    if (*p >= end) {
        return false;
    }
    ret = ASN1_get_object(&q, len, tag, cls, end - *p);
    if ((ret & 0x80) != 0 || (ret & 0x01) != 0) {
        ERR_clear_error();
        return false;
    }
    *contents = q;
    *p = q + *len;
    return true;
}

/* Where a DER PKIMessage's parts lie (extra_field); all pointers into the message. */
struct msg_parts {
    const unsigned char *contents; /* the outer SEQUENCE's contents */
    const unsigned char *end;      /* and their end */
    const unsigned char *extra;    /* the [1] extraCerts field, whole */
    const unsigned char *extra_in; /* its contents */
    const unsigned char *after;    /* what follows it */
    bool is_whole;                 /* the outer SEQUENCE is all of the bytes */
};

/*
 * PKIMessage ::= SEQUENCE { header, body, [0] protection OPTIONAL, [1] extraCerts OPTIONAL }:
 * the extraCerts field's place in der, with only lengths read. false when there is none.
 */
static bool extra_field(const unsigned char *der, size_t len, struct msg_parts *m)
{
    const unsigned char *p = der;
    const unsigned char *field;
    const unsigned char *in;
    int tag;
    int cls;
    long n;

    memset(m, 0, sizeof(*m));
    if (len > (size_t)INT32_MAX || !next_tlv(&p, der + len, &tag, &cls, &m->contents, &n) ||
        tag != V_ASN1_SEQUENCE || cls != V_ASN1_UNIVERSAL) {
        return false;
    }
    m->is_whole = p == der + len;
    m->end = m->contents + n;
    p = m->contents;
    for (int i = 0;; i++) {
        field = p;
        if (!next_tlv(&p, m->end, &tag, &cls, &in, &n)) {
            return false;
        }
        if (i < 2 || (cls == V_ASN1_CONTEXT_SPECIFIC && tag == 0)) {
            continue; /* header, body, protection */
        }
        if (cls != V_ASN1_CONTEXT_SPECIFIC || tag != 1) {
            return false;
        }
        m->extra = field;
        m->extra_in = in;
        m->after = p;
        return true;
    }
}

int prov_cmp_station_cache_first_extra(const unsigned char *der, size_t len,
                                       const unsigned char **cert, size_t *cert_len)
{
    struct msg_parts m;
    const unsigned char *p;
    const unsigned char *in;
    const unsigned char *start;
    int tag;
    int cls;
    long n;

    *cert = NULL;
    *cert_len = 0;
    if (!extra_field(der, len, &m)) {
        return PROV_ERR_INPUT;
    }
    /* [1] EXPLICIT SEQUENCE SIZE (1..MAX) OF CMPCertificate: its first element, whole */
    p = m.extra_in;
    if (!next_tlv(&p, m.after, &tag, &cls, &in, &n) || tag != V_ASN1_SEQUENCE) {
        return PROV_ERR_INPUT;
    }
    start = in;
    p = in;
    if (!next_tlv(&p, in + n, &tag, &cls, &in, &n) || tag != V_ASN1_SEQUENCE) {
        return PROV_ERR_INPUT;
    }
    *cert = start;
    *cert_len = (size_t)(p - start);
    return 0;
}

int prov_cmp_station_cache_strip_extra(const unsigned char *der, size_t len, unsigned char **out,
                                       size_t *out_len)
{
    struct msg_parts m;
    unsigned char *q;
    long keep;
    int size;

    *out = NULL;
    *out_len = 0;
    if (!extra_field(der, len, &m) || !m.is_whole || m.after != m.end) {
        return PROV_ERR_INPUT; /* none, not the last field, or bytes after the message */
    }
    keep = (long)(m.extra - m.contents);
    size = ASN1_object_size(1, keep, V_ASN1_SEQUENCE);
    if (size <= 0) {
        return PROV_ERR_INPUT;
    }
    *out = malloc((size_t)size);
    if (*out == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "CMP: out of memory");
    }
    q = *out;
    ASN1_put_object(&q, 1, (int)keep, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL);
    memcpy(q, m.contents, (size_t)keep);
    *out_len = (size_t)(q - *out) + (size_t)keep;
    return 0;
}

/* Whether now is within cert's validity period (an unreadable time is not). */
static bool is_current(const X509 *cert, time_t now)
{
    int before = ASN1_TIME_cmp_time_t(X509_get0_notBefore(cert), now);
    int after = ASN1_TIME_cmp_time_t(X509_get0_notAfter(cert), now);

    return (before == -1 || before == 0) && (after == 1 || after == 0);
}

/* Whether cert chains to trust through chain, at now (cmp_requests.c's prov_cmp_request_station). */
static bool chains(X509 *cert, X509_STORE *trust, STACK_OF(X509) *chain, time_t now)
{
    X509_STORE_CTX *vc = X509_STORE_CTX_new();
    bool ok = vc != NULL && X509_STORE_CTX_init(vc, trust, cert, chain);

    if (ok) {
        X509_STORE_CTX_set_time(vc, 0, now);
        ok = X509_verify_cert(vc) == 1;
    }
    X509_STORE_CTX_free(vc);
    return ok;
}

static struct entry *find(struct prov_cmp_station_cache *c, const unsigned char *digest)
{
    for (size_t i = 0; i < c->cap; i++) {
        if (c->entries[i].cert != NULL &&
            memcmp(c->entries[i].digest, digest, sizeof(c->entries[i].digest)) == 0) {
            return &c->entries[i];
        }
    }
    return NULL;
}

/* A free slot, or else the least recently used one, emptied. */
static struct entry *slot(struct prov_cmp_station_cache *c)
{
    struct entry *e = &c->entries[0];

    for (size_t i = 0; i < c->cap && e->cert != NULL; i++) {
        if (c->entries[i].cert == NULL || c->entries[i].used < e->used) {
            e = &c->entries[i];
        }
    }
    X509_free(e->cert);
    e->cert = NULL;
    return e;
}

X509 *prov_cmp_station_cache_pin(struct prov_cmp_station_cache *c, const unsigned char *der,
                                 size_t len, X509_STORE *trust, STACK_OF(X509) *chain,
                                 time_t now, bool *is_new)
{
    unsigned char digest[SHA256_DIGEST_LENGTH];
    const unsigned char *cert_der;
    const unsigned char *p;
    size_t cert_len;
    struct entry *e;
    X509 *cert = NULL;

    *is_new = false;
    if (prov_cmp_station_cache_first_extra(der, len, &cert_der, &cert_len) < 0 ||
        !EVP_Digest(cert_der, cert_len, digest, NULL, EVP_sha256(), NULL)) {
        goto out;
    }
    pthread_mutex_lock(&c->lock);
    e = find(c, digest);
    if (e != NULL) {
        e->used = ++c->clock;
        /* the chain verified once; the validity period is checked on every request */
        if (!is_current(e->cert, now)) {
            X509_free(e->cert);
            e->cert = NULL;
        } else {
            cert = X509_up_ref(e->cert) ? e->cert : NULL;
        }
        pthread_mutex_unlock(&c->lock);
        goto out;
    }
    pthread_mutex_unlock(&c->lock);
    /* decoded and verified outside the lock: the other workers' look-ups go on meanwhile */
    p = cert_der;
    cert = d2i_X509(NULL, &p, (long)cert_len);
    if (cert == NULL || p != cert_der + cert_len || !chains(cert, trust, chain, now) ||
        !is_current(cert, now)) {
        X509_free(cert);
        cert = NULL;
        goto out;
    }
    *is_new = true; /* kept only once a message verified with it */
out:
    ERR_clear_error();
    return cert;
}

void prov_cmp_station_cache_keep(struct prov_cmp_station_cache *c, X509 *cert)
{
    unsigned char digest[SHA256_DIGEST_LENGTH];
    unsigned char *der = NULL;
    struct entry *e;
    int n;

    if (c == NULL || cert == NULL) {
        return;
    }
    /*
     * Keyed as pin looks it up: the digest of the DER the message carried, which is what
     * i2d gives back for a certificate decoded from it and not changed since.
     */
    n = i2d_X509(cert, &der);
    if (n <= 0 || !EVP_Digest(der, (size_t)n, digest, NULL, EVP_sha256(), NULL)) {
        OPENSSL_free(der);
        ERR_clear_error();
        return;
    }
    OPENSSL_free(der);
    pthread_mutex_lock(&c->lock);
    if (find(c, digest) == NULL && X509_up_ref(cert)) {
        e = slot(c);
        memcpy(e->digest, digest, sizeof(digest));
        e->cert = cert;
        e->used = ++c->clock;
    }
    pthread_mutex_unlock(&c->lock);
}

void prov_cmp_station_cache_drop(struct prov_cmp_station_cache *c, const X509 *cert)
{
    if (c == NULL || cert == NULL) {
        return;
    }
    pthread_mutex_lock(&c->lock);
    for (size_t i = 0; i < c->cap; i++) {
        if (c->entries[i].cert == cert) {
            X509_free(c->entries[i].cert);
            c->entries[i].cert = NULL;
        }
    }
    pthread_mutex_unlock(&c->lock);
}

size_t prov_cmp_station_cache_count(struct prov_cmp_station_cache *c)
{
    size_t n = 0;

    pthread_mutex_lock(&c->lock);
    for (size_t i = 0; i < c->cap; i++) {
        n += c->entries[i].cert != NULL;
    }
    pthread_mutex_unlock(&c->lock);
    return n;
}
