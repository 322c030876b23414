/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_DEVICE_H
#define PROV_DEVICE_H

#include <stdbool.h>

#include <openssl/x509.h>

#include "backend.h"
#include "config.h"

/*
 * What every caller does with a device through the backend registry (backend.h): open it
 * with the config's parameters, log in with a PIN source, and the two checks the core makes
 * on a key whatever its backend. The pipeline (pipeline/enroll.h) adds the rule that a
 * device key is never made on the CA's own token.
 */

/* The backend parameters from the config (NULL: the backends' defaults): one place for all. */
void prov_device_params_from_config(const struct prov_config *cfg, bool read_only,
                                    struct prov_device_params *out);

/*
 * Logs in to an open device with the PIN source (NULL: no PIN; the backend refuses with
 * PROV_ERR_PIN_SOURCE when the token needs one). pin_what names the PIN in messages. The PIN
 * is wiped before this returns.
 */
int prov_device_login(struct prov_device *dev, const char *pin_spec, const char *pin_what);

/* Opens the device named by uri with the config's parameters and logs in (prov_device_login). */
int prov_device_open_login(const struct prov_config *cfg, const char *uri, const char *pin_spec,
                           const char *pin_what, bool read_only, struct prov_device **out);

/*
 * Checks the protection the core insists on (README "Keys"): a private, sensitive token object
 * that is local, never-extractable, not extractable, signs and cannot decrypt, unwrap or
 * derive. what names the key in the refusal (PROV_ERR_POLICY).
 */
int prov_check_key_protection(struct prov_key *key, const char *what);

/*
 * Proof of possession against a certificate: the key signs a fresh random challenge with
 * the certificate's key algorithm and it verifies with the certificate's public key.
 * PROV_ERR_VERIFY when it does not.
 */
int prov_prove_key(struct prov_key *key, X509 *cert);

/*
 * prov_prove_key in two halves, for a caller that lets the device go between them (the
 * batch: factory/batch_row.c, fresh_on_device): the key signs a fresh challenge before the
 * certificate exists (the device's work), and the signature is checked against the
 * certificate's public key once it does (no device needed). The same proof: a signature the
 * certificate's key verifies, made by the key on the device.
 */
struct prov_proof {
    unsigned char challenge[32];
    unsigned char sig[1024];
    size_t sig_len;
    enum prov_key_type type;
    const char *device; /* the device's name, for the refusal (borrowed) */
};

int prov_proof_sign(struct prov_key *key, struct prov_proof *out);

/* PROV_ERR_VERIFY when the proof's signature does not verify with cert's public key. */
int prov_proof_check(const struct prov_proof *proof, X509 *cert);

#endif
