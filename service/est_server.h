/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_EST_SERVER_H
#define PROV_EST_SERVER_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/x509.h>

#include "cmp_server.h"
#include "config.h"
#include "issue.h"

/*
 * EST (RFC 7030) on `provisioner ca serve` (doc/ca-service.md), beside CMP: the same CA index,
 * stations, lots, caps, retry rule and audit. Served under /.well-known/est/ and
 * /.well-known/est/LOT/ (a lot the request is for):
 *   GET  cacerts         the CA chain, PKCS#7 certs-only, base64
 *   GET  csrattrs        the key type and signature the profile wants (CsrAttrs), base64
 *   POST simpleenroll    a base64 PKCS#10; the TLS client certificate is the station's identity
 *   POST simplereenroll  a base64 PKCS#10 for the same subject; the TLS client certificate is
 *                        the device's current certificate (field renewal)
 * The answer is a certs-only PKCS#7 with the certificate, base64. A refusal is an HTTP status
 * with a one-line text body.
 */
#define PROV_EST_PREFIX "/.well-known/est/"

struct prov_est_server;

enum prov_est_op {
    PROV_EST_CACERTS,
    PROV_EST_CSRATTRS,
    PROV_EST_SIMPLEENROLL,
    PROV_EST_SIMPLEREENROLL,
};

/* A request's path and body, parsed (prov_est_parse). */
struct prov_est_request {
    enum prov_est_op op;
    char lot[65];     /* "" when the path names none */
    X509_REQ *csr;    /* enroll and reenroll only; owned */
};

/* The answer: status, Content-Type, body (malloc'd; a line of text for a refusal). */
struct prov_est_reply {
    int status;
    const char *type;
    bool is_base64;   /* Content-Transfer-Encoding: base64 */
    unsigned char *body;
    size_t len;
    int retry_after;  /* > 0: a Retry-After header, in seconds (429: the station's rate) */
};

/*
 * Parses a request: path (beginning with PROV_EST_PREFIX), is_post, the Content-Type header
 * (may be NULL) and the body. On refusal returns the HTTP status (400, 404, 405, 415) and
 * the reason in why; 0 when rq is filled in (free it with prov_est_request_clear).
 */
int prov_est_parse(const char *path, bool is_post, const char *content_type,
                   const unsigned char *body, size_t len, struct prov_est_request *rq,
                   char *why, size_t why_cap);

void prov_est_request_clear(struct prov_est_request *rq);

/*
 * Strict base64 (RFC 4648 alphabet, '=' padding only at the end, whitespace between lines
 * ignored): *out malloc'd. -1 for anything else.
 */
int prov_est_base64_decode(const unsigned char *in, size_t len, unsigned char **out,
                           size_t *out_len);

/* The server: borrows cfg and the open CA (its key). profile NULL: "device". */
int prov_est_server_new(const struct prov_config *cfg, struct prov_ca *ca, const char *profile,
                        struct prov_est_server **out);

/*
 * Answers one request. peer: the TLS client certificate (NULL without one), peer_chain what
 * else the client sent. Fills rep (free its body) and oc for the log line; returns 0, or
 * a negative code when no answer could be made at all (out of memory).
 */
int prov_est_server_handle(struct prov_est_server *srv, const char *path, bool is_post,
                           const char *content_type, const unsigned char *body, size_t len,
                           X509 *peer, STACK_OF(X509) *peer_chain, struct prov_est_reply *rep,
                           struct prov_cmp_outcome *oc);

/*
 * The configuration read again (SIGHUP, service/ca_keeper.c): cfg (borrowed) and its profile
 * of the same name as before, whose key type the csrattrs answer says from now on.
 * PROV_ERR_CONFIG (no such profile) or PROV_ERR_NOMEM, nothing changed.
 */
int prov_est_server_set_config(struct prov_est_server *srv, const struct prov_config *cfg);

/* The CA behind the server changes (service/ca_keeper.c); NULL: none until the next call. */
void prov_est_server_set_ca(struct prov_est_server *srv, struct prov_ca *ca);

void prov_est_server_free(struct prov_est_server *srv);

#endif
