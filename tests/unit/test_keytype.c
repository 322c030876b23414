/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

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

/* The process keeps one group per curve, and knows no curve that is none. */
static void test_ec_group_kept(void **state)
{
    const EC_GROUP *g = prov_key_type_ec_group(NID_X9_62_prime256v1);

    (void)state;
    assert_non_null(g);
    assert_ptr_equal(prov_key_type_ec_group(NID_X9_62_prime256v1), g);
    assert_int_equal(EC_GROUP_get_degree(g), 256);
    assert_int_equal(EC_GROUP_get_degree(prov_key_type_ec_group(NID_secp384r1)), 384);
    assert_null(prov_key_type_ec_group(NID_undef));
    assert_null(prov_key_type_ec_group(NID_sha256));
}

static EVP_PKEY *public_from(const char *group, const unsigned char *point, size_t len,
                             const char *form)
{
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    EVP_PKEY *out = NULL;
    OSSL_PARAM params[] = {
        OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)group, strlen(group)),
        OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, (void *)point, len),
        OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT, (char *)form,
                               strlen(form)),
        OSSL_PARAM_END,
    };

    assert_non_null(ctx);
    assert_int_equal(EVP_PKEY_fromdata_init(ctx), 1);
    assert_int_equal(EVP_PKEY_fromdata(ctx, &out, EVP_PKEY_PUBLIC_KEY, params), 1);
    EVP_PKEY_CTX_free(ctx);
    return out;
}

/*
 * An EC key's curve and point, kept with the object: the same when asked again, in a copy
 * (EVP_PKEY_dup copies the kept value, each freed once), and none for an RSA key.
 */
static void test_ec_point_kept(void **state)
{
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    EVP_PKEY *rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    EVP_PKEY *copy = NULL;
    unsigned char want[PROV_EC_POINT_MAX], got[PROV_EC_POINT_MAX];
    size_t want_len = 0, len = 0;
    int nid = NID_undef;

    (void)state;
    assert_non_null(key);
    assert_non_null(rsa);
    assert_int_equal(EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY,
                                                     want, sizeof(want), &want_len),
                     1);
    for (int i = 0; i < 2; i++) {
        assert_true(prov_key_type_ec_point(key, &nid, got, &len));
        assert_int_equal(nid, NID_X9_62_prime256v1);
        assert_int_equal(len, want_len);
        assert_memory_equal(got, want, len);
    }
    copy = EVP_PKEY_dup(key);
    assert_non_null(copy);
    EVP_PKEY_free(key);
    assert_true(prov_key_type_ec_point(copy, &nid, got, &len));
    assert_memory_equal(got, want, want_len);
    assert_false(prov_key_type_ec_point(rsa, &nid, got, &len));
    assert_false(prov_key_type_ec_point(NULL, &nid, got, &len));
    EVP_PKEY_free(copy);
    EVP_PKEY_free(rsa);
}

/*
 * The SubjectPublicKeyInfo's SHA-256 of a key, kept with the object: i2d_PUBKEY's, the same
 * when asked again and in a copy, after the point was kept too; another key has another.
 */
static void test_spki_sha256_kept(void **state)
{
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    EVP_PKEY *other = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    EVP_PKEY *copy = NULL;
    unsigned char *der = NULL;
    int der_len = i2d_PUBKEY(key, &der);
    unsigned char want[32], got[32], point[PROV_EC_POINT_MAX];
    size_t len = 0;
    int nid = NID_undef;

    (void)state;
    assert_true(der_len > 0);
    assert_non_null(SHA256(der, (size_t)der_len, want));
    for (int i = 0; i < 2; i++) {
        memset(got, 0, sizeof(got));
        assert_int_equal(prov_key_type_spki_sha256(key, got), 0);
        assert_memory_equal(got, want, sizeof(want));
    }
    assert_true(prov_key_type_ec_point(key, &nid, point, &len));
    assert_int_equal(prov_key_type_spki_sha256(key, got), 0);
    assert_memory_equal(got, want, sizeof(want));
    copy = EVP_PKEY_dup(key);
    assert_non_null(copy);
    assert_int_equal(prov_key_type_spki_sha256(copy, got), 0);
    assert_memory_equal(got, want, sizeof(want));
    assert_int_equal(prov_key_type_spki_sha256(other, got), 0);
    assert_memory_not_equal(got, want, sizeof(want));
    assert_int_equal(prov_key_type_spki_sha256(NULL, got), PROV_ERR_INPUT);
    OPENSSL_free(der);
    EVP_PKEY_free(copy);
    EVP_PKEY_free(other);
    EVP_PKEY_free(key);
}

