/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The lot signer (lot_signer.h): a key of its own in the CA token, certified by the
 * intermediate for digitalSignature only, which signs lot records as CMS.
 */
#include "lot_signer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "backend.h"
#include "ca.h"
#include "ca_index.h"
#include "chain.h"
#include "device.h"
#include "error.h"
#include "issue.h"
#include "log.h"
#include "signer.h"
#include "storage.h"

#define LOT_SIGNER_ID_BYTES 16
#define CLOCK_SKEW_SECONDS 300

struct prov_lot_signer {
    X509 *cert;
    STACK_OF(X509) *chain; /* the CA's chain.pem: intermediate(s) then root */
    struct prov_device *dev;
    struct prov_key *key;
    EVP_PKEY *pkey; /* private operations in the token */
};

int prov_lot_signer_uri(const char *ca_key, char **out)
{
    const char *query;
    const char *p;
    size_t path_len;
    char *buf;
    size_t n = 0;

    *out = NULL;
    if (ca_key == NULL || strncmp(ca_key, "pkcs11:", 7) != 0) {
        return prov_fail(PROV_ERR_CONFIG,
                         "[ca] intermediate_key \"%s\": the lot signer lives in the CA's "
                         "PKCS#11 token, which needs a pkcs11: URI",
                         ca_key ? ca_key : "");
    }
    query = strchr(ca_key, '?');
    path_len = query ? (size_t)(query - ca_key) : strlen(ca_key);
    buf = malloc(strlen(ca_key) + sizeof(";object=" PROV_LOT_SIGNER_LABEL));
    if (buf == NULL) {
        return PROV_ERR_NOMEM;
    }
    memcpy(buf, "pkcs11:", 7);
    n = 7;
    /* Path attributes are ';'-separated (RFC 7512); object and id name the intermediate. */
    for (p = ca_key + 7; p < ca_key + path_len;) {
        const char *end = memchr(p, ';', (size_t)(ca_key + path_len - p));
        size_t len = end ? (size_t)(end - p) : (size_t)(ca_key + path_len - p);

        if (len > 0 && strncmp(p, "object=", 7) != 0 && strncmp(p, "id=", 3) != 0) {
            if (n > 7) {
                buf[n++] = ';';
            }
            memcpy(buf + n, p, len);
            n += len;
        }
        p += len + 1;
    }
    n += (size_t)sprintf(buf + n, "%sobject=%s", n > 7 ? ";" : "", PROV_LOT_SIGNER_LABEL);
    if (query != NULL) {
        strcpy(buf + n, query);
    }
    *out = buf;
    return 0;
}

/* CN "<intermediate CN> <role>" (or "Provisioner <role>"), the intermediate's O. */
static int signer_subject(X509 *issuer, const char *role, X509_NAME **out)
{
    const X509_NAME *in = X509_get_subject_name(issuer);
    X509_NAME *name = X509_NAME_new();
    char cn[256] = "Provisioner";
    char o[256];
    char full[300];
    int r = PROV_ERR_NOMEM;

    *out = NULL;
    if (name == NULL) {
        return r;
    }
    if (X509_NAME_get_text_by_NID(in, NID_organizationName, o, sizeof(o)) > 0 &&
        !X509_NAME_add_entry_by_NID(name, NID_organizationName, MBSTRING_UTF8,
                                    (unsigned char *)o, -1, -1, 0)) {
        goto out;
    }
    X509_NAME_get_text_by_NID(in, NID_commonName, cn, sizeof(cn));
    ERR_clear_error();
    snprintf(full, sizeof(full), "%.200s %.40s", cn, role);
    if (!X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_UTF8, (unsigned char *)full,
                                    -1, -1, 0)) {
        goto out;
    }
    *out = name;
    name = NULL;
    r = 0;
out:
    X509_NAME_free(name);
    return r;
}

/*
 * The certificate for pub, signed by the intermediate in the HSM: valid from now (less the
 * clock skew) until the intermediate's notAfter, CA:false, keyUsage digitalSignature only,
 * and the extendedKeyUsage names asks for.
 */
