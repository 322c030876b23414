/* SPDX-License-Identifier: Apache-2.0 */
/* prov_key_type_read_spki uses the EC_KEY and RSA functions OpenSSL 3.0 marks deprecated. */
#define OPENSSL_SUPPRESS_DEPRECATED
#include "keytype.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/obj_mac.h>
#include <openssl/objects.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>

#include "error.h"

static const struct {
    enum prov_key_type type;
    const char *name;
} names[] = {
    {PROV_KEY_EC_P256, "ec-p256"},
    {PROV_KEY_EC_P384, "ec-p384"},
    {PROV_KEY_RSA_2048, "rsa-2048"},
    {PROV_KEY_RSA_3072, "rsa-3072"},
};

int prov_key_type_parse(const char *name, enum prov_key_type *out)
{
    for (size_t i = 0; name != NULL && i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcmp(name, names[i].name) == 0) {
            *out = names[i].type;
            return 0;
        }
    }
    return prov_fail(PROV_ERR_CONFIG,
                     "key type \"%s\": unknown (use ec-p256, ec-p384, rsa-2048 or rsa-3072)",
                     name ? name : "");
}

const char *prov_key_type_name(enum prov_key_type t)
{
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (names[i].type == t) {
            return names[i].name;
        }
    }
    return "none";
}

bool prov_key_type_is_ec(enum prov_key_type t)
{
    return t == PROV_KEY_EC_P256 || t == PROV_KEY_EC_P384;
}

int prov_key_type_curve_nid(enum prov_key_type t)
{
    switch (t) {
    case PROV_KEY_EC_P256: return NID_X9_62_prime256v1;
    case PROV_KEY_EC_P384: return NID_secp384r1;
    default: return 0;
    }
}

int prov_key_type_rsa_bits(enum prov_key_type t)
{
    switch (t) {
    case PROV_KEY_RSA_2048: return 2048;
    case PROV_KEY_RSA_3072: return 3072;
    default: return 0;
    }
}

enum prov_key_type prov_key_type_of(const EVP_PKEY *pkey)
{
    char group[64];
    size_t len = 0;

    if (pkey == NULL) {
        return PROV_KEY_NONE;
    }
    if (EVP_PKEY_is_a(pkey, "EC")) {
        if (!EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group,
                                            sizeof(group), &len)) {
            return PROV_KEY_NONE;
        }
        if (strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0) {
            return PROV_KEY_EC_P256;
        }
        if (strcmp(group, "secp384r1") == 0 || strcmp(group, "P-384") == 0) {
            return PROV_KEY_EC_P384;
        }
        return PROV_KEY_NONE;
    }
    if (EVP_PKEY_is_a(pkey, "RSA")) {
        switch (EVP_PKEY_get_bits(pkey)) {
        case 2048: return PROV_KEY_RSA_2048;
        case 3072: return PROV_KEY_RSA_3072;
        default: return PROV_KEY_NONE;
        }
    }
    return PROV_KEY_NONE;
}

const EVP_MD *prov_key_type_digest(enum prov_key_type t)
{
    return t == PROV_KEY_EC_P384 ? EVP_sha384() : EVP_sha256();
}

#define GROUPS_KEPT 8

static pthread_mutex_t groups_lock = PTHREAD_MUTEX_INITIALIZER;
static size_t n_groups;
static EC_GROUP *groups[GROUPS_KEPT];

const EC_GROUP *prov_key_type_ec_group(int nid)
{
    EC_GROUP *g = NULL;

    pthread_mutex_lock(&groups_lock);
    for (size_t i = 0; i < n_groups && g == NULL; i++) {
        if (EC_GROUP_get_curve_name(groups[i]) == nid) {
            g = groups[i];
        }
    }
    if (g == NULL && n_groups < GROUPS_KEPT && (g = EC_GROUP_new_by_curve_name(nid)) != NULL) {
        groups[n_groups++] = g;
    }
    pthread_mutex_unlock(&groups_lock);
    return g;
}

