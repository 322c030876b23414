/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_SERVICE_HTTP_H
#define PROV_SERVICE_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/x509.h>

#include "ca_keeper.h"

/*
 * The HTTP side of `provisioner ca serve` (doc/ca-service.md): libevent's evhttp, with
 * OpenSSL bufferevents for TLS (one TLS stack, the one the rest of the tool uses). CMP over
 * HTTP is RFC 6712: a POST of Content-Type application/pkixcmp on the service's path, the
 * answer in the same type. One thread runs the event loop: connections, TLS, HTTP, EST, the
 * CRLs and /status; CMP requests go to opts->workers threads, which answer several at once
 * (service/cmp_server_int.h: what each lock guards), and their answers come back to the loop
 * to be sent. SIGTERM or SIGINT (recorded by provisioner/support/interrupt.c) is looked at
 * by the loop; a request a worker holds is always finished (http.c, pool_stop).
 */
struct prov_http_opts {
    const char *listen;   /* "HOST:PORT" (IPv4, or [IPv6]:PORT) */
    const char *path;     /* e.g. "/.well-known/cmp" */
    const char *tls_cert; /* PEM certificate (chain) for HTTPS; NULL: plain HTTP */
    const char *tls_key;  /* its PEM key */
    size_t max_body;      /* a larger body is refused (413) without being read */
    int workers;          /* threads answering CMP requests at once; < 1: 1 */
    /* one line per request (no newline); arg is log_arg */
    void (*log)(void *arg, const char *line);
    void *log_arg;
    /* called once the service listens (the CLI prints where, tells systemd); may be NULL */
    void (*ready)(void *arg, const char *listen);
    /* called from the event loop every 200 ms (the systemd watchdog); may be NULL */
    void (*tick)(void *arg);
    /* called once when SIGTERM or SIGINT starts the drain (systemd STOPPING=1); may be NULL */
    void (*stopping)(void *arg);
    /*
     * SIGHUP: the configuration read again (the CLI reads its file and hands it to
     * prov_ca_keeper_reload): 0 with what was reloaded in said, or < 0 with the reason in
     * prov_error_message, the old configuration kept. arg is reload_arg. May be NULL.
     */
    int (*reload)(void *arg, char *said, size_t cap);
    void *reload_arg;
    /*
     * The CA, its CMP and EST servers (EST under PROV_EST_PREFIX when it has one). With TLS,
     * its root is named in the TLS CertificateRequest (a client certificate is asked for,
     * not required: the handler decides).
     */
    struct prov_ca_keeper *keeper;
    /*
     * The CA directory whose CRLs (the files `ca crl` writes) a GET of PROV_HTTP_CRL_PREFIX
     * intermediate.crl or root.crl answers, read at each request; NULL: not served.
     */
    const char *crl_dir;
};

/* Where the service publishes the CRLs (doc/ca-service.md). */
#define PROV_HTTP_CRL_PREFIX "/crl/"

/*
 * Where a request for CMP goes, before its body is looked at: 0 when it is for the CMP server
 * (path is cmp_path, or cmp_path "/p/LOT" naming a lot (RFC 9483 section 6.1), the lot's name
 * then in lot, else lot ""; a POST; Content-Type application/pkixcmp with or without
 * parameters), else the HTTP status (404, 405, 415) and *why, one line. type may be NULL.
 */
int prov_http_cmp_route(const char *path, const char *cmp_path, bool is_post, const char *type,
                        char *lot, size_t lot_cap, const char **why);

/*
 * Serves until SIGTERM or SIGINT, then drains: the listening socket is closed, requests that
 * arrive on connections already open are still answered (with "Connection: close"), and the
 * service returns 0 once none has come for a second and the workers hold none, or after 30 s
 * at most (requests still queued then are dropped; those the workers hold are finished).
 * SIGHUP reads the configuration again (opts->reload) and loads the TLS certificate and key
 * again from their files for new connections (one log line each: reloaded, or why not and
 * that the old ones stay). GET /status from a loopback
 * peer answers a JSON object: the CA token's state and the request counts (doc/ca-service.md).
 * Returns 0 after a drain. PROV_ERR_USAGE for a bad listen address,
 * PROV_ERR_IO when the address cannot be bound, PROV_ERR_CONFIG for a TLS certificate or key
 * that cannot be loaded or do not match.
 */
int prov_http_serve(const struct prov_http_opts *opts);

#endif
