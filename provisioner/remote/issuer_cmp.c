/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The CMP issuer behind issuer.h: a station that has no CA token asks the CA service
 * (`provisioner ca serve`, doc/ca-service.md) over CMP, [ca] url = cmp://HOST:PORT/PATH (over
 * HTTPS: cmps://, the service's TLS certificate checked against [ca] tls_ca). Its
 * requests are signed by the station's identity key in the station's own token (station_key,
 * station_pin) and carry its certificate (station_cert); the service's answers must be signed
 * by a CMP signer (id-kp-cmcCA) whose certificate chains to root_cert (signer_trust). Each
 * certificate is a p10cr of the device's CSR, confirmed (certConf) by OpenSSL's client before
 * it comes back. The CA index is the service's: nothing is recorded here.
 */
#include "issuer_cmp.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/cmp.h>
#include <openssl/cmperr.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "cert_facts.h"
#include "cmp_asn1.h"
#include "error.h"
#include "remote_ops.h"
#include "station_identity.h"

struct cmp_issuer {
    struct prov_remote_issuer remote; /* first: a prov_issuer * is one of these */
    char scheme[8];        /* "cmp", or "cmps" (TLS) */
    SSL_CTX *tls;          /* cmps: the TLS client's context, made at connect */
    char host[256];
    int port;
    char path[256];
    bool is_connected;     /* the identity is open and the service answered genm */
    bool chain_from_issue; /* its caCerts answer carried none: the chain comes with a cert */
};

static struct cmp_issuer *cmp_of(struct prov_issuer *is)
{
    return (struct cmp_issuer *)is;
}

/* cmp://HOST:PORT/PATH, or cmps:// for CMP over HTTPS */
static int parse_url(const char *url, struct cmp_issuer *ci)
{
    bool is_tls = strncmp(url, "cmps://", 7) == 0;
    const char *hp = url + (is_tls ? strlen("cmps://") : strlen("cmp://"));
    const char *slash = strchr(hp, '/');
    const char *colon;
    char *end = NULL;
    long port;

    snprintf(ci->scheme, sizeof(ci->scheme), "%s", is_tls ? "cmps" : "cmp");
    if (slash == NULL) {
        slash = hp + strlen(hp);
    }
    colon = memchr(hp, ':', (size_t)(slash - hp));
    if (colon == NULL || colon == hp || (size_t)(colon - hp) >= sizeof(ci->host) ||
        strlen(slash) >= sizeof(ci->path)) {
        return prov_fail(PROV_ERR_CONFIG, "[ca] url \"%s\": expected %s://HOST:PORT/PATH", url,
                         ci->scheme);
    }
    port = strtol(colon + 1, &end, 10);
    if (end != slash || port < 1 || port > 65535) {
        return prov_fail(PROV_ERR_CONFIG, "[ca] url \"%s\": the port is not 1 to 65535", url);
    }
    memcpy(ci->host, hp, (size_t)(colon - hp));
    ci->host[colon - hp] = '\0';
    ci->port = (int)port;
    snprintf(ci->path, sizeof(ci->path), "%s", *slash ? slash : "/.well-known/cmp");
    return 0;
}

/* PKIBody choices (RFC 4210 section 5.1.2): OpenSSL 3.0 keeps its names for them internal. */
#define BODY_PKICONF 19

/*
 * The exchange, watched. RFC 9483 section 3.6.4 lets a service that cannot protect an error
 * answer send it unprotected, and ours does while its CA token is away (doc/ca-service.md,
 * "The CA token comes and goes"); OpenSSL's client takes one with
 * OSSL_CMP_OPT_UNPROTECTED_ERRORS (an error message, a rejection). That it was unprotected is
 * noted in *arg for transaction_failed: its text is the service's unverified word. A pkiConf
 * without protection that verifies, which that option lets through as well, is refused: it
 * would confirm a delivery nobody vouched for.
 */
/*
 * Whether an answer is protected, and for a pkiConf whether its protection verifies:
 * OSSL_CMP_OPT_UNPROTECTED_ERRORS lets a pkiConf through whose protection is there but does
 * not verify, and a pkiConf is what confirms a delivery. It is checked here against the
 * certificates the exchange's earlier answers brought (OpenSSL keeps them in the context);
 * other answers are verified by OpenSSL after this (an error answer whose protection does not
 * verify can only make the request fail). Leaves the error queue as it was.
 */