/* What is kept with a public key object (prov_key_type_ec_point, prov_key_type_spki_sha256). */
struct kept_pub {
    bool has_point;
    int nid;
    size_t len;
    unsigned char point[PROV_EC_POINT_MAX];
    bool has_spki;
    unsigned char spki_sha256[32];
};

static pthread_mutex_t pub_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t pub_once = PTHREAD_ONCE_INIT;
static int pub_index = -1;

static void pub_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                     void *argp)
{
    free(ptr);
}

/* EVP_PKEY_dup copies ex_data: the copy gets its own (from_d points at the pointer copied). */
static int pub_dup(CRYPTO_EX_DATA *to, const CRYPTO_EX_DATA *from, void **from_d, int idx,
                   long argl, void *argp)
{
    struct kept_pub **p = (struct kept_pub **)from_d;
    struct kept_pub *copy;

    if (*p == NULL) {
        return 1;
    }
    copy = malloc(sizeof(*copy));
    if (copy == NULL) {
        return 0;
    }
    memcpy(copy, *p, sizeof(*copy));
    *p = copy;
    return 1;
}

static void pub_init(void)
{
    pub_index = EVP_PKEY_get_ex_new_index(0, NULL, NULL, pub_dup, pub_free);
}

/* With pub_lock held: what is kept with pkey, attached empty when nothing is yet; or NULL. */
static struct kept_pub *kept_pub_of(EVP_PKEY *pkey)
{
    struct kept_pub *k = EVP_PKEY_get_ex_data(pkey, pub_index);

    if (k == NULL && (k = calloc(1, sizeof(*k))) != NULL &&
        EVP_PKEY_set_ex_data(pkey, pub_index, k) != 1) {
        free(k);
        k = NULL;
    }
    return k;
}

/* The curve and point read from the key itself into k; false for a key that has none. */
static bool read_point(EVP_PKEY *pkey, struct kept_pub *k)
{
    char name[64];

    if (!EVP_PKEY_is_a(pkey, "EC") ||
        EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, name, sizeof(name),
                                       NULL) != 1 ||
        (k->nid = OBJ_txt2nid(name)) == NID_undef ||
        EVP_PKEY_get_octet_string_param(pkey, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, k->point,
                                        sizeof(k->point), &k->len) != 1) {
        ERR_clear_error();
        return false;
    }
    return true;
}

bool prov_key_type_ec_point(EVP_PKEY *pkey, int *nid, unsigned char point[PROV_EC_POINT_MAX],
                            size_t *len)
{
    struct kept_pub *k;
    bool is_found = false;

    pthread_once(&pub_once, pub_init);
    if (pkey == NULL || pub_index < 0) {
        return false;
    }
    pthread_mutex_lock(&pub_lock);
    k = kept_pub_of(pkey);
    if (k != NULL && !k->has_point) {
        k->has_point = read_point(pkey, k);
    }
    if (k != NULL && k->has_point) {
        *nid = k->nid;
        *len = k->len;
        memcpy(point, k->point, k->len);
        is_found = true;
    }
    pthread_mutex_unlock(&pub_lock);
    return is_found;
}

int prov_key_type_spki_sha256(EVP_PKEY *pkey, unsigned char out[32])
{
    struct kept_pub *k = NULL;
    unsigned char *der = NULL;
    int len;
    int r = 0;

    pthread_once(&pub_once, pub_init);
    if (pkey == NULL) {
        return prov_fail(PROV_ERR_INPUT, "public key: none given");
    }
    pthread_mutex_lock(&pub_lock);
    k = pub_index >= 0 ? kept_pub_of(pkey) : NULL;
    if (k != NULL && k->has_spki) {
        memcpy(out, k->spki_sha256, 32);
    } else if ((len = i2d_PUBKEY(pkey, &der)) <= 0 || SHA256(der, (size_t)len, out) == NULL) {
        r = prov_fail_ossl(PROV_ERR_CRYPTO, "public key: cannot encode");
    } else if (k != NULL) {
        memcpy(k->spki_sha256, out, 32);
        k->has_spki = true;
    }
    pthread_mutex_unlock(&pub_lock);
    OPENSSL_free(der);
    return r;
}

