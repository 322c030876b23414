/* SPDX-License-Identifier: Apache-2.0 */
/* The EST request parser of `ca serve` (service/est_server.h): base64, path, method, type. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "est_server.h"

/* OpenSSL's encoder makes the text; ours must give back the bytes, with or without lines. */
static void test_base64_round_trip(void **state)
{
    (void)state;
    for (size_t n = 1; n < 200; n += 7) {
        unsigned char in[200];
        unsigned char text[300];
        unsigned char lines[400];
        unsigned char *out = NULL;
        size_t out_len = 0;
        size_t tl;
        size_t ll = 0;

        assert_int_equal(RAND_bytes(in, (int)n), 1);
        tl = (size_t)EVP_EncodeBlock(text, in, (int)n);
        assert_int_equal(prov_est_base64_decode(text, tl, &out, &out_len), 0);
        assert_int_equal(out_len, n);
        assert_memory_equal(out, in, n);
        free(out);
        for (size_t i = 0; i < tl; i++) {
            lines[ll++] = text[i];
            if (i % 10 == 9) {
                lines[ll++] = '\r';
                lines[ll++] = '\n';
            }
        }
        assert_int_equal(prov_est_base64_decode(lines, ll, &out, &out_len), 0);
        assert_int_equal(out_len, n);
        assert_memory_equal(out, in, n);
        free(out);
    }
}

static void test_base64_refused(void **state)
{
    static const char *const bad[] = {
        "", "\n", "QUJ=RA==", "QUJDR", "QUJD!A==", "====", "Q===", "QUJDRB==", "QUJDRA==QUJD",
        "QUJD\x80", "QUJDRA=",
    };
    unsigned char *out = NULL;
    size_t n = 0;

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(prov_est_base64_decode((const unsigned char *)bad[i], strlen(bad[i]),
                                                &out, &n),
                         -1);
        assert_null(out);
    }
}

static int parse(const char *path, bool is_post, const char *type, const char *body,
                 struct prov_est_request *rq)
{
    char why[160];

    return prov_est_parse(path, is_post, type, (const unsigned char *)body,
                          body != NULL ? strlen(body) : 0, rq, why, sizeof(why));
}

static void test_paths(void **state)
{
    struct prov_est_request rq;

    (void)state;
    assert_int_equal(parse("/.well-known/est/cacerts", false, NULL, NULL, &rq), 0);
    assert_int_equal(rq.op, PROV_EST_CACERTS);
    assert_string_equal(rq.lot, "");
    assert_int_equal(parse("/.well-known/est/LOT-7.a_b/csrattrs", false, NULL, NULL, &rq), 0);
    assert_int_equal(rq.op, PROV_EST_CSRATTRS);
    assert_string_equal(rq.lot, "LOT-7.a_b");
    assert_int_equal(parse("/.well-known/est/cacerts", true, NULL, NULL, &rq), 405);
    assert_int_equal(parse("/.well-known/est/simpleenroll", false, NULL, NULL, &rq), 405);
    assert_int_equal(parse("/.well-known/est/serverkeygen", true, NULL, NULL, &rq), 404);
    assert_int_equal(parse("/.well-known/est/../cacerts", false, NULL, NULL, &rq), 404);
    assert_int_equal(parse("/.well-known/est/a/b/cacerts", false, NULL, NULL, &rq), 404);
    assert_int_equal(parse("/.well-known/est//cacerts", false, NULL, NULL, &rq), 404);
    assert_int_equal(parse("/.well-known/est/a b/cacerts", false, NULL, NULL, &rq), 404);
    assert_int_equal(parse("/.well-known/es", false, NULL, NULL, &rq), 404);
    assert_int_equal(parse("/", false, NULL, NULL, &rq), 404);
    assert_int_equal(parse("/.well-known/est/simpleenroll", true, "text/plain", "QUJD", &rq),
                     415);
    assert_int_equal(parse("/.well-known/est/simpleenroll", true, NULL, "QUJD", &rq), 415);
    assert_int_equal(parse("/.well-known/est/simpleenroll", true, "application/pkcs10x", "QUJD",
                           &rq),
                     415);
}

/* A real CSR, DER then base64: parsed back to the same request; trailing bytes refused. */
static void test_enroll_body(void **state)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509_REQ *req = X509_REQ_new();
    unsigned char der[1024];
    unsigned char *p = der;
    char b64[1500];
    struct prov_est_request rq;
    int n;

    (void)state;
    assert_non_null(key);
    assert_non_null(req);
    assert_int_equal(X509_REQ_set_pubkey(req, key), 1);
    assert_true(X509_REQ_sign(req, key, EVP_sha256()) > 0);
    n = i2d_X509_REQ(req, &p);
    assert_true(n > 0 && n < 1000);
    EVP_EncodeBlock((unsigned char *)b64, der, n);
    assert_int_equal(parse("/.well-known/est/simpleenroll", true,
                           "application/pkcs10; charset=binary", b64, &rq),
                     0);
    assert_int_equal(rq.op, PROV_EST_SIMPLEENROLL);
    assert_int_equal(EVP_PKEY_eq(X509_REQ_get0_pubkey(rq.csr), key), 1);
    prov_est_request_clear(&rq);
    assert_null(rq.csr);
    der[n] = 0;
    EVP_EncodeBlock((unsigned char *)b64, der, n + 1);
    assert_int_equal(parse("/.well-known/est/simplereenroll", true, "application/pkcs10", b64,
                           &rq),
                     400);
    assert_int_equal(parse("/.well-known/est/simpleenroll", true, "application/pkcs10",
                           "not base64!", &rq),
                     400);
    assert_null(rq.csr);
    X509_REQ_free(req);
    EVP_PKEY_free(key);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base64_round_trip),
        cmocka_unit_test(test_base64_refused),
        cmocka_unit_test(test_paths),
        cmocka_unit_test(test_enroll_body),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