/*
 * What watched_transfer notes of an exchange (the transfer callback's argument): whether an
 * answer came without a protection that verifies, and the last answer's DER, so that a
 * rejection, which OSSL_CMP_OPT_UNPROTECTED_ERRORS lets through even when its protection is
 * there but does not verify, can be checked when the transaction fails (transaction_failed):
 * only a rejection that verifies is the service's word.
 */
struct watch {
    bool was_unprotected;
    unsigned char *last;
    int last_len;
    char not_signer[512]; /* the subject of the last answer's signer refused by signer_trust */
};

static bool is_verified(OSSL_CMP_CTX *ctx, const OSSL_CMP_MSG *rsp)
{
    bool ok;

    if (!prov_cmp_msg_is_protected(rsp)) {
        return false;
    }
    if (OSSL_CMP_MSG_get_bodytype(rsp) != BODY_PKICONF) {
        return true;
    }
    ERR_set_mark();
    ok = OSSL_CMP_validate_msg(ctx, rsp) == 1;
    ERR_pop_to_mark();
    return ok;
}

static OSSL_CMP_MSG *watched_transfer(OSSL_CMP_CTX *ctx, const OSSL_CMP_MSG *req)
{
    struct watch *w = OSSL_CMP_CTX_get_transfer_cb_arg(ctx);
    OSSL_CMP_MSG *rsp = OSSL_CMP_MSG_http_perform(ctx, req);

    OPENSSL_free(w->last);
    w->last = NULL;
    w->not_signer[0] = '\0';
    w->last_len = rsp != NULL ? i2d_OSSL_CMP_MSG(rsp, &w->last) : 0;
    if (rsp != NULL && !is_verified(ctx, rsp)) {
        w->was_unprotected = true;
        if (OSSL_CMP_MSG_get_bodytype(rsp) == BODY_PKICONF) {
            OSSL_CMP_MSG_free(rsp);
            ERR_raise(ERR_LIB_CMP, CMP_R_MISSING_PROTECTION);
            return NULL;
        }
    }
    return rsp;
}

/*
 * The connection OpenSSL's HTTP client opened (OSSL_CMP_CTX_set_http_cb), for cmp:// and
 * cmps://. Its socket gets TCP_NODELAY: OpenSSL 3.0 writes a request's headers and body
 * separately, and with Nagle's algorithm the body would wait for the service's delayed ACK
 * of the headers (40 ms on Linux) on every message (bench/ca_service.sh shows it). With
 * cmps:// a TLS layer goes on top, the service's certificate checked against [ca] tls_ca
 * (default root_cert) and for the host of the URL; at the end of the exchange that layer is
 * shut down and taken off again, and the connection under it handed back to be closed.
 */
static BIO *on_connection(BIO *bio, void *arg, int is_connect, int detail)
{
    struct cmp_issuer *ci = arg;
    ASN1_OCTET_STRING *ip = NULL;
    BIO *tls_bio = NULL;
    BIO *under;
    SSL *ssl = NULL;

    (void)detail;
    if (is_connect) {
        int fd = -1;
        int one = 1;

        if (BIO_get_fd(bio, &fd) >= 0 && fd >= 0) {
            (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        }
        if (ci->tls == NULL) {
            return bio;
        }
    }
    if (!is_connect) {
        if (bio == NULL || BIO_method_type(bio) != BIO_TYPE_SSL) {
            return bio;
        }
        ERR_set_mark();
        BIO_ssl_shutdown(bio);
        under = BIO_pop(bio);
        BIO_free(bio);
        ERR_pop_to_mark(); /* a shutdown the peer did not wait for says nothing */
        return under;
    }
    tls_bio = BIO_new(BIO_f_ssl());
    ssl = tls_bio != NULL ? SSL_new(ci->tls) : NULL;
    ip = a2i_IPADDRESS(ci->host);
    ERR_clear_error();
    if (ssl == NULL ||
        (ip != NULL ? !X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), ci->host)
                    : !SSL_set_tlsext_host_name(ssl, ci->host) || !SSL_set1_host(ssl, ci->host))) {
        ASN1_OCTET_STRING_free(ip);
        SSL_free(ssl);
        BIO_free(tls_bio);
        return NULL;
    }
    ASN1_OCTET_STRING_free(ip);
    SSL_set_connect_state(ssl);
    BIO_set_ssl(tls_bio, ssl, BIO_CLOSE);
    return BIO_push(tls_bio, bio);
}

