/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_KEYTYPE_H
#define PROV_KEYTYPE_H

#include <stdbool.h>

#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

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

/*
 * The named curve's EC_GROUP, built once for the process and kept (keytype.c): building one
 * costs OpenSSL 3.0 about 0.14 M instructions, and a batch needs the device key's curve for
 * every key it reads back and wraps for signing. NULL for a NID that is no known curve (or
 * no memory); the group must not be changed or freed.
 */
const EC_GROUP *prov_key_type_ec_group(int nid);

/* Room for the encoded point of any curve the tool knows (P-521 uncompressed: 133 bytes). */
#define PROV_EC_POINT_MAX 160

/*
 * The named curve (*nid) and the encoded public point (point, *len) of an EC key. They are
 * kept with the key object after the first call: reading the point from a provider key
 * costs OpenSSL 3.0 about 50,000 instructions (a field inversion), and a batch asks for the
 * device key's several times per device. A public key object is never changed once made.
 * False for a key that is not EC on a named curve.
 */
bool prov_key_type_ec_point(EVP_PKEY *pkey, int *nid, unsigned char point[PROV_EC_POINT_MAX],
                            size_t *len);

/*
 * The SHA-256 of key's DER SubjectPublicKeyInfo (i2d_PUBKEY), the identity of a key pair in
 * the CA index and the journal; kept with the key object like its point: the certificate
 * just issued carries the CSR's key object, which the CA index's rules, its record and the
 * journal each hash. PROV_ERR_INPUT (no key) or PROV_ERR_CRYPTO.
 */
int prov_key_type_spki_sha256(EVP_PKEY *key, unsigned char out[32])
    __attribute__((warn_unused_result));

/*
 * Whether spki (a CSR's or a certificate's SubjectPublicKeyInfo) holds key: for EC keys the
 * same named curve and the same encoded point; otherwise, or when the encodings differ (a
 * compressed point), as EVP_PKEY_eq says. EVP_PKEY_eq alone exports the key the SPKI was
 * made from when it is a device signer (provisioner/device/signer.c) and builds its curve
 * again, about 0.24 M instructions.
 */
bool prov_key_type_spki_holds(X509_PUBKEY *spki, EVP_PKEY *key);

/*
 * A public key read from its DER SubjectPublicKeyInfo (der, len; all of it), cheaply where
 * that can be done: an EC key on a named curve and an RSA (rsaEncryption) key are read by the
 * EC and RSA functions of OpenSSL's older API into a key whose SPKI is written again the same
 * way, byte for byte; any other key as d2i_PUBKEY reads it. OpenSSL 3.0 reads an SPKI into a
 * provider key through its decoders, about 1.2 M instructions a key, and X509_set_pubkey
 * writes a provider key through its encoders and reads the result back, another 2.2 M; the
 * older functions take about a tenth of that (a CA issuing from a CSR or a CMP template:
 * provisioner/pki/issue.c, service/cmp_requests.c). NULL (OpenSSL's error queued) when der
 * is no public key.
 */
EVP_PKEY *prov_key_type_read_spki(const unsigned char *der, long len);

/* prov_key_type_read_spki of an X509_PUBKEY's own encoding (a CSR's). */
EVP_PKEY *prov_key_type_plain_copy(X509_PUBKEY *spki);

#endif