static int build_cert(const struct prov_ca *ca, EVP_PKEY *pub,
                      const struct prov_ca_signer_names *names, X509 **out)
{
    const char *role = names->role;
    ASN1_INTEGER *serial = NULL;
    X509_NAME *subject = NULL;
    X509 *cert = X509_new();
    X509V3_CTX ctx;
    int r;

    *out = NULL;
    if (cert == NULL) {
        return PROV_ERR_NOMEM;
    }
    r = prov_serial_random(&serial);
    if (r == 0) {
        r = signer_subject(ca->cert, role, &subject);
    }
    if (r < 0) {
        goto out;
    }
    if (!X509_set_version(cert, X509_VERSION_3) || !X509_set_serialNumber(cert, serial) ||
        !X509_set_subject_name(cert, subject) ||
        !X509_set_issuer_name(cert, X509_get_subject_name(ca->cert)) ||
        !X509_set_pubkey(cert, pub) ||
        !X509_gmtime_adj(X509_getm_notBefore(cert), -CLOCK_SKEW_SECONDS) ||
        !X509_set1_notAfter(cert, X509_get0_notAfter(ca->cert))) {
        r = prov_fail_ossl(PROV_ERR_CRYPTO, "building the %s's certificate", role);
        goto out;
    }
    X509V3_set_ctx(&ctx, ca->cert, cert, NULL, NULL, 0);
    if ((r = prov_ca_add_ext(cert, &ctx, NID_basic_constraints, "critical,CA:FALSE")) < 0 ||
        (r = prov_ca_add_ext(cert, &ctx, NID_key_usage, "critical,digitalSignature")) < 0 ||
        (r = prov_ca_add_ext(cert, &ctx, NID_subject_key_identifier, "hash")) < 0 ||
        (r = prov_ca_add_ext(cert, &ctx, NID_authority_key_identifier, "keyid:always")) < 0 ||
        (names->ext_key_usage != NULL &&
         (r = prov_ca_add_ext(cert, &ctx, NID_ext_key_usage, names->ext_key_usage)) < 0)) {
        goto out;
    }
    *out = cert;
    cert = NULL;
out:
    X509_NAME_free(subject);
    ASN1_INTEGER_free(serial);
    X509_free(cert);
    return r;
}

static const struct prov_ca_signer_names lot_signer_names = {
    .role = "Lot Signer",
    .label = PROV_LOT_SIGNER_LABEL,
    .index_name = PROV_LOT_SIGNER_INDEX_NAME,
    .issued_by = "lot signer",
};

int prov_ca_signer_issue(const struct prov_ca *ca, EVP_PKEY *pub,
                         const struct prov_ca_signer_names *names, bool is_reissue, X509 **out)
{
    struct prov_ca_record rec = {.issued_by = names->issued_by, .is_reissue = is_reissue};
    X509 *cert = NULL;
    int r;

    *out = NULL;
    r = build_cert(ca, pub, names, &cert);
    if (r == 0) {
        r = prov_ca_index_begin(ca->index, names->index_name, &rec, pub);
    }
    if (r < 0) {
        X509_free(cert);
        return r;
    }
    if (X509_sign(cert, ca->key, prov_key_type_digest(ca->hsm_key->type)) <= 0) {
        r = prov_fail_ossl(PROV_ERR_CRYPTO, "%s certificate: signing failed", names->role);
        r = prov_error_code() < 0 ? prov_error_code() : r;
        prov_ca_index_abort(ca->index);
        X509_free(cert);
        return r;
    }
    r = prov_ca_index_record(ca->index, names->index_name, &rec, names->label, cert, ca->cert);
    if (r < 0) {
        X509_free(cert);
        return r;
    }
    *out = cert;
    return 0;
}

static int write_cert(const char *ca_dir, X509 *cert)
{
    STACK_OF(X509) *sk = sk_X509_new_null();
    char *path = NULL;
    char *pem = NULL;
    size_t len = 0;
    int r = PROV_ERR_NOMEM;

    if (sk == NULL || !sk_X509_push(sk, cert) ||
        asprintf(&path, "%s/" PROV_LOT_SIGNER_CERT, ca_dir) < 0) {
        path = NULL;
        goto out;
    }
    r = prov_chain_to_pem(sk, &pem, &len);
    if (r == 0) {
        r = prov_atomic_write_file(path, pem, len, 0644);
    }
out:
    free(pem);
    free(path);
    sk_X509_free(sk); /* cert is borrowed */
    return r;
}

/*
 * The existing lot signer key, if any: refused without force; with it, *old is the key to
 * delete once its successor is in place (NULL when there is none).
 */
static int find_old_key(struct prov_device *dev, const char *uri, bool force,
                        struct prov_key **old)
{
    int r = dev->ops->find_key(dev, uri, old);

    if (r == PROV_ERR_NOT_FOUND) {
        prov_error_clear();
        *old = NULL;
        return 0;
    }
    if (r == 0 && !force) {
        r = prov_fail(PROV_ERR_ALREADY_ISSUED,
                      "lot signer %s: a key already exists on %s (use --force to replace it)",
                      uri, dev->name);
    }
    if (r < 0) {
        prov_key_free(*old);
        *old = NULL;
    }
    return r;
}

