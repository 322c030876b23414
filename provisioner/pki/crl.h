/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_CRL_H
#define PROV_CRL_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include <openssl/x509.h>

#include "config.h"
#include "crl_names.h"

/* The files `ca crl` writes into the CA directory (doc/revocation.md). */
#define PROV_CRL_INTERMEDIATE_DER "intermediate.crl"
#define PROV_CRL_INTERMEDIATE_PEM "intermediate.crl.pem"
#define PROV_CRL_ROOT_DER "root.crl"
#define PROV_CRL_ROOT_PEM "root.crl.pem"
#define PROV_CRL_CHAIN_PEM "crl-chain.pem"

/* `ca show` and `check --crl` warn when less than this is left before a CRL's nextUpdate
   (or less than half its lifetime, when that is shorter). */
#define PROV_CRL_WARN_SECONDS (48 * 3600)

/*
 * A time as `revoke --invalidity-date` and the index write it: YYYY-MM-DD, or
 * YYYY-MM-DDTHH:MM:SS[.fff]Z (UTC). PROV_ERR_USAGE for anything else.
 */
int prov_crl_parse_time(const char *text, time_t *out);

/* What `ca crl` made. */
struct prov_crl_result {
    long long number;        /* the intermediate's CRL number */
    long long root_number;   /* the root's */
    size_t n_revoked;        /* entries on the intermediate's CRL */
    char this_update[32];    /* RFC 3339 */
    char next_update[32];    /* the intermediate's */
    char root_next_update[32];
};

/*
 * ca crl: the intermediate's CRL v2 (every revocation the index holds for certificates it
 * issued, with reasonCode and invalidityDate entry extensions; cRLNumber from the index,
 * authorityKeyIdentifier, nextUpdate [ca] crl_days ahead) signed by the intermediate's key in
 * the HSM, and the root's CRL (no entries: the index records no revoked intermediate;
 * nextUpdate [ca] root_crl_days ahead) signed by the root key, in its token or its encrypted
 * PEM file. Both are signed before anything is written; then the five PROV_CRL_* files are
 * each replaced atomically. Errors: those of prov_ca_open (the CA token absent: exit 4), the
 * root key's, PROV_ERR_STORAGE for the files.
 */
int prov_crl_publish(const struct prov_config *cfg, struct prov_crl_result *out);

/* Reads every CRL of a file: PEM (one or more blocks) or one DER CRL. PROV_ERR_INPUT. */
int prov_crl_load(const char *path, STACK_OF(X509_CRL) **out);

/* What a CRL set says about one certificate. */
struct prov_crl_status {
    bool is_covered;        /* a CRL of the certificate's issuer, its signature verified */
    bool is_revoked;
    int reason;             /* when revoked; UNSPECIFIED when the entry has no reasonCode */
    char revoked_at[32];
    char next_update[32];   /* the covering CRL's */
    bool is_expired;        /* the covering CRL's nextUpdate has passed */
    bool is_near_expiry;    /* ...or is close (PROV_CRL_WARN_SECONDS) */
};

/*
 * The status of cert (issued by issuer) in crls at now: the newest CRL (by cRLNumber, else
 * thisUpdate) whose issuer name is issuer's subject and whose signature verifies with its
 * key. Not covered is no error (st->is_covered false); only out of memory fails.
 */
int prov_crl_status(STACK_OF(X509_CRL) *crls, X509 *cert, X509 *issuer, time_t now,
                    struct prov_crl_status *st);

/*
 * The chain (leaf first, each certificate followed by its issuer) against crls at now: a
 * finding "revoked" (detail: the reason name, then when) for every revoked certificate, and
 * "crl" when no CRL of the leaf's issuer verifies (the certificates above the leaf are checked
 * where a CRL of their issuer is given: crl-chain.pem covers both). An expired CRL or one
 * near its nextUpdate is a warning (prov_warn), not a finding. *reason: the first revoked
 * certificate's reason, -1 when none.
 */
struct prov_chain_report;
int prov_crl_check_chain(STACK_OF(X509_CRL) *crls, const char *crl_path, STACK_OF(X509) *chain,
                         time_t now, struct prov_chain_report *rep, int *reason);

/*
 * The CRLs an edge loads with the chain (`chain export --with-crl`): every CRL of
 * <ca_dir>/crl-chain.pem, each verified with the key of the chain certificate that issued it,
 * as PEM in *pem (malloc'd, *len bytes). Expired or near their nextUpdate: a warning. No
 * file (run `ca crl`) or a CRL no chain certificate signed: PROV_ERR_INPUT.
 */
int prov_crl_export_pem(const char *ca_dir, STACK_OF(X509) *chain, time_t now, char **pem,
                        size_t *len);

/* A CRL file's freshness for `ca show`: nextUpdate (RFC 3339), expired, near expiry. */
int prov_crl_file_freshness(const char *path, time_t now, char next_update[32], bool *is_expired,
                            bool *is_near_expiry);

#endif
