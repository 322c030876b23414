/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_STEPS_H
#define PROV_STEPS_H

/*
 * The identity pipeline as steps, each a function with its own inputs and outputs:
 *
 *   plan -> open device -> generate key -> make CSR -> issue -> install -> prove
 *
 * plan checks the request and the storage directory before anything is touched; install puts
 * the certificate next to its key on the device (PKCS#11 object or TPM NV), then writes the
 * storage directory. Every caller runs them in this order: `enroll` (prov_enroll), the split
 * flow (`csr`: open, generate, make CSR; `sign`: issue; `install`: open, install), and a batch
 * or station row (factory/batch_row.c), which records its journal between them. A key that
 * did not become an identity is the caller's to discard (prov_step_discard_key).
 */

#include <stdbool.h>

#include <openssl/x509.h>

#include "config.h"
#include "connect.h"
#include "device.h"
#include "issue.h"
#include "issuer.h"
#include "storage.h"

struct prov_enroll_params;

/* A device key id's length when the caller chooses it at random. */
#define PROV_KEY_ID_BYTES 16

/* cfg's output_dir, or PROV_OUTPUT_DIR_DEFAULT (config.h) for a config not loaded from a file. */
const char *prov_output_dir(const struct prov_config *cfg);

/*
 * The one rule that names a device's storage directory: dir when given (--storage), else
 * <output_dir>/<relative> (a manifest's storage column, already normalized), else
 * <output_dir>/<serial>. malloc'd; NULL on NOMEM.
 */
char *prov_storage_dir_for(const struct prov_config *cfg, const char *dir, const char *relative,
                           const char *serial);

/*
 * The one place that says what a storage directory records for an identity (strings
 * borrowed): server_ca_path NULL is cfg->server_ca, profile NULL "device", lot NULL cfg->lot.
 */
struct prov_identity prov_identity_make(const struct prov_config *cfg, const char *serial,
                                        X509 *cert, STACK_OF(X509) *chain,
                                        const char *server_ca_path, const char *key_uri,
                                        enum prov_key_type key_type, const char *backend,
                                        const char *profile, const char *lot);

/*
 * Where a signal may stop an enrollment (interrupt.h): once the device is open, and the last
 * time before the CA signs; once it signed, the identity is finished. PROV_ERR_INTERRUPTED
 * naming the serial and what stopping there means.
 */
#define PROV_STEP_STOP_OPENED                                                                     \
    "its key was generated; nothing was issued: run the same command again"
#define PROV_STEP_STOP_SIGNED                                                                     \
    "the CA signed its certificate; its new key is deleted, nothing was issued: run the same "  \
    "command again"
int prov_step_stop_if_interrupted(const char *serial, const char *step);

/* What plan decided, for the steps after it (everything owned; prov_enroll_plan_clear). */
struct prov_enroll_plan {
    struct prov_request rq;  /* the request, with what the CA index records filled in */
    enum prov_key_type type; /* the key type to generate */
    bool reissue;            /* certify again: a key in the device's place may be replaced */
    char *dir;               /* the storage directory */
    bool created_dir;        /* plan made it (removed again if the enrollment fails) */
    X509_NAME *subject;      /* the subject the profile issues */
    char *old_uri;           /* a reissue: the key.uri of the identity it replaces, or NULL */
    EVP_PKEY *old_pub;       /* ...and that certificate's public key, or NULL */
};

/*
 * What plan checks, for the commands that need only part of it. The serial rule is always
 * checked. The whole plan (PROV_PLAN_ALL) is what enroll, batch and station run before a
 * device is opened:
 *   REQUEST    the profile, and the key type it allows;
 *   SERVER_CA  [provisioner] server_ca is set (storage records it);
 *   DEVICE     the device is not the issuer's own, by its URI (is->ops->check_device);
 *   STORAGE    the storage directory: an identity there needs p->reissue (and is read as
 *              the identity the reissue replaces); it must exist or be creatable and accept
 *              a new file, so that a read-only or mistyped path costs nothing on the device;
 *   RECORD     the issuer's rules for the serial (a current certificate needs a reissue);
 *   SUBJECT    the subject the profile issues.
 * The split flow plans its halves: `csr` REQUEST, DEVICE and SUBJECT (its storage is on the
 * station that installs), `install` DEVICE and STORAGE.
 */
enum {
    PROV_PLAN_REQUEST = 1u << 0,
    PROV_PLAN_SERVER_CA = 1u << 1,
    PROV_PLAN_DEVICE = 1u << 2,
    PROV_PLAN_STORAGE = 1u << 3,
    PROV_PLAN_RECORD = 1u << 4,
    PROV_PLAN_SUBJECT = 1u << 5,
    PROV_PLAN_ALL = 0x3fu,
};

/*
 * Step 0, nothing touched on a device: the parts of plan named by what (PROV_PLAN_*), in
 * the order serial, request, server CA, device, storage directory, issuer's rules, subject,
 * and last the storage probe. On failure the plan is cleared (a directory it made is
 * removed).
 */
