/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "csr.h"
#include "error.h"

/* Counts signature verifications (meson.build links with --wrap=X509_REQ_verify). */
int __real_X509_REQ_verify(X509_REQ *req, EVP_PKEY *key);
int __wrap_X509_REQ_verify(X509_REQ *req, EVP_PKEY *key);
static int n_verifications;

int __wrap_X509_REQ_verify(X509_REQ *req, EVP_PKEY *key)
{
    n_verifications++;
    return __real_X509_REQ_verify(req, key);
}

struct fixture {
    char dir[64];
    EVP_PKEY *key;
    EVP_PKEY *other;
    X509_NAME *subject;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    if (f == NULL) {
        return -1;
    }
    snprintf(f->dir, sizeof(f->dir), "/tmp/test_csr.XXXXXX");
    f->key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    f->other = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    f->subject = X509_NAME_new();
    if (mkdtemp(f->dir) == NULL || f->key == NULL || f->other == NULL || f->subject == NULL ||
        X509_NAME_add_entry_by_txt(f->subject, "CN", MBSTRING_UTF8,
                                   (const unsigned char *)"device-0001", -1, -1, 0) != 1) {
        return -1;
    }
    prov_error_clear();
    *state = f;
    return 0;
}

static void remove_file(struct fixture *f, const char *name)
{
    char path[128];

    snprintf(path, sizeof(path), "%s/%s", f->dir, name);
    unlink(path);
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    const char *names[] = {"big.csr", "req.pem", "req.der", "out.csr", "junk.csr"};

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        remove_file(f, names[i]);
    }
    rmdir(f->dir);
    EVP_PKEY_free(f->key);
    EVP_PKEY_free(f->other);
    X509_NAME_free(f->subject);
    free(f);
    return 0;
}

static char *path_in(struct fixture *f, const char *name)
{
    static char path[128];

    snprintf(path, sizeof(path), "%s/%s", f->dir, name);
    return path;
}

static void write_bytes(const char *path, const void *buf, size_t len)
{
    FILE *fp = fopen(path, "wb");

    assert_non_null(fp);
    assert_int_equal(fwrite(buf, 1, len, fp), len);
    assert_int_equal(fclose(fp), 0);
}

static void test_create_and_verify(void **state)
{
    struct fixture *f = *state;
    X509_REQ *req = NULL;

    assert_int_equal(prov_csr_create(f->key, f->subject, EVP_sha256(), &req), 0);
    assert_non_null(req);
    assert_int_equal(X509_REQ_get_version(req), 0);
    assert_int_equal(X509_NAME_cmp(X509_REQ_get_subject_name(req), f->subject), 0);
    assert_int_equal(prov_csr_verify(req, f->key), 0);
    assert_int_equal(prov_csr_verify(req, NULL), 0);
    X509_REQ_free(req);
}

/*
 * A CSR verified once in this process is not verified again (enroll checks the token's CSR,
 * issuing checks it again as policy); a changed CSR, or one that failed, is verified every
 * time, and the expected key is compared every time.
 */
static void test_verified_once(void **state)
{
    struct fixture *f = *state;
    X509_REQ *req = NULL;
    X509_REQ *other = NULL;

    assert_int_equal(prov_csr_create(f->key, f->subject, EVP_sha256(), &req), 0);
    assert_int_equal(prov_csr_create(f->other, f->subject, EVP_sha256(), &other), 0);
    n_verifications = 0;
    assert_int_equal(prov_csr_verify(req, f->key), 0);
    assert_int_equal(prov_csr_verify(req, NULL), 0);
    assert_int_equal(n_verifications, 1);
    assert_int_equal(prov_csr_verify(req, f->other), PROV_ERR_POLICY);
    assert_string_equal(prov_error_message(), "CSR public key is not the device key");

    assert_int_equal(prov_csr_verify(other, NULL), 0);
    assert_int_equal(n_verifications, 2);
    /* Changed after it was verified: other bytes, verified again, and the signature fails. */
    assert_int_equal(X509_REQ_set_subject_name(req, X509_REQ_get_subject_name(other)), 1);
    assert_true(X509_NAME_add_entry_by_txt(X509_REQ_get_subject_name(req), "O", MBSTRING_UTF8,
                                           (const unsigned char *)"x", -1, -1, 0) == 1);
    for (int i = 0; i < 2; i++) {
        prov_error_clear();
        assert_int_equal(prov_csr_verify(req, NULL), PROV_ERR_POLICY);
        assert_non_null(strstr(prov_error_message(), "CSR signature does not verify"));
    }
    assert_int_equal(n_verifications, 4);
    X509_REQ_free(other);
    X509_REQ_free(req);
}

