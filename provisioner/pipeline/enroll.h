/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_ENROLL_H
#define PROV_ENROLL_H

#include <stdbool.h>

#include <openssl/x509.h>

#include "config.h"
#include "device.h"
#include "connect.h"
#include "issue.h"
#include "steps.h"
#include "storage.h"

struct prov_enroll_params {
    const char *device_uri;      /* pkcs11:... or tpm2:... */
    const char *storage_dir;     /* NULL: <output_dir>/<serial> */
    struct prov_request req;     /* serial, profile, cn, SANs */
    enum prov_key_type key_type; /* PROV_KEY_NONE: the profile's */
    bool reissue;                /* certify again even though storage already holds an identity */
    /*
     * reissue: the certificate being replaced, when the storage directory may no longer hold
     * it (batch: the journal's); NULL: read from the storage directory. A TPM key at the
     * device's key handle is replaced only when it is this certificate's key or certified by
     * nothing (struct prov_keygen_params.replaceable_pub).
     */
    X509 *reissued_cert;
    const unsigned char *key_id; /* chosen key id (journal); NULL: random */
    size_t key_id_len;
    const char *pin_spec;        /* device PIN source; NULL: cfg->device_pin */
    const char *prove_url;       /* the last step: mTLS proof against this URL; NULL: none */
};

struct prov_enroll_result {
    X509 *cert;                  /* owned */
    struct prov_cert_facts facts;
    char *storage_dir;           /* owned */
    char *key_uri;               /* owned */
    enum prov_key_type key_type;
    bool is_proof_run;           /* prove_url was given and the identity was stored */
    struct prov_connect_result proof;
    bool has_orphan_key;         /* on failure: a key was made and could not be deleted */
};

/*
 * One device end to end, the steps of steps.h in order: open and log in to the device,
 * generate the key on it, read back and check its protection, CSR signed by it and
 * verified, issue under policy through is (issuer.h, opened by prov_issuer_open),
 * store the certificate on the device, write the storage directory, and prove: the device
 * key signs a fresh challenge that verifies with the new certificate. On a failure after
 * key generation the new key is deleted from the device (no orphan) and storage is
 * untouched. Returns the PROV_ERR_* of the first failure.
 *
 * With p->prove_url, the last step is the mTLS proof (prov_connect_prove) with the same open
 * key. Its failure returns PROV_ERR_VERIFY with res fully filled (res->is_proof_run, the
 * certificate and storage): the identity stays issued and stored, only unproven, so that the
 * proof can be repeated (`check --connect`, a batch re-run) without issuing again.
 */
int prov_enroll(const struct prov_config *cfg, struct prov_issuer *is,
                const struct prov_enroll_params *p, struct prov_enroll_result *res);

void prov_enroll_result_clear(struct prov_enroll_result *res);

/*
 * The device half of the split flow, step 1 (`csr`): plans the request and the device (is
 * refuses its own device; nothing is issued), generates the key on the device (label =
 * serial), checks its protection, and makes a CSR signed by it whose subject is what the
 * profile would issue. The key stays on the device for `install`; on failure it is deleted.
 */
int prov_enroll_csr(const struct prov_config *cfg, struct prov_issuer *is,
                    const struct prov_enroll_params *p, X509_REQ **out);

/* What `install` needs: the certificate bundle from `sign` (leaf then chain). */
struct prov_install_params {
    const char *device_uri;
    const char *pin_spec;       /* NULL: cfg->device_pin */
    const char *serial;
    const char *storage_dir;    /* NULL: <output_dir>/<serial> */
    const char *server_ca_path; /* NULL: cfg->server_ca */
    const char *profile;        /* recorded in identity.json; NULL: "device" */
    STACK_OF(X509) *bundle;     /* leaf first, then intermediate(s) and root */
    bool reissue;
};

/*
 * The device half of the split flow, step 3 (`install`): finds the device key by the
 * certificate's public key, checks the bundle by the chain rules (clientAuth), plans the
 * device and the storage (is refuses its own device; nothing is issued), proves the key
 * against the certificate, stores the certificate on the device and writes the storage.
 */
int prov_install(const struct prov_config *cfg, struct prov_issuer *is,
                 const struct prov_install_params *p, struct prov_enroll_result *res);

#endif