int prov_step_plan_parts(const struct prov_config *cfg, struct prov_issuer *is,
                         const struct prov_enroll_params *p, unsigned what,
                         struct prov_enroll_plan *plan);

/* The whole plan: prov_step_plan_parts with PROV_PLAN_ALL. */
int prov_step_plan(const struct prov_config *cfg, struct prov_issuer *is,
                   const struct prov_enroll_params *p, struct prov_enroll_plan *plan);

/*
 * The storage directory of serial (storage_dir as given, else the configured layout:
 * prov_storage_dir_for) into *dir (malloc'd), refused with PROV_ERR_ALREADY_ISSUED when it
 * already holds an identity and reissue is false. Cheap (a stat or two) and the first check
 * of a flow that writes storage: enroll's plan and install run it before anything costly or
 * irreversible (opening the device, a key, a certificate), so an identity already there is
 * reported as such (exit 5) whatever else is wrong with the request.
 */
int prov_step_check_no_identity(const struct prov_config *cfg, const char *storage_dir,
                                const char *serial, bool reissue, char **dir);

/*
 * plan's storage probe: the directory must exist or be creatable and accept a new file (the
 * real write is still checked); *created says it was made here.
 */
int prov_step_preflight_storage(const char *dir, bool *created);

/*
 * The identity a reissue replaces, from the storage directory: the key.uri of the old key
 * (deleted once the new identity is stored) and, when identity.json names this serial, the
 * old certificate's public key (a TPM key at the same handle may be replaced only when it is
 * that key: struct prov_keygen_params.replaceable_pub). Either is NULL when unknown.
 */
void prov_step_read_old_identity(const char *dir, const char *serial, char **uri,
                                 EVP_PKEY **pub);

/* Frees the plan; with is_failed, removes the storage directory plan made if still empty. */
void prov_enroll_plan_clear(struct prov_enroll_plan *plan, bool is_failed);

/*
 * Step 1: opens the device that holds (or is to hold) a device key and logs in. The issuer's
 * own device (the CA's token) is refused by its identity before the login
 * (is->ops->check_device; is NULL: not checked). PROV_ERR_POLICY for the CA's token.
 */
int prov_step_open_device(const struct prov_config *cfg, struct prov_issuer *is,
                          const char *uri, const char *pin_spec, bool read_only,
                          struct prov_device **out);

/*
 * Step 2: generates the planned key on dev with this id (label = serial) and checks its
 * protection. *out is set as soon as the key exists, even on a failure, so that the caller
 * can discard it.
 */
int prov_step_generate_key(struct prov_device *dev, const struct prov_enroll_plan *plan,
                           const unsigned char *id, size_t id_len, struct prov_key **out);

/* Step 3: a CSR for subject signed by key, verified, carrying exactly this key. */
int prov_step_make_csr(struct prov_key *key, const X509_NAME *subject,
                       enum prov_key_type type, X509_REQ **out);

/*
 * Step 3 in two halves, for a caller that lets the device go between them (the batch,
 * factory/batch_row.c): the CSR signed by key (the device's work), then checked to verify
 * and carry exactly this key (no device needed), before anything is issued.
 */
int prov_step_sign_csr(struct prov_key *key, const X509_NAME *subject, enum prov_key_type type,
                       X509_REQ **out);
int prov_step_check_csr(X509_REQ *req, const struct prov_key *key);

/*
 * Step 4: the issuer's certificate for req (the CSR policy and the issuer's record apply,
 * issuer.h).
 */
int prov_step_issue(struct prov_issuer *is, X509_REQ *req, const struct prov_request *rq,
                    X509 **out);

/*
 * Step 5: with dev, the key proves it holds cert's private key and the certificate is stored
 * next to it on the device; then, with dir, the storage directory is written (all files or
 * none) with ident.
 */
int prov_step_install(struct prov_device *dev, struct prov_key *key, X509 *cert,
                      const char *dir, const struct prov_identity *ident);

/*
 * Step 5 for a caller that has proven the key against cert already (prov_proof_sign before
 * the certificate, prov_proof_check after: device.h): the certificate stored on dev, then
 * the storage directory written, as prov_step_install does after its proof.
 */
int prov_step_store(struct prov_device *dev, struct prov_key *key, X509 *cert, const char *dir,
                    const struct prov_identity *ident);

/*
 * Step 6: the mTLS proof against url with key and the storage in dir. Its failure is
 * PROV_ERR_VERIFY (or the transport's error) naming serial; res says what was seen.
 */
int prov_step_prove(struct prov_key *key, const char *dir, const char *url,
                    const char *serial, struct prov_connect_result *res);

/*
 * A key that did not become an identity leaves the device. false when it could not be
 * deleted (an orphan, warned about).
 */
bool prov_step_discard_key(struct prov_device *dev, struct prov_key *key, const char *serial);

/* After a reissue is stored: deletes the identity key an earlier enrollment left (old_uri). */
void prov_step_retire_old_key(struct prov_device *dev, const char *old_uri,
                              const struct prov_key *key);

#endif
