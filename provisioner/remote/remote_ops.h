/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_REMOTE_OPS_H
#define PROV_REMOTE_OPS_H

#include <stddef.h>

#include <pthread.h>

#include <openssl/x509.h>

#include "issuer.h"
#include "station_identity.h"

/*
 * The entries of the issuer ops table (provisioner/pki/issuer.h) that the CMP and the EST
 * issuer fill alike (remote.c): a station that asks the CA service holds no CA token, applies
 * the CSR policy before a CSR goes out (the service applies it again), and keeps no record of
 * what was issued (the CA index is the service's).
 */

/* What the CMP and the EST issuer both hold: the first member of each. */
struct prov_remote_issuer {
    struct prov_issuer base;
    struct prov_station_identity id; /* station_cert, its key in the station's token, root */
    STACK_OF(X509) *chain;           /* from the service: intermediate(s) then root */
    /*
     * The chain, and what else the issuer keeps between requests; over a whole request when
     * the station key's device cannot sign from several threads (backend.h,
     * signs_from_threads) or the transport is shared (EST's one kept-alive connection).
     */
    pthread_mutex_t lock;
};

/*
 * A zeroed issuer of size bytes that starts with a struct prov_remote_issuer, its ops, cfg
 * and lock set; NULL when out of memory (recorded: PROV_ERR_NOMEM).
 */
void *prov_remote_new(size_t size, const struct prov_issuer_ops *ops,
                      const struct prov_config *cfg);

/* Closes the station's identity and frees the chain, the lock and the issuer itself. */
void prov_remote_free(struct prov_remote_issuer *ri);

/* The chain from the service (NULL until it answered). */
STACK_OF(X509) *prov_remote_chain(struct prov_issuer *is);

/* No device here is the CA's: always 0. */
int prov_remote_check_device(struct prov_issuer *is, const char *uri, struct prov_device *dev);

/* The CSR policy (prov_issue_check_csr) when req is given; the record's rules are the service's. */
int prov_remote_check(struct prov_issuer *is, const struct prov_request *rq, X509_REQ *req);

/* NULL: no CA index on the station. */
struct prov_ca_index *prov_remote_record(struct prov_issuer *is);

#endif
