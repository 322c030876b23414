/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_CONNECT_TRANSPORT_H
#define PROV_CONNECT_TRANSPORT_H

/*
 * Between the proof (connect.c) and its transports. connect.c holds the table of transports,
 * one row per URL scheme; each transport (connect_https.c, connect_mqtt.c, connect_ws.c) fills
 * a row's prove function and uses the helpers of connect_transport.c, which every transport
 * shares: URL splitting, the SSL_CTX recipe with its diagnosis, the classification of a
 * failure and a TCP connection with timeouts. Nothing here calls back into connect.c.
 * Not for other layers: they use connect.h.
 */

#include <stdbool.h>
#include <stddef.h>

#include <openssl/ssl.h>

#include "connect_result.h"

#define PROV_CONNECT_TIMEOUT_S 20

struct connect_diag {
    int verify_error;       /* our verification of the server: first X509_V_ERR_*, 0 if none */
    int verify_depth;
    char verify_subject[256];
    int alert_received;     /* a fatal alert the server sent (SSL_AD_*), -1 when none */
    bool is_handshake_done;
    char tls_version[16];
};

struct connect_url {
    char scheme[8];
    char host[256];
    int port;
    char path[512];
    char host_port[300];    /* host:port (brackets around IPv6), for Host: headers */
};

/* What a transport is given: the URL, the hardware key and the identity's storage directory
 * (fullchain.pem, server-ca.pem), and for a transport that uses our SSL_CTX that context,
 * already configured with connect_configure_ctx. */
struct connect_session {
    const struct connect_url *u;
    EVP_PKEY *pkey;
    const char *storage_dir;
    SSL_CTX *ctx;           /* NULL for a transport that makes its own (makes_own_ctx) */
};

/* One row of the transports table: a URL scheme and the transport that proves over it. */
struct connect_transport {
    const char *scheme;     /* before "://" */
    int default_port;
    bool has_path;          /* false: nothing but "/" may follow HOST[:PORT] */
    bool makes_own_ctx;     /* its library makes the SSL_CTX and hands it to
                             * connect_configure_ctx itself (libcurl) */
    /* Runs the proof; fills out (outcome, detail, app_status). 0 when it passed,
     * PROV_ERR_VERIFY when it was refused or unreachable, another PROV_ERR_* otherwise. */
    int (*prove)(const struct connect_session *s, struct connect_diag *diag,
                 struct prov_connect_result *out);
};

/* ---- shared helpers (connect_transport.c) ------------------------------------------------ */

/* Splits url, whose scheme must be one of the n rows of table (*row set to it when row is not
 * NULL); PROV_ERR_USAGE naming url when it is not a URL a row can use. */
int connect_url_split(const char *url, const struct connect_transport *table, size_t n,
                      struct connect_url *u, const struct connect_transport **row);

/* Puts the hardware key, fullchain.pem, server-ca.pem as the only trust, hostname/IP checking
 * for host and the diagnosis callbacks on ctx (ours or libcurl's). */
int connect_configure_ctx(SSL_CTX *ctx, EVP_PKEY *pkey, const char *storage_dir,
                          const char *host, struct connect_diag *diag);

/* Classifies a failure from the diagnosis and fills out (outcome, detail). */
void connect_classify(const struct connect_diag *diag, const char *transport_error,
                      struct prov_connect_result *out);

/* A TCP connection with PROV_CONNECT_TIMEOUT_S send/receive timeouts; -1 and err on failure. */
int connect_tcp(const struct connect_url *u, char *err, size_t len);

/* ---- the transports, one per row of the table in connect.c ------------------------------- */

int connect_https(const struct connect_session *s, struct connect_diag *diag,
                  struct prov_connect_result *out);
int connect_mqtt(const struct connect_session *s, struct connect_diag *diag,
                 struct prov_connect_result *out);
int connect_ws(const struct connect_session *s, struct connect_diag *diag,
               struct prov_connect_result *out);

/* ---- MQTT 3.1.1, shared by connect_mqtt.c and the WebSocket transport --------------------- */

/* The MQTT identity of a proof: a fresh client id and the topic for the certificate's CN. */
struct connect_mqtt_id {
    char client_id[24];
    char topic[200];
};

/* Makes the identity from fullchain.pem in storage_dir ("unnamed" when it has no CN). */
void connect_mqtt_id_make(const char *storage_dir, struct connect_mqtt_id *id);

/* MQTT 3.1.1 packets for the WebSocket transport (connect_mqtt.c); return the length. */
size_t connect_mqtt_connect_packet(const char *client_id, unsigned char *buf, size_t cap);
size_t connect_mqtt_publish_packet(const char *topic, const char *payload, unsigned short id,
                                   unsigned char *buf, size_t cap);

#endif
