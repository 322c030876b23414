/* SPDX-License-Identifier: Apache-2.0 */
/*
 * CRL reading and the pieces of crl.c that need no CA token (provisioner/pki/crl.h): the
 * reason names revoke takes, the time syntax, a certificate's status in a set of CRLs (the
 * issuer's newest CRL whose signature verifies; near expiry and expired), the chain check
 * behind `check --crl` and `chain verify --crl`, and the CRL distribution point. The CRLs
 * here are made with OpenSSL directly, not with crl.c's builder (the integration test
 * tests/integration/crl/ checks what `ca crl` writes with openssl and certtool).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include <openssl/x509v3.h>

#include "chain.h"
#include "crl.h"
#include "error.h"
#include "test_pki.h"

struct fixture {
    EVP_PKEY *root_key;
    EVP_PKEY *inter_key;
    EVP_PKEY *leaf_key;
    X509 *root;
    X509 *inter;
    X509 *leaf;
    time_t now;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    f->now = time(NULL);
    f->root_key = test_pki_ec_key("P-256");
    f->inter_key = test_pki_ec_key("P-256");
    f->leaf_key = test_pki_ec_key("P-256");
    f->root = test_pki_ca_cert("Root", f->root_key, NULL, NULL, -TEST_PKI_DAY, 30 * TEST_PKI_DAY);
    f->inter = test_pki_ca_cert("Intermediate", f->inter_key, f->root, f->root_key,
                                -TEST_PKI_DAY, 20 * TEST_PKI_DAY);
    f->leaf = test_pki_cert(&(struct test_cert_spec){
        .cn = "SN-1",
        .serial = 0x1234,
        .key = f->leaf_key,
        .issuer = f->inter,
        .issuer_key = f->inter_key,
        .not_before = -60,
        .not_after = TEST_PKI_DAY,
        .exts = test_pki_leaf_exts,
    });
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    X509_free(f->leaf);
    X509_free(f->inter);
    X509_free(f->root);
    EVP_PKEY_free(f->leaf_key);
    EVP_PKEY_free(f->inter_key);
    EVP_PKEY_free(f->root_key);
    free(f);
    return 0;
}

/* A CRL of issuer signed by key: number, thisUpdate/nextUpdate relative to now, and (serial
   != 0) one entry with reason (-1: no reasonCode). */
static X509_CRL *make_crl(X509 *issuer, EVP_PKEY *key, long number, long last, long next,
                          long serial, int reason, time_t now)
{
    X509_CRL *crl = X509_CRL_new();
    ASN1_TIME *t = ASN1_TIME_new();
    ASN1_INTEGER *num = ASN1_INTEGER_new();

    assert_non_null(crl);
    assert_int_equal(X509_CRL_set_version(crl, X509_CRL_VERSION_2), 1);
    assert_int_equal(X509_CRL_set_issuer_name(crl, X509_get_subject_name(issuer)), 1);
    assert_non_null(ASN1_TIME_set(t, now + last));
    assert_int_equal(X509_CRL_set1_lastUpdate(crl, t), 1);
    assert_non_null(ASN1_TIME_set(t, now + next));
    assert_int_equal(X509_CRL_set1_nextUpdate(crl, t), 1);
    assert_int_equal(ASN1_INTEGER_set(num, number), 1);
    assert_int_equal(X509_CRL_add1_ext_i2d(crl, NID_crl_number, num, 0, 0), 1);
    if (serial != 0) {
        X509_REVOKED *entry = X509_REVOKED_new();
        ASN1_INTEGER *sn = ASN1_INTEGER_new();

        assert_int_equal(ASN1_INTEGER_set(sn, serial), 1);
        assert_int_equal(X509_REVOKED_set_serialNumber(entry, sn), 1);
        assert_non_null(ASN1_TIME_set(t, now - 3600));
        assert_int_equal(X509_REVOKED_set_revocationDate(entry, t), 1);
        if (reason >= 0) {
            ASN1_ENUMERATED *e = ASN1_ENUMERATED_new();

            assert_int_equal(ASN1_ENUMERATED_set(e, reason), 1);
            assert_int_equal(X509_REVOKED_add1_ext_i2d(entry, NID_crl_reason, e, 0, 0), 1);
            ASN1_ENUMERATED_free(e);
        }
        assert_int_equal(X509_CRL_add0_revoked(crl, entry), 1);
        ASN1_INTEGER_free(sn);
    }
    assert_true(X509_CRL_sign(crl, key, EVP_sha256()) > 0);
    ASN1_INTEGER_free(num);
    ASN1_TIME_free(t);
    return crl;
}

static STACK_OF(X509_CRL) *crls_of(X509_CRL *a, X509_CRL *b)
{
    STACK_OF(X509_CRL) *sk = sk_X509_CRL_new_null();

    assert_true(sk_X509_CRL_push(sk, a) > 0);
    if (b != NULL) {
        assert_true(sk_X509_CRL_push(sk, b) > 0);
    }
    return sk;
}

