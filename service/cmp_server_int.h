/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The CMP server's insides (the server of cmp_server.h), shared by its two files: cmp_server.c keeps the
 * transactions and takes messages in and answers out; cmp_requests.c holds the callbacks
 * OpenSSL's server calls for a request, which reach the issue path (provisioner/pki/issue.c).
 * Not for anything else in the service.
 */
#ifndef PROV_SERVICE_CMP_SERVER_INT_H
#define PROV_SERVICE_CMP_SERVER_INT_H

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <time.h>

#include <openssl/cmp.h>
#include <openssl/x509.h>

#include "ca_replay.h"
#include "cmp_outcome.h"

struct prov_ca;
struct prov_config;
struct prov_profile;
struct prov_cmp_station_cache;

/* RFC 9483 section 3.1: a transactionID of 128 bits; OpenSSL's client sends 16 bytes. */
#define TID_MIN 16
#define TID_MAX PROV_CA_REPLAY_TID_MAX

/* PKIBody choices (RFC 4210 section 5.1.2): OpenSSL 3.0 keeps its names for them internal. */
enum {
    BODY_IR = 0,
    BODY_IP = 1,
    BODY_CR = 2,
    BODY_CP = 3,
    BODY_P10CR = 4,
    BODY_KUR = 7,
    BODY_KUP = 8,
    BODY_RR = 11,
    BODY_RP = 12,
    BODY_PKICONF = 19,
    BODY_GENM = 21,
    BODY_GENP = 22,
    BODY_ERROR = 23,
    BODY_CERTCONF = 24,
    BODY_POLLREQ = 25,
};

struct txn {
    struct txn *next;
    unsigned char id[TID_MAX];
    size_t id_len;
    OSSL_CMP_SRV_CTX *ctx; /* NULL once finished */
    time_t last;           /* last message (open) or when it finished */
    X509 *issued;          /* the certificate answered, until its certConf */
    char station[65];
    char serial[65];
    char lot[PROV_CMP_LOT_MAX + 1]; /* the lot the path names (/p/LOT), or "" */
    time_t signer_expires;  /* the verified signer's notAfter (ca_replay.h), or 0 */
    int fail_bit;           /* a scratch transaction's refusal (cb_refuse_*): its failInfo */
    bool was_verified;      /* a scratch transaction: a cb_refuse_* ran, so the request verified */
    bool is_unrecorded;     /* finished while the CA index was closed: remembered when it opens */
    bool is_remembered;     /* its ID went into the CA index with the certificate it issued */
    struct prov_cmp_server *owner;
    /* the configuration and profile the message being handled is issued under: the
       server's when it began (a SIGHUP meanwhile applies to the next message) */
    const struct prov_config *cfg;
    const struct prov_profile *profile;
    struct prov_cmp_outcome *oc; /* the outcome of the message being handled */
    X509 *pinned; /* the message being handled was verified with this alone (handle_lot) */
    bool is_pin_new; /* pinned is not in the station cache yet: kept once the message verified */
    bool is_busy;    /* a worker answers a message of it now (its ctx is that worker's) */
};

/*
 * Several workers answer requests at once (service/http.c). ca_lock, read-held for a whole
 * request, keeps ca and the signer as they are (prov_cmp_server_set_ca write-holds it); lock
 * guards the transaction table (txns, the counts, each transaction's is_busy) and cfg and
 * profile, which a request copies into its transaction when it begins (set_config swaps
 * them under lock alone, without waiting for the requests being answered). A busy transaction's other fields are its worker's alone. The CA
 * index has its own lock (provisioner/pki/ca_index.h), the station cache its own, and the
 * CA token gives each signing thread a session of its own (backends/pkcs11/pkcs11_internal.h,
 * struct p11_dev).
 */
struct prov_cmp_server {
    pthread_mutex_t lock;
    pthread_rwlock_t ca_lock;
    const struct prov_config *cfg;
    struct prov_ca *ca;
    X509 *signer_cert;
    EVP_PKEY *signer_key;
    X509 *sender;            /* the last signer's certificate: names the sender meanwhile */
    const struct prov_profile *profile;
    int timeout_s;
    X509_STORE *trust;       /* the root: a station's certificate must chain to it */
    STACK_OF(X509) *chain;   /* intermediate(s) then root, sent with every answer */
    struct prov_cmp_station_cache *stations; /* certificates whose chain verified */
    struct txn *txns;        /* newest first */
    size_t n_open;
    size_t n_finished;
};

static inline void x509s_free(STACK_OF(X509) *sk)
{
    sk_X509_pop_free(sk, X509_free);
}

static inline void outcome_set(struct prov_cmp_outcome *oc, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static inline void outcome_set(struct prov_cmp_outcome *oc, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(oc->result, sizeof(oc->result), fmt, ap);
    va_end(ap);
}

static inline OSSL_CMP_PKISI *rejection(int fail_bit, const char *text)
{
    return OSSL_CMP_STATUSINFO_new(OSSL_CMP_PKISTATUS_rejection, 1 << fail_bit, text);
}

/* cmp_requests.c: t's server context sctx gets the request callbacks, t their custom context. */
int prov_cmp_requests_attach(OSSL_CMP_SRV_CTX *sctx, struct txn *t);

/*
 * cmp_requests.c: the station that signed req (the first certificate of its extraCerts, which
 * must verify its protection and chain to this CA), its name into name and its certificate
 * into *cert_out (the caller's); t's signer_expires set. PROV_ERR_VERIFY when it does not.
 */
int prov_cmp_request_station(struct txn *t, const OSSL_CMP_MSG *req, char *name, size_t cap,
                             X509 **cert_out);

/*
 * cmp_requests.c: who a request that OpenSSL refused before any callback claims to be, for
 * the log line and the audit record (never to authorize anything); "" without a certificate.
 * When that certificate is this CA's (its chain and signatures verify) but out of its
 * validity period, what the answer tells the sender into tell (one line: whose, which, since
 * or until when, what to do), else tell is "" and OpenSSL's own answer stands.
 */
void prov_cmp_claimed_sender(struct prov_cmp_server *srv, const OSSL_CMP_MSG *req, char *out,
                             size_t cap, char *tell, size_t tell_cap);

#endif
