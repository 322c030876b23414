/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_BACKEND_PKCS11_INTERNAL_H
#define PROV_BACKEND_PKCS11_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include <p11-kit/pkcs11.h>
#include <p11-kit/uri.h>

#include "backend.h"

/*
 * Shared between the files of the PKCS#11 backend; nothing here is visible to the core.
 *
 * Raw PKCS#11 rather than libp11: libp11 0.4.12 has no EC key generation, finds keys by
 * enumerating every object on the token instead of by CKA_ID, and does not expose the token
 * PIN flags that must be checked before C_Login (PLATFORM.md pitfalls 2-4, SPEC §4).
 */

/* The state behind struct prov_device.priv. A device is used by one thread at a time. */
struct p11_dev {
    CK_FUNCTION_LIST *fl;
    char *module_path;
    bool is_module_from_uri; /* the device URI named module-path: key URIs repeat it */
    bool is_read_only;       /* a read-only session: nothing is ever destroyed */
    CK_SLOT_ID slot;
    CK_SESSION_HANDLE session;
    CK_TOKEN_INFO info; /* as read at open(); flags are re-read before login */
    char label[33];     /* the token fields without PKCS#11 space padding */
    char serial[17];
};

/* The state behind struct prov_key.priv. */
struct p11_key {
    CK_OBJECT_HANDLE priv;
    CK_OBJECT_HANDLE pub; /* CK_INVALID_HANDLE when the public key came from a cert */
};

/*
 * The module loaded from path, initialized once per process (CKF_OS_LOCKING_OK), with one
 * more reference. PROV_ERR_CONFIG when it cannot be loaded, else the mapped C_Initialize error.
 */
int prov_pkcs11_module_get(const char *path, CK_FUNCTION_LIST **out);

/* Drops a reference taken by prov_pkcs11_module_get; the module stays loaded (cache). */
void prov_pkcs11_module_put(CK_FUNCTION_LIST *fl);

/*
 * Keeps one extra session open on slot until unload_all, so that the token stays logged in
 * for this process after the device that logged in is closed. Best effort, never fails.
 */
void prov_pkcs11_keep_login(CK_FUNCTION_LIST *fl, CK_SLOT_ID slot);

/* Has a PIN for this token (module, serial, label) already been rejected in this process? */
bool prov_pkcs11_pin_has_failed(const char *module, const char *serial, const char *label);

/* Remembers a rejected PIN so that it is never sent again. PROV_ERR_NOMEM on failure. */
int prov_pkcs11_pin_mark_failed(const char *module, const char *serial, const char *label);

/*
 * Records a failed PKCS#11 call for dev with prov_fail, keeping the raw code:
 * "token dev-0001: C_GenerateKeyPair: CKR_DEVICE_MEMORY (0x00000031)". Returns the mapped error.
 */
int prov_pkcs11_fail_rv(struct prov_device *dev, const char *fn, CK_RV rv);

/* Copies a space-padded PKCS#11 string field into buf (NUL-terminated, padding trimmed). */
void prov_pkcs11_trim(const unsigned char *field, size_t field_len, char *buf, size_t len);

/* A URI as it may appear in a message: never one carrying a PIN. */
const char *prov_pkcs11_shown_uri(const char *uri);

/*
 * Parses an RFC 7512 URI (what: "device", "key" for messages). PROV_ERR_USAGE for a bad URI,
 * an unknown path attribute, or a pin-value (PINs come from PIN sources only).
 */
int prov_pkcs11_parse_uri(const char *uri, const char *what, P11KitUri **out);

/* Key operations (pkcs11_key.c): the ops table entries, contracts as in backend.h. */
int prov_pkcs11_generate_key(struct prov_device *dev, const struct prov_keygen_params *params,
                             struct prov_key **out);
int prov_pkcs11_find_key(struct prov_device *dev, const char *key_uri, struct prov_key **out);
int prov_pkcs11_find_key_by_id(struct prov_device *dev, const unsigned char *id, size_t id_len,
                               struct prov_key **out);
int prov_pkcs11_find_key_by_public(struct prov_device *dev, EVP_PKEY *pub, struct prov_key **out);
int prov_pkcs11_key_props(struct prov_device *dev, struct prov_key *key,
                          struct prov_key_props *out);
int prov_pkcs11_sign(struct prov_device *dev, struct prov_key *key, enum prov_sig_mech mech,
                     const unsigned char *in, size_t in_len, unsigned char *sig, size_t *sig_len);
int prov_pkcs11_store_certificate(struct prov_device *dev, struct prov_key *key, X509 *cert);
int prov_pkcs11_delete_key(struct prov_device *dev, struct prov_key *key);
void prov_pkcs11_free_key(struct prov_device *dev, struct prov_key *key);

/* Public key conversion (pkcs11_pub.c). */

/* Reads the public key object h (CKK_EC or CKK_RSA) into an EVP_PKEY. */
int prov_pkcs11_read_public(struct prov_device *dev, CK_OBJECT_HANDLE h, EVP_PKEY **out);

/* The DER OID of a named curve for CKA_EC_PARAMS (malloc'd). */
int prov_pkcs11_ec_params(int nid, unsigned char **out, size_t *out_len);

/*
 * Reads attribute type of object h into a malloc'd buffer (NUL-terminated for convenience;
 * len excludes it). PROV_ERR_NOT_FOUND when the object does not have it.
 */
int prov_pkcs11_get_attr(struct prov_device *dev, CK_OBJECT_HANDLE h, CK_ATTRIBUTE_TYPE type,
                         unsigned char **out, size_t *out_len);

#endif
