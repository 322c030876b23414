/* SPDX-License-Identifier: Apache-2.0 */
/* A certificate object's DER and its SHA-256, encoded once per object (cert_der.h). */
#include "cert_der.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "error.h"

/*
 * A certificate object's DER and the SHA-256 of that, kept with it (ex_data). One device's
 * certificate is encoded for the token object, the journal, the CA index and the storage, and
 * hashed by the chain check's memo and for its facts (provisioner/storage/cert_facts.c); a
 * certificate just signed is encoded afresh by every i2d_X509 (about 60,000 instructions,
 * bench/README.md, "Profile"). It is kept with the signature it was made under and used only
 * while the object still carries it: a certificate object is not changed once signed, and one
 * signed again is encoded again.
 */
#define KEPT_SIG_MAX 1024

struct kept_der {
    unsigned char sha256[32];
    unsigned char *der; /* OPENSSL_malloc'd by i2d_X509 */
    size_t der_len;
    size_t sig_len;
    unsigned char sig[KEPT_SIG_MAX];
};

static pthread_mutex_t der_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t der_once = PTHREAD_ONCE_INIT;
static int der_index = -1;

static void kept_entry_free(struct kept_der *k)
{
    if (k != NULL) {
        OPENSSL_free(k->der);
        free(k);
    }
}

static void der_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    kept_entry_free(ptr);
}

static void der_init(void)
{
    der_index = X509_get_ex_new_index(0, NULL, NULL, NULL, der_free);
}

static const ASN1_BIT_STRING *signature_of(X509 *cert)
{
    const ASN1_BIT_STRING *sig = NULL;

    X509_get0_signature(&sig, NULL, cert);
    return sig != NULL && sig->length > 0 && sig->length <= KEPT_SIG_MAX ? sig : NULL;
}

/*
 * With der_lock held: the entry for cert under its current signature, made (DER and SHA-256)
 * when there is none. *is_own says the caller must free it: a certificate without a
 * signature that fits, or one the entry cannot be attached to, is encoded every time.
 */
static struct kept_der *kept_entry(X509 *cert, bool *is_own)
{
    const ASN1_BIT_STRING *sig = signature_of(cert);
    struct kept_der *old = der_index >= 0 ? X509_get_ex_data(cert, der_index) : NULL;
    struct kept_der *k;
    int len;

    *is_own = false;
    if (old != NULL && sig != NULL && old->sig_len == (size_t)sig->length &&
        memcmp(old->sig, sig->data, old->sig_len) == 0) {
        return old;
    }
    k = calloc(1, sizeof(*k));
    if (k == NULL) {
        prov_fail(PROV_ERR_NOMEM, "certificate: out of memory");
        return NULL;
    }
    len = i2d_X509(cert, &k->der);
    if (len <= 0 || SHA256(k->der, (size_t)len, k->sha256) == NULL) {
        prov_fail_ossl(PROV_ERR_CRYPTO, "certificate: cannot encode");
        kept_entry_free(k);
        return NULL;
    }
    k->der_len = (size_t)len;
    if (sig != NULL) {
        k->sig_len = (size_t)sig->length;
        memcpy(k->sig, sig->data, k->sig_len);
    }
    if (sig == NULL || der_index < 0 || X509_set_ex_data(cert, der_index, k) != 1) {
        *is_own = true; /* only an optimisation */
    } else {
        kept_entry_free(old);
    }
    return k;
}

/* The kept DER (a copy, when der is not NULL) and SHA-256 (when sha256 is not NULL) of cert. */
static int kept_copy(X509 *cert, unsigned char **der, size_t *len, unsigned char *sha256)
{
    struct kept_der *k;
    bool is_own = false;
    int r = 0;

    if (cert == NULL) {
        return prov_fail(PROV_ERR_INPUT, "certificate: none given");
    }
    pthread_once(&der_once, der_init);
    pthread_mutex_lock(&der_lock);
    k = kept_entry(cert, &is_own);
    if (k == NULL) {
        r = prov_error_code();
    } else if (der != NULL && is_own) {
        *der = k->der; /* handed over whole */
        k->der = NULL;
    } else if (der != NULL && (*der = OPENSSL_memdup(k->der, k->der_len)) == NULL) {
        r = prov_fail(PROV_ERR_NOMEM, "certificate: out of memory");
    }
    if (r == 0 && len != NULL) {
        *len = k->der_len;
    }
    if (r == 0 && sha256 != NULL) {
        memcpy(sha256, k->sha256, sizeof(k->sha256));
    }
    if (is_own) {
        kept_entry_free(k);
    }
    pthread_mutex_unlock(&der_lock);
    return r;
}

int prov_cert_der(X509 *cert, unsigned char **der, size_t *len)
{
    *der = NULL;
    *len = 0;
    return kept_copy(cert, der, len, NULL);
}

int prov_cert_sha256(X509 *cert, unsigned char out[32])
{
    return kept_copy(cert, NULL, NULL, out);
}