/*
 * cmps://: the TLS client's context. It presents the station's identity (certificate, key in
 * its token) as the EST client does: the service asks for a client certificate, though CMP's
 * own signature is what authorizes the request.
 */
static int tls_context(struct cmp_issuer *ci)
{
    const struct prov_config *cfg = ci->remote.base.cfg;
    const char *tls_ca = cfg->ca_tls_ca != NULL ? cfg->ca_tls_ca : cfg->root_cert;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

    if (ctx == NULL || !SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION)) {
        SSL_CTX_free(ctx);
        return prov_fail_ossl(PROV_ERR_NOMEM, "cmps: cannot make a TLS context");
    }
    if (tls_ca == NULL || SSL_CTX_load_verify_file(ctx, tls_ca) != 1) {
        SSL_CTX_free(ctx);
        return prov_fail_ossl(PROV_ERR_CONFIG, "[ca] tls_ca %s: cannot be loaded",
                              tls_ca != NULL ? tls_ca : "(none)");
    }
    if (SSL_CTX_use_certificate(ctx, ci->remote.id.cert) != 1 ||
        SSL_CTX_use_PrivateKey(ctx, ci->remote.id.pkey) != 1) {
        SSL_CTX_free(ctx);
        return prov_fail_ossl(PROV_ERR_CONFIG, "cmps: the station's identity cannot be used "
                              "for TLS");
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    ci->tls = ctx;
    return 0;
}

static int watch_index = -1;
static pthread_once_t watch_index_once = PTHREAD_ONCE_INIT;

