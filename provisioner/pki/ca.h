/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_CA_H
#define PROV_CA_H

#include <stdbool.h>
#include <time.h>

#include "config.h"
#include "issue.h"

struct prov_ca_init_opts {
    bool force;     /* replace an existing CA directory's files */
    bool strict;    /* lint findings on the root config are errors (PROV_ERR_POLICY) */
};

/*
 * ca init: makes (or imports) the root, generates the intermediate key inside the HSM token
 * named by cfg->ca_key (sensitive, non-extractable), issues the intermediate (pathlen:0) and
 * writes root.crt, intermediate.crt and chain.pem into cfg->ca_dir. Warns (prov_warn) about
 * a root config that strict verifiers reject.
 */
int prov_ca_init(const struct prov_config *cfg, const struct prov_ca_init_opts *opts);

/*
 * Opens the CA: reads chain.pem from cfg->ca_dir and, when with_key, opens the HSM token,
 * logs in with cfg->ca_pin and finds the intermediate key, refusing a key that is
 * extractable or not sensitive (PROV_ERR_POLICY) or that does not match the certificate.
 * With with_key, a chain with a certificate that is expired or not yet valid is refused
 * first (PROV_ERR_POLICY, before the token is opened), and every "lifetime" finding of
 * prov_ca_lint_lifetime is a warning.
 */
int prov_ca_open(const struct prov_config *cfg, bool with_key, struct prov_ca **out);
void prov_ca_close(struct prov_ca *ca);

/*
 * Generates a key of type inside the CA token dev (logged in), with label and id, and checks
 * it has the protection every key the tool makes has (sensitive, never extractable; see
 * doc/keys.md), naming it `what` in errors. A key that fails the check is deleted again. Every
 * key made in the CA token goes through here: ca init's, the lot signer's (lot_signer.c).
 */
int prov_ca_token_keygen(struct prov_device *dev, enum prov_key_type type, const char *label,
                         const unsigned char *id, size_t id_len, const char *what,
                         struct prov_key **out);

/*
 * Adds the extension nid = value (OpenSSL's config syntax, "critical,CA:FALSE") to cert, in
 * the context ctx (issuer and subject set). PROV_ERR_CRYPTO naming it. For the certificates
 * the CA makes itself: the root, the intermediate, the lot signer's.
 */
int prov_ca_add_ext(X509 *cert, X509V3_CTX *ctx, int nid, const char *value);

/* Releases an open CA-token key: its signer, the key, then the token session (each may be
 * NULL). */
void prov_ca_token_key_free(EVP_PKEY *pkey, struct prov_key *key, struct prov_device *dev);

/*
 * The root key, to sign the root's CRL (crl.c): the key of [ca] root_key, in its token (the
 * CA token's lock held while it is opened, as prov_ca_open does) or its encrypted PEM file
 * ([ca] root_key_pass), checked against the root certificate. Errors as for ca init's; a
 * key that does not match root is PROV_ERR_CONFIG.
 */
struct prov_ca_root_key;
int prov_ca_root_key_open(const struct prov_config *cfg, X509 *root,
                          struct prov_ca_root_key **out);
EVP_PKEY *prov_ca_root_key_pkey(const struct prov_ca_root_key *k);
enum prov_key_type prov_ca_root_key_type(const struct prov_ca_root_key *k);
void prov_ca_root_key_close(struct prov_ca_root_key *k);

/*
 * The CA's own token is never a device (no login as one, no key made on it). By the strings
 * alone, before anything is opened: PROV_ERR_USAGE when device_uri names the token of [ca]
 * intermediate_key (the backend's names_same_device). Nothing configured: 0.
 */
int prov_ca_check_device_uri(const struct prov_config *cfg, const char *device_uri);

/*
 * ...and by identity, once the device is open and before anyone logs in to it:
 * PROV_ERR_POLICY when dev is the CA's token. The CA's identity comes from ca's open token,
 * or (ca NULL) from opening the token of [ca] intermediate_key read-only, without a login;
 * when that is not configured or not found, there is nothing to compare.
 */
struct prov_device;
int prov_ca_check_device(const struct prov_config *cfg, const struct prov_ca *ca,
                         struct prov_device *dev);

/*
 * The intermediate's remaining life against the profiles: one finding in rep (certificate 0,
 * rule "lifetime") per profile of cfg whose days reach past the intermediate's notAfter at
 * now, because its certificates are then capped at that date. None once it has expired (the
 * chain rules report that as "validity").
 */
struct prov_chain_report;
int prov_ca_lint_lifetime(const struct prov_config *cfg, const struct prov_ca *ca, time_t now,
                          struct prov_chain_report *rep);

/*
 * Lints the extensions a CA certificate carries against what strict verifiers require;
 * one warning per finding through prov_warn, naming `what`. Returns the finding count.
 */
int prov_ca_lint(X509 *cert, const char *what);

#endif