bool prov_key_type_spki_holds(X509_PUBKEY *spki, EVP_PKEY *key)
{
    ASN1_OBJECT *alg = NULL;
    const unsigned char *pk = NULL;
    int pk_len = 0;
    X509_ALGOR *algor = NULL;
    int ptype = V_ASN1_UNDEF;
    const void *pval = NULL;
    unsigned char point[PROV_EC_POINT_MAX];
    size_t point_len = 0;
    int nid = NID_undef;
    EVP_PKEY *spki_key;
    bool is_same;

    if (spki == NULL || key == NULL) {
        return false;
    }
    if (X509_PUBKEY_get0_param(&alg, &pk, &pk_len, &algor, spki) == 1 && algor != NULL &&
        OBJ_obj2nid(alg) == NID_X9_62_id_ecPublicKey) {
        X509_ALGOR_get0(NULL, &ptype, &pval, algor);
    }
    if (ptype == V_ASN1_OBJECT && pk_len > 0 &&
        prov_key_type_ec_point(key, &nid, point, &point_len) &&
        OBJ_obj2nid(pval) == nid && point_len == (size_t)pk_len &&
        memcmp(point, pk, point_len) == 0) {
        return true;
    }
    spki_key = X509_PUBKEY_get0(spki);
    is_same = spki_key != NULL && EVP_PKEY_eq(spki_key, key) == 1;
    ERR_clear_error();
    return is_same;
}

/* d2i_EC_PUBKEY: an EC key on a named curve (explicit parameters go the general way). */
static EVP_PKEY *read_ec(const unsigned char *der, long len)
{
    const unsigned char *p = der;
    EC_KEY *ec = d2i_EC_PUBKEY(NULL, &p, len);
    EVP_PKEY *pkey = NULL;

    if (ec != NULL && p == der + len &&
        (EC_GROUP_get_asn1_flag(EC_KEY_get0_group(ec)) & OPENSSL_EC_NAMED_CURVE) != 0) {
        pkey = EVP_PKEY_new();
        if (pkey != NULL && EVP_PKEY_assign_EC_KEY(pkey, ec) == 1) {
            return pkey;
        }
    }
    EVP_PKEY_free(pkey);
    EC_KEY_free(ec);
    return NULL;
}

/* d2i_RSA_PUBKEY: an rsaEncryption key (RSA-PSS keys go the general way). */
static EVP_PKEY *read_rsa(const unsigned char *der, long len)
{
    const unsigned char *p = der;
    RSA *rsa = d2i_RSA_PUBKEY(NULL, &p, len);
    EVP_PKEY *pkey = NULL;

    if (rsa != NULL && p == der + len &&
        RSA_test_flags(rsa, RSA_FLAG_TYPE_MASK) == RSA_FLAG_TYPE_RSA) {
        pkey = EVP_PKEY_new();
        if (pkey != NULL && EVP_PKEY_assign_RSA(pkey, rsa) == 1) {
            return pkey;
        }
    }
    EVP_PKEY_free(pkey);
    RSA_free(rsa);
    return NULL;
}

EVP_PKEY *prov_key_type_read_spki(const unsigned char *der, long len)
{
    const unsigned char *p = der;
    EVP_PKEY *pkey;

    if (der == NULL || len <= 0) {
        return NULL;
    }
    ERR_set_mark();
    pkey = read_ec(der, len);
    if (pkey == NULL) {
        pkey = read_rsa(der, len);
    }
    ERR_pop_to_mark();
    if (pkey == NULL) {
        pkey = d2i_PUBKEY(NULL, &p, len);
        if (pkey != NULL && p != der + len) {
            EVP_PKEY_free(pkey);
            pkey = NULL;
        }
    }
    return pkey;
}

EVP_PKEY *prov_key_type_plain_copy(X509_PUBKEY *spki)
{
    unsigned char *der = NULL;
    int len = spki != NULL ? i2d_X509_PUBKEY(spki, &der) : -1;
    EVP_PKEY *pkey = len > 0 ? prov_key_type_read_spki(der, len) : NULL;

    OPENSSL_free(der);
    return pkey;
}
