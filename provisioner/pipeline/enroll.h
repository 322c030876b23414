/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_ENROLL_H
#define PROV_ENROLL_H

#include <pthread.h>
#include <stdbool.h>

#include <openssl/x509.h>

#include "config.h"
#include "device.h"
#include "connect.h"
#include "issue.h"
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
    /*
     * Batch hooks (factory/batch.c), NULL when unused. ca_lock is held around the CA signing:
     * the CA's HSM session is not safe for concurrent use. on_issued gets the certificate
     * right after it is signed, before anything is stored (the journal records it there); its
     * failure aborts the enrollment. Once it has succeeded the key stays on the device even if
     * a later step fails: the journal owns the certificate and resumes from it.
     */
    pthread_mutex_t *ca_lock;
    int (*on_issued)(void *ctx, X509 *cert, const struct prov_key *key);
    void *hook_ctx;
    /*
     * Batch only, with on_issued, without reissue and prove_url (ignored otherwise): return once the
     * certificate is proven and stored on the device, without writing the storage directory;
     * res->storage_dir is not set. The caller writes it (prov_storage_write) off the device's
     * critical path, and the journal, which holds the certificate, finishes or resumes it.
     */
    bool defer_storage;
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
 * One device end to end: open and log in to the device, generate the key on it, read back
 * and check its protection, CSR signed by it and verified, issue under policy with ca,
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
int prov_enroll(const struct prov_config *cfg, struct prov_ca *ca,
                const struct prov_enroll_params *p, struct prov_enroll_result *res);

void prov_enroll_result_clear(struct prov_enroll_result *res);

/* The storage directory for a serial: dir if given, else <output_dir>/<serial>. */
char *prov_storage_dir_for(const struct prov_config *cfg, const char *dir, const char *serial);

/*
 * The device half of the split flow, step 1 (`csr`): generates the key on the device (label
 * = serial), checks its protection, and makes a CSR signed by it whose subject is what the
 * profile would issue. The key stays on the device for `install`; on failure it is deleted.
 */
int prov_enroll_csr(const struct prov_config *cfg, const struct prov_enroll_params *p,
                    X509_REQ **out);

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
 * certificate's public key, checks the bundle by the chain rules (clientAuth), proves the key
 * against the certificate, stores the certificate on the device and writes the storage.
 */
int prov_install(const struct prov_config *cfg, const struct prov_install_params *p,
                 struct prov_enroll_result *res);

/*
 * The same for a device that holds (or is to hold) a device key: the CA's own token is
 * refused by its identity before the login (prov_ca_check_device; ca, the open CA, may be
 * NULL). PROV_ERR_POLICY for the CA's token.
 */
int prov_device_open_for_key(const struct prov_config *cfg, const struct prov_ca *ca,
                             const char *uri, const char *pin_spec, bool read_only,
                             struct prov_device **out);

#endif
