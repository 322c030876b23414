/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The local issuer: the intermediate in a PKCS#11 HSM (ca.c) signing through issue.c, and its
 * CA index (ca_index.c) recording every certificate it signs.
 */
#include "issuer.h"

#include <string.h>

#include "ca.h"
#include "ca_index.h"
#include "error.h"

static int local_check(struct prov_issuer *is, const struct prov_request *rq, X509_REQ *req)
{
    struct prov_ca_index *ix = NULL;
    int r = 0;

    /* Policy first: a bad CSR is refused before the CA index or token is opened. */
    if (req != NULL) {
        r = prov_issue_check_csr(rq->profile, req, NULL);
    }
    if (r < 0) {
        return r;
    }
    if (is->ca != NULL) {
        return is->ca->index != NULL
                   ? prov_ca_index_check(is->ca->index, rq->serial, &rq->record,
                                         req != NULL ? X509_REQ_get0_pubkey(req) : NULL)
                   : 0;
    }
    /* Not open yet: the index alone (a key certified before, a serial certified already). */
    r = prov_ca_index_open(is->cfg->ca_dir, &ix);
    if (r == 0) {
        r = prov_ca_index_check(ix, rq->serial, &rq->record,
                                req != NULL ? X509_REQ_get0_pubkey(req) : NULL);
    }
    prov_ca_index_close(ix);
    return r;
}

static int local_issue(struct prov_issuer *is, X509_REQ *req, const struct prov_request *rq,
                       X509 **out)
{
    int r;

    *out = NULL;
    if (is->ca == NULL) {
        r = local_check(is, rq, req);
        if (r == 0) {
            r = prov_ca_open(is->cfg, true, &is->ca);
        }
        if (r < 0) {
            return r;
        }
        is->owns_ca = true;
    }
    if (is->lock != NULL) {
        pthread_mutex_lock(is->lock);
    }
    /* Recorded in the CA index before it comes back (issue.c). */
    r = prov_issue_certificate(is->cfg, is->ca, req, rq, out);
    if (is->lock != NULL) {
        pthread_mutex_unlock(is->lock);
    }
    return r;
}

static STACK_OF(X509) *local_chain(struct prov_issuer *is)
{
    return is->ca != NULL ? is->ca->chain : NULL;
}

static int local_delivered(struct prov_issuer *is, X509 *cert)
{
    return is->ca != NULL ? prov_ca_index_delivered(is->ca->index, cert) : 0;
}

static void local_close(struct prov_issuer *is)
{
    if (is->owns_ca) {
        prov_ca_close(is->ca);
    }
    is->ca = NULL;
    is->owns_ca = false;
}

static const struct prov_issuer_ops local_ops = {
    .name = "local-hsm",
    .check = local_check,
    .issue = local_issue,
    .chain = local_chain,
    .delivered = local_delivered,
    .close = local_close,
};

void prov_issuer_local(struct prov_issuer *is, const struct prov_config *cfg, struct prov_ca *ca,
                       pthread_mutex_t *lock)
{
    memset(is, 0, sizeof(*is));
    is->ops = &local_ops;
    is->cfg = cfg;
    is->ca = ca;
    is->lock = lock;
}

void prov_issuer_local_deferred(struct prov_issuer *is, const struct prov_config *cfg)
{
    prov_issuer_local(is, cfg, NULL, NULL);
}

void prov_issuer_close(struct prov_issuer *is)
{
    if (is != NULL && is->ops != NULL) {
        is->ops->close(is);
    }
}
