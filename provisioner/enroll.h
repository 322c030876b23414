/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_ENROLL_H
#define PROV_ENROLL_H

#include <stdbool.h>

#include <openssl/x509.h>

#include "config.h"
#include "issue.h"
#include "storage.h"

struct prov_enroll_params {
    const char *device_uri;      /* pkcs11:... or tpm2:... */
    const char *storage_dir;     /* NULL: <output_dir>/<serial> */
    struct prov_request req;     /* serial, profile, cn, SANs */
    enum prov_key_type key_type; /* PROV_KEY_NONE: the profile's */
    bool reissue;                /* certify again even though storage already holds an identity */
    const unsigned char *key_id; /* chosen key id (journal); NULL: random */
    size_t key_id_len;
};

struct prov_enroll_result {
    X509 *cert;                  /* owned */
    struct prov_cert_facts facts;
    char *storage_dir;           /* owned */
    char *key_uri;               /* owned */
    enum prov_key_type key_type;
};

/*
 * One device end to end: open and log in to the device, generate the key on it, read back
 * and check its protection, CSR signed by it and verified, issue under policy with ca,
 * store the certificate on the device, write the storage directory, and prove: the device
 * key signs a fresh challenge that verifies with the new certificate. On a failure after
 * key generation the new key is deleted from the device (no orphan) and storage is
 * untouched. Returns the PROV_ERR_* of the first failure.
 */
int prov_enroll(const struct prov_config *cfg, struct prov_ca *ca,
                const struct prov_enroll_params *p, struct prov_enroll_result *res);

void prov_enroll_result_clear(struct prov_enroll_result *res);

/*
 * Proof of possession against a certificate: the key signs a fresh random challenge with
 * the certificate's key algorithm and it verifies with the certificate's public key.
 * PROV_ERR_VERIFY when it does not.
 */
int prov_prove_key(struct prov_key *key, X509 *cert);

/* Opens the device and logs in with the PIN source (NULL: no login). */
int prov_device_open_login(const struct prov_config *cfg, const char *uri, const char *pin_spec,
                           const char *pin_what, bool read_only, struct prov_device **out);

#endif
