/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The local issuer behind issuer.h, and the one function that picks an issuer from the
 * config: a registered kind for the scheme of [ca] url when it is set (the CA service, over
 * CMP or EST: provisioner/remote/), else the local issuer: the intermediate in a PKCS#11 HSM
 * (ca.c) signing through issue.c, and its CA index (ca_index.c) recording every certificate
 * it signs.
 */
#include "issuer.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "ca.h"
#include "ca_index.h"
#include "error.h"

#define MAX_ISSUER_KINDS 8

static const struct prov_issuer_kind *kinds[MAX_ISSUER_KINDS];
static size_t n_kinds;

struct local_issuer {
    struct prov_issuer base;
    struct prov_ca *ca;   /* the open CA; NULL until the first issue of a deferred one */
    bool owns_ca;         /* opened here, closed by close */
    pthread_mutex_t lock; /* held around the signing: one HSM session, many threads */
};

static struct local_issuer *local_of(struct prov_issuer *is)
{
    return (struct local_issuer *)is;
}

static int local_check_device(struct prov_issuer *is, const char *device_uri,
                              struct prov_device *dev)
{
    if (dev == NULL) {
        return prov_ca_check_device_uri(is->cfg, device_uri);
    }
    return prov_ca_check_device(is->cfg, local_of(is)->ca, dev);
}

static int local_check(struct prov_issuer *is, const struct prov_request *rq, X509_REQ *req)
{
    struct local_issuer *li = local_of(is);
    struct prov_ca_index *ix = NULL;
    int r = 0;

    /* Policy first: a bad CSR is refused before the CA index or token is opened. */
    if (req != NULL) {
        r = prov_issue_check_csr(rq->profile, req, NULL);
    }
    if (r < 0) {
        return r;
    }
    if (li->ca != NULL) {
        return li->ca->index != NULL
                   ? prov_ca_index_check(li->ca->index, rq->serial, &rq->record,
                                         req != NULL ? X509_REQ_get0_pubkey(req) : NULL)
                   : 0;
    }
    /* Not open yet: the index alone (a key certified before, a serial certified already). */
    r = prov_ca_index_open_config(is->cfg, &ix);
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
    struct local_issuer *li = local_of(is);
    int r;

    *out = NULL;
    if (li->ca == NULL) {
        r = local_check(is, rq, req);
        if (r == 0) {
            r = prov_ca_open(is->cfg, true, &li->ca);
        }
        if (r < 0) {
            return r;
        }
        li->owns_ca = true;
    }
    pthread_mutex_lock(&li->lock);
    /* Recorded in the CA index before it comes back (issue.c). */
    r = prov_issue_certificate(is->cfg, li->ca, req, rq, out);
    pthread_mutex_unlock(&li->lock);
    return r;
}

static STACK_OF(X509) *local_chain(struct prov_issuer *is)
{
    return local_of(is)->ca != NULL ? local_of(is)->ca->chain : NULL;
}

static int local_delivered(struct prov_issuer *is, X509 *cert)
{
    return local_of(is)->ca != NULL ? prov_ca_index_delivered(local_of(is)->ca->index, cert) : 0;
}

static struct prov_ca_index *local_record(struct prov_issuer *is)
{
    return local_of(is)->ca != NULL ? local_of(is)->ca->index : NULL;
}

static void local_close(struct prov_issuer *is)
{
    struct local_issuer *li = local_of(is);

    if (li->owns_ca) {
        prov_ca_close(li->ca);
    }
    pthread_mutex_destroy(&li->lock);
    free(li);
}

static const struct prov_issuer_ops local_ops = {
    .name = "local-hsm",
    .check_device = local_check_device,
    .check = local_check,
    .issue = local_issue,
    .chain = local_chain,
    .delivered = local_delivered,
    .record = local_record,
    .close = local_close,
};

static int local_new(const struct prov_config *cfg, struct prov_ca *ca, bool owns_ca,
                     struct prov_issuer **out)
{
    struct local_issuer *li = calloc(1, sizeof(*li));

    *out = NULL;
    if (li == NULL) {
        if (owns_ca) {
            prov_ca_close(ca);
        }
        return prov_fail(PROV_ERR_NOMEM, "issuer: out of memory");
    }
    li->base.ops = &local_ops;
    li->base.cfg = cfg;
    li->ca = ca;
    li->owns_ca = owns_ca;
    pthread_mutex_init(&li->lock, NULL);
    *out = &li->base;
    return 0;
}

void prov_issuer_register(const struct prov_issuer_kind *kind)
{
    for (size_t i = 0; i < n_kinds; i++) {
        if (strcmp(kinds[i]->scheme, kind->scheme) == 0) {
            return;
        }
    }
    if (n_kinds < MAX_ISSUER_KINDS) {
        kinds[n_kinds++] = kind;
    }
}

static const struct prov_issuer_kind *kind_for(const char *url)
{
    for (size_t i = 0; i < n_kinds; i++) {
        if (strncmp(url, kinds[i]->scheme, strlen(kinds[i]->scheme)) == 0) {
            return kinds[i];
        }
    }
    return NULL;
}

int prov_issuer_open(const struct prov_config *cfg, const struct prov_issuer_opts *opts,
                     struct prov_issuer **out)
{
    struct prov_ca *ca = NULL;
    int r;

    *out = NULL;
    if (cfg->ca_url != NULL) {
        const struct prov_issuer_kind *kind = kind_for(cfg->ca_url);

        if (kind == NULL) {
            return prov_fail(PROV_ERR_CONFIG, "[ca] url \"%s\": no issuer for its scheme in "
                             "this program", cfg->ca_url);
        }
        return kind->open(cfg, opts != NULL && opts->is_deferred, out);
    }
    if (opts == NULL || !opts->is_deferred) {
        r = prov_ca_open(cfg, true, &ca);
        if (r < 0) {
            return r;
        }
    }
    return local_new(cfg, ca, ca != NULL, out);
}

int prov_issuer_local_over(const struct prov_config *cfg, struct prov_ca *ca,
                           struct prov_issuer **out)
{
    return local_new(cfg, ca, false, out);
}

int prov_issuer_check_device_for(const struct prov_config *cfg, const char *device_uri,
                                 struct prov_device *dev)
{
    struct prov_issuer_opts opts = {.is_deferred = true};
    struct prov_issuer *is = NULL;
    int r = prov_issuer_open(cfg, &opts, &is);

    if (r == 0) {
        r = is->ops->check_device(is, device_uri, dev);
    }
    prov_issuer_close(is);
    return r;
}

void prov_issuer_close(struct prov_issuer *is)
{
    if (is != NULL && is->ops != NULL) {
        is->ops->close(is);
    }
}