/* The replaced key, once the new lot signer is complete; a failure leaves both, and says so. */
static void delete_old_key(struct prov_device *dev, struct prov_key *old)
{
    if (old != NULL && dev->ops->delete_key(dev, old) < 0) {
        prov_warn("lot signer: the new key and certificate are in place, but the old key %s "
                  "could not be removed from %s (%s); remove it by its id before the next "
                  "--force",
                  old->uri, dev->name, prov_error_message());
        prov_error_clear();
    }
}

int prov_lot_signer_create(const struct prov_config *cfg, bool force, X509 **out)
{
    unsigned char id[LOT_SIGNER_ID_BYTES];
    struct prov_key *old = NULL;
    struct prov_key *key = NULL;
    struct prov_ca *ca = NULL;
    bool is_generated = false;
    char *uri = NULL;
    X509 *cert = NULL;
    int r;

    if (out != NULL) {
        *out = NULL;
    }
    r = prov_lot_signer_uri(cfg->ca_key, &uri);
    if (r == 0) {
        r = prov_ca_open(cfg, true, &ca);
    }
    if (r == 0) {
        r = find_old_key(ca->dev, uri, force, &old);
    }
    if (r < 0) {
        goto out;
    }
    if (RAND_bytes(id, sizeof(id)) != 1) {
        r = prov_fail_ossl(PROV_ERR_CRYPTO, "lot signer: no randomness for the key id");
        goto out;
    }
    /* The new key first, next to the old one (its own random id): the old key goes only once
     * the new one is certified and written, so a failure leaves the lot signer there was. */
    r = prov_ca_token_keygen(ca->dev,
                             ca->hsm_key->type == PROV_KEY_EC_P384 ? PROV_KEY_EC_P384
                                                                   : PROV_KEY_EC_P256,
                             PROV_LOT_SIGNER_LABEL, id, sizeof(id), "lot signer key", &key);
    if (r < 0) {
        goto out;
    }
    is_generated = true;
    r = prov_ca_signer_issue(ca, key->pub, &lot_signer_names, force, &cert);
    if (r == 0) {
        r = ca->dev->ops->store_certificate(ca->dev, key, cert);
    }
    if (r == 0) {
        r = write_cert(cfg->ca_dir, cert);
    }
    if (r == 0) {
        r = prov_ca_index_delivered(ca->index, cert);
    }
    if (r == 0) {
        delete_old_key(ca->dev, old);
    }
    if (r == 0 && out != NULL) {
        *out = cert;
        cert = NULL;
    }
out:
    if (r < 0 && is_generated) {
        /* No key left in the CA token that no certificate names. */
        ca->dev->ops->delete_key(ca->dev, key);
    }
    X509_free(cert);
    prov_key_free(key);
    prov_key_free(old);
    prov_ca_close(ca);
    free(uri);
    return r;
}

/* The certificate was issued by the intermediate and is valid now. */
static int check_cert(const char *path, X509 *cert, X509 *issuer)
{
    EVP_PKEY *ipub = X509_get0_pubkey(issuer);
    time_t now = time(NULL);

    if (X509_check_issued(issuer, cert) != X509_V_OK || ipub == NULL ||
        X509_verify(cert, ipub) != 1) {
        ERR_clear_error();
        return prov_fail(PROV_ERR_VERIFY,
                         "%s: not issued by this CA's intermediate; make a new one with "
                         "`provisioner lot signer --force`",
                         path);
    }
    if (X509_cmp_time(X509_get0_notAfter(cert), &now) <= 0 ||
        X509_cmp_time(X509_get0_notBefore(cert), &now) >= 0) {
        return prov_fail(PROV_ERR_VERIFY, "%s: not valid now; make a new one with "
                                          "`provisioner lot signer --force`",
                         path);
    }
    return 0;
}

static int load_cert(const struct prov_config *cfg, struct prov_lot_signer *s)
{
    STACK_OF(X509) *certs = NULL;
    char *path = NULL;
    int r;

    if (asprintf(&path, "%s/" PROV_LOT_SIGNER_CERT, cfg->ca_dir) < 0) {
        return PROV_ERR_NOMEM;
    }
    if (access(path, F_OK) != 0) {
        r = prov_fail(PROV_ERR_NOT_FOUND,
                      "no lot signer: %s does not exist; create it on the CA host with "
                      "`provisioner lot signer`",
                      path);
        goto out;
    }
    r = prov_chain_load_pem(path, &certs);
    if (r == 0 && sk_X509_num(certs) != 1) {
        r = prov_fail(PROV_ERR_INPUT, "%s: expected one certificate", path);
    }
    if (r == 0) {
        s->cert = sk_X509_shift(certs);
        r = check_cert(path, s->cert, sk_X509_value(s->chain, 0));
    }
out:
    sk_X509_pop_free(certs, X509_free);
    free(path);
    return r;
}

