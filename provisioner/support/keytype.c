/* SPDX-License-Identifier: Apache-2.0 */
#include "keytype.h"

#include <string.h>

#include <openssl/core_names.h>
#include <openssl/obj_mac.h>

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
