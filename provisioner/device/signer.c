/* SPDX-License-Identifier: Apache-2.0 */

/*
 * OpenSSL 3.0 routes a key whose EC_KEY_METHOD / RSA_METHOD is not the built-in one (a
 * "foreign" key) through the legacy EVP_PKEY path instead of exporting it to a provider. That
 * is the one way for a hardware key to reach X509_REQ_sign, X509_sign and
 * SSL_CTX_use_PrivateKey without writing and loading a whole provider, and those method APIs
 * are deprecated in 3.0: hence the suppression, in this file only.
 */
#define OPENSSL_SUPPRESS_DEPRECATED

#include "signer.h"

#include <string.h>

#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "error.h"
#include "keytype.h"

/* Built once per process and never freed: every signer EVP_PKEY points at them. */
static CRYPTO_ONCE methods_once = CRYPTO_ONCE_STATIC_INIT;
static EC_KEY_METHOD *ec_method;
static RSA_METHOD *rsa_method;
static int ec_key_index = -1;
static int rsa_key_index = -1;

/* Asks the device to sign; the backend has recorded the reason when it fails. */
static int device_sign(struct prov_key *key, enum prov_sig_mech mech, const unsigned char *in,
                       size_t in_len, unsigned char *sig, size_t *sig_len)
{
    if (key == NULL || key->dev == NULL || key->dev->ops->sign == NULL) {
        return -1;
    }
    if (key->dev->ops->sign(key->dev, key, mech, in, in_len, sig, sig_len) < 0) {
        return -1;
    }
    return 0;
}

static ECDSA_SIG *ec_sign_sig(const unsigned char *dgst, int dgst_len, const BIGNUM *in_kinv,
                              const BIGNUM *in_r, EC_KEY *eckey)
{
    struct prov_key *key = EC_KEY_get_ex_data(eckey, ec_key_index);
    /* Room for the DER of (r, s) on P-521, the largest curve a token might hold. */
    unsigned char der[160];
    size_t der_len = sizeof(der);
    const unsigned char *p = der;
    ECDSA_SIG *sig = NULL;

    if (dgst_len < 0 || device_sign(key, PROV_SIG_ECDSA, dgst, (size_t)dgst_len, der,
                                    &der_len) < 0) {
        return NULL;
    }
    sig = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
    if (sig == NULL || p != der + der_len) {
        /* A device that returns anything but one DER ECDSA-Sig-Value is broken. */
        prov_fail(PROV_ERR_DEVICE, "%s: ECDSA signature is not a DER ECDSA-Sig-Value",
                  key->dev->name);
        ECDSA_SIG_free(sig);
        return NULL;
    }
    return sig;
}

static int ec_sign(int type, const unsigned char *dgst, int dlen, unsigned char *sig,
                   unsigned int *siglen, const BIGNUM *kinv, const BIGNUM *r, EC_KEY *eckey)
{
    ECDSA_SIG *s = ec_sign_sig(dgst, dlen, kinv, r, eckey);
    unsigned char *p = sig;
    int len;

    if (s == NULL) {
        return 0;
    }
    /* Re-encoded so that the output is minimal DER and fits ECDSA_size(). */
    len = i2d_ECDSA_SIG(s, NULL);
    if (len <= 0 || len > ECDSA_size(eckey)) {
        ECDSA_SIG_free(s);
        return 0;
    }
    i2d_ECDSA_SIG(s, &p);
    *siglen = (unsigned int)len;
    ECDSA_SIG_free(s);
    return 1;
}

/* RSA results are left-padded to the modulus size: some devices strip leading zeros. */
static int rsa_device_sign(const RSA *rsa, enum prov_sig_mech mech, const unsigned char *in,
                           size_t in_len, unsigned char *to)
{
    struct prov_key *key = RSA_get_ex_data(rsa, rsa_key_index);
    size_t size = (size_t)RSA_size(rsa);
    size_t len = size;

    if (device_sign(key, mech, in, in_len, to, &len) < 0) {
        return -1;
    }
    if (len > size) {
        return -1;
    }
    if (len < size) {
        memmove(to + (size - len), to, len);
        memset(to, 0, size - len);
    }
    return (int)size;
}

