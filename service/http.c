/* SPDX-License-Identifier: Apache-2.0 */
/* The CA service's HTTP server on libevent's evhttp (http.h). */
#include "http.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <json-c/json.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "ca_registry.h"
#include "crl.h"
#include "durable.h"
#include "error.h"
#include "interrupt.h"
#include "log.h"

#define CMP_CONTENT_TYPE "application/pkixcmp"
#define CRL_CONTENT_TYPE "application/pkix-crl"

#define RETRY_AFTER_S "1"
/* CMP requests waiting for or with the workers, per worker, beyond which 503 is answered */
#define QUEUE_PER_WORKER 16
#define DRAIN_QUIET_MS 1000
#define DRAIN_MAX_S 30

/*
 * A CMP request or an EST enrollment handed to the workers: its bytes copied out of
 * libevent's buffer (and, for EST, the TLS client's certificates taken from the connection),
 * its answer made by a worker, sent by the event loop (libevent's objects are the loop's
 * alone).
 */
struct job {
    struct job *next;
    struct evhttp_request *req; /* detached by libevent if the client goes (still ours) */
    char lot[PROV_CMP_LOT_MAX + 1];
    unsigned char *body;
    size_t len;
    char peer[64]; /* for the log line, read while the connection was there */
    unsigned port;
    bool is_unavailable; /* the CA was not up when it came: answered so by the loop */
    bool is_again;       /* handed to the workers a second time (finish_cmp, finish_est) */
    /* an EST enrollment (est_server.h) instead of a CMP message */
    bool is_est;
    char *path;
    char *content_type;
    X509 *client;                  /* the TLS client certificate (a reference), or NULL */
    STACK_OF(X509) *client_chain; /* what else it sent (references), or NULL */
    struct prov_est_reply rep;
    /* the worker's */
    int r;
    unsigned char *rsp;
    size_t rsp_len;
    struct prov_cmp_outcome oc;
};

/*
 * The workers that answer CMP requests (http.h: opts->workers): the CMP server takes several
 * requests at once (service/cmp_server_int.h says what each lock guards); done jobs go back
 * to the loop through an eventfd.
 */
struct pool {
    pthread_mutex_t lock;
    pthread_cond_t more;
    struct job *todo, *todo_tail; /* first in, first out */
    struct job *done;             /* newest first */
    bool is_stopping;
    pthread_t *threads;
    int n_threads;
    int efd;
    struct event *done_ev;
    size_t in_flight; /* handed over and not yet answered: the loop's own count */
    size_t answering; /* taken by a worker and not yet done (under lock): for /status */
};

struct service {
    const struct prov_http_opts *opts;
    struct prov_ca_keeper *keeper;
    struct event_base *base;
    struct evhttp *http;
    struct evhttp_bound_socket *listener;
    SSL_CTX *tls;                /* for new connections; replaced by SIGHUP */
    bool is_draining;
    struct timespec drain_start;
    struct timespec last_request;
    time_t started;
    unsigned long n_tls_reloads;
    unsigned long n_served;      /* answered with a certificate or another positive answer */
    unsigned long n_refused;     /* refusals: CMP errors, HTTP 4xx */
    unsigned long n_unavailable; /* answered "CA unavailable" */
    unsigned long n_failed;      /* no answer could be made (HTTP 500) */
    struct pool pool;
};

/* Counts an answered request by its status and outcome (for GET /status). */
static void count(struct service *sv, int status, const struct prov_cmp_outcome *oc)
{
    if (strncmp(oc->result, "unavailable", 11) == 0) {
        sv->n_unavailable++;
    } else if (status >= 500) {
        sv->n_failed++;
    } else if (status >= 400 || strncmp(oc->result, "refused", 7) == 0 ||
               strncmp(oc->result, "failed", 6) == 0) {
        sv->n_refused++;
    } else {
        sv->n_served++;
    }
}

/*
 * A request the CA token may have failed: an HTTP 5xx (an EST issue error of the token's, an
 * answer the CMP signer could not sign), a failure, or a refusal of the issue path that is
 * none of the rules' (cmp_outcome.h). A refusal by the rules (the message's protection, the
 * station, the lot, the CSR policy, the CA index) never reached the CA key: no look for it,
 * or a flood of refusals would hold the event loop, one token round trip each.
 */
static bool is_failure(int status, const struct prov_cmp_outcome *oc)
{
    return status >= 500 || oc->is_ca_suspect || strncmp(oc->result, "failed", 6) == 0;
}

/*
 * A request that failed may have failed on the CA token: the keeper looks (ca_keeper.h).
 * Whether the CA is unavailable now (the token went with this request), *why the reason: the
 * request is then answered as the ones after it will be, "CA unavailable", not with the
 * failure the missing token caused (an HTTP 500 when the answer could not be signed).
 */
static bool went_unavailable(struct service *sv, int status, const struct prov_cmp_outcome *oc,
                             const char **why)
{
    if (!is_failure(status, oc)) {
        return false;
    }
    prov_debug("service", "looking at the CA token after %s (%d): %s", oc->body, status,
               oc->result);
    prov_ca_keeper_check(sv->keeper, time(NULL));
    return !prov_ca_keeper_available(sv->keeper, time(NULL), why);
}

/* The peer of req's connection into peer (cap bytes) and *port; "-" and 0 when it is gone. */
static void request_peer(struct evhttp_request *req, char *peer, size_t cap, unsigned *port)
{
    struct evhttp_connection *conn = evhttp_request_get_connection(req);
    char *p = NULL;
    ev_uint16_t po = 0;

    if (conn != NULL) {
        evhttp_connection_get_peer(conn, &p, &po);
    }
    snprintf(peer, cap, "%s", p != NULL ? p : "-");
    *port = po;
}