static void make_watch_index(void)
{
    watch_index = X509_STORE_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

/*
 * signer_trust's check of the certificate that would verify an answer's protection (depth 0,
 * after OpenSSL found its chain good): a CMP signer's, or refused as if its chain had failed.
 * The refused subject is noted in the transaction's watch (the store's ex_data).
 */
static int require_cmp_signer(int ok, X509_STORE_CTX *vc)
{
    X509 *cert = X509_STORE_CTX_get_current_cert(vc);
    struct prov_cert_facts facts;
    struct watch *w;

    if (!ok || X509_STORE_CTX_get_error_depth(vc) != 0 || cert == NULL ||
        prov_cmp_is_signer_cert(cert)) {
        return ok;
    }
    w = X509_STORE_get_ex_data(X509_STORE_CTX_get0_store(vc), watch_index);
    if (w != NULL) {
        snprintf(w->not_signer, sizeof(w->not_signer), "%s",
                 prov_cert_facts(cert, &facts) == 0 ? facts.subject : "(no subject)");
        prov_error_clear();
    }
    X509_STORE_CTX_set_error(vc, X509_V_ERR_INVALID_PURPOSE);
    return 0;
}

/*
 * The trust of one transaction's CMP context: root_cert, and the signer of an answer must be
 * a CMP signer (prov_cmp_is_signer_cert). Every certificate of this PKI chains to
 * root_cert, a device's or a station's as well as the service's cmp-signer.crt; only the
 * service's carries id-kp-cmcCA (service/cmp_signer.h), so without the check any of them
 * could answer for the service. OpenSSL validates every answer against this store (genp,
 * ip/cp, pkiConf, error, rp: OSSL_CMP_validate_msg), and so do is_verified and
 * rejection_verifies: an answer signed by anyone else is one whose protection does not
 * verify. Only this context's: the chains of caCerts and of a certificate
 * (fetch_chain, chain_of_answer) are checked against root_cert as they are.
 *
 * Once that chain is known (checked against root_cert), its issuing CA is a trust anchor of
 * this store too (X509_V_FLAG_PARTIAL_CHAIN): an answer's signer then verifies up to it, one
 * signature, instead of up to root_cert again on every answer (the root's signature is a
 * P-384 one here; the two were about 40 % of a station's CPU per device through the service,
 * bench/station_cmp.sh). root_cert stays in it, so nothing that verified before is refused;
 * validity periods and id-kp-cmcCA are checked on every answer as before.
 */
static X509_STORE *signer_trust(const struct cmp_issuer *ci, struct watch *w)
{
    X509_STORE *store = X509_STORE_new();

    pthread_once(&watch_index_once, make_watch_index);
    if (store == NULL || watch_index < 0 || !X509_STORE_add_cert(store, ci->remote.id.root) ||
        !X509_STORE_set_ex_data(store, watch_index, w) ||
        (ci->remote.chain != NULL &&
         (!X509_STORE_add_cert(store, sk_X509_value(ci->remote.chain, 0)) ||
          !X509_STORE_set_flags(store, X509_V_FLAG_PARTIAL_CHAIN)))) {
        X509_STORE_free(store);
        return NULL;
    }
    X509_STORE_set_verify_cb(store, require_cmp_signer);
    return store;
}

/*
 * A client context for one transaction (OpenSSL's client keeps no connection across them),
 * its exchange noted in *w (struct watch); freed with client_free.
 */
static OSSL_CMP_CTX *client_ctx(struct cmp_issuer *ci, struct watch *w)
{
    OSSL_CMP_CTX *ctx = OSSL_CMP_CTX_new(NULL, NULL);
    X509_STORE *trust;

    *w = (struct watch){0};
    trust = signer_trust(ci, w);
    if (ctx == NULL || trust == NULL || !OSSL_CMP_CTX_set1_server(ctx, ci->host) ||
        !OSSL_CMP_CTX_set_serverPort(ctx, ci->port) ||
        !OSSL_CMP_CTX_set1_serverPath(ctx, ci->path) ||
        !OSSL_CMP_CTX_set1_cert(ctx, ci->remote.id.cert) ||
        !OSSL_CMP_CTX_set1_pkey(ctx, ci->remote.id.pkey) ||
        !OSSL_CMP_CTX_set_transfer_cb(ctx, watched_transfer) ||
        !OSSL_CMP_CTX_set_transfer_cb_arg(ctx, w) ||
        !OSSL_CMP_CTX_set_http_cb(ctx, on_connection) || !OSSL_CMP_CTX_set_http_cb_arg(ctx, ci) ||
        !OSSL_CMP_CTX_set0_trustedStore(ctx, trust)) {
        X509_STORE_free(trust);
        OSSL_CMP_CTX_free(ctx);
        return NULL;
    }
    OSSL_CMP_CTX_set_log_cb(ctx, prov_cmp_log_nothing);
    OSSL_CMP_CTX_set_option(ctx, OSSL_CMP_OPT_MSG_TIMEOUT, 30);
    OSSL_CMP_CTX_set_option(ctx, OSSL_CMP_OPT_TOTAL_TIMEOUT, 60);
    OSSL_CMP_CTX_set_option(ctx, OSSL_CMP_OPT_UNPROTECTED_ERRORS, 1);
    return ctx;
}

static void client_free(OSSL_CMP_CTX *ctx)
{
    struct watch *w = ctx != NULL ? OSSL_CMP_CTX_get_transfer_cb_arg(ctx) : NULL;

    if (w != NULL) {
        OPENSSL_free(w->last);
        *w = (struct watch){0};
    }
    OSSL_CMP_CTX_free(ctx);
}

/*
 * Whether the transaction's last answer, a rejection that came with a protection, verifies
 * (OpenSSL let it through under OSSL_CMP_OPT_UNPROTECTED_ERRORS whether or not it did).
 * Leaves the error queue as it was.
 */
static bool rejection_verifies(OSSL_CMP_CTX *ctx, const struct watch *w)
{
    const unsigned char *p = w->last;
    OSSL_CMP_MSG *m;
    bool ok;

    if (w->last == NULL || w->last_len <= 0) {
        return false;
    }
    ERR_set_mark();
    m = d2i_OSSL_CMP_MSG(NULL, &p, w->last_len);
    ok = m != NULL && OSSL_CMP_validate_msg(ctx, m) == 1;
    OSSL_CMP_MSG_free(m);
    ERR_pop_to_mark();
    return ok;
}

/* Text from nobody the station can verify, made fit for one quoted line. */
static void printable(char *s)
{
    for (size_t i = 0; s[i] != '\0'; i++) {
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e) {
            s[i] = '?';
        } else if (s[i] == '"') {
            s[i] = '\''; /* the line quotes it */
        }
    }
}