static void test_wrong_expected_key_refused(void **state)
{
    struct fixture *f = *state;
    X509_REQ *req = NULL;

    assert_int_equal(prov_csr_create(f->key, f->subject, EVP_sha256(), &req), 0);
    assert_int_equal(prov_csr_verify(req, f->other), PROV_ERR_POLICY);
    assert_string_equal(prov_error_message(), "CSR public key is not the device key");
    X509_REQ_free(req);
}

/* A public-only copy of key, as a token's key is read back, its point in the form given. */
static EVP_PKEY *public_copy(EVP_PKEY *key, const char *form)
{
    unsigned char *der = NULL;
    int len = i2d_PUBKEY(key, &der);
    const unsigned char *p = der;
    EVP_PKEY *out = len > 0 ? d2i_PUBKEY(NULL, &p, len) : NULL;

    assert_non_null(out);
    assert_int_equal(EVP_PKEY_set_utf8_string_param(
                         out, OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT, form),
                     1);
    OPENSSL_free(der);
    return out;
}

/*
 * The device key is another object than the CSR's (the token's public key read back): it is
 * the same key when its curve and point are, whichever form the CSR encodes the point in;
 * a key on another curve is not.
 */
static void test_expected_key_by_value(void **state)
{
    struct fixture *f = *state;
    EVP_PKEY *copy = public_copy(f->key, "uncompressed");
    EVP_PKEY *compressed = public_copy(f->key, "compressed");
    EVP_PKEY *p384 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    X509_REQ *req = NULL;
    X509_REQ *short_req = NULL;
    X509_REQ *p384_req = NULL;

    assert_non_null(p384);
    assert_int_equal(prov_csr_create(f->key, f->subject, EVP_sha256(), &req), 0);
    assert_int_equal(prov_csr_verify(req, copy), 0);
    assert_int_equal(prov_csr_verify(req, compressed), 0);
    assert_int_equal(prov_csr_verify(req, p384), PROV_ERR_POLICY);
    prov_error_clear();

    /* the CSR's point compressed: the same key all the same */
    assert_int_equal(prov_csr_create(f->key, f->subject, EVP_sha256(), &short_req), 0);
    assert_int_equal(X509_REQ_set_pubkey(short_req, compressed), 1);
    assert_true(X509_REQ_sign(short_req, f->key, EVP_sha256()) > 0);
    assert_int_equal(prov_csr_verify(short_req, copy), 0);
    assert_int_equal(prov_csr_verify(short_req, f->other), PROV_ERR_POLICY);
    prov_error_clear();

    assert_int_equal(prov_csr_create(p384, f->subject, EVP_sha384(), &p384_req), 0);
    assert_int_equal(prov_csr_verify(p384_req, copy), PROV_ERR_POLICY);
    prov_error_clear();
    X509_REQ_free(p384_req);
    X509_REQ_free(short_req);
    X509_REQ_free(req);
    EVP_PKEY_free(p384);
    EVP_PKEY_free(compressed);
    EVP_PKEY_free(copy);
}

static void test_tampered_refused(void **state)
{
    struct fixture *f = *state;
    X509_REQ *req = NULL;
    X509_REQ *bad = NULL;
    unsigned char *der = NULL;
    const unsigned char *p;
    unsigned char *hit;
    int len;

    assert_int_equal(prov_csr_create(f->key, f->subject, EVP_sha256(), &req), 0);
    len = i2d_X509_REQ(req, &der);
    assert_true(len > 0);
    /* Change the subject after signing: "device-0001" becomes "device-0002". */
    hit = memmem(der, (size_t)len, "device-0001", 11);
    assert_non_null(hit);
    hit[10] = '2';
    p = der;
    bad = d2i_X509_REQ(NULL, &p, len);
    assert_non_null(bad);
    assert_int_equal(prov_csr_verify(bad, NULL), PROV_ERR_POLICY);
    assert_non_null(strstr(prov_error_message(), "CSR signature does not verify"));
    OPENSSL_free(der);
    X509_REQ_free(bad);
    X509_REQ_free(req);
}

