/* SPDX-License-Identifier: Apache-2.0 */
/*
 * CMP over OpenSSL's server (cmp_server.h): a table of transactions, one OSSL_CMP_SRV_CTX per
 * open one, messages in and answers out; the callbacks that reach the issue path are in
 * cmp_requests.c (cmp_server_int.h).
 */
#include "cmp_server.h"
#include "cmp_server_int.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/cmp.h>
#include <openssl/cmperr.h>
#include <openssl/crmf.h>
#include <openssl/err.h>

#include "ca_registry.h"
#include "ca_replay.h"
#include "cmp_asn1.h"
#include "cmp_station_cache.h"
#include "error.h"

#define NOT_VERIFIED "refused: the message does not verify or is not served"

/* Finished transactions remembered for the replay check; the oldest go first beyond this. */
#define FINISHED_MAX 100000
/* Protection certificates whose chain verified, remembered (cmp_station_cache.h). */
#define STATIONS_CACHED 64

static const char *body_name(int type)
{
    switch (type) {
    case BODY_IR: return "ir";
    case BODY_CR: return "cr";
    case BODY_P10CR: return "p10cr";
    case BODY_KUR: return "kur";
    case BODY_RR: return "rr";
    case BODY_GENM: return "genm";
    case BODY_CERTCONF: return "certConf";
    case BODY_POLLREQ: return "pollReq";
    case BODY_ERROR: return "error";
    default: return "other";
    }
}

static bool starts_transaction(int type)
{
    switch (type) {
    case BODY_IR:
    case BODY_CR:
    case BODY_P10CR:
    case BODY_KUR:
    case BODY_RR:
    case BODY_GENM:
        return true;
    default:
        return false;
    }
}


/* A server context for one transaction: the CMP signer protects the answers. */
static OSSL_CMP_SRV_CTX *txn_ctx_new(struct prov_cmp_server *srv, struct txn *t)
{
    OSSL_CMP_SRV_CTX *sctx = OSSL_CMP_SRV_CTX_new(NULL, NULL);
    OSSL_CMP_CTX *ctx = sctx != NULL ? OSSL_CMP_SRV_CTX_get0_cmp_ctx(sctx) : NULL;

    if (ctx == NULL ||
        !prov_cmp_requests_attach(sctx, t) ||
        !OSSL_CMP_CTX_set1_cert(ctx, srv->signer_cert) ||
        !OSSL_CMP_CTX_set1_pkey(ctx, srv->signer_key) ||
        !OSSL_CMP_CTX_set1_untrusted(ctx, srv->chain) ||
        /* a station is the device's RA (doc/ca-service.md); a device's kur must prove its key:
           key_update checks that itself */
        !OSSL_CMP_SRV_CTX_set_accept_raverified(sctx, 1) || !X509_STORE_up_ref(srv->trust)) {
        OSSL_CMP_SRV_CTX_free(sctx);
        return NULL;
    }
    OSSL_CMP_CTX_set0_trustedStore(ctx, srv->trust);
    /* quiet: refusals are reported in the service's one line per request */
    OSSL_CMP_CTX_set_log_cb(ctx, prov_cmp_log_nothing);
    return sctx;
}

static void txn_free(struct txn *t)
{
    OSSL_CMP_SRV_CTX_free(t->ctx);
    X509_free(t->issued);
    free(t);
}

static void txn_finish(struct prov_cmp_server *srv, struct txn *t, time_t now)
{
    if (t->ctx != NULL) {
        OSSL_CMP_SRV_CTX_free(t->ctx);
        t->ctx = NULL;
        srv->n_open--;
        srv->n_finished++;
    }
    X509_free(t->issued);
    t->issued = NULL;
    t->last = now;
}

/* t out of the table and freed; srv->lock held. */
static void txn_unlink(struct prov_cmp_server *srv, struct txn *t)
{
    for (struct txn **pp = &srv->txns; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == t) {
            *pp = t->next;
            break;
        }
    }
    txn_free(t);
}

/* The message t was busy with is answered: t takes the next one, or is finished. */
static void txn_release(struct prov_cmp_server *srv, struct txn *t, time_t now,
                        bool is_finished)
{
    pthread_mutex_lock(&srv->lock);
    t->is_busy = false;
    t->last = now;
    if (is_finished) {
        txn_finish(srv, t, now);
    }
    pthread_mutex_unlock(&srv->lock);
}

/*
 * Open transactions idle longer than the timeout end (a certificate never confirmed stays
 * "issued" in the index: `ca show` lists it); beyond FINISHED_MAX the oldest finished IDs go.
 * srv->lock held.
 */
