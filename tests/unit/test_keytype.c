/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/obj_mac.h>

#include "error.h"
#include "keytype.h"

static const enum prov_key_type all_types[] = {
    PROV_KEY_EC_P256, PROV_KEY_EC_P384, PROV_KEY_RSA_2048, PROV_KEY_RSA_3072,
};

static void test_names_round_trip(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(all_types) / sizeof(all_types[0]); i++) {
        enum prov_key_type t = PROV_KEY_NONE;

        assert_int_equal(prov_key_type_parse(prov_key_type_name(all_types[i]), &t), 0);
        assert_int_equal(t, all_types[i]);
    }
    assert_string_equal(prov_key_type_name(PROV_KEY_EC_P256), "ec-p256");
    assert_string_equal(prov_key_type_name(PROV_KEY_RSA_3072), "rsa-3072");
    assert_string_equal(prov_key_type_name(PROV_KEY_NONE), "none");
}

static void test_unknown_names_refused(void **state)
{
    const char *bad[] = {"", "EC-P256", "ec-p521", "rsa-1024", "ec-p256 ", "none"};
    enum prov_key_type t = PROV_KEY_EC_P384;

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        prov_error_clear();
        assert_int_equal(prov_key_type_parse(bad[i], &t), PROV_ERR_CONFIG);
        assert_non_null(prov_error_message());
    }
    prov_error_clear();
    assert_int_equal(prov_key_type_parse(NULL, &t), PROV_ERR_CONFIG);
    /* The output is untouched on failure. */
    assert_int_equal(t, PROV_KEY_EC_P384);
}

static void test_properties(void **state)
{
    (void)state;
    assert_true(prov_key_type_is_ec(PROV_KEY_EC_P256));
    assert_true(prov_key_type_is_ec(PROV_KEY_EC_P384));
    assert_false(prov_key_type_is_ec(PROV_KEY_RSA_2048));
    assert_false(prov_key_type_is_ec(PROV_KEY_NONE));
    assert_int_equal(prov_key_type_curve_nid(PROV_KEY_EC_P256), NID_X9_62_prime256v1);
    assert_int_equal(prov_key_type_curve_nid(PROV_KEY_EC_P384), NID_secp384r1);
    assert_int_equal(prov_key_type_curve_nid(PROV_KEY_RSA_2048), 0);
    assert_int_equal(prov_key_type_rsa_bits(PROV_KEY_RSA_2048), 2048);
    assert_int_equal(prov_key_type_rsa_bits(PROV_KEY_RSA_3072), 3072);
    assert_int_equal(prov_key_type_rsa_bits(PROV_KEY_EC_P256), 0);
    assert_ptr_equal(prov_key_type_digest(PROV_KEY_EC_P384), EVP_sha384());
    assert_ptr_equal(prov_key_type_digest(PROV_KEY_EC_P256), EVP_sha256());
    assert_ptr_equal(prov_key_type_digest(PROV_KEY_RSA_3072), EVP_sha256());
}

static void test_type_of_keys(void **state)
{
    EVP_PKEY *p256 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    EVP_PKEY *p384 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    EVP_PKEY *p521 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-521");
    EVP_PKEY *rsa1024 = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
    EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");

    (void)state;
    assert_int_equal(prov_key_type_of(p256), PROV_KEY_EC_P256);
    assert_int_equal(prov_key_type_of(p384), PROV_KEY_EC_P384);
    assert_int_equal(prov_key_type_of(p521), PROV_KEY_NONE);
    assert_int_equal(prov_key_type_of(rsa1024), PROV_KEY_NONE);
    assert_int_equal(prov_key_type_of(ed), PROV_KEY_NONE);
    assert_int_equal(prov_key_type_of(NULL), PROV_KEY_NONE);
    EVP_PKEY_free(p256);
    EVP_PKEY_free(p384);
    EVP_PKEY_free(p521);
    EVP_PKEY_free(rsa1024);
    EVP_PKEY_free(ed);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_round_trip),
        cmocka_unit_test(test_unknown_names_refused),
        cmocka_unit_test(test_properties),
        cmocka_unit_test(test_type_of_keys),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