static void test_oversize_refused(void **state)
{
    struct fixture *f = *state;
    size_t len = PROV_CSR_MAX_BYTES + 1;
    char *buf = malloc(len);
    X509_REQ *req = (X509_REQ *)f;

    assert_non_null(buf);
    memset(buf, 'A', len);
    write_bytes(path_in(f, "big.csr"), buf, len);
    assert_int_equal(prov_csr_read(path_in(f, "big.csr"), &req), PROV_ERR_POLICY);
    assert_null(req);
    assert_non_null(strstr(prov_error_message(), path_in(f, "big.csr")));
    assert_non_null(strstr(prov_error_message(), "limit"));
    free(buf);
}

static void test_read_pem_and_der(void **state)
{
    struct fixture *f = *state;
    X509_REQ *req = NULL;
    X509_REQ *back = NULL;
    unsigned char *der = NULL;
    unsigned char *der2 = NULL;
    BIO *bio = BIO_new(BIO_s_mem());
    char *pem;
    long pem_len;
    int len;

    assert_int_equal(prov_csr_create(f->key, f->subject, EVP_sha256(), &req), 0);
    len = i2d_X509_REQ(req, &der);
    assert_true(len > 0);
    write_bytes(path_in(f, "req.der"), der, (size_t)len);
    assert_int_equal(PEM_write_bio_X509_REQ(bio, req), 1);
    pem_len = BIO_get_mem_data(bio, &pem);
    write_bytes(path_in(f, "req.pem"), pem, (size_t)pem_len);

    assert_int_equal(prov_csr_read(path_in(f, "req.der"), &back), 0);
    assert_int_equal(i2d_X509_REQ(back, &der2), len);
    assert_memory_equal(der, der2, (size_t)len);
    assert_int_equal(prov_csr_verify(back, f->key), 0);
    X509_REQ_free(back);
    OPENSSL_free(der2);
    der2 = NULL;

    assert_int_equal(prov_csr_read(path_in(f, "req.pem"), &back), 0);
    assert_int_equal(i2d_X509_REQ(back, &der2), len);
    assert_memory_equal(der, der2, (size_t)len);
    X509_REQ_free(back);
    OPENSSL_free(der2);
    OPENSSL_free(der);
    BIO_free(bio);
    X509_REQ_free(req);
}

static void test_read_errors(void **state)
{
    struct fixture *f = *state;
    X509_REQ *req = NULL;

    assert_int_equal(prov_csr_read(path_in(f, "missing.csr"), &req), PROV_ERR_INPUT);
    assert_null(req);
    prov_error_clear();
    write_bytes(path_in(f, "junk.csr"), "not a request\n", 14);
    assert_int_equal(prov_csr_read(path_in(f, "junk.csr"), &req), PROV_ERR_INPUT);
    assert_non_null(strstr(prov_error_message(), "junk.csr"));
    assert_null(req);
}

static void test_write_atomic_0644(void **state)
{
    struct fixture *f = *state;
    X509_REQ *req = NULL;
    X509_REQ *back = NULL;
    struct stat st;

    assert_int_equal(prov_csr_create(f->key, f->subject, EVP_sha256(), &req), 0);
    assert_int_equal(prov_csr_write(path_in(f, "out.csr"), req), 0);
    assert_int_equal(stat(path_in(f, "out.csr"), &st), 0);
    assert_int_equal(st.st_mode & 0777, 0644);
    assert_int_equal(prov_csr_read(path_in(f, "out.csr"), &back), 0);
    assert_int_equal(X509_REQ_verify(back, f->key), 1);
    X509_REQ_free(back);
    X509_REQ_free(req);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_create_and_verify, setup, teardown),
        cmocka_unit_test_setup_teardown(test_verified_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_expected_key_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expected_key_by_value, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tampered_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oversize_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_pem_and_der, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_atomic_0644, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