static void expire(struct prov_cmp_server *srv, time_t now)
{
    size_t kept_finished = 0;
    struct txn **pp = &srv->txns;

    while (*pp != NULL) {
        struct txn *t = *pp;

        if (t->is_busy) {
            pp = &t->next; /* a worker answers its message now */
            continue;
        }
        if (t->ctx != NULL && now - t->last > srv->timeout_s) {
            txn_finish(srv, t, now);
        }
        if (t->ctx == NULL && ++kept_finished > FINISHED_MAX) {
            *pp = t->next;
            srv->n_finished--;
            txn_free(t);
            continue;
        }
        pp = &t->next;
    }
}

static struct txn *txn_find(struct prov_cmp_server *srv, const ASN1_OCTET_STRING *tid)
{
    for (struct txn *t = srv->txns; t != NULL; t = t->next) {
        if (t->id_len == (size_t)ASN1_STRING_length(tid) &&
            memcmp(t->id, ASN1_STRING_get0_data(tid), t->id_len) == 0) {
            return t;
        }
    }
    return NULL;
}

/*
 * A refusal in CMP: the message goes through a fresh server context whose callbacks refuse
 * (with the scratch transaction's fail_bit and the outcome's text), so that the answer is
 * made, and protected when it can be, by OpenSSL as any other: refuse and
 * prov_cmp_server_unavailable.
 */
static OSSL_CMP_PKISI *cb_refuse_cert(OSSL_CMP_SRV_CTX *sctx, const OSSL_CMP_MSG *req, int id,
                                      const OSSL_CRMF_MSG *crm, const X509_REQ *p10cr,
                                      X509 **cert_out, STACK_OF(X509) **chain_out,
                                      STACK_OF(X509) **ca_pubs)
{
    struct txn *t = OSSL_CMP_SRV_CTX_get0_custom_ctx(sctx);

    (void)req;
    (void)id;
    (void)crm;
    (void)p10cr;
    (void)cert_out;
    (void)chain_out;
    (void)ca_pubs;
    t->was_verified = true;
    return rejection(t->fail_bit, t->oc->result);
}

static OSSL_CMP_PKISI *cb_refuse_rr(OSSL_CMP_SRV_CTX *sctx, const OSSL_CMP_MSG *req,
                                    const X509_NAME *issuer, const ASN1_INTEGER *serial)
{
    struct txn *t = OSSL_CMP_SRV_CTX_get0_custom_ctx(sctx);

    (void)req;
    (void)issuer;
    (void)serial;
    t->was_verified = true;
    return rejection(t->fail_bit, t->oc->result);
}

static int cb_refuse_genm(OSSL_CMP_SRV_CTX *sctx, const OSSL_CMP_MSG *req,
                          const STACK_OF(OSSL_CMP_ITAV) *in, STACK_OF(OSSL_CMP_ITAV) **out)
{
    struct txn *t = OSSL_CMP_SRV_CTX_get0_custom_ctx(sctx);

    (void)req;
    (void)in;
    *out = NULL;
    t->was_verified = true;
    ERR_raise_data(ERR_LIB_CMP, CMP_R_REQUEST_REJECTED_BY_SERVER, "%s", t->oc->result);
    return 0;
}

/*
 * req refused with oc's text and fail_bit by a fresh server context whose callbacks only
 * refuse; with is_unverified its protection is let through there (nothing can be issued).
 */
static OSSL_CMP_MSG *refuse_as(struct prov_cmp_server *srv, const OSSL_CMP_MSG *req,
                               struct prov_cmp_outcome *oc, int fail_bit, bool is_unverified)
{
    struct txn scratch;
    OSSL_CMP_SRV_CTX *sctx;
    OSSL_CMP_MSG *rsp = NULL;

    memset(&scratch, 0, sizeof(scratch));
    scratch.owner = srv;
    scratch.oc = oc;
    scratch.fail_bit = fail_bit;
    sctx = txn_ctx_new(srv, &scratch);
    if (sctx != NULL &&
        OSSL_CMP_SRV_CTX_init(sctx, &scratch, cb_refuse_cert, NULL, cb_refuse_genm, NULL, NULL,
                              NULL) &&
        (!is_unverified || OSSL_CMP_SRV_CTX_set_accept_unprotected(sctx, 1))) {
        rsp = OSSL_CMP_SRV_process_request(sctx, req);
    }
    OSSL_CMP_SRV_CTX_free(sctx);
    return rsp;
}

static OSSL_CMP_MSG *refuse(struct prov_cmp_server *srv, const OSSL_CMP_MSG *req,
                            struct prov_cmp_outcome *oc)
{
    return refuse_as(srv, req, oc, OSSL_CMP_PKIFAILUREINFO_transactionIdInUse, false);
}