/*
 * The text of an unprotected answer for one line: the details its error message carried
 * (OpenSSL's client leaves them in the error queue as "errorDetails: ..."), else its status;
 * anything but printable ASCII replaced, as it comes from nobody the station can verify.
 */
static void unverified_text(OSSL_CMP_CTX *ctx, char *out, size_t cap)
{
    const char *data = NULL;
    const char *details = NULL;
    int flags = 0;

    out[0] = '\0';
    while (ERR_get_error_all(NULL, NULL, NULL, &data, &flags) != 0) {
        if ((flags & ERR_TXT_STRING) != 0 && data != NULL &&
            (details = strstr(data, "errorDetails: ")) != NULL) {
            snprintf(out, cap, "%s", details + strlen("errorDetails: "));
        }
    }
    if (out[0] == '\0' && OSSL_CMP_CTX_snprint_PKIStatus(ctx, out, cap) == NULL) {
        snprintf(out, cap, "no reason given");
    }
    printable(out);
}

/*
 * What went wrong in a transaction: the service's refusal (its PKIStatusInfo text) is
 * PROV_ERR_POLICY, a service that cannot be reached or answered nothing is PROV_ERR_NOT_FOUND.
 */
static int transaction_failed(struct cmp_issuer *ci, OSSL_CMP_CTX *ctx, const char *what)
{
    struct watch *w = OSSL_CMP_CTX_get_transfer_cb_arg(ctx);
    char text[512];
    unsigned long e = ERR_peek_last_error();
    const char *reason = e != 0 ? ERR_reason_error_string(e) : NULL;

    if (!w->was_unprotected && OSSL_CMP_CTX_get_status(ctx) == OSSL_CMP_PKISTATUS_rejection &&
        !rejection_verifies(ctx, w)) {
        w->was_unprotected = true;
    }
    if (w->not_signer[0] != '\0') {
        /*
         * Signed by a certificate of this PKI that is not the service's CMP signer (a
         * device's, a station's: signer_trust): not the service's word, whatever it says;
         * as an answer whose protection does not verify, below.
         */
        unverified_text(ctx, text, sizeof(text));
        printable(w->not_signer);
        return prov_fail(PROV_ERR_NOT_FOUND,
                         "CA service unavailable: %s://%s:%d%s answered %s signed by %s, "
                         "which is not a CMP signer (no id-kp-cmcCA); unverified: \"%s\"",
                         ci->scheme, ci->host, ci->port, ci->path, what, w->not_signer, text);
    }
    if (w->was_unprotected && OSSL_CMP_CTX_get_status(ctx) >= 0) {
        /*
         * Only a service that cannot sign answers unprotected: unavailable, whatever the text
         * says; nothing in it is acted on. Like an unreachable service (exit 4): the row
         * fails with this line and resumes on the next run.
         */
        unverified_text(ctx, text, sizeof(text));
        return prov_fail(PROV_ERR_NOT_FOUND,
                         "CA service unavailable: %s://%s:%d%s answered %s without a "
                         "protection that verifies (RFC 9483 section 3.6.4; unverified: "
                         "\"%s\")",
                         ci->scheme, ci->host, ci->port, ci->path, what, text);
    }
    ERR_clear_error();
    if (OSSL_CMP_CTX_get_status(ctx) == OSSL_CMP_PKISTATUS_accepted ||
        OSSL_CMP_CTX_get_status(ctx) == OSSL_CMP_PKISTATUS_grantedWithMods) {
        /*
         * Granted, but the exchange did not finish (the confirmation or its answer was lost):
         * the service holds the certificate, and the same request gives it again (retry,
         * doc/ca-service.md, "What is issued").
         */
        return prov_fail(PROV_ERR_NOT_FOUND,
                         "CA service %s://%s:%d%s granted %s but the exchange did not finish "
                         "(%s): the next run asks again with the same key",
                         ci->scheme, ci->host, ci->port, ci->path, what,
                         reason != NULL ? reason : "no answer");
    }
    if (OSSL_CMP_CTX_get_status(ctx) >= 0 &&
        OSSL_CMP_CTX_snprint_PKIStatus(ctx, text, sizeof(text)) != NULL) {
        return prov_fail(PROV_ERR_POLICY, "CA service %s://%s:%d%s refused %s: %s", ci->scheme,
                         ci->host, ci->port, ci->path, what, text);
    }
    return prov_fail(PROV_ERR_NOT_FOUND, "CA service %s://%s:%d%s: %s: %s", ci->scheme, ci->host,
                     ci->port, ci->path, what, reason != NULL ? reason : "no answer");
}