int prov_lot_signer_open(const struct prov_config *cfg, struct prov_lot_signer **out)
{
    struct prov_lot_signer *s = calloc(1, sizeof(*s));
    char *chain_path = NULL;
    int lock_fd = -1;
    int r = PROV_ERR_NOMEM;

    *out = NULL;
    if (s == NULL || asprintf(&chain_path, "%s/chain.pem", cfg->ca_dir) < 0) {
        chain_path = NULL;
        goto out;
    }
    r = prov_chain_load_pem(chain_path, &s->chain);
    if (r == 0 && sk_X509_num(s->chain) < 2) {
        r = prov_fail(PROV_ERR_INPUT, "%s: expected the intermediate then the root", chain_path);
    }
    if (r == 0) {
        r = load_cert(cfg, s);
    }
    if (r == 0 && cfg->ca_key == NULL) {
        r = prov_fail(PROV_ERR_CONFIG, "%s: [ca] intermediate_key is not set", cfg->path);
    }
    if (r < 0) {
        goto out;
    }
    /* The same lock as every other login to the CA token (ca_index.h). */
    r = prov_ca_index_token_lock(cfg->ca_dir, &lock_fd);
    if (r == 0) {
        r = prov_device_open_login(cfg, cfg->ca_key, cfg->ca_pin, "CA token PIN", false,
                                   &s->dev);
        prov_ca_index_token_unlock(lock_fd);
    }
    if (r == 0) {
        r = s->dev->ops->find_key_by_public(s->dev, X509_get0_pubkey(s->cert), &s->key);
        if (r == PROV_ERR_NOT_FOUND) {
            prov_error_clear();
            r = prov_fail(PROV_ERR_NOT_FOUND,
                          "lot signer: the key of %s/" PROV_LOT_SIGNER_CERT " is not on %s",
                          cfg->ca_dir, s->dev->name);
        }
    }
    if (r == 0) {
        r = prov_check_key_protection(s->key, "lot signer key");
    }
    if (r == 0) {
        r = prov_signer_pkey(s->key, &s->pkey);
    }
    if (r == 0) {
        *out = s;
        s = NULL;
    }
out:
    prov_lot_signer_close(s);
    free(chain_path);
    return r;
}

void prov_lot_signer_close(struct prov_lot_signer *s)
{
    if (s == NULL) {
        return;
    }
    prov_ca_token_key_free(s->pkey, s->key, s->dev);
    X509_free(s->cert);
    sk_X509_pop_free(s->chain, X509_free);
    free(s);
}

X509 *prov_lot_signer_cert(const struct prov_lot_signer *s)
{
    return s ? s->cert : NULL;
}

int prov_lot_signer_sign(struct prov_lot_signer *s, const void *data, size_t len,
                         unsigned char **der, size_t *der_len)
{
    const unsigned int flags = CMS_DETACHED | CMS_BINARY | CMS_PARTIAL | CMS_NOSMIMECAP;
    STACK_OF(X509) *certs = sk_X509_new_null();
    BIO *in = BIO_new_mem_buf(data, (int)len);
    CMS_ContentInfo *cms = NULL;
    unsigned char *p = NULL;
    int n;
    int r = PROV_ERR_NOMEM;

    *der = NULL;
    *der_len = 0;
    if (certs == NULL || in == NULL || !sk_X509_push(certs, sk_X509_value(s->chain, 0))) {
        goto out;
    }
    r = PROV_ERR_CRYPTO;
    cms = CMS_sign(NULL, NULL, certs, NULL, flags);
    if (cms == NULL ||
        CMS_add1_signer(cms, s->cert, s->pkey, prov_key_type_digest(s->key->type), flags) ==
            NULL ||
        CMS_final(cms, in, NULL, flags) != 1) {
        r = prov_fail_ossl(PROV_ERR_CRYPTO, "lot record: CMS signing with the lot signer failed");
        /* The token's own reason (removed, PIN) wins when it gave one. */
        r = prov_error_code() < 0 ? prov_error_code() : r;
        goto out;
    }
    n = i2d_CMS_ContentInfo(cms, &p);
    if (n <= 0) {
        r = prov_fail_ossl(PROV_ERR_CRYPTO, "lot record: encoding the CMS signature");
        goto out;
    }
    *der = p;
    *der_len = (size_t)n;
    r = 0;
out:
    CMS_ContentInfo_free(cms);
    BIO_free(in);
    sk_X509_free(certs); /* borrowed */
    return r;
}