/*
 * A refusal of a message OpenSSL refused before any callback, with what the sender is told
 * (prov_cmp_claimed_sender): its protection is let through in a fresh server context whose
 * callbacks only refuse, so that OpenSSL makes the answer as any other refusal, the text in
 * its PKIStatusInfo rather than OpenSSL's "no suitable sender cert". NULL when it cannot.
 */
static OSSL_CMP_MSG *refuse_unverified(struct prov_cmp_server *srv, const OSSL_CMP_MSG *req,
                                       const char *tell)
{
    struct prov_cmp_outcome said; /* the answer's text; the request's own outcome stays */
    OSSL_CMP_MSG *rsp;

    memset(&said, 0, sizeof(said));
    outcome_set(&said, "%s", tell);
    rsp = refuse_as(srv, req, &said, OSSL_CMP_PKIFAILUREINFO_signerNotTrusted, true);
    ERR_clear_error();
    return rsp;
}

/*
 * Whether the CA index remembers the transactionID tid (ca_replay.h): a transaction answered
 * before the service last started. The outcome then says so; a store that cannot be read
 * refuses too (a replay must not get through because the index failed).
 */
static bool is_remembered(struct prov_cmp_server *srv, const ASN1_OCTET_STRING *tid, time_t now,
                          struct prov_cmp_outcome *oc)
{
    bool is_known = false;

    prov_error_clear();
    if (prov_ca_replay_is_known(srv->ca->index, ASN1_STRING_get0_data(tid),
                                (size_t)ASN1_STRING_length(tid), now, &is_known) < 0) {
        outcome_set(oc, "refused: the CA index cannot say whether the transactionID was "
                        "used: %s", prov_error_message());
        return true;
    }
    if (is_known) {
        outcome_set(oc, "refused: replay of a finished transaction (remembered in the CA index)");
    }
    return is_known;
}

/*
 * A transaction whose request verified is remembered in the CA index until its signer
 * expires, whatever it was answered: a refusal replayed later (the cap raised since) must not
 * be honoured either. A failure to write is said in the outcome; the answer stands.
 */
static void remember(struct prov_cmp_server *srv, struct txn *t, time_t now,
                     struct prov_cmp_outcome *oc)
{
    size_t n = strlen(oc->result);

    prov_error_clear();
    if (prov_ca_replay_remember(srv->ca->index, t->id, t->id_len, now, t->signer_expires) < 0) {
        snprintf(oc->result + n, sizeof(oc->result) - n, " (transactionID not remembered: %s)",
                 prov_error_message());
    }
}

/* The request's PKIMessage, the outcome and the answer reset; PROV_ERR_INPUT for other bytes. */
static int decode_request(const unsigned char *der, size_t len, unsigned char **rsp,
                          size_t *rsp_len, struct prov_cmp_outcome *oc, OSSL_CMP_MSG **req)
{
    const unsigned char *p = der;

    *rsp = NULL;
    *rsp_len = 0;
    memset(oc, 0, sizeof(*oc));
    snprintf(oc->body, sizeof(oc->body), "-");
    snprintf(oc->station, sizeof(oc->station), "-");
    snprintf(oc->serial, sizeof(oc->serial), "-");
    if (len > (size_t)INT32_MAX) {
        outcome_set(oc, "refused: not a PKIMessage");
        return prov_fail(PROV_ERR_INPUT, "CMP request: not a PKIMessage");
    }
    *req = d2i_OSSL_CMP_MSG(NULL, &p, (long)len);
    if (*req == NULL || p != der + len) {
        OSSL_CMP_MSG_free(*req);
        *req = NULL;
        ERR_clear_error();
        outcome_set(oc, "refused: not a PKIMessage (DER)");
        return prov_fail(PROV_ERR_INPUT, "CMP request: not a PKIMessage (DER)");
    }
    snprintf(oc->body, sizeof(oc->body), "%s", body_name(OSSL_CMP_MSG_get_bodytype(*req)));
    return 0;
}

/* The answer in DER into *rsp; frees answer. */
static int encode_answer(OSSL_CMP_MSG *answer, unsigned char **rsp, size_t *rsp_len)
{
    int n;

    ERR_clear_error();
    if (answer == NULL) {
        return prov_fail(PROV_ERR_INTERNAL, "CMP: no answer could be made");
    }
    n = i2d_OSSL_CMP_MSG(answer, rsp);
    OSSL_CMP_MSG_free(answer);
    if (n <= 0) {
        *rsp = NULL;
        return prov_fail_ossl(PROV_ERR_CRYPTO, "CMP: cannot encode the answer");
    }
    *rsp_len = (size_t)n;
    return 0;
}