static X509_PUBKEY *spki_of(EVP_PKEY *key)
{
    X509_PUBKEY *spki = NULL;

    assert_int_equal(X509_PUBKEY_set(&spki, key), 1);
    return spki;
}

/*
 * A SubjectPublicKeyInfo holds the key it was made from, and a public-only copy of it as a
 * token's key is read back, whichever form the point is encoded in; not another key of the
 * same curve, nor one of another curve; RSA keys as EVP_PKEY_eq says.
 */
static void test_spki_holds(void **state)
{
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    EVP_PKEY *other = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    EVP_PKEY *p384 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    EVP_PKEY *rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    EVP_PKEY *rsa2 = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    unsigned char point[PROV_EC_POINT_MAX];
    size_t len = 0;
    EVP_PKEY *copy, *compressed;
    X509_PUBKEY *spki, *short_spki, *rsa_spki;

    (void)state;
    assert_int_equal(EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY,
                                                     point, sizeof(point), &len),
                     1);
    copy = public_from("prime256v1", point, len, "uncompressed");
    compressed = public_from("prime256v1", point, len, "compressed");
    spki = spki_of(key);
    short_spki = spki_of(compressed);
    rsa_spki = spki_of(rsa);

    {
        const struct {
            X509_PUBKEY *spki;
            EVP_PKEY *key;
            bool holds;
        } cases[] = {
            {spki, key, true},         {spki, copy, true},        {spki, compressed, true},
            {short_spki, copy, true},  {spki, other, false},      {short_spki, other, false},
            {spki, p384, false},       {spki, rsa, false},        {rsa_spki, rsa, true},
            {rsa_spki, rsa2, false},   {rsa_spki, key, false},    {NULL, key, false},
        };

        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
            assert_int_equal(prov_key_type_spki_holds(cases[i].spki, cases[i].key),
                             cases[i].holds);
        }
    }

    /* the same point bytes named on another curve of the same size are not the key */
    {
        X509_PUBKEY *k1 = X509_PUBKEY_new();
        unsigned char *bytes = OPENSSL_memdup(point, len);

        assert_non_null(k1);
        assert_non_null(bytes);
        assert_int_equal(X509_PUBKEY_set0_param(k1, OBJ_nid2obj(NID_X9_62_id_ecPublicKey),
                                                V_ASN1_OBJECT, OBJ_nid2obj(NID_secp256k1), bytes,
                                                (int)len),
                         1);
        assert_false(prov_key_type_spki_holds(k1, key));
        X509_PUBKEY_free(k1);
    }

    X509_PUBKEY_free(rsa_spki);
    X509_PUBKEY_free(short_spki);
    X509_PUBKEY_free(spki);
    EVP_PKEY_free(compressed);
    EVP_PKEY_free(copy);
    EVP_PKEY_free(rsa2);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(p384);
    EVP_PKEY_free(other);
    EVP_PKEY_free(key);
}