/*
 * genm caCerts: the chain, checked against root_cert. An answer that carries no certificates
 * at all (a peer that echoes the question, such as OpenSSL's mock server) leaves the chain to
 * the first issuance answer (chain_of_answer), checked against root_cert there.
 */
static int fetch_chain(struct cmp_issuer *ci)
{
    struct watch w;
    OSSL_CMP_CTX *ctx = client_ctx(ci, &w);
    STACK_OF(OSSL_CMP_ITAV) *itavs = NULL;
    OSSL_CMP_ITAV *ask = NULL;
    STACK_OF(X509) *certs = NULL;
    X509_STORE_CTX *vc = NULL;
    ASN1_OBJECT *oid = OBJ_txt2obj(PROV_CMP_OID_CACERTS, 1);
    int r;

    if (ctx == NULL || oid == NULL || (ask = OSSL_CMP_ITAV_create(oid, NULL)) == NULL) {
        ASN1_OBJECT_free(oid);
        client_free(ctx);
        return prov_fail(PROV_ERR_NOMEM, "CMP: out of memory");
    }
    /*
     * OpenSSL's HTTP client retries a refused connection until the timeout: a service that
     * is away is reported after 5 s, not after a request's 30.
     */
    OSSL_CMP_CTX_set_option(ctx, OSSL_CMP_OPT_MSG_TIMEOUT, 5);
    OSSL_CMP_CTX_set_option(ctx, OSSL_CMP_OPT_TOTAL_TIMEOUT, 10);
    if (!OSSL_CMP_CTX_push0_genm_ITAV(ctx, ask)) {
        OSSL_CMP_ITAV_free(ask);
        client_free(ctx);
        return prov_fail(PROV_ERR_NOMEM, "CMP: out of memory");
    }
    itavs = OSSL_CMP_exec_GENM_ses(ctx);
    if (itavs == NULL) {
        r = transaction_failed(ci, ctx, "genm caCerts");
        client_free(ctx);
        return r;
    }
    for (int i = 0; i < sk_OSSL_CMP_ITAV_num(itavs) && certs == NULL; i++) {
        certs = prov_cmp_cacerts_of(sk_OSSL_CMP_ITAV_value(itavs, i));
    }
    sk_OSSL_CMP_ITAV_pop_free(itavs, OSSL_CMP_ITAV_free);
    client_free(ctx);
    if (certs == NULL || sk_X509_num(certs) == 0) {
        sk_X509_free(certs);
        ci->chain_from_issue = true;
        return 0;
    }
    r = prov_fail(PROV_ERR_VERIFY, "CA service %s://%s:%d%s: its caCerts do not chain to %s",
                  ci->scheme, ci->host, ci->port, ci->path, ci->remote.base.cfg->root_cert);
    vc = X509_STORE_CTX_new();
    if (certs != NULL && sk_X509_num(certs) >= 2 && vc != NULL &&
        X509_cmp(sk_X509_value(certs, sk_X509_num(certs) - 1), ci->remote.id.root) == 0 &&
        X509_STORE_CTX_init(vc, ci->remote.id.trust, sk_X509_value(certs, 0), certs) &&
        X509_verify_cert(vc) == 1) {
        prov_error_clear();
        ci->remote.chain = certs;
        certs = NULL;
        r = 0;
    }
    ERR_clear_error();
    X509_STORE_CTX_free(vc);
    sk_X509_pop_free(certs, X509_free);
    return r;
}

/*
 * The chain of cert from an issuance answer's caPubs and extraCerts (ctx after the
 * transaction), for a service whose caCerts answer carried none: cert must verify up to
 * root_cert through them; the chain kept is what verified, without cert.
 */