/*
 * A pkiConf goes without extraCerts: it ends a transaction whose answer before it (the ip,
 * cp, kup) carried the CMP signer's certificate and chain, which the client validated and
 * verifies this one with (RFC 9483 section 3.3 asks for them in the first message of an
 * operation; OpenSSL's client keeps the sender it validated for the rest of the transaction).
 * So the client does not decode two certificates and their keys again for an empty body.
 * The protection covers the header and body only: it verifies the same. Left whole when it
 * cannot be done.
 */
static void lean_confirmation(unsigned char **rsp, size_t *rsp_len)
{
    unsigned char *lean = NULL;
    unsigned char *copy;
    size_t lean_len = 0;

    if (prov_cmp_station_cache_strip_extra(*rsp, *rsp_len, &lean, &lean_len) != 0 ||
        (copy = OPENSSL_malloc(lean_len)) == NULL) {
        free(lean);
        prov_error_clear();
        return;
    }
    memcpy(copy, lean, lean_len);
    free(lean);
    OPENSSL_free(*rsp);
    *rsp = copy;
    *rsp_len = lean_len;
}

/*
 * The request's protection certificate (signer, from prov_cmp_station_cache_pin: its chain
 * known to verify, current; taken over), pinned for OpenSSL's check of this message: OpenSSL
 * then verifies the protection with it alone (the message's sender must be its subject)
 * instead of searching the message's certificates and verifying a chain, and
 * prov_cmp_request_station takes it as the signer. Without one, both check the message in full.
 */
static void pin(struct txn *t, X509 *signer, bool is_new)
{
    OSSL_CMP_CTX *ctx = OSSL_CMP_SRV_CTX_get0_cmp_ctx(t->ctx);

    t->pinned = signer;
    t->is_pin_new = is_new;
    if (t->pinned != NULL && !OSSL_CMP_CTX_set1_srvCert(ctx, t->pinned)) {
        X509_free(t->pinned);
        t->pinned = NULL;
    }
    ERR_clear_error();
}

/*
 * The request as it came, with its extraCerts, when req was decoded without them (lean): for
 * what reads them (the claimed sender) or needs them to verify (the refusals' fresh server
 * contexts). Decoded once, into *whole (the caller's); req itself when it is not lean, or when
 * the bytes do not decode (they did without the extraCerts, so they hardly fail).
 */
static OSSL_CMP_MSG *with_extra(const unsigned char *der, size_t len, OSSL_CMP_MSG *req,
                                bool is_lean, OSSL_CMP_MSG **whole)
{
    const unsigned char *p = der;

    if (!is_lean) {
        return req;
    }
    if (*whole == NULL) {
        *whole = d2i_OSSL_CMP_MSG(NULL, &p, (long)len);
        ERR_clear_error();
    }
    return *whole != NULL ? *whole : req;
}

/* The next message of the transaction is pinned afresh, or checked in full. */
static void unpin(struct txn *t)
{
    if (t->pinned != NULL) {
        OSSL_CMP_CTX_set1_srvCert(OSSL_CMP_SRV_CTX_get0_cmp_ctx(t->ctx), NULL);
        X509_free(t->pinned);
        t->pinned = NULL;
    }
}

int prov_cmp_server_handle(struct prov_cmp_server *srv, const unsigned char *der, size_t len,
                           time_t now, unsigned char **rsp, size_t *rsp_len,
                           struct prov_cmp_outcome *oc)
{
    return prov_cmp_server_handle_lot(srv, NULL, der, len, now, rsp, rsp_len, oc);
}

int prov_cmp_server_handle_lot(struct prov_cmp_server *srv, const char *lot,
                               const unsigned char *der, size_t len, time_t now,
                               unsigned char **rsp, size_t *rsp_len,
                               struct prov_cmp_outcome *oc)
{
    OSSL_CMP_MSG *req = NULL;
    OSSL_CMP_MSG *whole = NULL;
    OSSL_CMP_MSG *answer = NULL;
    const ASN1_OCTET_STRING *tid;
    unsigned char *lean = NULL;
    size_t lean_len = 0;
    bool is_lean = false;
    bool is_new = false;
    X509 *signer;
    struct txn *t;
    bool is_locked = true; /* ca_lock, once taken below */
    int answer_type;
    const struct prov_config *cfg;
    const struct prov_profile *profile;
    enum { REFUSE, REFUSE_RECORDED, START, CONTINUE, NOMEM, NO_CONTEXT } action;
    int type;
    int r;