/* The DER DigestInfo (RFC 8017 §9.2) that PKCS#1 v1.5 signs. */
static int digest_info(int type, const unsigned char *m, unsigned int m_len, unsigned char **der)
{
    const EVP_MD *md = EVP_get_digestbynid(type);
    X509_SIG *sig = NULL;
    X509_ALGOR *alg = NULL;
    ASN1_OCTET_STRING *digest = NULL;
    int len = -1;

    *der = NULL;
    if (md == NULL || EVP_MD_get_size(md) != (int)m_len) {
        return -1;
    }
    sig = X509_SIG_new();
    if (sig == NULL) {
        return -1;
    }
    X509_SIG_getm(sig, &alg, &digest);
    if (X509_ALGOR_set0(alg, OBJ_nid2obj(type), V_ASN1_NULL, NULL) != 1 ||
        ASN1_OCTET_STRING_set(digest, m, (int)m_len) != 1) {
        goto out;
    }
    len = i2d_X509_SIG(sig, der);
out:
    X509_SIG_free(sig);
    return len;
}

static int rsa_sign(int type, const unsigned char *m, unsigned int m_len, unsigned char *sigret,
                    unsigned int *siglen, const RSA *rsa)
{
    unsigned char *der = NULL;
    int der_len;
    int len;

    if (type == NID_md5_sha1) {
        /* TLS 1.0/1.1 sign the bare 36-byte MD5||SHA-1 concatenation, no DigestInfo. */
        len = rsa_device_sign(rsa, PROV_SIG_RSA_PKCS1, m, m_len, sigret);
    } else {
        der_len = digest_info(type, m, m_len, &der);
        if (der_len <= 0) {
            return 0;
        }
        len = rsa_device_sign(rsa, PROV_SIG_RSA_PKCS1, der, (size_t)der_len, sigret);
        OPENSSL_free(der);
    }
    if (len < 0) {
        return 0;
    }
    *siglen = (unsigned int)len;
    return 1;
}

static int rsa_priv_enc(int flen, const unsigned char *from, unsigned char *to, RSA *rsa,
                        int padding)
{
    if (flen < 0) {
        return -1;
    }
    switch (padding) {
    case RSA_PKCS1_PADDING:
        /* Callers of RSA_private_encrypt with PKCS#1 padding pass the DigestInfo already. */
        return rsa_device_sign(rsa, PROV_SIG_RSA_PKCS1, from, (size_t)flen, to);
    case RSA_NO_PADDING:
        /* EVP's PSS path pads itself and asks for the raw RSA operation. */
        return rsa_device_sign(rsa, PROV_SIG_RSA_RAW, from, (size_t)flen, to);
    default:
        ERR_raise(ERR_LIB_RSA, RSA_R_UNKNOWN_PADDING_TYPE);
        return -1;
    }
}

static void make_methods(void)
{
    int (*sign_setup)(EC_KEY *, BN_CTX *, BIGNUM **, BIGNUM **) = NULL;
    EC_KEY_METHOD *ec = EC_KEY_METHOD_new(EC_KEY_OpenSSL());
    RSA_METHOD *rsa = RSA_meth_dup(RSA_PKCS1_OpenSSL());

    ec_key_index = EC_KEY_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    rsa_key_index = RSA_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    if (ec != NULL) {
        EC_KEY_METHOD_get_sign(ec, NULL, &sign_setup, NULL);
        EC_KEY_METHOD_set_sign(ec, ec_sign, sign_setup, ec_sign_sig);
    }
    if (rsa != NULL) {
        if (RSA_meth_set1_name(rsa, "provisioner device key") != 1 ||
            RSA_meth_set_sign(rsa, rsa_sign) != 1 ||
            RSA_meth_set_priv_enc(rsa, rsa_priv_enc) != 1) {
            RSA_meth_free(rsa);
            rsa = NULL;
        }
    }
    ec_method = ec;
    rsa_method = rsa;
}

static int methods_ready(void)
{
    if (CRYPTO_THREAD_run_once(&methods_once, make_methods) != 1 || ec_method == NULL ||
        rsa_method == NULL || ec_key_index < 0 || rsa_key_index < 0) {
        return prov_fail_ossl(PROV_ERR_CRYPTO, "cannot set up the OpenSSL key methods");
    }
    return 0;
}

/*
 * The public key as a legacy EC_KEY on the process's group for its curve (keytype.h):
 * EVP_PKEY_get0_EC_KEY on a provider key exports it and builds its curve's group again,
 * about 0.17 M instructions per device in a batch (bench/README.md, "Profile"). A key whose
 * curve or point cannot be read this way is exported as before.
 */