static int chain_of_answer(struct cmp_issuer *ci, OSSL_CMP_CTX *ctx, X509 *cert)
{
    STACK_OF(X509) *pool = OSSL_CMP_CTX_get1_extraCertsIn(ctx);
    STACK_OF(X509) *pubs = OSSL_CMP_CTX_get1_caPubs(ctx);
    STACK_OF(X509) *verified = NULL;
    X509_STORE_CTX *vc = X509_STORE_CTX_new();
    int r = prov_fail(PROV_ERR_VERIFY, "CA service %s://%s:%d%s: its answer's caPubs and "
                      "extraCerts do not chain the certificate to %s", ci->scheme, ci->host, ci->port,
                      ci->path, ci->remote.base.cfg->root_cert);

    if (pool == NULL) {
        pool = sk_X509_new_null();
    }
    if (pool != NULL && pubs != NULL &&
        !X509_add_certs(pool, pubs, X509_ADD_FLAG_UP_REF | X509_ADD_FLAG_NO_DUP)) {
        sk_X509_pop_free(pool, X509_free);
        pool = NULL;
    }
    if (pool != NULL && vc != NULL &&
        X509_STORE_CTX_init(vc, ci->remote.id.trust, cert, pool) &&
        X509_verify_cert(vc) == 1 && (verified = X509_STORE_CTX_get1_chain(vc)) != NULL &&
        sk_X509_num(verified) >= 3 &&
        X509_cmp(sk_X509_value(verified, sk_X509_num(verified) - 1), ci->remote.id.root) == 0) {
        X509_free(sk_X509_shift(verified)); /* cert itself */
        prov_error_clear();
        ci->remote.chain = verified;
        verified = NULL;
        r = 0;
    }
    ERR_clear_error();
    sk_X509_pop_free(verified, X509_free);
    X509_STORE_CTX_free(vc);
    sk_X509_pop_free(pubs, X509_free);
    sk_X509_pop_free(pool, X509_free);
    return r;
}

/*
 * The station's identity, then the chain from the service: at open, or at the first issue of
 * an issuer opened deferred (`sign` applies the CSR policy before the service is asked).
 */
static int cmp_connect(struct cmp_issuer *ci)
{
    int r = 0;

    if (ci->remote.id.cert == NULL) {
        r = prov_station_identity_open(ci->remote.base.cfg, &ci->remote.id);
    }
    if (r == 0 && ci->tls == NULL && strcmp(ci->scheme, "cmps") == 0) {
        r = tls_context(ci);
    }
    if (r == 0) {
        /* Before anything else: a service that does not answer stops the run here (exit 4). */
        r = fetch_chain(ci);
    }
    ci->is_connected = r == 0;
    return r;
}

/*
 * The request for one device: a p10cr of its CSR; for a reissue a cr (RFC 4210 5.3.3: a
 * certificate for a serial that has one, superseding it), whose certificate template carries
 * the CSR's subject, public key and requested extensions with proof of possession
 * "raVerified" — the station acts as the device's registration authority (RFC 9483 section
 * 5): prov_remote_check verified the CSR's signature by the device key before anything goes
 * out, and the service accepts raVerified only from a registered station
 * (doc/ca-service.md). Returns the body type to send, or -1 (out of memory).
 */
static int set_request(OSSL_CMP_CTX *ctx, X509_REQ *req, bool is_reissue)
{
    X509_EXTENSIONS *exts;
    EVP_PKEY *pub;

    if (!is_reissue) {
        return OSSL_CMP_CTX_set1_p10CSR(ctx, req) ? OSSL_CMP_P10CR : -1;
    }
    pub = X509_REQ_get_pubkey(req);
    if (pub == NULL || !OSSL_CMP_CTX_set0_newPkey(ctx, 0, pub)) {
        EVP_PKEY_free(pub);
        return -1;
    }
    /* the CSR's names only: never the station certificate's subjectAltName, which OpenSSL
       copies into a template that has none of its own */
    if (!OSSL_CMP_CTX_set1_subjectName(ctx, X509_REQ_get_subject_name(req)) ||
        !OSSL_CMP_CTX_set_option(ctx, OSSL_CMP_OPT_SUBJECTALTNAME_NODEFAULT, 1) ||
        !OSSL_CMP_CTX_set_option(ctx, OSSL_CMP_OPT_POPO_METHOD, OSSL_CRMF_POPO_RAVERIFIED)) {
        return -1;
    }
    exts = X509_REQ_get_extensions(req);
    if (exts != NULL && !OSSL_CMP_CTX_set0_reqExtensions(ctx, exts)) {
        sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
        return -1;
    }
    ERR_clear_error(); /* a CSR without extensions leaves a "not found" behind */
    return OSSL_CMP_CR;
}