    /*
     * A protection certificate the cache holds is not decoded again: the message is decoded
     * without its extraCerts (cmp_station_cache.h), OpenSSL verifies it with the pinned one.
     */
    signer = prov_cmp_station_cache_pin(srv->stations, der, len, srv->trust, srv->chain, now,
                                        &is_new);
    if (signer != NULL && !is_new &&
        prov_cmp_station_cache_strip_extra(der, len, &lean, &lean_len) == 0) {
        is_lean = decode_request(lean, lean_len, rsp, rsp_len, oc, &req) == 0;
        free(lean);
    }
    prov_error_clear();
    r = is_lean ? 0 : decode_request(der, len, rsp, rsp_len, oc, &req);
    if (r < 0) {
        X509_free(signer);
        return r;
    }
    type = OSSL_CMP_MSG_get_bodytype(req);
    snprintf(oc->body, sizeof(oc->body), "%s", body_name(type));
    tid = OSSL_CMP_HDR_get0_transactionID(OSSL_CMP_MSG_get0_header(req));
    /* the CA stays as it is until this request is answered (prov_cmp_server_set_ca waits) */
    pthread_rwlock_rdlock(&srv->ca_lock);
    if (srv->ca == NULL) {
        /* it went away while this request waited for a worker (service/http.c) */
        outcome_set(oc, "unavailable: the CA token is not open");
        r = PROV_ERR_DEVICE_REMOVED;
        goto out;
    }
    /*
     * What the message is to the transaction table, decided under the table's lock: a new
     * transaction is in the table, busy, before the lock is let go, so that the same ID sent
     * twice at once starts one transaction, and a transaction handles one message at a time.
     */
    pthread_mutex_lock(&srv->lock);
    cfg = srv->cfg;
    profile = srv->profile;
    expire(srv, now);
    t = tid != NULL ? txn_find(srv, tid) : NULL;
    if (tid == NULL || ASN1_STRING_length(tid) < TID_MIN || ASN1_STRING_length(tid) > TID_MAX) {
        outcome_set(oc, "refused: transactionID missing or not %d to %d bytes", TID_MIN,
                    TID_MAX);
        action = REFUSE;
    } else if (starts_transaction(type) && t != NULL) {
        /* The same ID again: a replayed message, or an ID the station reuses. */
        outcome_set(oc, "refused: transactionID already used (%s transaction)",
                    t->ctx != NULL || t->is_busy ? "an open" : "a finished");
        if (t->ctx == NULL && !t->is_busy) {
            snprintf(oc->result, sizeof(oc->result),
                     "refused: replay of a finished transaction");
        }
        action = REFUSE_RECORDED;
    } else if (t != NULL && t->is_busy) {
        /* a client sends the next message once it has the answer to the last one */
        outcome_set(oc, "refused: %s while the transaction's last message is being answered",
                    body_name(type));
        action = REFUSE_RECORDED;
    } else if (!starts_transaction(type) && (t == NULL || t->ctx == NULL)) {
        outcome_set(oc, "refused: %s for %s transaction", body_name(type),
                    t == NULL ? "an unknown" : "a finished");
        action = REFUSE_RECORDED;
    } else if (t == NULL) {
        t = calloc(1, sizeof(*t));
        if (t != NULL) {
            t->owner = srv;
            t->id_len = (size_t)ASN1_STRING_length(tid);
            memcpy(t->id, ASN1_STRING_get0_data(tid), t->id_len);
            snprintf(t->station, sizeof(t->station), "-");
            snprintf(t->serial, sizeof(t->serial), "-");
            snprintf(t->lot, sizeof(t->lot), "%s", lot != NULL ? lot : "");
            t->last = now;
            t->is_busy = true;
            t->next = srv->txns;
            srv->txns = t;
        }
        action = t != NULL ? START : NOMEM;
    } else {
        t->is_busy = true;
        action = CONTINUE;
    }
    pthread_mutex_unlock(&srv->lock);

