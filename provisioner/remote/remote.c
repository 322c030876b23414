/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The remote issuers, one row a scheme of [ca] url (remote.h), and the ops entries they share
 * (remote_ops.h).
 */
#include "remote.h"

#include <stddef.h>
#include <stdlib.h>

#include "error.h"
#include "issuer.h"
#include "issuer_cmp.h"
#include "issuer_est.h"
#include "remote_ops.h"

static const struct prov_issuer_kind remote_kinds[] = {
    {.scheme = "cmp://", .open = prov_issuer_cmp_open},
    {.scheme = "cmps://", .open = prov_issuer_cmp_open},
    {.scheme = "est://", .open = prov_issuer_est_open},
    {.scheme = "https://", .open = prov_issuer_est_open},
};

void prov_remote_register(void)
{
    for (size_t i = 0; i < sizeof(remote_kinds) / sizeof(remote_kinds[0]); i++) {
        prov_issuer_register(&remote_kinds[i]);
    }
}

int prov_remote_check_device(struct prov_issuer *is, const char *uri, struct prov_device *dev)
{
    (void)is;
    (void)uri;
    (void)dev;
    return 0; /* no CA token on this host */
}

int prov_remote_check(struct prov_issuer *is, const struct prov_request *rq, X509_REQ *req)
{
    (void)is;
    /* The CSR policy here too, so that a bad CSR does not go out; the service applies it again. */
    return req != NULL ? prov_issue_check_csr(rq->profile, req, NULL) : 0;
}

struct prov_ca_index *prov_remote_record(struct prov_issuer *is)
{
    (void)is;
    return NULL;
}

void *prov_remote_new(size_t size, const struct prov_issuer_ops *ops, const struct prov_config *cfg)
{
    struct prov_remote_issuer *ri = calloc(1, size);

    if (ri == NULL) {
        prov_fail(PROV_ERR_NOMEM, "issuer: out of memory");
        return NULL;
    }
    ri->base.ops = ops;
    ri->base.cfg = cfg;
    pthread_mutex_init(&ri->lock, NULL);
    return ri;
}

void prov_remote_free(struct prov_remote_issuer *ri)
{
    prov_station_identity_close(&ri->id);
    sk_X509_pop_free(ri->chain, X509_free);
    pthread_mutex_destroy(&ri->lock);
    free(ri);
}

STACK_OF(X509) *prov_remote_chain(struct prov_issuer *is)
{
    return ((struct prov_remote_issuer *)is)->chain;
}
