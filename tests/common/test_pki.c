/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "test_pki.h"

const char *const test_pki_ca_exts[] = {
    "basicConstraints", "critical,CA:TRUE",
    "keyUsage", "critical,keyCertSign,cRLSign",
    "subjectKeyIdentifier", "hash",
    "authorityKeyIdentifier", "keyid",
    NULL,
};

const char *const test_pki_leaf_exts[] = {
    "basicConstraints", "critical,CA:FALSE",
    "keyUsage", "critical,digitalSignature",
    "extendedKeyUsage", "clientAuth",
    "subjectKeyIdentifier", "hash",
    "authorityKeyIdentifier", "keyid",
    NULL,
};

EVP_PKEY *test_pki_ec_key(const char *curve)
{
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", curve);

    assert_non_null(key);
    return key;
}

static void add_name_entry(X509_NAME *name, const char *field, const char *value)
{
    assert_int_equal(X509_NAME_add_entry_by_txt(name, field, MBSTRING_UTF8,
                                                (const unsigned char *)value, -1, -1, 0),
                     1);
}

static void set_time(ASN1_TIME *t, const char *text, long offset, const time_t *now)
{
    time_t t0 = now != NULL ? *now : time(NULL);

    if (text != NULL) {
        assert_int_equal(ASN1_TIME_set_string(t, text), 1);
    } else {
        assert_non_null(X509_time_adj_ex(t, 0, offset, &t0));
    }
}

X509 *test_pki_cert(const struct test_cert_spec *spec)
{
    X509 *cert = X509_new();
    X509_NAME *subject;
    X509V3_CTX ctx;

    assert_non_null(cert);
    assert_non_null(spec->key);
    assert_int_equal(X509_set_version(cert, X509_VERSION_3), 1);
    assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(cert), spec->serial), 1);
    subject = X509_get_subject_name(cert);
    if (spec->org != NULL) {
        add_name_entry(subject, "O", spec->org);
    }
    if (spec->cn != NULL) {
        add_name_entry(subject, "CN", spec->cn);
    }
    assert_int_equal(X509_set_issuer_name(cert, spec->issuer != NULL
                                                    ? X509_get_subject_name(spec->issuer)
                                                    : subject),
                     1);
    set_time(X509_getm_notBefore(cert), spec->not_before_text, spec->not_before, spec->now);
    set_time(X509_getm_notAfter(cert), spec->not_after_text, spec->not_after, spec->now);
    assert_int_equal(X509_set_pubkey(cert, spec->key), 1);
    X509V3_set_ctx(&ctx, spec->issuer != NULL ? spec->issuer : cert, cert, NULL, NULL, 0);
    for (size_t i = 0; spec->exts != NULL && spec->exts[i] != NULL; i += 2) {
        X509_EXTENSION *ext = X509V3_EXT_nconf(NULL, &ctx, spec->exts[i], spec->exts[i + 1]);

        assert_non_null(ext);
        assert_int_equal(X509_add_ext(cert, ext, -1), 1);
        X509_EXTENSION_free(ext);
    }
    assert_true(X509_sign(cert, spec->issuer_key != NULL ? spec->issuer_key : spec->key,
                          EVP_sha256()) > 0);
    return cert;
}

X509 *test_pki_ca_cert(const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key,
                       long nb, long na)
{
    return test_pki_cert(&(struct test_cert_spec){
        .cn = cn,
        .serial = 1,
        .key = key,
        .issuer = issuer,
        .issuer_key = issuer_key,
        .not_before = nb,
        .not_after = na,
        .exts = test_pki_ca_exts,
    });
}

X509 *test_pki_self_signed(const char *cn, long serial, EVP_PKEY *key)
{
    return test_pki_cert(&(struct test_cert_spec){
        .cn = cn,
        .serial = serial,
        .key = key,
        .not_after = TEST_PKI_DAY,
    });
}

void test_pki_prov_ca(struct prov_ca *ca, X509 *inter, X509 *root, EVP_PKEY *inter_key)
{
    ca->cert = inter;
    ca->root = root;
    ca->key = inter_key;
    ca->chain = sk_X509_new_null();
    assert_non_null(ca->chain);
    assert_true(sk_X509_push(ca->chain, inter) > 0);
    assert_true(sk_X509_push(ca->chain, root) > 0);
}

void test_pki_prov_ca_clear(struct prov_ca *ca)
{
    sk_X509_pop_free(ca->chain, X509_free);
    ca->chain = NULL;
    ca->cert = NULL;
    ca->root = NULL;
}

void test_pki_small_ca(struct prov_ca *ca)
{
    EVP_PKEY *root_key = test_pki_ec_key("P-256");
    EVP_PKEY *inter_key = test_pki_ec_key("P-256");
    X509 *root = test_pki_ca_cert("Test Root", root_key, NULL, root_key, -3600, 30 * TEST_PKI_DAY);
    X509 *inter = test_pki_ca_cert("Test Intermediate", inter_key, root, root_key, -3600,
                                   30 * TEST_PKI_DAY);

    EVP_PKEY_free(root_key);
    test_pki_prov_ca(ca, inter, root, inter_key);
}

void test_pki_small_ca_free(struct prov_ca *ca)
{
    EVP_PKEY_free(ca->key);
    ca->key = NULL;
    test_pki_prov_ca_clear(ca);
}

X509_REQ *test_pki_csr(EVP_PKEY *key, const char *cn, const char *const *exts)
{
    X509_REQ *req = X509_REQ_new();

    assert_non_null(req);
    assert_int_equal(X509_REQ_set_version(req, X509_REQ_VERSION_1), 1);
    add_name_entry(X509_REQ_get_subject_name(req), "CN", cn);
    assert_int_equal(X509_REQ_set_pubkey(req, key), 1);
    if (exts != NULL) {
        STACK_OF(X509_EXTENSION) *sk = sk_X509_EXTENSION_new_null();
        X509V3_CTX ctx;

        assert_non_null(sk);
        X509V3_set_ctx(&ctx, NULL, NULL, req, NULL, 0);
        for (size_t i = 0; exts[i] != NULL; i += 2) {
            X509_EXTENSION *ext = X509V3_EXT_nconf(NULL, &ctx, exts[i], exts[i + 1]);

            assert_non_null(ext);
            assert_true(sk_X509_EXTENSION_push(sk, ext) > 0);
        }
        assert_int_equal(X509_REQ_add_extensions(req, sk), 1);
        sk_X509_EXTENSION_pop_free(sk, X509_EXTENSION_free);
    }
    assert_true(X509_REQ_sign(req, key, EVP_sha256()) > 0);
    return req;
}

void test_pki_write_pem(const char *path, X509 *a, X509 *b)
{
    FILE *fp = fopen(path, "w");

    assert_non_null(fp);
    assert_int_equal(PEM_write_X509(fp, a), 1);
    if (b != NULL) {
        assert_int_equal(PEM_write_X509(fp, b), 1);
    }
    assert_int_equal(fclose(fp), 0);
}