static void test_reasons(void **state)
{
    static const char *const allowed[] = {"unspecified", "keyCompromise", "affiliationChanged",
                                          "superseded", "cessationOfOperation",
                                          "privilegeWithdrawn"};
    static const int codes[] = {0, 1, 3, 4, 5, 9};
    int code = -1;

    (void)state;
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        assert_int_equal(prov_crl_reason_parse(allowed[i], &code), 0);
        assert_int_equal(code, codes[i]);
        assert_string_equal(prov_crl_reason_name(codes[i]), allowed[i]);
    }
    /* about CAs, or not final: not for `revoke` */
    assert_int_equal(prov_crl_reason_parse("cACompromise", &code), PROV_ERR_USAGE);
    assert_int_equal(prov_crl_reason_parse("certificateHold", &code), PROV_ERR_USAGE);
    assert_int_equal(prov_crl_reason_parse("removeFromCRL", &code), PROV_ERR_USAGE);
    assert_int_equal(prov_crl_reason_parse("keycompromise", &code), PROV_ERR_USAGE);
    assert_string_equal(prov_crl_reason_name(6), "certificateHold");
    assert_string_equal(prov_crl_reason_name(7), "unknown");
}

static void test_parse_time(void **state)
{
    time_t t = 1;

    (void)state;
    assert_int_equal(prov_crl_parse_time("2026-01-15", &t), 0);
    assert_int_equal(t, 1768435200);
    assert_int_equal(prov_crl_parse_time("2026-01-15T01:02:03Z", &t), 0);
    assert_int_equal(t, 1768435200 + 3723);
    assert_int_equal(prov_crl_parse_time("2026-01-15T01:02:03.456Z", &t), 0);
    assert_int_equal(t, 1768435200 + 3723);
    assert_int_equal(prov_crl_parse_time("2026-01-15T01:02:03", &t), PROV_ERR_USAGE);
    assert_int_equal(prov_crl_parse_time("2026-01-15 01:02:03Z", &t), PROV_ERR_USAGE);
    assert_int_equal(prov_crl_parse_time("2026-13-01", &t), PROV_ERR_USAGE);
    assert_int_equal(prov_crl_parse_time("15.01.2026", &t), PROV_ERR_USAGE);
    assert_int_equal(prov_crl_parse_time("2026-01-15T01:02:03+01:00", &t), PROV_ERR_USAGE);
}

static void test_status(void **state)
{
    struct fixture *f = *state;
    X509_CRL *listed = make_crl(f->inter, f->inter_key, 1, -60, 7 * TEST_PKI_DAY, 0x1234, 1,
                                f->now);
    X509_CRL *newer = make_crl(f->inter, f->inter_key, 2, -30, 7 * TEST_PKI_DAY, 0, 0, f->now);
    X509_CRL *forged = make_crl(f->inter, f->root_key, 9, -30, 7 * TEST_PKI_DAY, 0x1234, 5,
                                f->now);
    STACK_OF(X509_CRL) *sk = crls_of(listed, NULL);
    struct prov_crl_status st;

    assert_int_equal(prov_crl_status(sk, f->leaf, f->inter, f->now, &st), 0);
    assert_true(st.is_covered);
    assert_true(st.is_revoked);
    assert_int_equal(st.reason, PROV_CRL_REASON_KEY_COMPROMISE);
    assert_false(st.is_expired);
    assert_false(st.is_near_expiry);
    /* the issuer's newest CRL decides: number 2 no longer lists it */
    assert_true(sk_X509_CRL_push(sk, newer) > 0);
    assert_int_equal(prov_crl_status(sk, f->leaf, f->inter, f->now, &st), 0);
    assert_true(st.is_covered);
    assert_false(st.is_revoked);
    sk_X509_CRL_pop_free(sk, X509_CRL_free);
    /* a CRL under the issuer's name that its key did not sign covers nothing */
    sk = crls_of(forged, NULL);
    assert_int_equal(prov_crl_status(sk, f->leaf, f->inter, f->now, &st), 0);
    assert_false(st.is_covered);
    assert_false(st.is_revoked);
    sk_X509_CRL_pop_free(sk, X509_CRL_free);
}