static void log_line_for(struct service *sv, const char *peer, unsigned port, int status,
                         const struct prov_cmp_outcome *oc, size_t in, size_t out)
{
    char line[640];

    count(sv, status, oc);
    clock_gettime(CLOCK_MONOTONIC, &sv->last_request);
    if (sv->opts->log == NULL) {
        return;
    }
    snprintf(line, sizeof(line),
             "%s:%u %d %s station=%s serial=%s%s%s outcome=\"%s\" in=%zu out=%zu", peer, port,
             status, oc->body, oc->station, oc->serial, oc->cert_serial[0] ? " cert_serial=" : "",
             oc->cert_serial, oc->result, in, out);
    sv->opts->log(sv->opts->log_arg, line);
}

static void log_request(struct service *sv, struct evhttp_request *req, int status,
                        const struct prov_cmp_outcome *oc, size_t in, size_t out)
{
    char peer[64];
    unsigned port;

    request_peer(req, peer, sizeof(peer), &port);
    log_line_for(sv, peer, port, status, oc, in, out);
}

/*
 * The log line's outcome of a request the CMP server did not answer: body (the kind of
 * request, "-" when none), no station or serial, result as fmt says.
 */
static void outcome_of(struct prov_cmp_outcome *oc, const char *body, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void outcome_of(struct prov_cmp_outcome *oc, const char *body, const char *fmt, ...)
{
    va_list ap;

    memset(oc, 0, sizeof(*oc));
    snprintf(oc->body, sizeof(oc->body), "%s", body);
    snprintf(oc->station, sizeof(oc->station), "-");
    snprintf(oc->serial, sizeof(oc->serial), "-");
    va_start(ap, fmt);
    vsnprintf(oc->result, sizeof(oc->result), fmt, ap);
    va_end(ap);
}

static void reply_plain(struct service *sv, struct evhttp_request *req, int status,
                        const char *reason, const char *why, size_t in)
{
    struct prov_cmp_outcome oc;

    outcome_of(&oc, "-", "refused: %s", why);
    evhttp_send_error(req, status, reason);
    log_request(sv, req, status, &oc, in, 0);
}

/*
 * 503 with Retry-After and text (one line) as its body; evhttp_send_error would drop the
 * header. The caller logs it.
 */
static void reply_retry_later(struct evhttp_request *req, const char *reason, const char *text)
{
    struct evkeyvalq *headers = evhttp_request_get_output_headers(req);
    struct evbuffer *out = evbuffer_new();

    if (out != NULL) {
        evbuffer_add_printf(out, "%s\n", text);
    }
    evhttp_add_header(headers, "Content-Type", "text/plain");
    evhttp_add_header(headers, "Retry-After", RETRY_AFTER_S);
    evhttp_send_reply(req, HTTP_SERVUNAVAIL, reason, out);
    evbuffer_free(out);
}

/* 503: the workers' queue is full. */
static void reply_busy(struct service *sv, struct evhttp_request *req, size_t in)
{
    struct prov_cmp_outcome oc;

    outcome_of(&oc, "-", "refused: busy: every worker's queue is full");
    reply_retry_later(req, "Service Unavailable",
                      "busy: every worker's queue is full; retry later");
    log_request(sv, req, HTTP_SERVUNAVAIL, &oc, in, 0);
}

/* The TLS client certificate of req's connection (a reference), and what else it sent. */
static X509 *peer_certificate(struct evhttp_request *req, STACK_OF(X509) **chain)
{
    struct evhttp_connection *conn = evhttp_request_get_connection(req);
    struct bufferevent *bev = conn != NULL ? evhttp_connection_get_bufferevent(conn) : NULL;
    SSL *ssl = bev != NULL ? bufferevent_openssl_get_ssl(bev) : NULL;

    *chain = ssl != NULL ? SSL_get_peer_cert_chain(ssl) : NULL;
    return ssl != NULL ? SSL_get1_peer_certificate(ssl) : NULL;
}

/* EST's "CA unavailable": 503 with Retry-After and the reason in one line. */
static void est_unavailable_to(struct service *sv, struct evhttp_request *req, const char *why,
                               const char *peer, unsigned port, size_t len)
{
    struct prov_cmp_outcome oc;
    char text[512]; /* the keeper's reason is under 300 bytes */

    outcome_of(&oc, "est", "unavailable: %s", why);
    snprintf(text, sizeof(text), "CA unavailable: %s", why);
    reply_retry_later(req, "CA Unavailable", text);
    log_line_for(sv, peer, port, HTTP_SERVUNAVAIL, &oc, len, 0);
}

static void est_unavailable(struct service *sv, struct evhttp_request *req, const char *why,
                            size_t len)
{
    char peer[64];
    unsigned port;

    request_peer(req, peer, sizeof(peer), &port);
    est_unavailable_to(sv, req, why, peer, port, len);
}

/* An EST answer (rep, which stays the caller's) sent, or a 500 when r < 0; logged. */
static void send_est_reply(struct service *sv, struct evhttp_request *req, int r,
                           const struct prov_est_reply *rep, const struct prov_cmp_outcome *oc,
                           const char *peer, unsigned port, size_t len)
{
    struct evkeyvalq *out_h = evhttp_request_get_output_headers(req);
    struct evbuffer *out = r == 0 ? evbuffer_new() : NULL;

    if (out == NULL || evbuffer_add(out, rep->body, rep->len) != 0) {
        evbuffer_free(out);
        evhttp_send_error(req, HTTP_INTERNAL, "Internal Error");
        log_line_for(sv, peer, port, HTTP_INTERNAL, oc, len, 0);
        return;
    }
    evhttp_add_header(out_h, "Content-Type", rep->type);
    if (rep->is_base64) {
        evhttp_add_header(out_h, "Content-Transfer-Encoding", "base64");
    }
    if (rep->retry_after > 0) {
        char secs[16];

        snprintf(secs, sizeof(secs), "%d", rep->retry_after);
        evhttp_add_header(out_h, "Retry-After", secs);
    }
    if (sv->is_draining && evhttp_find_header(out_h, "Connection") == NULL) {
        evhttp_add_header(out_h, "Connection", "close");
    }
    evhttp_add_header(out_h, "Cache-Control", "no-store");
    /* sent, or freed by libevent when the client has gone meanwhile (its request detached) */
    evhttp_send_reply(req, rep->status, rep->status == HTTP_OK ? "OK" : "Refused", out);
    evbuffer_free(out);
    log_line_for(sv, peer, port, rep->status, oc, len, rep->len);
}

/* The workers' queue (below). */
static void submit(struct service *sv, struct job *j);
static struct job *job_new(struct evhttp_request *req, const char *lot, struct evbuffer *body,
                           size_t len);
static void job_free(struct job *j);

/*
 * Whether path asks for an enrollment (simpleenroll, simplereenroll, under a lot's label
 * too): what goes to the workers, since it signs; cacerts and csrattrs are answered here.
 */
static bool is_est_enrollment(const char *path)
{
    const char *last = strrchr(path, '/');

    return last != NULL &&
           (strcmp(last, "/simpleenroll") == 0 || strcmp(last, "/simplereenroll") == 0);
}

/*
 * EST (est_server.h): GET or POST under PROV_EST_PREFIX, answered in base64 or a text line. An
 * enrollment goes to the workers (finish_est sends its answer); the rest is answered here.
 */
static void on_est(struct service *sv, struct evhttp_request *req, const char *path)
{
    struct evkeyvalq *in_h = evhttp_request_get_input_headers(req);
    struct evbuffer *body = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(body);
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    const char *type = evhttp_find_header(in_h, "Content-Type");
    STACK_OF(X509) *chain = NULL;
    X509 *peer = NULL;
    struct prov_est_reply rep;
    struct prov_cmp_outcome oc;
    const char *why = NULL;
    struct job *j;
    char addr[64];
    unsigned port;
    int r;

    if (!prov_ca_keeper_available(sv->keeper, time(NULL), &why)) {
        est_unavailable(sv, req, why, len);
        return;
    }
    peer = peer_certificate(req, &chain);
    if (cmd == EVHTTP_REQ_POST && is_est_enrollment(path)) {
        if (sv->pool.in_flight >= (size_t)sv->pool.n_threads * QUEUE_PER_WORKER) {
            X509_free(peer);
            reply_busy(sv, req, len);
            return;
        }
        j = job_new(req, "", body, len);
        if (j != NULL) {
            j->is_est = true;
            j->client = peer;
            peer = NULL;
            j->path = strdup(path);
            j->content_type = type != NULL ? strdup(type) : NULL;
            j->client_chain = chain != NULL ? X509_chain_up_ref(chain) : NULL;
        }
        if (j == NULL || j->path == NULL || (type != NULL && j->content_type == NULL) ||
            (chain != NULL && j->client_chain == NULL)) {
            if (j != NULL) {
                job_free(j);
            }
            X509_free(peer);
            outcome_of(&oc, "est", "failed: out of memory");
            evhttp_send_error(req, HTTP_INTERNAL, "Internal Error");
            log_request(sv, req, HTTP_INTERNAL, &oc, len, 0);
            return;
        }
        submit(sv, j);
        return;
    }
    prov_error_clear();
    r = prov_est_server_handle(prov_ca_keeper_est(sv->keeper), path, cmd == EVHTTP_REQ_POST, type,
                               len > 0 ? evbuffer_pullup(body, -1) : (const unsigned char *)"",
                               len, peer, chain, &rep, &oc);
    X509_free(peer);
    if (went_unavailable(sv, r < 0 ? HTTP_INTERNAL : rep.status, &oc, &why)) {
        if (r == 0) {
            free(rep.body);
        }
        est_unavailable(sv, req, why, len);
        return;
    }
    request_peer(req, addr, sizeof(addr), &port);
    send_est_reply(sv, req, r, &rep, &oc, addr, port, len);
    if (r == 0) {
        free(rep.body);
    }
}

#define STATUS_PATH "/status"

/* Whether req came over loopback (127.0.0.0/8 or ::1): /status is for the host's operator. */
static bool is_loopback_peer(struct evhttp_request *req)
{
    struct evhttp_connection *conn = evhttp_request_get_connection(req);
    char *peer = NULL;
    ev_uint16_t port = 0;

    if (conn == NULL) {
        return false;
    }
    evhttp_connection_get_peer(conn, &peer, &port);
    return peer != NULL && (strncmp(peer, "127.", 4) == 0 || strcmp(peer, "::1") == 0);
}

/* GET /status: the service's state as one JSON object (doc/ca-service.md, "Operation"). */
static void on_status(struct service *sv, struct evhttp_request *req)
{
    enum prov_ca_state st = prov_ca_keeper_state(sv->keeper);
    json_object *o = json_object_new_object();
    json_object *n = json_object_new_object();
    struct evbuffer *out = evbuffer_new();
    const char *why = NULL;
    const char *text;
    size_t answering;

    if (o == NULL || n == NULL || out == NULL) {
        json_object_put(o);
        json_object_put(n);
        evbuffer_free(out);
        evhttp_send_error(req, HTTP_INTERNAL, "Internal Error");
        return;
    }
    (void)prov_ca_keeper_available(sv->keeper, time(NULL), &why);
    st = prov_ca_keeper_state(sv->keeper);
    json_object_object_add(o, "status", json_object_new_string(
        sv->is_draining ? "stopping" : st == PROV_CA_UP ? "up" : "unavailable"));
    json_object_object_add(o, "ca_token", json_object_new_string(prov_ca_state_name(st)));
    if (st != PROV_CA_UP) {
        json_object_object_add(o, "reason", json_object_new_string(why != NULL ? why : ""));
    }
    json_object_object_add(o, "ca_token_reopened",
                           json_object_new_int64((int64_t)prov_ca_keeper_reopened(sv->keeper)));
    json_object_object_add(o, "uptime_s",
                           json_object_new_int64((int64_t)(time(NULL) - sv->started)));
    json_object_object_add(o, "listen", json_object_new_string(sv->opts->listen));
    json_object_object_add(o, "tls", json_object_new_boolean(sv->tls != NULL));
    json_object_object_add(o, "est", json_object_new_boolean(prov_ca_keeper_est(sv->keeper) !=
                                                             NULL));
    json_object_object_add(o, "tls_reloads", json_object_new_int64((int64_t)sv->n_tls_reloads));
    json_object_object_add(n, "served", json_object_new_int64((int64_t)sv->n_served));
    json_object_object_add(n, "refused", json_object_new_int64((int64_t)sv->n_refused));
    json_object_object_add(n, "unavailable", json_object_new_int64((int64_t)sv->n_unavailable));
    json_object_object_add(n, "failed", json_object_new_int64((int64_t)sv->n_failed));
    json_object_object_add(o, "requests", n);
    pthread_mutex_lock(&sv->pool.lock);
    answering = sv->pool.answering;
    pthread_mutex_unlock(&sv->pool.lock);
    json_object_object_add(o, "workers", json_object_new_int64((int64_t)sv->pool.n_threads));
    json_object_object_add(o, "answering", json_object_new_int64((int64_t)answering));
    json_object_object_add(o, "open_transactions", json_object_new_int64((int64_t)
        prov_cmp_server_open_count(prov_ca_keeper_cmp(sv->keeper))));
    json_object_object_add(o, "station_cache", json_object_new_int64((int64_t)
        prov_cmp_server_cached_stations(prov_ca_keeper_cmp(sv->keeper))));
    text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
    evbuffer_add_printf(out, "%s\n", text);
    json_object_put(o);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    evhttp_add_header(evhttp_request_get_output_headers(req), "Cache-Control", "no-store");
    evhttp_send_reply(req, HTTP_OK, "OK", out);
    evbuffer_free(out);
}

/*
 * Is path the service's path followed by "/p/LOT" (RFC 9483 section 6.1: a name after /p/,
 * here the lot; a trailing "/" allowed)? LOT (prov_ca_registry_lot_name_ok) into lot.
 */
static bool lot_path(const char *base, const char *path, char *lot, size_t cap)
{
    size_t n = strlen(base);
    const char *name;
    size_t len;

    if (n > 0 && base[n - 1] == '/') {
        n--;
    }
    if (strncmp(path, base, n) != 0 || strncmp(path + n, "/p/", 3) != 0) {
        return false;
    }
    name = path + n + 3;
    len = strcspn(name, "/");
    if (len >= cap || (name[len] == '/' && name[len + 1] != '\0') ||
        !prov_ca_registry_lot_name_ok(name, len)) {
        return false;
    }
    memcpy(lot, name, len);
    lot[len] = '\0';
    return true;
}

/*
 * GET PROV_HTTP_CRL_PREFIX NAME: the CRL file `ca crl` last wrote (DER, RFC 5280 section
 * 4.2.1.13's application/pkix-crl), read at each request so that a new one is served at once.
 */
static void on_crl(struct service *sv, struct evhttp_request *req, const char *name)
{
    struct prov_cmp_outcome oc;
    unsigned char *der = NULL;
    size_t len = 0;
    struct evbuffer *out = NULL;
    char *path = NULL;

    if (strcmp(name, PROV_CRL_INTERMEDIATE_DER) != 0 && strcmp(name, PROV_CRL_ROOT_DER) != 0) {
        reply_plain(sv, req, HTTP_NOTFOUND, "Not Found", "no such CRL", 0);
        return;
    }
    if (evhttp_request_get_command(req) != EVHTTP_REQ_GET) {
        reply_plain(sv, req, HTTP_BADMETHOD, "Method Not Allowed", "not a GET", 0);
        return;
    }
    prov_error_clear();
    if (asprintf(&path, "%s/%s", sv->opts->crl_dir, name) < 0) {
        path = NULL;
    }
    if (path == NULL || prov_read_small_file(path, PROV_ERR_NOT_FOUND, &der, &len) < 0 ||
        (out = evbuffer_new()) == NULL || evbuffer_add(out, der, len) != 0) {
        evbuffer_free(out);
        free(der);
        free(path);
        reply_plain(sv, req, HTTP_NOTFOUND, "Not Found", "no CRL published (ca crl)", 0);
        return;
    }
    outcome_of(&oc, "crl", "%s", name);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", CRL_CONTENT_TYPE);
    evhttp_send_reply(req, HTTP_OK, "OK", out);
    log_request(sv, req, HTTP_OK, &oc, 0, len);
    evbuffer_free(out);
    free(der);
    free(path);
}

int prov_http_cmp_route(const char *path, const char *cmp_path, bool is_post, const char *type,
                        char *lot, size_t lot_cap, const char **why)
{
    size_t n = strlen(CMP_CONTENT_TYPE);

    lot[0] = '\0';
    if (path == NULL ||
        (strcmp(path, cmp_path) != 0 && !lot_path(cmp_path, path, lot, lot_cap))) {
        *why = "no such path";
        return HTTP_NOTFOUND;
    }
    if (!is_post) {
        *why = "not a POST";
        return HTTP_BADMETHOD;
    }
    if (type == NULL || strncasecmp(type, CMP_CONTENT_TYPE, n) != 0 ||
        (type[n] != '\0' && type[n] != ';')) {
        *why = "Content-Type is not " CMP_CONTENT_TYPE;
        return 415;
    }
    return 0;
}

/* A job for req's CMP body (copied), or NULL when memory runs out. */
static struct job *job_new(struct evhttp_request *req, const char *lot, struct evbuffer *body,
                           size_t len)
{
    struct job *j = calloc(1, sizeof(*j));

    if (j == NULL || (j->body = malloc(len > 0 ? len : 1)) == NULL) {
        free(j);
        return NULL;
    }
    if (evbuffer_copyout(body, j->body, len) != (ev_ssize_t)len) {
        free(j->body);
        free(j);
        return NULL;
    }
    j->req = req;
    j->len = len;
    snprintf(j->lot, sizeof(j->lot), "%s", lot);
    request_peer(req, j->peer, sizeof(j->peer), &j->port);
    return j;
}

static void job_free(struct job *j)
{
    free(j->body);
    OPENSSL_free(j->rsp);
    free(j->path);
    free(j->content_type);
    X509_free(j->client);
    sk_X509_pop_free(j->client_chain, X509_free);
    free(j->rep.body);
    free(j);
}

/* Every job of a list (next-linked). */
static void jobs_free(struct job *list)
{
    while (list != NULL) {
        struct job *j = list;

        list = j->next;
        job_free(j);
    }
}

/*
 * A job's answer sent, on the loop: the worker's, or "CA unavailable" when the CA was not
 * up for it (then, or because the request failed on the CA token: went_unavailable). Frees j.
 */
static void finish_cmp(struct service *sv, struct job *j)
{
    struct evhttp_request *req = j->req;
    struct evkeyvalq *headers = evhttp_request_get_output_headers(req);
    const char *why = NULL;
    struct evbuffer *out;
    bool up = !j->is_unavailable && j->r != PROV_ERR_DEVICE_REMOVED;
    int r = j->r;

    if (j->r == PROV_ERR_DEVICE_REMOVED && !j->is_unavailable && !j->is_again &&
        prov_ca_keeper_available(sv->keeper, time(NULL), &why)) {
        /* it waited in the queue while the CA went and came back: answered by the new one */
        j->is_again = true;
        submit(sv, j);
        return;
    }
    why = NULL;
    if (up && r != PROV_ERR_INPUT &&
        went_unavailable(sv, r < 0 ? HTTP_INTERNAL : HTTP_OK, &j->oc, &why)) {
        up = false;
    }
    if (!up) {
        if (why == NULL) {
            (void)prov_ca_keeper_available(sv->keeper, time(NULL), &why);
        }
        OPENSSL_free(j->rsp);
        j->rsp = NULL;
        j->rsp_len = 0;
        r = prov_cmp_server_unavailable(prov_ca_keeper_cmp(sv->keeper), j->body, j->len,
                                        why != NULL ? why : "the CA token is not open", &j->rsp,
                                        &j->rsp_len, &j->oc);
        /* a hint for HTTP clients; the CMP answer says systemUnavail */
        evhttp_add_header(headers, "Retry-After", RETRY_AFTER_S);
    }
    if (sv->is_draining && evhttp_find_header(headers, "Connection") == NULL) {
        evhttp_add_header(headers, "Connection", "close");
    }
    if (r < 0) {
        int status = r == PROV_ERR_INPUT ? HTTP_BADREQUEST : HTTP_INTERNAL;

        evhttp_send_error(req, status, r == PROV_ERR_INPUT ? "Bad Request" : "Internal Error");
        log_line_for(sv, j->peer, j->port, status, &j->oc, j->len, 0);
        job_free(j);
        return;
    }
    out = evbuffer_new();
    if (out == NULL || evbuffer_add(out, j->rsp, j->rsp_len) != 0) {
        evbuffer_free(out);
        evhttp_send_error(req, HTTP_INTERNAL, "Internal Error");
        log_line_for(sv, j->peer, j->port, HTTP_INTERNAL, &j->oc, j->len, 0);
        job_free(j);
        return;
    }
    evhttp_add_header(headers, "Content-Type", CMP_CONTENT_TYPE);
    evhttp_add_header(headers, "Cache-Control", "no-store");
    /* sent, or freed by libevent when the client has gone meanwhile (its request detached) */
    evhttp_send_reply(req, HTTP_OK, "OK", out);
    evbuffer_free(out);
    log_line_for(sv, j->peer, j->port, HTTP_OK, &j->oc, j->len, j->rsp_len);
    job_free(j);
}

/*
 * An EST enrollment's answer sent, on the loop (as on_est sends one it answered itself), or
 * "CA unavailable" when the CA went away meanwhile. Frees j.
 */
static void finish_est(struct service *sv, struct job *j)
{
    const char *why = NULL;

    if (j->r == PROV_ERR_DEVICE_REMOVED && !j->is_again &&
        prov_ca_keeper_available(sv->keeper, time(NULL), &why)) {
        /* it waited in the queue while the CA went and came back: answered by the new one */
        j->is_again = true;
        submit(sv, j);
        return;
    }
    why = NULL;
    if (j->r == PROV_ERR_DEVICE_REMOVED ||
        went_unavailable(sv, j->r < 0 ? HTTP_INTERNAL : j->rep.status, &j->oc, &why)) {
        if (why == NULL) {
            (void)prov_ca_keeper_available(sv->keeper, time(NULL), &why);
        }
        est_unavailable_to(sv, j->req, why != NULL ? why : "the CA token is not open", j->peer,
                           j->port, j->len);
        job_free(j);
        return;
    }
    send_est_reply(sv, j->req, j->r, &j->rep, &j->oc, j->peer, j->port, j->len);
    job_free(j);
}

/* A worker: takes jobs first in, first out, until the pool stops and none is left. */
static void *worker(void *arg)
{
    struct service *sv = arg;
    struct pool *p = &sv->pool;
    const uint64_t one = 1;
    struct job *j;

    for (;;) {
        pthread_mutex_lock(&p->lock);
        while (p->todo == NULL && !p->is_stopping) {
            pthread_cond_wait(&p->more, &p->lock);
        }
        /* stopping: what is still queued is not started (pool_stop frees it) */
        j = p->is_stopping ? NULL : p->todo;
        if (j != NULL) {
            p->todo = j->next;
            if (p->todo == NULL) {
                p->todo_tail = NULL;
            }
            p->answering++;
        }
        pthread_mutex_unlock(&p->lock);
        if (j == NULL) {
            break;
        }
        prov_error_clear();
        if (j->is_est) {
            free(j->rep.body); /* a job handed over again (finish_est) */
            j->rep.body = NULL;
            j->r = prov_est_server_handle(prov_ca_keeper_est(sv->keeper), j->path, true,
                                          j->content_type, j->body, j->len, j->client,
                                          j->client_chain, &j->rep, &j->oc);
        } else {
            j->r = prov_cmp_server_handle_lot(prov_ca_keeper_cmp(sv->keeper), j->lot, j->body,
                                              j->len, time(NULL), &j->rsp, &j->rsp_len,
                                              &j->oc);
        }
        ERR_clear_error();
        pthread_mutex_lock(&p->lock);
        j->next = p->done;
        p->done = j;
        p->answering--;
        pthread_mutex_unlock(&p->lock);
        /* the counter cannot overflow here: the loop reads it back to 0 */
        if (write(p->efd, &one, sizeof(one)) != (ssize_t)sizeof(one)) {
            /* EAGAIN only at 2^64 - 1 unread: the loop is woken already */
        }
    }
    OPENSSL_thread_stop();
    return NULL;
}

static void submit(struct service *sv, struct job *j)
{
    struct pool *p = &sv->pool;

    j->next = NULL;
    pthread_mutex_lock(&p->lock);
    if (p->todo_tail != NULL) {
        p->todo_tail->next = j;
    } else {
        p->todo = j;
    }
    p->todo_tail = j;
    pthread_cond_signal(&p->more);
    pthread_mutex_unlock(&p->lock);
    p->in_flight++;
}

/* The eventfd said jobs are done: their answers go out in the order they were finished. */
static void on_done(evutil_socket_t fd, short what, void *arg)
{
    struct service *sv = arg;
    struct pool *p = &sv->pool;
    struct job *list;
    struct job *fifo = NULL;
    uint64_t n;

    (void)what;
    if (read(fd, &n, sizeof(n)) < 0 && errno != EAGAIN) {
        /* nothing to do: the list below is what counts */
    }
    pthread_mutex_lock(&p->lock);
    list = p->done;
    p->done = NULL;
    pthread_mutex_unlock(&p->lock);
    while (list != NULL) {
        struct job *j = list;

        list = j->next;
        j->next = fifo;
        fifo = j;
    }
    while (fifo != NULL) {
        struct job *j = fifo;

        fifo = j->next;
        p->in_flight--;
        if (j->is_est) {
            finish_est(sv, j);
        } else {
            finish_cmp(sv, j);
        }
    }
}

/* Starts the workers; PROV_ERR_NOMEM or PROV_ERR_INTERNAL when they cannot be. */
static int pool_start(struct service *sv, int n)
{
    struct pool *p = &sv->pool;
    sigset_t all, old;

    p->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    p->threads = calloc((size_t)n, sizeof(*p->threads));
    p->done_ev = p->efd >= 0 ? event_new(sv->base, p->efd, EV_READ | EV_PERSIST, on_done, sv)
                             : NULL;
    if (p->threads == NULL || p->done_ev == NULL || event_add(p->done_ev, NULL) != 0) {
        return prov_fail(PROV_ERR_NOMEM, "ca serve: cannot start the workers");
    }
    /* the signals are the loop's (interrupt.h, SIGHUP): the workers block them */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    for (int i = 0; i < n; i++) {
        if (pthread_create(&p->threads[i], NULL, worker, sv) != 0) {
            pthread_sigmask(SIG_SETMASK, &old, NULL);
            return prov_fail(PROV_ERR_INTERNAL, "ca serve: cannot start worker %d of %d", i + 1,
                             n);
        }
        p->n_threads++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return 0;
}

/*
 * Stops the workers once each has finished the job it holds (the loop has stopped: the jobs
 * still queued and the answers not yet sent are dropped; libevent frees the requests with
 * their connections).
 */
static void pool_stop(struct service *sv)
{
    struct pool *p = &sv->pool;

    pthread_mutex_lock(&p->lock);
    p->is_stopping = true;
    pthread_cond_broadcast(&p->more);
    pthread_mutex_unlock(&p->lock);
    for (int i = 0; i < p->n_threads; i++) {
        pthread_join(p->threads[i], NULL);
    }
    jobs_free(p->todo);
    jobs_free(p->done);
    if (p->done_ev != NULL) {
        event_free(p->done_ev);
    }
    if (p->efd >= 0) {
        close(p->efd);
    }
    free(p->threads);
}

static void on_request(struct evhttp_request *req, void *arg)
{
    struct service *sv = arg;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
    const char *type = evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Type");
    struct evbuffer *body = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(body);
    char lot[PROV_CMP_LOT_MAX + 1] = "";
    struct prov_cmp_outcome oc;
    const char *why = NULL;
    struct job *j;
    int r;

    if (sv->is_draining) {
        /* the answer ends the connection: the client's next request finds a new service */
        evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
    }
    if (path != NULL && strcmp(path, STATUS_PATH) == 0 &&
        evhttp_request_get_command(req) == EVHTTP_REQ_GET && is_loopback_peer(req)) {
        on_status(sv, req);
        return;
    }
    if (path != NULL && prov_ca_keeper_est(sv->keeper) != NULL &&
        strncmp(path, PROV_EST_PREFIX, strlen(PROV_EST_PREFIX)) == 0) {
        on_est(sv, req, path);
        return;
    }
    if (path != NULL && sv->opts->crl_dir != NULL &&
        strncmp(path, PROV_HTTP_CRL_PREFIX, strlen(PROV_HTTP_CRL_PREFIX)) == 0) {
        on_crl(sv, req, path + strlen(PROV_HTTP_CRL_PREFIX));
        return;
    }
    r = prov_http_cmp_route(path, sv->opts->path,
                            evhttp_request_get_command(req) == EVHTTP_REQ_POST, type, lot,
                            sizeof(lot), &why);
    if (r != 0) {
        reply_plain(sv, req, r,
                    r == HTTP_NOTFOUND    ? "Not Found"
                    : r == HTTP_BADMETHOD ? "Method Not Allowed"
                                          : "Unsupported Media Type",
                    why, len);
        return;
    }
    if (sv->pool.in_flight >= (size_t)sv->pool.n_threads * QUEUE_PER_WORKER) {
        /* each waiting request holds its body: past this, the next is asked to come back */
        reply_busy(sv, req, len);
        return;
    }
    j = job_new(req, lot, body, len);
    if (j == NULL) {
        outcome_of(&oc, "-", "failed: out of memory");
        evhttp_send_error(req, HTTP_INTERNAL, "Internal Error");
        log_request(sv, req, HTTP_INTERNAL, &oc, len, 0);
        return;
    }
    if (!prov_ca_keeper_available(sv->keeper, time(NULL), &why)) {
        j->is_unavailable = true;
        finish_cmp(sv, j);
        return;
    }
    submit(sv, j);
}

static struct bufferevent *tls_bev(struct event_base *base, void *arg)
{
    struct service *sv = arg;
    SSL *ssl = SSL_new(sv->tls);

    if (ssl == NULL) {
        return NULL;
    }
    return bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                          BEV_OPT_CLOSE_ON_FREE);
}

static int tls_ctx_new(const struct prov_http_opts *o, SSL_CTX **out);

/*
 * An answer leaves as more than one segment (the headers and the body are separate evbuffer
 * chains, and with TLS separate records): with Nagle's algorithm the second waits for the
 * client's delayed ACK, 40 ms on Linux, on every request. Linux hands TCP_NODELAY from the
 * listening socket to each accepted one.
 */
static void nodelay(evutil_socket_t fd)
{
    int one = 1;

    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static long ms_since(const struct timespec *t, const struct timespec *now)
{
    return (long)(now->tv_sec - t->tv_sec) * 1000 + (now->tv_nsec - t->tv_nsec) / 1000000;
}

/*
 * The signals only record themselves (interrupt.h): looked at between requests. SIGTERM or
 * SIGINT starts the drain: no new connection, the open ones answered until quiet.
 */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct service *sv = arg;
    struct timespec now;

    (void)fd;
    (void)what;
    if (sv->opts->tick != NULL) {
        sv->opts->tick(sv->opts->log_arg);
    }
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (!sv->is_draining && prov_interrupt_signal() != 0) {
        sv->is_draining = true;
        sv->drain_start = now;
        if (sv->opts->stopping != NULL) {
            sv->opts->stopping(sv->opts->log_arg);
        }
        if (sv->listener != NULL) {
            evhttp_del_accept_socket(sv->http, sv->listener);
            sv->listener = NULL;
        }
        if (sv->opts->log != NULL) {
            sv->opts->log(sv->opts->log_arg, "stopping: no new connections; answering the open "
                                             "ones until they are quiet");
        }
    }
    /*
     * Quiet, and nothing with the workers; or DRAIN_MAX_S over: then what is still queued is
     * dropped, and the requests the workers hold end with them (pool_stop).
     */
    if (sv->is_draining &&
        ((sv->pool.in_flight == 0 && ms_since(&sv->last_request, &now) >= DRAIN_QUIET_MS &&
          ms_since(&sv->drain_start, &now) >= DRAIN_QUIET_MS) ||
         ms_since(&sv->drain_start, &now) >= DRAIN_MAX_S * 1000)) {
        event_base_loopexit(sv->base, NULL);
    }
}

/*
 * SIGHUP: the configuration (profiles), then the TLS certificate and key, for new connections.
 * Stations and lots need nothing: they are read from the CA index on every request.
 */
static void reload_config(struct service *sv)
{
    char said[400];
    char line[600];

    if (sv->opts->reload == NULL) {
        return;
    }
    prov_error_clear();
    if (sv->opts->reload(sv->opts->reload_arg, said, sizeof(said)) < 0) {
        snprintf(line, sizeof(line), "SIGHUP: configuration not reloaded, the old one stays: %s",
                 prov_error_message() != NULL ? prov_error_message() : "failed");
        prov_error_clear();
    } else {
        snprintf(line, sizeof(line), "SIGHUP: configuration reloaded: %s (stations and lots are "
                                     "read from the CA index on every request)", said);
    }
    if (sv->opts->log != NULL) {
        sv->opts->log(sv->opts->log_arg, line);
    }
}

static void on_hup(evutil_socket_t fd, short what, void *arg)
{
    struct service *sv = arg;
    SSL_CTX *fresh = NULL;
    char line[600];

    (void)fd;
    (void)what;
    reload_config(sv);
    if (sv->tls == NULL) {
        return;
    } else if (tls_ctx_new(sv->opts, &fresh) < 0) {
        snprintf(line, sizeof(line), "SIGHUP: TLS not reloaded, the old certificate stays: %s",
                 prov_error_message());
        prov_error_clear();
    } else {
        SSL_CTX_free(sv->tls); /* connections open keep theirs: SSL_new holds a reference */
        sv->tls = fresh;
        sv->n_tls_reloads++;
        snprintf(line, sizeof(line), "SIGHUP: TLS certificate %s and key reloaded",
                 sv->opts->tls_cert);
    }
    if (sv->opts->log != NULL) {
        sv->opts->log(sv->opts->log_arg, line);
    }
}

/* "HOST:PORT" or "[V6]:PORT" into host (borrowed copy in buf) and port. */
static int parse_listen(const char *listen, char *buf, size_t cap, const char **host,
                        ev_uint16_t *port)
{
    const char *colon = strrchr(listen, ':');
    char *end = NULL;
    unsigned long p;
    size_t hl;

    if (colon == NULL || colon == listen) {
        return prov_fail(PROV_ERR_USAGE, "--listen %s: not HOST:PORT", listen);
    }
    p = strtoul(colon + 1, &end, 10);
    if (*(colon + 1) == '\0' || *end != '\0' || p == 0 || p > 65535) {
        return prov_fail(PROV_ERR_USAGE, "--listen %s: the port is not 1 to 65535", listen);
    }
    hl = (size_t)(colon - listen);
    if (listen[0] == '[' && hl >= 2 && listen[hl - 1] == ']') {
        listen++;
        hl -= 2;
    }
    if (hl == 0 || hl >= cap) {
        return prov_fail(PROV_ERR_USAGE, "--listen %s: not HOST:PORT", listen);
    }
    memcpy(buf, listen, hl);
    buf[hl] = '\0';
    *host = buf;
    *port = (ev_uint16_t)p;
    return 0;
}

static int accept_any_peer(int ok, X509_STORE_CTX *ctx)
{
    (void)ok;
    (void)ctx;
    return 1;
}

static int tls_ctx_new(const struct prov_http_opts *o, SSL_CTX **out)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

    *out = NULL;
    if (ctx == NULL || !SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION)) {
        SSL_CTX_free(ctx);
        return prov_fail_ossl(PROV_ERR_NOMEM, "--tls-cert: cannot make a TLS context");
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, o->tls_cert) != 1) {
        SSL_CTX_free(ctx);
        return prov_fail_ossl(PROV_ERR_CONFIG, "--tls-cert %s: cannot be loaded", o->tls_cert);
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, o->tls_key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        SSL_CTX_free(ctx);
        return prov_fail_ossl(PROV_ERR_CONFIG,
                              "--tls-key %s: cannot be loaded or does not match --tls-cert",
                              o->tls_key);
    }
    if (prov_ca_keeper_est(o->keeper) != NULL) {
        /* asked for, not required, and any accepted here: the handler verifies and answers */
        if (SSL_CTX_add_client_CA(ctx, prov_ca_keeper_root(o->keeper)) != 1 ||
            SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"prov-ca-serve", 13) !=
                1) {
            SSL_CTX_free(ctx);
            return prov_fail_ossl(PROV_ERR_NOMEM, "--tls-cert: cannot make a TLS context");
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, accept_any_peer);
    }
    *out = ctx;
    return 0;
}