    if (action == START && is_remembered(srv, tid, now, oc)) {
        /* answered before the service last started: the CA index remembers it */
        pthread_mutex_lock(&srv->lock);
        txn_unlink(srv, t);
        pthread_mutex_unlock(&srv->lock);
        t = NULL;
        action = REFUSE_RECORDED;
    } else if (action == START) {
        OSSL_CMP_SRV_CTX *ctx = txn_ctx_new(srv, t);

        pthread_mutex_lock(&srv->lock);
        if (ctx == NULL) {
            txn_unlink(srv, t);
            t = NULL;
            action = NO_CONTEXT;
        } else {
            t->ctx = ctx;
            srv->n_open++;
        }
        pthread_mutex_unlock(&srv->lock);
    }
    if (action == NOMEM || action == NO_CONTEXT) {
        r = action == NOMEM ? prov_fail(PROV_ERR_NOMEM, "CMP: out of memory")
                            : prov_fail_ossl(PROV_ERR_CRYPTO, "CMP: cannot make a server context");
        goto out;
    }
    if (action == REFUSE || action == REFUSE_RECORDED) {
        if (action == REFUSE_RECORDED) {
            prov_ca_registry_refused(srv->ca->index, body_name(type), oc->result);
        }
        answer = refuse(srv, with_extra(der, len, req, is_lean, &whole), oc);
    } else {
        t->oc = oc;
        t->cfg = cfg;
        t->profile = profile;
        t->last = now;
        outcome_set(oc, "%s", NOT_VERIFIED);
        pin(t, signer, is_new);
        signer = NULL;
        answer = OSSL_CMP_SRV_process_request(t->ctx, req);
        unpin(t);
        answer_type = answer != NULL ? OSSL_CMP_MSG_get_bodytype(answer) : -1;
        if (strcmp(oc->result, NOT_VERIFIED) == 0 &&
            (answer_type == BODY_IP || answer_type == BODY_CP || answer_type == BODY_KUP)) {
            /*
             * A certificate response without the callback: OpenSSL's server refused the
             * request's proof of possession (badPOP), after its protection verified.
             */
            outcome_set(oc, "refused: the proof of possession does not verify");
            prov_ca_registry_refused(srv->ca->index, body_name(type), oc->result);
        } else if (strcmp(oc->result, NOT_VERIFIED) == 0) {
            /* OpenSSL refused it before any callback: no protection, or none that verifies. */
            char claim[240];
            char tell[240];

            prov_cmp_claimed_sender(srv, with_extra(der, len, req, is_lean, &whole), claim,
                                    sizeof(claim), tell, sizeof(tell));
            if (claim[0] != '\0') {
                outcome_set(oc, "%s (%s)", NOT_VERIFIED, claim);
            }
            if (tell[0] != '\0') {
                OSSL_CMP_MSG *told =
                    refuse_unverified(srv, with_extra(der, len, req, is_lean, &whole), tell);

                if (told != NULL) {
                    OSSL_CMP_MSG_free(answer);
                    answer = told;
                }
            }
            prov_ca_registry_refused(srv->ca->index, body_name(type), oc->result);
        }
        if (answer != NULL && OSSL_CMP_MSG_get_bodytype(answer) == BODY_ERROR &&
            strncmp(oc->result, "refused", 7) != 0 && strncmp(oc->result, "failed", 6) != 0) {
            outcome_set(oc, "refused: %s", "error answered");
        }
        snprintf(oc->station, sizeof(oc->station), "%s", t->station);
        if (starts_transaction(type) && t->signer_expires > now && !t->is_remembered) {
            remember(srv, t, now, oc);
        }
        t->oc = NULL;
        txn_release(srv, t, now,
                    OSSL_CMP_CTX_get_status(OSSL_CMP_SRV_CTX_get0_cmp_ctx(t->ctx)) !=
                        OSSL_CMP_PKISTATUS_trans);
    }
    pthread_rwlock_unlock(&srv->ca_lock);
    is_locked = false;
    answer_type = answer != NULL ? OSSL_CMP_MSG_get_bodytype(answer) : -1;
    r = encode_answer(answer, rsp, rsp_len);
    answer = NULL;
    if (r == 0 && answer_type == BODY_PKICONF) {
        lean_confirmation(rsp, rsp_len);
    }
out:
    if (is_locked) {
        pthread_rwlock_unlock(&srv->ca_lock);
    }
    OSSL_CMP_MSG_free(answer);
    OSSL_CMP_MSG_free(whole);
    OSSL_CMP_MSG_free(req);
    X509_free(signer); /* not pinned: a refusal, or no memory for the transaction */
    return r;
}

void prov_cmp_server_set_ca(struct prov_cmp_server *srv, struct prov_ca *ca, X509 *signer_cert,
                            EVP_PKEY *signer_key, time_t now)
{
    struct txn *t;

    /* no worker is inside prov_cmp_server_handle_lot meanwhile, so no transaction is busy */
    pthread_rwlock_wrlock(&srv->ca_lock);
    pthread_mutex_lock(&srv->lock);
    for (t = srv->txns; t != NULL; t = t->next) {
        txn_finish(srv, t, now);
    }
    /* another CA (or none): no chain verified under the old one counts */
    prov_cmp_station_cache_clear(srv->stations);
    srv->ca = ca;
    for (t = srv->txns; t != NULL && ca != NULL; t = t->next) {
        /* answered "unavailable" meanwhile: now the CA index can remember it (remember) */
        if (t->is_unrecorded &&
            prov_ca_replay_remember(ca->index, t->id, t->id_len, now, t->signer_expires) == 0) {
            t->is_unrecorded = false;
        }
    }
    srv->signer_cert = signer_cert;
    srv->signer_key = signer_key;
    if (signer_cert != NULL && X509_up_ref(signer_cert)) {
        X509_free(srv->sender);
        srv->sender = signer_cert;
    }
    pthread_mutex_unlock(&srv->lock);
    pthread_rwlock_unlock(&srv->ca_lock);
}

