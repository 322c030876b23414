/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_KEYTYPE_H
#define PROV_KEYTYPE_H

#include <stdbool.h>

#include <openssl/evp.h>

enum prov_key_type {
    PROV_KEY_NONE = 0,
    PROV_KEY_EC_P256,
    PROV_KEY_EC_P384,
    PROV_KEY_RSA_2048,
    PROV_KEY_RSA_3072,
};

/* "ec-p256" ... ; PROV_ERR_CONFIG for an unknown name. */
int prov_key_type_parse(const char *name, enum prov_key_type *out);
const char *prov_key_type_name(enum prov_key_type t);
bool prov_key_type_is_ec(enum prov_key_type t);
/* Curve NID for EC types, 0 otherwise. */
int prov_key_type_curve_nid(enum prov_key_type t);
/* RSA modulus bits for RSA types, 0 otherwise. */
int prov_key_type_rsa_bits(enum prov_key_type t);
/* The type of a public key, or PROV_KEY_NONE when it is none of the supported ones. */
enum prov_key_type prov_key_type_of(const EVP_PKEY *pkey);
/* The digest to sign with for a key of this type (SHA-384 for P-384, else SHA-256). */
const EVP_MD *prov_key_type_digest(enum prov_key_type t);

#endif
