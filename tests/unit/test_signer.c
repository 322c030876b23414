/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "backend.h"
#include "error.h"
#include "signer.h"

/* A device whose "hardware" key is an in-memory OpenSSL key. */
struct mock_state {
    EVP_PKEY *priv;
    bool is_failing;
    int calls[3]; /* per enum prov_sig_mech */
};

static int mock_sign(struct prov_device *dev, struct prov_key *key, enum prov_sig_mech mech,
                     const unsigned char *in, size_t in_len, unsigned char *sig, size_t *sig_len)
{
    struct mock_state *st = dev->priv;
    EVP_PKEY_CTX *ctx = NULL;
    int ok;

    (void)key;
    st->calls[mech]++;
    if (st->is_failing) {
        return prov_fail(PROV_ERR_DEVICE_REMOVED, "%s: removed while signing", dev->name);
    }
    ctx = EVP_PKEY_CTX_new(st->priv, NULL);
    switch (mech) {
    case PROV_SIG_ECDSA:
        /* CKM_ECDSA: the digest in, the signature out (DER here, as the interface says). */
        ok = EVP_PKEY_sign_init(ctx) == 1 && EVP_PKEY_sign(ctx, sig, sig_len, in, in_len) == 1;
        break;
    case PROV_SIG_RSA_PKCS1:
        /* CKM_RSA_PKCS: the DigestInfo is padded (type 1) and signed as given. */
        ok = EVP_PKEY_sign_init(ctx) == 1 &&
             EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) == 1 &&
             EVP_PKEY_sign(ctx, sig, sig_len, in, in_len) == 1;
        break;
    default:
        /* CKM_RSA_X_509: the raw private-key operation. */
        ok = EVP_PKEY_decrypt_init(ctx) == 1 &&
             EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_NO_PADDING) == 1 &&
             EVP_PKEY_decrypt(ctx, sig, sig_len, in, in_len) == 1;
        break;
    }
    EVP_PKEY_CTX_free(ctx);
    return ok ? 0 : prov_fail(PROV_ERR_DEVICE, "%s: mock signing failed", dev->name);
}

static const struct prov_backend_ops mock_ops = {
    .name = "mock",
    .sign = mock_sign,
};

struct fixture {
    struct mock_state st;
    struct prov_device dev;
    struct prov_key key;
    EVP_PKEY *signer;
};

static EVP_PKEY *public_only(EVP_PKEY *priv)
{
    unsigned char *der = NULL;
    const unsigned char *p;
    int len = i2d_PUBKEY(priv, &der);
    EVP_PKEY *pub;

    assert_true(len > 0);
    p = der;
    pub = d2i_PUBKEY(NULL, &p, len);
    OPENSSL_free(der);
    assert_non_null(pub);
    return pub;
}

static struct fixture *fixture_new(EVP_PKEY *priv, enum prov_key_type type)
{
    struct fixture *f = calloc(1, sizeof(*f));

    assert_non_null(f);
    assert_non_null(priv);
    f->st.priv = priv;
    f->dev = (struct prov_device){.ops = &mock_ops, .name = "token mock", .priv = &f->st};
    f->key.dev = &f->dev;
    f->key.type = type;
    /* Only the public half goes in, as a real backend reads it from the device. */
    f->key.pub = public_only(priv);
    prov_error_clear();
    assert_int_equal(prov_signer_pkey(&f->key, &f->signer), 0);
    assert_non_null(f->signer);
    return f;
}

static void fixture_free(struct fixture *f)
{
    EVP_PKEY_free(f->signer);
    EVP_PKEY_free(f->key.pub);
    EVP_PKEY_free(f->st.priv);
    free(f);
}

static EVP_PKEY *keygen(enum prov_key_type type)
{
    if (type == PROV_KEY_EC_P256) {
        return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    }
    if (type == PROV_KEY_EC_P384) {
        return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    }
    return EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
}

/* A CSR signed through the device verifies with the public key, also after a PEM round trip. */
static void sign_request(enum prov_key_type type, enum prov_sig_mech expected_mech)
{
    struct fixture *f = fixture_new(keygen(type), type);
    X509_REQ *req = X509_REQ_new();
    X509_REQ *back = NULL;
    BIO *bio = BIO_new(BIO_s_mem());

    assert_int_equal(X509_REQ_set_pubkey(req, f->signer), 1);
    assert_true(X509_REQ_sign(req, f->signer, prov_key_type_digest(type)) > 0);
    assert_int_equal(f->st.calls[expected_mech], 1);
    assert_int_equal(X509_REQ_verify(req, f->key.pub), 1);
    assert_int_equal(PEM_write_bio_X509_REQ(bio, req), 1);
    back = PEM_read_bio_X509_REQ(bio, NULL, NULL, NULL);
    assert_non_null(back);
    assert_int_equal(X509_REQ_verify(back, f->key.pub), 1);
    /* The signer is the same key as far as matching goes (SSL_CTX_use_PrivateKey checks). */
    assert_int_equal(EVP_PKEY_eq(f->signer, f->key.pub), 1);
    assert_int_equal(prov_key_type_of(f->signer), type);
    X509_REQ_free(back);
    X509_REQ_free(req);
    BIO_free(bio);
    fixture_free(f);
}

static void test_csr_ec_p256(void **state)
{
    (void)state;
    sign_request(PROV_KEY_EC_P256, PROV_SIG_ECDSA);
}

static void test_csr_ec_p384(void **state)
{
    (void)state;
    sign_request(PROV_KEY_EC_P384, PROV_SIG_ECDSA);
}

