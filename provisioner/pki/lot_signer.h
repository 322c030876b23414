/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_LOT_SIGNER_H
#define PROV_LOT_SIGNER_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/x509.h>

#include "config.h"

/*
 * The lot signer: a dedicated signing key in the CA's HSM token, next to the intermediate key,
 * whose certificate the intermediate issues (keyUsage digitalSignature only, no CA). It signs
 * the lot records that `lot export --format record` writes (doc/export.md), so that a customer
 * can prove what they received. The intermediate's own key signs certificates and CRLs only.
 *
 * Its key URI is the intermediate key's ([ca] intermediate_key) with object=lot-signer and
 * no id; its certificate is <ca dir>/lot-signer.crt and is also stored on the token next to
 * the key. The CA index records it under the name "ca:lot-signer" (no device serial can be
 * that: ':' is not in the serial rule), so a new one supersedes the old one there.
 */
#define PROV_LOT_SIGNER_LABEL "lot-signer"
#define PROV_LOT_SIGNER_CERT "lot-signer.crt"
#define PROV_LOT_SIGNER_INDEX_NAME "ca:lot-signer"

/*
 * The key URI of the lot signer for the intermediate key URI ca_key: its path attributes
 * without object= and id=, then object=lot-signer, and its query (module-path) as it was.
 * *out is malloc'd. PROV_ERR_CONFIG for a URI that is not pkcs11:.
 */
int prov_lot_signer_uri(const char *ca_key, char **out);

/*
 * How the CA's own signers (this lot signer; the CA service's CMP signer,
 * service/cmp_signer.c) are named: CN "<intermediate CN> <role>", the label of their key,
 * the name the CA index records them under (with ':', which no device serial has) and its
 * issued_by; and the extendedKeyUsage their certificate carries (OpenSSL's config syntax,
 * NULL for none).
 */
struct prov_ca_signer_names {
    const char *role;
    const char *label;
    const char *index_name;
    const char *issued_by;
    const char *ext_key_usage;
};

/*
 * A signer's certificate for pub, issued by the open CA (ca with its key): valid from now
 * (less the clock skew) until the intermediate's notAfter, CA:false, keyUsage
 * digitalSignature only, names->ext_key_usage if any; recorded in the CA index under
 * names->index_name in one transaction with its signing (is_reissue: supersedes the one
 * recorded there). Not yet delivered.
 */
struct prov_ca;
int prov_ca_signer_issue(const struct prov_ca *ca, EVP_PKEY *pub,
                         const struct prov_ca_signer_names *names, bool is_reissue, X509 **out);

/*
 * Creates the lot signer on the CA host: opens the CA with its key (prov_ca_open), generates
 * the key inside the CA token (sensitive, non-extractable, signing only), issues its
 * certificate with the intermediate (recorded in the CA index first), stores it on the token
 * and writes <ca dir>/lot-signer.crt atomically. A lot signer already on the token is
 * refused (PROV_ERR_ALREADY_ISSUED) unless force, which replaces key and certificate. A key
 * this call generated is deleted again when a later step fails. *out (optional) gets the
 * certificate.
 */
int prov_lot_signer_create(const struct prov_config *cfg, bool force, X509 **out);

struct prov_lot_signer;

/*
 * Opens the lot signer to sign: reads <ca dir>/lot-signer.crt (PROV_ERR_NOT_FOUND naming it
 * and the command that makes it when it is absent) and the CA chain, checks that the
 * intermediate issued it and that it is valid now (PROV_ERR_VERIFY), logs in to the CA token
 * and finds the key by the certificate's public key (PROV_ERR_NOT_FOUND), refusing a key
 * that is extractable or not sensitive (PROV_ERR_POLICY).
 */
int prov_lot_signer_open(const struct prov_config *cfg, struct prov_lot_signer **out);

/* Accepts NULL. */
void prov_lot_signer_close(struct prov_lot_signer *s);

/* The lot signer's certificate (borrowed). */
X509 *prov_lot_signer_cert(const struct prov_lot_signer *s);

/*
 * A detached CMS SignedData (RFC 5652, DER) over data: one SignerInfo by the lot signer with
 * the signed attributes (content type, signing time, message digest), SHA-256 for P-256 and
 * SHA-384 for P-384 keys, carrying the lot signer's and the intermediate's certificates. The
 * signature is made in the token (provisioner/device/signer.c). *der is malloc'd.
 */
int prov_lot_signer_sign(struct prov_lot_signer *s, const void *data, size_t len,
                         unsigned char **der, size_t *der_len);

#endif