int prov_cmp_server_set_config(struct prov_cmp_server *srv, const struct prov_config *cfg)
{
    const struct prov_profile *p = prov_config_profile(cfg, srv->profile->name);

    if (p == NULL) {
        return prov_fail(PROV_ERR_CONFIG, "profile \"%s\": not in %s (no [profile_%s] section)",
                         srv->profile->name, cfg->path, srv->profile->name);
    }
    /* the requests being answered keep theirs (the caller keeps old configs until exit) */
    pthread_mutex_lock(&srv->lock);
    srv->cfg = cfg;
    srv->profile = p;
    pthread_mutex_unlock(&srv->lock);
    /* a reload (SIGHUP) starts afresh: every certificate's chain is verified again */
    prov_cmp_station_cache_clear(srv->stations);
    return 0;
}

/*
 * A request that verified but was answered "unavailable" is a finished transaction like any
 * other, so that it cannot be replayed once the CA is back: kept in memory at once, and in
 * the CA index (closed while the CA is away: ca_keeper.c) when prov_cmp_server_set_ca opens
 * it again. Its signer is pinned and its expiry read as for a transaction (prov_cmp_request_station).
 */
static void remember_unavailable(struct prov_cmp_server *srv, struct txn *scratch,
                                 const OSSL_CMP_MSG *req)
{
    const ASN1_OCTET_STRING *tid = OSSL_CMP_HDR_get0_transactionID(OSSL_CMP_MSG_get0_header(req));
    time_t now = time(NULL);
    X509 *signer = NULL;
    struct txn *t;
    char name[65];
    bool is_known;

    if (!scratch->was_verified || !starts_transaction(OSSL_CMP_MSG_get_bodytype(req)) ||
        tid == NULL || ASN1_STRING_length(tid) < TID_MIN || ASN1_STRING_length(tid) > TID_MAX) {
        return;
    }
    pthread_mutex_lock(&srv->lock);
    is_known = txn_find(srv, tid) != NULL;
    pthread_mutex_unlock(&srv->lock);
    if (is_known || prov_cmp_request_station(scratch, req, name, sizeof(name), &signer) < 0) {
        return;
    }
    X509_free(signer);
    t = scratch->signer_expires > now ? calloc(1, sizeof(*t)) : NULL;
    if (t == NULL) {
        return;
    }
    t->owner = srv;
    t->id_len = (size_t)ASN1_STRING_length(tid);
    memcpy(t->id, ASN1_STRING_get0_data(tid), t->id_len);
    t->signer_expires = scratch->signer_expires;
    t->last = now;
    /*
     * The CA may be open again already (a queued request answered "unavailable" after the
     * keeper re-opened it): then the index remembers the ID now, as set_ca does for the others.
     */
    t->is_unrecorded = srv->ca == NULL || prov_ca_replay_remember(srv->ca->index, t->id,
                                                                  t->id_len, now,
                                                                  t->signer_expires) != 0;
    pthread_mutex_lock(&srv->lock);
    if (txn_find(srv, tid) != NULL) {
        free(t); /* a worker's transaction took the ID meanwhile */
    } else {
        t->next = srv->txns;
        srv->txns = t;
        srv->n_finished++;
    }
    pthread_mutex_unlock(&srv->lock);
}