/* der is key's SPKI, and a certificate given the key read from it writes der again. */
static void assert_reads_back(EVP_PKEY *key, bool plain)
{
    unsigned char *der = NULL, *again = NULL, *in_cert = NULL;
    int len = i2d_PUBKEY(key, &der);
    EVP_PKEY *read;
    X509 *cert = X509_new();

    assert_true(len > 0);
    assert_non_null(cert);
    read = prov_key_type_read_spki(der, len);
    assert_non_null(read);
    /* the cheap way (no provider) for EC named curves and RSA, OpenSSL's otherwise */
    assert_int_equal(EVP_PKEY_get0_provider(read) == NULL, plain);
    assert_int_equal(EVP_PKEY_eq(read, key), 1);
    assert_int_equal(i2d_PUBKEY(read, &again), len);
    assert_memory_equal(again, der, (size_t)len);
    assert_int_equal(X509_set_pubkey(cert, read), 1);
    assert_ptr_equal(X509_get0_pubkey(cert), read);
    assert_int_equal(i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &in_cert), len);
    assert_memory_equal(in_cert, der, (size_t)len);
    assert_int_equal(prov_key_type_of(read), prov_key_type_of(key));
    /* all of der or nothing */
    assert_null(prov_key_type_read_spki(der, len - 1));
    {
        unsigned char *longer = OPENSSL_malloc((size_t)len + 1);

        assert_non_null(longer);
        memcpy(longer, der, (size_t)len);
        longer[len] = 0;
        assert_null(prov_key_type_read_spki(longer, len + 1));
        OPENSSL_free(longer);
    }
    OPENSSL_free(in_cert);
    OPENSSL_free(again);
    OPENSSL_free(der);
    X509_free(cert);
    EVP_PKEY_free(read);
}

/* prov_key_type_read_spki reads every key the tool issues for, and writes it back unchanged. */
static void test_read_spki(void **state)
{
    EVP_PKEY *p256 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    EVP_PKEY *p384 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    EVP_PKEY *rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    EVP_PKEY *explicit_ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    unsigned char point[PROV_EC_POINT_MAX];
    unsigned char junk[] = {0x30, 0x03, 0x02, 0x01, 0x01};
    size_t len = 0;
    EVP_PKEY *compressed;
    X509_PUBKEY *spki;
    EVP_PKEY *copy;

    (void)state;
    assert_int_equal(EVP_PKEY_get_octet_string_param(p256, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY,
                                                     point, sizeof(point), &len),
                     1);
    compressed = public_from("prime256v1", point, len, "compressed");
    assert_int_equal(EVP_PKEY_set_utf8_string_param(explicit_ec, OSSL_PKEY_PARAM_EC_ENCODING,
                                                    OSSL_PKEY_EC_ENCODING_EXPLICIT),
                     1);
    assert_reads_back(p256, true);
    assert_reads_back(compressed, true);
    assert_reads_back(p384, true);
    assert_reads_back(rsa, true);
    assert_reads_back(ed, false);
    assert_reads_back(explicit_ec, false);
    assert_null(prov_key_type_read_spki(junk, sizeof(junk)));
    assert_null(prov_key_type_read_spki(NULL, 10));
    /* an X509_PUBKEY's own encoding (a CSR's) */
    spki = spki_of(p256);
    copy = prov_key_type_plain_copy(spki);
    assert_non_null(copy);
    assert_null(EVP_PKEY_get0_provider(copy));
    assert_int_equal(EVP_PKEY_eq(copy, p256), 1);
    assert_null(prov_key_type_plain_copy(NULL));
    EVP_PKEY_free(copy);
    X509_PUBKEY_free(spki);
    EVP_PKEY_free(compressed);
    EVP_PKEY_free(explicit_ec);
    EVP_PKEY_free(ed);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(p384);
    EVP_PKEY_free(p256);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_round_trip),
        cmocka_unit_test(test_unknown_names_refused),
        cmocka_unit_test(test_properties),
        cmocka_unit_test(test_type_of_keys),
        cmocka_unit_test(test_ec_group_kept),
        cmocka_unit_test(test_ec_point_kept),
        cmocka_unit_test(test_spki_sha256_kept),
        cmocka_unit_test(test_spki_holds),
        cmocka_unit_test(test_read_spki),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
