/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_SERVICE_HTTP_H
#define PROV_SERVICE_HTTP_H

#include <stddef.h>

#include <openssl/x509.h>

#include "ca_keeper.h"

/*
 * The HTTP side of `provisioner ca serve` (doc/ca-service.md): libevent's evhttp, with
 * OpenSSL bufferevents for TLS (one TLS stack, the one the rest of the tool uses). CMP over
 * HTTP is RFC 6712: a POST of Content-Type application/pkixcmp on the service's path, the
 * answer in the same type. Requests are served one at a time on one thread, each from its
 * first byte to its answer, so that SIGTERM or SIGINT (recorded by
 * provisioner/support/interrupt.c) stops the service between two requests.
 */
struct prov_http_opts {
    const char *listen;   /* "HOST:PORT" (IPv4, or [IPv6]:PORT) */
    const char *path;     /* e.g. "/.well-known/cmp" */
    const char *tls_cert; /* PEM certificate (chain) for HTTPS; NULL: plain HTTP */
    const char *tls_key;  /* its PEM key */
    size_t max_body;      /* a larger body is refused (413) without being read */
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
     * The CA, its CMP and EST servers (EST under PROV_EST_PREFIX when it has one). With TLS,
     * its root is named in the TLS CertificateRequest (a client certificate is asked for,
     * not required: the handler decides).
     */
    struct prov_ca_keeper *keeper;
};

/*
 * Serves until SIGTERM or SIGINT, then drains: the listening socket is closed, requests that
 * arrive on connections already open are still answered (with "Connection: close"), and the
 * service returns 0 once none has come for a second, or after 30 s at most.
 * SIGHUP loads the TLS certificate and key again from their files for new connections (one
 * log line: reloaded, or why not and that the old ones stay). GET /status from a loopback
 * peer answers a JSON object: the CA token's state and the request counts (doc/ca-service.md).
 * Returns 0 after a drain. PROV_ERR_USAGE for a bad listen address,
 * PROV_ERR_IO when the address cannot be bound, PROV_ERR_CONFIG for a TLS certificate or key
 * that cannot be loaded or do not match.
 */
int prov_http_serve(const struct prov_http_opts *opts);

#endif