int prov_cmp_server_unavailable(struct prov_cmp_server *srv, const unsigned char *der,
                                size_t len, const char *why, unsigned char **rsp,
                                size_t *rsp_len, struct prov_cmp_outcome *oc)
{
    OSSL_CMP_SRV_CTX *sctx = NULL;
    OSSL_CMP_CTX *ctx;
    OSSL_CMP_MSG *req = NULL;
    OSSL_CMP_MSG *answer = NULL;
    struct txn scratch;
    int r;

    r = decode_request(der, len, rsp, rsp_len, oc, &req);
    if (r < 0) {
        return r;
    }
    outcome_set(oc, "unavailable: %s", why);
    memset(&scratch, 0, sizeof(scratch));
    scratch.owner = srv;
    scratch.oc = oc;
    scratch.fail_bit = OSSL_CMP_PKIFAILUREINFO_systemUnavail;
    sctx = OSSL_CMP_SRV_CTX_new(NULL, NULL);
    ctx = sctx != NULL ? OSSL_CMP_SRV_CTX_get0_cmp_ctx(sctx) : NULL;
    /* no key to sign with: the answer goes unprotected; the request is verified as ever */
    if (ctx != NULL &&
        OSSL_CMP_SRV_CTX_init(sctx, &scratch, cb_refuse_cert, cb_refuse_rr, cb_refuse_genm,
                              NULL, NULL, NULL) &&
        OSSL_CMP_CTX_set_option(ctx, OSSL_CMP_OPT_UNPROTECTED_SEND, 1) &&
        OSSL_CMP_CTX_set1_subjectName(ctx, X509_get_subject_name(srv->sender)) &&
        OSSL_CMP_CTX_set1_untrusted(ctx, srv->chain) && X509_STORE_up_ref(srv->trust)) {
        OSSL_CMP_CTX_set0_trustedStore(ctx, srv->trust);
        OSSL_CMP_CTX_set_log_cb(ctx, prov_cmp_log_nothing);
        answer = OSSL_CMP_SRV_process_request(sctx, req);
    }
    OSSL_CMP_SRV_CTX_free(sctx);
    remember_unavailable(srv, &scratch, req);
    OSSL_CMP_MSG_free(req);
    return encode_answer(answer, rsp, rsp_len);
}

int prov_cmp_server_new(const struct prov_cmp_server_opts *opts, struct prov_cmp_server **out)
{
    struct prov_cmp_server *srv = calloc(1, sizeof(*srv));
    const char *profile = opts->profile != NULL ? opts->profile : "device";
    pthread_rwlockattr_t attr;

    *out = NULL;
    if (srv == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "CMP: out of memory");
    }
    pthread_mutex_init(&srv->lock, NULL);
    /* the CA's changes wait for the requests being answered, not for every later one too */
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&srv->ca_lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    srv->cfg = opts->cfg;
    srv->ca = opts->ca;
    srv->signer_cert = opts->signer_cert;
    srv->signer_key = opts->signer_key;
    srv->timeout_s = opts->transaction_timeout_s > 0 ? opts->transaction_timeout_s : 300;
    srv->profile = prov_config_profile(opts->cfg, profile);
    if (srv->profile == NULL) {
        prov_cmp_server_free(srv);
        return prov_fail(PROV_ERR_CONFIG, "profile \"%s\": not in %s (no [profile_%s] section)",
                         profile, opts->cfg->path, profile);
    }
    srv->trust = X509_STORE_new();
    srv->chain = X509_chain_up_ref(opts->ca->chain);
    if (prov_cmp_station_cache_new(STATIONS_CACHED, &srv->stations) < 0) {
        prov_cmp_server_free(srv);
        return PROV_ERR_NOMEM;
    }
    /*
     * The intermediate is trusted as well (a partial chain): it is this CA's own certificate,
     * so a station or device certificate it issued is verified up to it, not again up to the
     * root for every message (doc/ca-service.md, "Measured"); one under another intermediate
     * of the root still chains to the root.
     */
    srv->sender = X509_up_ref(opts->signer_cert) ? opts->signer_cert : NULL;
    if (srv->trust == NULL || srv->chain == NULL || srv->sender == NULL ||
        !X509_STORE_add_cert(srv->trust, opts->ca->root) ||
        !X509_STORE_add_cert(srv->trust, opts->ca->cert) ||
        !X509_STORE_set_flags(srv->trust, X509_V_FLAG_PARTIAL_CHAIN)) {
        prov_cmp_server_free(srv);
        return prov_fail_ossl(PROV_ERR_NOMEM, "CMP: out of memory");
    }
    *out = srv;
    return 0;
}

size_t prov_cmp_server_cached_stations(const struct prov_cmp_server *srv)
{
    return srv != NULL && srv->stations != NULL ? prov_cmp_station_cache_count(srv->stations) : 0;
}

size_t prov_cmp_server_open_count(struct prov_cmp_server *srv)
{
    size_t n;

    pthread_mutex_lock(&srv->lock);
    n = srv->n_open;
    pthread_mutex_unlock(&srv->lock);
    return n;
}

void prov_cmp_server_free(struct prov_cmp_server *srv)
{
    if (srv == NULL) {
        return;
    }
    while (srv->txns != NULL) {
        struct txn *t = srv->txns;

        srv->txns = t->next;
        txn_free(t);
    }
    X509_STORE_free(srv->trust);
    x509s_free(srv->chain);
    X509_free(srv->sender);
    prov_cmp_station_cache_free(srv->stations);
    pthread_rwlock_destroy(&srv->ca_lock);
    pthread_mutex_destroy(&srv->lock);
    free(srv);
}
