/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_ISSUER_H
#define PROV_ISSUER_H

#include <stdbool.h>

#include <openssl/x509.h>

#include "config.h"
#include "issue.h"

/*
 * Who signs a device's certificate: the "issue" step of the pipeline (provisioner/pipeline/
 * steps.h) goes through this table, whatever stands behind it. Every command that issues,
 * or makes a key an issuer will certify, opens its issuer with prov_issuer_open, which picks
 * the implementation the config asks for; nothing above the core names the CA itself: the
 * local intermediate whose key lives in a PKCS#11 HSM (issuer.c), or a CA service reached
 * over the network (provisioner/remote/, registered as a struct prov_issuer_kind below).
 *
 * Every issuer applies the same rules on the way to a certificate, so that enroll, sign,
 * batch and station get them alike: the CSR policy (prov_issue_check_csr: proof of
 * possession, key type and size, no CA or unknown extension requested), and the record of
 * what was issued (no public key certified twice, a serial with a current certificate only
 * by a reissue). Subject and subjectAltName come from the request, never from the CSR.
 */
struct prov_issuer;
struct prov_ca;
struct prov_ca_index;
struct prov_device;

struct prov_issuer_ops {
    const char *name;
    /*
     * A CA elsewhere (a CA service, doc/ca-service.md) that keeps its own record: a request
     * whose answer was lost may still have been certified there, and asking again with the
     * same key gives the same certificate, so a caller keeps the key of a failed request.
     */
    bool is_remote;
    /*
     * A device that is to hold a device key is never the issuer's own: by device_uri alone
     * (dev NULL, before anything is opened: PROV_ERR_USAGE), or by identity once dev is open
     * and before anyone logs in to it (PROV_ERR_POLICY). An issuer with no device here: 0.
     */
    int (*check_device)(struct prov_issuer *is, const char *device_uri, struct prov_device *dev);
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
     * returned, or it is not returned. An issuer that is open (not deferred) may issue from
     * several threads at once.
     */
    int (*issue)(struct prov_issuer *is, X509_REQ *req, const struct prov_request *rq,
                 X509 **out);
    /* The chain above what it issues, intermediate(s) then root (borrowed); NULL: not known. */
    STACK_OF(X509) *(*chain)(struct prov_issuer *is);
    /* cert reached its storage or output file: the record says delivered. */
    int (*delivered)(struct prov_issuer *is, X509 *cert);
    /*
     * The record kept on this machine of what the issuer issued (the CA index), where `enroll`
     * also records its attempts (provisioner/pipeline/enroll_attempt.c); NULL when there is
     * none here (not open yet, or a CA that keeps its own record).
     */
    struct prov_ca_index *(*record)(struct prov_issuer *is);
    /* Closes what the issuer opened and frees is. */
    void (*close)(struct prov_issuer *is);
};

struct prov_issuer {
    const struct prov_issuer_ops *ops;
    const struct prov_config *cfg;
};

struct prov_issuer_opts {
    /*
     * Nothing is opened until the first issue: check reads the record alone, and issue
     * applies the CSR policy and the record's rules before it opens the CA (`sign`); an
     * issuer that only checks devices (`csr`, `install`) never opens it.
     */
    bool is_deferred;
};

/*
 * A kind of issuer reached over the network, picked by the scheme of [ca] url ("cmp://",
 * "est://", "https://"). The core knows none of them: the layer that links them
 * (provisioner/remote/, registered by cli/main.c at start-up, as the backends are) fills
 * this registry, so that the PKI library needs no network client. open makes an issuer for
 * cfg->ca_url; is_deferred: nothing is opened yet (see struct prov_issuer_opts).
 */
struct prov_issuer_kind {
    const char *scheme;
    int (*open)(const struct prov_config *cfg, bool is_deferred, struct prov_issuer **out);
};

/* Registers a kind (kept, not copied; a second one for a scheme is ignored). At most 8. */
void prov_issuer_register(const struct prov_issuer_kind *kind);

/*
 * The issuer cfg asks for, opened: with [ca] url, the registered kind for its scheme
 * (PROV_ERR_CONFIG when none is registered); else the local intermediate of [ca]
 * (chain.pem from ca_dir, its key in the HSM token of intermediate_key, logged in with [ca]
 * pin, the CA index), unless opts->is_deferred. opts may be NULL (not deferred). The HSM
 * session is one for the whole process: each signing holds the issuer's own lock, so that
 * threads (a batch's workers) share it. The errors of prov_ca_open (provisioner/pki/ca.h).
 */
int prov_issuer_open(const struct prov_config *cfg, const struct prov_issuer_opts *opts,
                     struct prov_issuer **out);

/*
 * The local issuer over a CA that is already open (unit tests, benchmarks): ca outlives the
 * issuer and is not closed by it. PROV_ERR_NOMEM.
 */
int prov_issuer_local_over(const struct prov_config *cfg, struct prov_ca *ca,
                           struct prov_issuer **out);

/*
 * check_device of the issuer cfg asks for, before one is open (a batch's validation pass, a
 * station identifying its device): nothing is opened, nor is anyone logged in to.
 */
int prov_issuer_check_device_for(const struct prov_config *cfg, const char *device_uri,
                                 struct prov_device *dev);

/* is->ops->close, when there is an issuer. */
void prov_issuer_close(struct prov_issuer *is);

#endif