int prov_http_serve(const struct prov_http_opts *opts)
{
    struct service sv = {.opts = opts, .keeper = opts->keeper};
    bool is_pool_ready = false;
    struct timeval tick = {0, 200000};
    struct event *timer = NULL;
    struct event *hup = NULL;
    char host[256];
    const char *h = NULL;
    ev_uint16_t port = 0;
    int r;

    r = parse_listen(opts->listen, host, sizeof(host), &h, &port);
    if (r < 0) {
        return r;
    }
    if (opts->tls_cert != NULL) {
        r = tls_ctx_new(opts, &sv.tls);
        if (r < 0) {
            return r;
        }
    }
    sv.started = time(NULL);
    sv.pool.efd = -1;
    pthread_mutex_init(&sv.pool.lock, NULL);
    pthread_cond_init(&sv.pool.more, NULL);
    sv.base = event_base_new();
    sv.http = sv.base != NULL ? evhttp_new(sv.base) : NULL;
    timer = sv.base != NULL ? event_new(sv.base, -1, EV_PERSIST, on_tick, &sv) : NULL;
    /* SIGHUP reloads here instead of stopping the service (interrupt.h's handler replaced) */
    hup = sv.base != NULL ? evsignal_new(sv.base, SIGHUP, on_hup, &sv) : NULL;
    if (sv.http == NULL || timer == NULL || hup == NULL) {
        r = prov_fail(PROV_ERR_NOMEM, "ca serve: cannot start the event loop");
        goto out;
    }
    evhttp_set_max_body_size(sv.http, (ev_ssize_t)opts->max_body);
    evhttp_set_max_headers_size(sv.http, 16384);
    evhttp_set_timeout(sv.http, 30);
    evhttp_set_allowed_methods(sv.http, EVHTTP_REQ_POST | EVHTTP_REQ_GET);
    evhttp_set_gencb(sv.http, on_request, &sv);
    if (sv.tls != NULL) {
        evhttp_set_bevcb(sv.http, tls_bev, &sv);
    }
    sv.listener = evhttp_bind_socket_with_handle(sv.http, h, port);
    if (sv.listener == NULL) {
        r = prov_fail(PROV_ERR_IO, "--listen %s: cannot listen there", opts->listen);
        goto out;
    }
    nodelay(evhttp_bound_socket_get_fd(sv.listener));
    r = pool_start(&sv, opts->workers > 0 ? opts->workers : 1);
    is_pool_ready = true;
    if (r < 0) {
        goto out;
    }
    event_add(timer, &tick);
    event_add(hup, NULL);
    if (opts->ready != NULL) {
        opts->ready(opts->log_arg, opts->listen);
    }
    event_base_dispatch(sv.base);
    r = 0;
out:
    if (is_pool_ready) {
        pool_stop(&sv);
    }
    pthread_cond_destroy(&sv.pool.more);
    pthread_mutex_destroy(&sv.pool.lock);
    if (hup != NULL) {
        event_free(hup);
    }
    if (timer != NULL) {
        event_free(timer);
    }
    if (sv.http != NULL) {
        evhttp_free(sv.http);
    }
    if (sv.base != NULL) {
        event_base_free(sv.base);
    }
    SSL_CTX_free(sv.tls);
    return r;
}
