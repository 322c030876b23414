/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_ISSUER_H
#define PROV_ISSUER_H

#include <pthread.h>
#include <stdbool.h>

#include <openssl/x509.h>

#include "config.h"
#include "issue.h"

/*
 * Who signs a device's certificate: the "issue" step of the pipeline (provisioner/pipeline/
 * steps.h) goes through this table, whatever stands behind it. Today that is the local
 * intermediate whose key lives in a PKCS#11 HSM (prov_issuer_local); a CA reached over the
 * network fills the same table.
 *
 * Every issuer applies the same rules on the way to a certificate, so that enroll, sign,
 * batch and station get them alike: the CSR policy (prov_issue_check_csr: proof of
 * possession, key type and size, no CA or unknown extension requested), and the record of
 * what was issued (no public key certified twice, a serial with a current certificate only
 * by a reissue). Subject and subjectAltName come from the request, never from the CSR.
 */
struct prov_issuer;

struct prov_issuer_ops {
    const char *name;
    /*
     * The rules alone, nothing signed and the CA's key not touched: the record's rules for
     * rq (a serial with a current certificate, and req's key certified before when req is
     * given), then the CSR policy when req is given. Lets a caller refuse before a device or
     * the CA token is touched; issue applies the same rules again.
     */
    int (*check)(struct prov_issuer *is, const struct prov_request *rq, X509_REQ *req);
    /*
     * A certificate for req's public key under rq's profile (prov_issue_certificate). A bad
     * CSR is refused before the CA's key is used; the certificate is recorded before it is
     * returned, or it is not returned.
     */
    int (*issue)(struct prov_issuer *is, X509_REQ *req, const struct prov_request *rq,
                 X509 **out);
    /* The chain above what it issues, intermediate(s) then root (borrowed); NULL: not known. */
    STACK_OF(X509) *(*chain)(struct prov_issuer *is);
    /* cert reached its storage or output file: the record says delivered. */
    int (*delivered)(struct prov_issuer *is, X509 *cert);
    void (*close)(struct prov_issuer *is);
};

struct prov_issuer {
    const struct prov_issuer_ops *ops;
    const struct prov_config *cfg;
    /* the local issuer: */
    struct prov_ca *ca;          /* the open CA; NULL until the first issue of a deferred one */
    bool owns_ca;                /* opened here (deferred), closed by close */
    pthread_mutex_t *lock;       /* held around the signing: one HSM session, many threads */
};

/*
 * The local issuer over ca, which is open with its key and outlives is (not closed by
 * close). lock (may be NULL) is held around each signing.
 */
void prov_issuer_local(struct prov_issuer *is, const struct prov_config *cfg, struct prov_ca *ca,
                       pthread_mutex_t *lock);

/*
 * The local issuer opened on demand (`sign`): check reads the CA index of cfg->ca_dir only,
 * and issue applies the CSR policy and the index's rules before it opens the CA token.
 */
void prov_issuer_local_deferred(struct prov_issuer *is, const struct prov_config *cfg);

/* is->ops->close, when there is an issuer. */
void prov_issuer_close(struct prov_issuer *is);

#endif
