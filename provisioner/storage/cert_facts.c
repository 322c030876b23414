/* SPDX-License-Identifier: Apache-2.0 */
/* The facts of a certificate that identity.json, results and --json output show. */
#include "cert_facts.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "cert_der.h"
#include "error.h"
#include "hex.h"

static int rfc3339(const ASN1_TIME *t, char *out, size_t cap)
{
    struct tm tm;

    if (t == NULL || !ASN1_TIME_to_tm(t, &tm) ||
        strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) {
        return prov_fail(PROV_ERR_INPUT, "certificate: unreadable validity time");
    }
    return 0;
}

static int name_line(const X509_NAME *name, char *out, size_t cap)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *data = NULL;
    long len;

    /* RFC 2253 order and escaping, but UTF-8 kept as is: the JSON is UTF-8 anyway. */
    if (bio == NULL ||
        X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253 & ~(unsigned long)ASN1_STRFLGS_ESC_MSB) <
            0) {
        BIO_free(bio);
        return prov_fail_ossl(PROV_ERR_CRYPTO, "certificate: cannot print name");
    }
    len = BIO_get_mem_data(bio, &data);
    snprintf(out, cap, "%.*s", (int)len, data);
    BIO_free(bio);
    return 0;
}

/*
 * The facts of a certificate object, kept with it (ex_data): one device's certificate is asked
 * for them by the enrollment's result, the journal, the CA index (twice) and identity.json.
 * They are used only while the object's DER still has the SHA-256 they name, which is itself
 * kept with the signature it was computed under (provisioner/support/cert_der.c).
 */
static pthread_mutex_t kept_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t kept_once = PTHREAD_ONCE_INIT;
static int kept_index = -1;

static void kept_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    free(ptr);
}

static void kept_init(void)
{
    kept_index = X509_get_ex_new_index(0, NULL, NULL, NULL, kept_free);
}

/* The kept facts of cert into f when they are those of the DER whose SHA-256 is sha256_hex. */
static bool kept_facts_get(X509 *cert, const char *sha256_hex, struct prov_cert_facts *f)
{
    const struct prov_cert_facts *k;
    bool found = false;

    pthread_once(&kept_once, kept_init);
    if (kept_index < 0) {
        return false;
    }
    pthread_mutex_lock(&kept_lock);
    k = X509_get_ex_data(cert, kept_index);
    if (k != NULL && strcmp(k->sha256_hex, sha256_hex) == 0) {
        *f = *k;
        found = true;
    }
    pthread_mutex_unlock(&kept_lock);
    return found;
}

static void kept_facts_put(X509 *cert, const struct prov_cert_facts *f)
{
    struct prov_cert_facts *k;

    if (kept_index < 0 || (k = malloc(sizeof(*k))) == NULL) {
        return; /* only an optimisation */
    }
    *k = *f;
    pthread_mutex_lock(&kept_lock);
    free(X509_get_ex_data(cert, kept_index));
    if (X509_set_ex_data(cert, kept_index, k) != 1) {
        free(k);
    }
    pthread_mutex_unlock(&kept_lock);
}

int prov_cert_facts(X509 *cert, struct prov_cert_facts *f)
{
    const ASN1_INTEGER *serial;
    unsigned char md[32];
    int n;
    int r;

    memset(f, 0, sizeof(*f));
    if (cert == NULL) {
        return prov_fail(PROV_ERR_INPUT, "certificate: none given");
    }
    /* the DER's hash is kept with the object (cert_der.h) */
    r = prov_cert_sha256(cert, md);
    if (r < 0) {
        return r;
    }
    prov_hex_encode(md, sizeof(md), f->sha256_hex);
    if (kept_facts_get(cert, f->sha256_hex, f)) {
        return 0;
    }
    serial = X509_get0_serialNumber(cert);
    n = serial ? ASN1_STRING_length(serial) : 0;
    if (n <= 0 || (size_t)n * 2 >= sizeof(f->serial_hex) ||
        ASN1_STRING_type(serial) == V_ASN1_NEG_INTEGER) {
        memset(f, 0, sizeof(*f));
        return prov_fail(PROV_ERR_INPUT, "certificate: serial number missing, negative or longer "
                         "than 32 bytes");
    }
    prov_hex_encode(ASN1_STRING_get0_data(serial), (size_t)n, f->serial_hex);
    if ((r = rfc3339(X509_get0_notBefore(cert), f->not_before, sizeof(f->not_before))) < 0 ||
        (r = rfc3339(X509_get0_notAfter(cert), f->not_after, sizeof(f->not_after))) < 0 ||
        (r = name_line(X509_get_issuer_name(cert), f->issuer, sizeof(f->issuer))) < 0 ||
        (r = name_line(X509_get_subject_name(cert), f->subject, sizeof(f->subject))) < 0) {
        memset(f, 0, sizeof(*f));
        return r;
    }
    kept_facts_put(cert, f);
    return 0;
}