static void test_csr_rsa_2048_pkcs1(void **state)
{
    (void)state;
    sign_request(PROV_KEY_RSA_2048, PROV_SIG_RSA_PKCS1);
}

static void test_rsa_pss_uses_raw(void **state)
{
    struct fixture *f = fixture_new(keygen(PROV_KEY_RSA_2048), PROV_KEY_RSA_2048);
    const unsigned char msg[] = "challenge";
    unsigned char sig[512];
    size_t sig_len = sizeof(sig);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;

    (void)state;
    assert_int_equal(EVP_DigestSignInit(md, &pctx, EVP_sha256(), NULL, f->signer), 1);
    assert_int_equal(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING), 1);
    assert_int_equal(EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST), 1);
    assert_int_equal(EVP_DigestSign(md, sig, &sig_len, msg, sizeof(msg)), 1);
    assert_int_equal(f->st.calls[PROV_SIG_RSA_RAW], 1);
    assert_int_equal(f->st.calls[PROV_SIG_RSA_PKCS1], 0);
    EVP_MD_CTX_free(md);

    md = EVP_MD_CTX_new();
    pctx = NULL;
    assert_int_equal(EVP_DigestVerifyInit(md, &pctx, EVP_sha256(), NULL, f->key.pub), 1);
    assert_int_equal(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING), 1);
    assert_int_equal(EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST), 1);
    assert_int_equal(EVP_DigestVerify(md, sig, sig_len, msg, sizeof(msg)), 1);
    EVP_MD_CTX_free(md);
    fixture_free(f);
}

/* The TLS path of `check --connect`: a self-signed certificate and the device key in an SSL_CTX. */
static void test_ssl_ctx_accepts_signer(void **state)
{
    struct fixture *f = fixture_new(keygen(PROV_KEY_EC_P256), PROV_KEY_EC_P256);
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    X509 *cert = X509_new();

    (void)state;
    assert_int_equal(X509_set_version(cert, X509_VERSION_3), 1);
    assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(cert), 1), 1);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(cert), "CN", MBSTRING_UTF8,
                               (const unsigned char *)"mock", -1, -1, 0);
    assert_int_equal(X509_set_issuer_name(cert, X509_get_subject_name(cert)), 1);
    X509_gmtime_adj(X509_getm_notBefore(cert), 0);
    X509_gmtime_adj(X509_getm_notAfter(cert), 3600);
    assert_int_equal(X509_set_pubkey(cert, f->key.pub), 1);
    assert_true(X509_sign(cert, f->signer, EVP_sha256()) > 0);
    assert_int_equal(X509_verify(cert, f->key.pub), 1);
    assert_int_equal(SSL_CTX_use_certificate(ctx, cert), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey(ctx, f->signer), 1);
    assert_int_equal(SSL_CTX_check_private_key(ctx), 1);
    X509_free(cert);
    SSL_CTX_free(ctx);
    fixture_free(f);
}

static void test_device_error_fails_cleanly(void **state)
{
    struct fixture *f = fixture_new(keygen(PROV_KEY_EC_P256), PROV_KEY_EC_P256);
    X509_REQ *req = X509_REQ_new();

    (void)state;
    f->st.is_failing = true;
    assert_int_equal(X509_REQ_set_pubkey(req, f->signer), 1);
    assert_true(X509_REQ_sign(req, f->signer, EVP_sha256()) <= 0);
    assert_int_equal(f->st.calls[PROV_SIG_ECDSA], 1);
    /* The device's reason is what gets reported. */
    assert_int_equal(prov_error_code(), PROV_ERR_DEVICE_REMOVED);
    assert_non_null(strstr(prov_error_message(), "token mock: removed while signing"));
    X509_REQ_free(req);
    fixture_free(f);
}

static void test_device_error_rsa(void **state)
{
    struct fixture *f = fixture_new(keygen(PROV_KEY_RSA_2048), PROV_KEY_RSA_2048);
    X509_REQ *req = X509_REQ_new();

    (void)state;
    f->st.is_failing = true;
    assert_int_equal(X509_REQ_set_pubkey(req, f->signer), 1);
    assert_true(X509_REQ_sign(req, f->signer, EVP_sha256()) <= 0);
    assert_int_equal(prov_error_code(), PROV_ERR_DEVICE_REMOVED);
    X509_REQ_free(req);
    fixture_free(f);
}

static void test_unsupported_key(void **state)
{
    EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    struct mock_state st = {0};
    struct prov_device dev = {.ops = &mock_ops, .name = "token mock", .priv = &st};
    struct prov_key key = {.dev = &dev, .pub = ed};
    EVP_PKEY *signer = (EVP_PKEY *)&key;

    (void)state;
    prov_error_clear();
    assert_int_equal(prov_signer_pkey(&key, &signer), PROV_ERR_UNSUPPORTED);
    assert_null(signer);
    assert_non_null(prov_error_message());
    EVP_PKEY_free(ed);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_csr_ec_p256),
        cmocka_unit_test(test_csr_ec_p384),
        cmocka_unit_test(test_csr_rsa_2048_pkcs1),
        cmocka_unit_test(test_rsa_pss_uses_raw),
        cmocka_unit_test(test_ssl_ctx_accepts_signer),
        cmocka_unit_test(test_device_error_fails_cleanly),
        cmocka_unit_test(test_device_error_rsa),
        cmocka_unit_test(test_unsupported_key),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
