/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_CRL_NAMES_H
#define PROV_CRL_NAMES_H

/*
 * CRL reason codes and their RFC 5280 names: what the CA index records with a revocation
 * (ca_index_revoke.c) and what a CRL carries (crl.c); and the CRL distribution point a
 * certificate names (issue.c). Kept apart from crl.c so that the index and the issuer need
 * neither the CRL signing code nor the CA it opens.
 */
#include <openssl/x509.h>

/* RFC 5280 5.3.1 CRLReason codes (7 is not used). */
enum prov_crl_reason {
    PROV_CRL_REASON_UNSPECIFIED = 0,
    PROV_CRL_REASON_KEY_COMPROMISE = 1,
    PROV_CRL_REASON_CA_COMPROMISE = 2,
    PROV_CRL_REASON_AFFILIATION_CHANGED = 3,
    PROV_CRL_REASON_SUPERSEDED = 4,
    PROV_CRL_REASON_CESSATION_OF_OPERATION = 5,
    PROV_CRL_REASON_CERTIFICATE_HOLD = 6,
    PROV_CRL_REASON_REMOVE_FROM_CRL = 8,
    PROV_CRL_REASON_PRIVILEGE_WITHDRAWN = 9,
    PROV_CRL_REASON_AA_COMPROMISE = 10,
};

/* The RFC 5280 name of any reason code ("keyCompromise"); "unknown" for a code it lacks. */
const char *prov_crl_reason_name(int code);

/*
 * The reason a device certificate may be revoked with, by name: unspecified, keyCompromise,
 * affiliationChanged, superseded, cessationOfOperation, privilegeWithdrawn. The CA reasons
 * (cACompromise, aACompromise) do not apply to an end entity, and certificateHold /
 * removeFromCRL are not offered: every revocation is final. PROV_ERR_USAGE listing them.
 */
int prov_crl_reason_parse(const char *name, int *code);

/* The names prov_crl_reason_parse takes, comma-separated (usage, completion). */
const char *prov_crl_reason_names(void);

/*
 * Adds (replacing any) a cRLDistributionPoints extension with one distribution point whose
 * full name is the URI url (RFC 5280 4.2.1.13), as a profile's crl_url asks. url must look
 * like a URI (scheme ":" rest, visible ASCII): else PROV_ERR_CONFIG naming profile.
 */
int prov_crl_add_distribution_point(X509 *cert, const char *url, const char *profile);

#endif
