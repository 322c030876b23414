/* SPDX-License-Identifier: Apache-2.0 */
/* The CMP signer's key and certificate in the CA token and CA directory (cmp_signer.h). */
#include "cmp_signer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "backend.h"
#include "ca_index.h"
#include "cmp_asn1.h"
#include "device.h"
#include "durable.h"
#include "error.h"
#include "lot_signer.h"
#include "signer.h"

#define SIGNER_LABEL "cmp-signer"
#define SIGNER_INDEX_NAME "ca:cmp-signer"
#define SIGNER_MIN_LEFT_S 86400

/*
 * The certificate on file is still the one to use: the intermediate's, living long enough,
 * and a CMP signer's (id-kp-cmcCA, cmp_asn1.h): one an older version made without it is
 * replaced, as the tool's client now refuses answers it signs.
 */
static bool is_current(X509 *cert, const struct prov_ca *ca)
{
    time_t soon = time(NULL) + SIGNER_MIN_LEFT_S;

    return X509_check_issued(ca->cert, cert) == X509_V_OK && prov_cmp_is_signer_cert(cert) &&
           X509_cmp_time(X509_get0_notAfter(cert), &soon) > 0 &&
           X509_cmp_current_time(X509_get0_notBefore(cert)) < 0;
}

static const struct prov_ca_signer_names cmp_signer_names = {
    .role = "CMP Signer",
    .label = SIGNER_LABEL,
    .index_name = SIGNER_INDEX_NAME,
    .issued_by = "ca serve",
    /* RFC 9480 section 2.2: the CA's own CMP protection certificate (cmp_asn1.h) */
    .ext_key_usage = "cmcCA",
};

/* A new key in the CA token and its certificate: recorded in the CA index, then on file. */
static int renew(const struct prov_config *cfg, struct prov_ca *ca, const char *path,
                 struct prov_cmp_signer *s)
{
    unsigned char id[16];
    struct prov_keygen_params kp = {.type = PROV_KEY_EC_P256, .label = SIGNER_LABEL, .id = id,
                                    .id_len = sizeof(id)};
    X509 *cert = NULL;
    char *pem = NULL;
    long pem_len;
    BIO *b = NULL;
    int r;

    (void)cfg;
    if (RAND_bytes(id, sizeof(id)) != 1) {
        return prov_fail_ossl(PROV_ERR_CRYPTO, "CMP signer: no randomness for the key id");
    }
    r = ca->dev->ops->generate_key(ca->dev, &kp, &s->hsm_key);
    if (r == 0) {
        r = prov_ca_signer_issue(ca, s->hsm_key->pub, &cmp_signer_names, true, &cert);
    }
    if (r == 0) {
        b = BIO_new(BIO_s_mem());
        r = b != NULL && PEM_write_bio_X509(b, cert) == 1 ? 0 : PROV_ERR_NOMEM;
    }
    if (r == 0) {
        pem_len = BIO_get_mem_data(b, &pem);
        r = prov_atomic_write_file(path, pem, (size_t)pem_len, 0644);
    }
    if (r == 0) {
        r = prov_ca_index_delivered(ca->index, cert);
    }
    BIO_free(b);
    if (r < 0) {
        /* No key left in the CA token that no certificate names. */
        if (s->hsm_key != NULL) {
            ca->dev->ops->delete_key(ca->dev, s->hsm_key);
            prov_key_free(s->hsm_key);
            s->hsm_key = NULL;
        }
        X509_free(cert);
        return r;
    }
    s->cert = cert;
    return 0;
}

int prov_cmp_signer_open(const struct prov_config *cfg, struct prov_ca *ca,
                         struct prov_cmp_signer *s)
{
    char *path = NULL;
    X509 *cert;
    int r;

    memset(s, 0, sizeof(*s));
    if (asprintf(&path, "%s/cmp-signer.crt", cfg->ca_dir) < 0) {
        return prov_fail(PROV_ERR_NOMEM, "CMP signer: out of memory");
    }
    cert = prov_cmp_read_cert(path);
    r = cert != NULL && is_current(cert, ca)
            ? ca->dev->ops->find_key_by_public(ca->dev, X509_get0_pubkey(cert), &s->hsm_key)
            : PROV_ERR_NOT_FOUND;
    if (r == 0) {
        s->cert = cert;
    } else if (r == PROV_ERR_NOT_FOUND) {
        prov_error_clear();
        r = renew(cfg, ca, path, s);
        X509_free(cert);
    } else {
        /* the token failed the look-up (gone, restarting): a new key would be wrong */
        X509_free(cert);
    }
    if (r == 0) {
        r = prov_check_key_protection(s->hsm_key, "CMP signer key");
    }
    if (r == 0) {
        r = prov_signer_pkey(s->hsm_key, &s->key);
    }
    free(path);
    if (r < 0) {
        prov_cmp_signer_close(s);
    }
    return r;
}

void prov_cmp_signer_close(struct prov_cmp_signer *s)
{
    EVP_PKEY_free(s->key);
    prov_key_free(s->hsm_key);
    X509_free(s->cert);
    memset(s, 0, sizeof(*s));
}