static void test_freshness(void **state)
{
    struct fixture *f = *state;
    /* a week-long CRL one hour before nextUpdate; one a minute past it; an entry without a
       reasonCode reads as unspecified */
    X509_CRL *near = make_crl(f->inter, f->inter_key, 1, -7 * TEST_PKI_DAY, 3600, 0x1234, -1,
                              f->now);
    X509_CRL *expired = make_crl(f->inter, f->inter_key, 1, -TEST_PKI_DAY, -60, 0, 0, f->now);
    /* a two-hour CRL half way: the window is half its lifetime (one hour), not 48 hours */
    X509_CRL *short_ok = make_crl(f->inter, f->inter_key, 1, -3600, 3600 + 600, 0, 0, f->now);
    STACK_OF(X509_CRL) *sk = crls_of(near, NULL);
    struct prov_crl_status st;

    assert_int_equal(prov_crl_status(sk, f->leaf, f->inter, f->now, &st), 0);
    assert_true(st.is_near_expiry);
    assert_false(st.is_expired);
    assert_true(st.is_revoked);
    assert_int_equal(st.reason, PROV_CRL_REASON_UNSPECIFIED);
    sk_X509_CRL_pop_free(sk, X509_CRL_free);
    sk = crls_of(expired, NULL);
    assert_int_equal(prov_crl_status(sk, f->leaf, f->inter, f->now, &st), 0);
    assert_true(st.is_expired);
    assert_false(st.is_near_expiry);
    sk_X509_CRL_pop_free(sk, X509_CRL_free);
    sk = crls_of(short_ok, NULL);
    assert_int_equal(prov_crl_status(sk, f->leaf, f->inter, f->now, &st), 0);
    assert_false(st.is_near_expiry);
    sk_X509_CRL_pop_free(sk, X509_CRL_free);
}

static void test_check_chain(void **state)
{
    struct fixture *f = *state;
    X509_CRL *inter_crl = make_crl(f->inter, f->inter_key, 3, -60, TEST_PKI_DAY, 0x1234, 5,
                                   f->now);
    X509_CRL *root_crl = make_crl(f->root, f->root_key, 1, -60, TEST_PKI_DAY, 0, 0, f->now);
    STACK_OF(X509) *chain = sk_X509_new_null();
    STACK_OF(X509_CRL) *sk = crls_of(root_crl, NULL);
    struct prov_chain_report rep = {0};
    int reason = 0;

    sk_X509_push(chain, f->leaf);
    sk_X509_push(chain, f->inter);
    sk_X509_push(chain, f->root);
    /* only the root's CRL: the leaf's issuer has none */
    assert_int_equal(prov_crl_check_chain(sk, "crls.pem", chain, f->now, &rep, &reason), 0);
    assert_int_equal(rep.n, 1);
    assert_int_equal(rep.items[0].index, 0);
    assert_string_equal(rep.items[0].rule, "crl");
    assert_int_equal(reason, -1);
    prov_chain_report_free(&rep);
    /* both: the leaf is revoked, with its reason */
    assert_true(sk_X509_CRL_push(sk, inter_crl) > 0);
    memset(&rep, 0, sizeof(rep));
    assert_int_equal(prov_crl_check_chain(sk, "crls.pem", chain, f->now, &rep, &reason), 0);
    assert_int_equal(rep.n, 1);
    assert_int_equal(rep.items[0].index, 0);
    assert_string_equal(rep.items[0].rule, "revoked");
    assert_non_null(strstr(rep.items[0].detail, "cessationOfOperation"));
    assert_int_equal(reason, PROV_CRL_REASON_CESSATION_OF_OPERATION);
    prov_chain_report_free(&rep);
    sk_X509_CRL_pop_free(sk, X509_CRL_free);
    sk_X509_free(chain);
}

static void test_distribution_point(void **state)
{
    struct fixture *f = *state;
    X509 *cert = X509_dup(f->leaf);
    CRL_DIST_POINTS *points;
    const GENERAL_NAME *name;

    prov_error_clear();
    assert_int_equal(prov_crl_add_distribution_point(cert, "http://pki.example/x.crl", "device"),
                     0);
    points = X509_get_ext_d2i(cert, NID_crl_distribution_points, NULL, NULL);
    assert_non_null(points);
    assert_int_equal(sk_DIST_POINT_num(points), 1);
    name = sk_GENERAL_NAME_value(sk_DIST_POINT_value(points, 0)->distpoint->name.fullname, 0);
    assert_int_equal(name->type, GEN_URI);
    assert_string_equal((const char *)ASN1_STRING_get0_data(name->d.uniformResourceIdentifier),
                        "http://pki.example/x.crl");
    CRL_DIST_POINTS_free(points);
    /* replaced, not added twice */
    assert_int_equal(prov_crl_add_distribution_point(cert, "http://other/y.crl", "device"), 0);
    assert_int_equal(X509_get_ext_count(cert), X509_get_ext_count(f->leaf) + 1);
    assert_int_equal(prov_crl_add_distribution_point(cert, "no uri here", "device"),
                     PROV_ERR_CONFIG);
    assert_int_equal(prov_crl_add_distribution_point(cert, "/just/a/path", "device"),
                     PROV_ERR_CONFIG);
    X509_free(cert);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reasons),
        cmocka_unit_test(test_parse_time),
        cmocka_unit_test_setup_teardown(test_status, setup, teardown),
        cmocka_unit_test_setup_teardown(test_freshness, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_chain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_distribution_point, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