static EC_KEY *ec_public_copy(EVP_PKEY *pub)
{
    unsigned char point[PROV_EC_POINT_MAX];
    size_t point_len = 0;
    const EC_GROUP *g = NULL;
    EC_KEY *ec = NULL;
    int nid = NID_undef;

    if (prov_key_type_ec_point(pub, &nid, point, &point_len)) {
        g = prov_key_type_ec_group(nid);
    }
    ec = g != NULL ? EC_KEY_new() : NULL;
    if (ec != NULL &&
        (EC_KEY_set_group(ec, g) != 1 || EC_KEY_oct2key(ec, point, point_len, NULL) != 1)) {
        EC_KEY_free(ec);
        ec = NULL;
    }
    if (ec == NULL) {
        const EC_KEY *exported;

        ERR_clear_error();
        exported = EVP_PKEY_get0_EC_KEY(pub);
        ec = exported != NULL ? EC_KEY_dup(exported) : NULL;
    }
    return ec;
}

static int ec_signer(struct prov_key *key, EVP_PKEY *pkey)
{
    EC_KEY *ec = NULL;
    int r = PROV_ERR_CRYPTO;

    ec = ec_public_copy(key->pub);
    /* The method must be set before the assignment: that is when the key is found foreign. */
    if (ec == NULL || EC_KEY_set_method(ec, ec_method) != 1 ||
        EC_KEY_set_ex_data(ec, ec_key_index, key) != 1 || EVP_PKEY_assign_EC_KEY(pkey, ec) != 1) {
        r = prov_fail_ossl(PROV_ERR_CRYPTO, "%s: cannot wrap the EC key for signing",
                           key->dev->name);
        goto out;
    }
    ec = NULL;
    r = 0;
out:
    EC_KEY_free(ec);
    return r;
}

static int rsa_signer(struct prov_key *key, EVP_PKEY *pkey)
{
    const RSA *pub = EVP_PKEY_get0_RSA(key->pub);
    const BIGNUM *n = NULL;
    const BIGNUM *e = NULL;
    BIGNUM *n2 = NULL;
    BIGNUM *e2 = NULL;
    RSA *rsa = NULL;
    int r = PROV_ERR_CRYPTO;

    if (pub != NULL) {
        RSA_get0_key(pub, &n, &e, NULL);
    }
    rsa = RSA_new();
    n2 = n != NULL ? BN_dup(n) : NULL;
    e2 = e != NULL ? BN_dup(e) : NULL;
    if (rsa == NULL || n2 == NULL || e2 == NULL || RSA_set0_key(rsa, n2, e2, NULL) != 1) {
        r = prov_fail_ossl(PROV_ERR_CRYPTO, "%s: cannot wrap the RSA key for signing",
                           key->dev->name);
        BN_free(n2);
        BN_free(e2);
        goto out;
    }
    if (RSA_set_method(rsa, rsa_method) != 1 || RSA_set_ex_data(rsa, rsa_key_index, key) != 1 ||
        EVP_PKEY_assign_RSA(pkey, rsa) != 1) {
        r = prov_fail_ossl(PROV_ERR_CRYPTO, "%s: cannot wrap the RSA key for signing",
                           key->dev->name);
        goto out;
    }
    rsa = NULL;
    r = 0;
out:
    RSA_free(rsa);
    return r;
}

int prov_signer_pkey(struct prov_key *key, EVP_PKEY **out)
{
    EVP_PKEY *pkey = NULL;
    int r;

    *out = NULL;
    if (key == NULL || key->pub == NULL || key->dev == NULL) {
        return prov_fail(PROV_ERR_INTERNAL, "signer: key without a public half or device");
    }
    r = methods_ready();
    if (r < 0) {
        return r;
    }
    pkey = EVP_PKEY_new();
    if (pkey == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "%s: out of memory", key->dev->name);
    }
    switch (EVP_PKEY_get_base_id(key->pub)) {
    case EVP_PKEY_EC:
        r = ec_signer(key, pkey);
        break;
    case EVP_PKEY_RSA:
        r = rsa_signer(key, pkey);
        break;
    default:
        r = prov_fail(PROV_ERR_UNSUPPORTED, "%s: key %s: only EC and RSA keys can sign",
                      key->dev->name, key->label ? key->label : "(no label)");
        break;
    }
    if (r < 0) {
        EVP_PKEY_free(pkey);
        return r;
    }
    *out = pkey;
    return 0;
}
