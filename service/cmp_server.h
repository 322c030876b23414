/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_CMP_SERVER_H
#define PROV_CMP_SERVER_H

#include <stddef.h>
#include <time.h>

#include "cmp_outcome.h"
#include "config.h"
#include "issue.h"

/*
 * The CMP side of `provisioner ca serve` (doc/ca-service.md): one DER-encoded PKIMessage in,
 * one out, through OpenSSL's CMP server (OSSL_CMP_SRV_CTX). OpenSSL's server context holds
 * one open transaction (doc/platform.md, item 19), so this keeps one per open transaction,
 * keyed by transactionID; a transaction idle longer than the timeout is dropped, and the
 * IDs of finished ones are kept so that a message replaying one is refused.
 *
 * Who may ask: a request must be signature-protected by a certificate that chains to this
 * CA (a station's certificate); its subject's CN names the station in the CA index. Certificates
 * are issued for the device named by the CN of the request's subject (CSR or CertTemplate),
 * under the configured profile, through the issue path of provisioner/pki/issue.c: the CSR
 * policy and the CA index's rules apply, and a certificate is recorded before it is answered.
 */
struct prov_cmp_server;

struct prov_cmp_server_opts {
    const struct prov_config *cfg;
    struct prov_ca *ca;        /* open with its key; borrowed */
    X509 *signer_cert;         /* protects the answers (cmp_signer.h); borrowed */
    EVP_PKEY *signer_key;
    const char *profile;       /* NULL: "device" */
    int transaction_timeout_s; /* an open transaction idle this long is dropped; 0: 300 */
};

int prov_cmp_server_new(const struct prov_cmp_server_opts *opts, struct prov_cmp_server **out);

/*
 * Answers one request (der, len): *rsp (OPENSSL_malloc'd, DER) and *rsp_len; a message that
 * is not a PKIMessage at all gets no answer (PROV_ERR_INPUT: the HTTP layer says 400).
 * Every refusal is a CMP error message. now: the time used for expiry.
 */
int prov_cmp_server_handle(struct prov_cmp_server *srv, const unsigned char *der, size_t len,
                           time_t now, unsigned char **rsp, size_t *rsp_len,
                           struct prov_cmp_outcome *oc);

/*
 * As prov_cmp_server_handle for a request on the path that names a lot (RFC 9483 section
 * 6.1, /.well-known/cmp/p/LOT): a transaction it starts issues only for that lot
 * (doc/ca-service.md); lot NULL or "": the oldest lot that admits the request.
 */
int prov_cmp_server_handle_lot(struct prov_cmp_server *srv, const char *lot,
                               const unsigned char *der, size_t len, time_t now,
                               unsigned char **rsp, size_t *rsp_len,
                               struct prov_cmp_outcome *oc);

/*
 * The CA behind the server changes (service/ca_keeper.c: the CA token went away, or came
 * back re-opened). Every open transaction ends first: its server context holds the old
 * signer key. Finished transaction IDs are kept. ca NULL: none until the next call.
 */
void prov_cmp_server_set_ca(struct prov_cmp_server *srv, struct prov_ca *ca, X509 *signer_cert,
                            EVP_PKEY *signer_key, time_t now);

/*
 * The configuration the server issues with, read again (SIGHUP, service/ca_keeper.c): cfg
 * (borrowed, as at prov_cmp_server_new, and kept alive by the caller while any request that
 * began under it may run) and its profile of the same name as before. Open transactions go
 * on under it from their next message; a message being answered keeps the one it began with. PROV_ERR_CONFIG, nothing changed, when cfg has no such profile.
 */
int prov_cmp_server_set_config(struct prov_cmp_server *srv, const struct prov_config *cfg);

/*
 * The answer while the CA token is unavailable: nothing can be signed, so the answer is an
 * unprotected negative one (RFC 9483 section 3.6.4) with failInfo systemUnavail and why as
 * its text: a rejection for a certificate request or rr, an error message otherwise. Like
 * prov_cmp_server_handle otherwise (PROV_ERR_INPUT for what is not a PKIMessage).
 */
int prov_cmp_server_unavailable(struct prov_cmp_server *srv, const unsigned char *der,
                                size_t len, const char *why, unsigned char **rsp,
                                size_t *rsp_len, struct prov_cmp_outcome *oc);

/* Open transactions, for status and tests. */
size_t prov_cmp_server_open_count(struct prov_cmp_server *srv);

/* How many protection certificates the station cache holds (cmp_station_cache.h); 0: none. */
size_t prov_cmp_server_cached_stations(const struct prov_cmp_server *srv);

void prov_cmp_server_free(struct prov_cmp_server *srv);

#endif