static int cmp_issue(struct prov_issuer *is, X509_REQ *req, const struct prov_request *rq,
                     X509 **out)
{
    struct cmp_issuer *ci = cmp_of(is);
    OSSL_CMP_CTX *ctx;
    struct watch w;
    X509 *cert = NULL;
    char what[96];
    bool is_alone;
    int type = -1;
    int r;

    *out = NULL;
    r = prov_remote_check(is, rq, req);
    if (r < 0) {
        return r;
    }
    if (!ci->is_connected) {
        r = cmp_connect(ci); /* opened deferred: the service is asked now */
        if (r < 0) {
            return r;
        }
    }
    snprintf(what, sizeof(what), "the certificate of %s", rq->serial);
    /*
     * remote.lock guards the chain (read for the answers' trust, set by the first answer when
     * the caCerts answer had none); over the whole transaction too when the station key's
     * token cannot sign for two threads at once (a TPM): then one request at a time.
     */
    is_alone = !ci->remote.id.dev->ops->signs_from_threads;
    pthread_mutex_lock(&ci->remote.lock);
    ctx = client_ctx(ci, &w);
    if (ctx != NULL) {
        type = set_request(ctx, req, rq->record.is_reissue);
    }
    if (!is_alone) {
        pthread_mutex_unlock(&ci->remote.lock);
    }
    if (type < 0) {
        r = prov_fail(PROV_ERR_NOMEM, "CMP: out of memory");
    } else {
        cert = OSSL_CMP_exec_certreq(ctx, type, NULL);
        r = cert != NULL ? 0 : transaction_failed(ci, ctx, what);
        if (cert != NULL && !X509_up_ref(cert)) {
            cert = NULL;
            r = prov_fail(PROV_ERR_NOMEM, "CMP: out of memory");
        }
    }
    if (!is_alone) {
        pthread_mutex_lock(&ci->remote.lock);
    }
    if (r == 0 && ci->remote.chain == NULL) {
        r = chain_of_answer(ci, ctx, cert);
    }
    pthread_mutex_unlock(&ci->remote.lock);
    client_free(ctx);
    if (r == 0 && (X509_check_issued(sk_X509_value(ci->remote.chain, 0), cert) != X509_V_OK ||
                   EVP_PKEY_eq(X509_get0_pubkey(cert), X509_REQ_get0_pubkey(req)) != 1)) {
        r = prov_fail(PROV_ERR_VERIFY, "CA service: %s is not for the CSR's key or not issued "
                      "by its intermediate", what);
    }
    if (r < 0) {
        X509_free(cert);
        return r;
    }
    *out = cert;
    return 0;
}

static int cmp_delivered(struct prov_issuer *is, X509 *cert)
{
    (void)is;
    (void)cert;
    return 0; /* the service recorded it delivered at its certConf */
}

static void cmp_close(struct prov_issuer *is)
{
    struct cmp_issuer *ci = cmp_of(is);

    SSL_CTX_free(ci->tls);
    prov_remote_free(&ci->remote);
}

static const struct prov_issuer_ops cmp_ops = {
    .name = "cmp",
    .is_remote = true,
    .check_device = prov_remote_check_device,
    .check = prov_remote_check,
    .issue = cmp_issue,
    .chain = prov_remote_chain,
    .delivered = cmp_delivered,
    .record = prov_remote_record,
    .close = cmp_close,
};

int prov_issuer_cmp_open(const struct prov_config *cfg, bool is_deferred,
                         struct prov_issuer **out)
{
    struct cmp_issuer *ci = prov_remote_new(sizeof(*ci), &cmp_ops, cfg);
    int r;

    *out = NULL;
    if (ci == NULL) {
        return PROV_ERR_NOMEM;
    }
    r = parse_url(cfg->ca_url, ci);
    if (r == 0 && is_deferred) {
        /* csr and install only ask check_device: nothing to open */
        *out = &ci->remote.base;
        return 0;
    }
    if (r == 0) {
        r = cmp_connect(ci);
    }
    if (r < 0) {
        cmp_close(&ci->remote.base);
        return r;
    }
    *out = &ci->remote.base;
    return 0;
}
