/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_CONNECT_H
#define PROV_CONNECT_H

#include <stdbool.h>

#include <openssl/ssl.h>

#include "backend.h"

/*
 * The end-of-line proof (doc/architecture.md, step 6; doc/storage.md): a real mutual-TLS
 * connection to the edge with the device's hardware key, presenting fullchain.pem and trusting
 * only server-ca.pem of the device's storage directory. Three transports:
 *
 *   mqtts://HOST[:PORT]        MQTT 3.1.1 over TLS through libmosquitto (default port 8883)
 *   https://HOST[:PORT][/PATH] an HTTP GET through libcurl; a 2xx answer passes (443)
 *   wss://HOST[:PORT][/PATH]   MQTT 3.1.1 over a WebSocket (subprotocol "mqtt") over TLS (443)
 *
 * MQTT: CONNECT (a random client id "proof-XXXXXXXX" and no username: a broker with
 * use_identity_as_username takes the certificate's CN), CONNACK must accept, one QoS 1
 * PUBLISH to provisioner/proof/<CN> acknowledged by the broker, DISCONNECT.
 */

enum prov_connect_outcome {
    PROV_CONNECT_OK = 0,
    PROV_CONNECT_UNREACHABLE,    /* name resolution or TCP connect failed, or timed out */
    PROV_CONNECT_SERVER_REFUSED, /* the server did not trust our certificate */
    PROV_CONNECT_CLIENT_REFUSED, /* we did not trust the server (verification failed) */
    PROV_CONNECT_HANDSHAKE,      /* another TLS handshake or transport failure */
    PROV_CONNECT_PROTOCOL,       /* TLS fine, the application refused (CONNACK, HTTP status) */
};

struct prov_connect_result {
    enum prov_connect_outcome outcome;
    char url[512];
    char tls_version[16];   /* "TLSv1.3" once a handshake completed, else "" */
    int app_status;         /* HTTP status or MQTT CONNACK return code; -1 when none */
    char detail[1024];      /* one line: what happened, naming the side that refused */
};

/* "ok", "unreachable", "server-refused", "client-refused", "handshake", "protocol". */
const char *prov_connect_outcome_name(enum prov_connect_outcome o);

/*
 * Connects to url with key (a hardware key on an open device) and the identity in
 * storage_dir (fullchain.pem, server-ca.pem). Fills *out in every case. Returns 0 when the
 * proof passed; PROV_ERR_VERIFY when it was refused or the server was unreachable (out says
 * which side refused and why; the same text is recorded with prov_fail); PROV_ERR_USAGE for
 * a URL it cannot use; PROV_ERR_IO / PROV_ERR_INPUT when the storage files are unreadable.
 */
int prov_connect_prove(struct prov_key *key, const char *storage_dir, const char *url,
                       struct prov_connect_result *out);

/* Checks that url is one prov_connect_prove can use; PROV_ERR_USAGE naming it when not. */
int prov_connect_url_check(const char *url);

/* ---- shared by the transports (connect*.c); not for other layers ------------------------ */

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

/* Splits url (PROV_ERR_USAGE naming it when it is not one prov_connect_prove can use). */
int connect_parse_url(const char *url, struct connect_url *u);

/* Puts the hardware key, fullchain.pem, server-ca.pem as the only trust, hostname/IP checking
 * for host and the diagnosis callbacks on ctx (ours or libcurl's). */
int connect_configure_ctx(SSL_CTX *ctx, EVP_PKEY *pkey, const char *storage_dir,
                          const char *host, struct connect_diag *diag);

/* Classifies a failure from the diagnosis and fills out (outcome, detail). */
void connect_classify(const struct connect_diag *diag, const char *transport_error,
                      struct prov_connect_result *out);

/* The MQTT identity of a proof: a fresh client id and the topic for the certificate's CN. */
struct connect_mqtt_id {
    char client_id[24];
    char topic[200];
};

int connect_mqtt(SSL_CTX *ctx, const struct connect_url *u, const struct connect_mqtt_id *id,
                 struct connect_diag *diag, struct prov_connect_result *out);
int connect_ws(SSL_CTX *ctx, const struct connect_url *u, const struct connect_mqtt_id *id,
               struct connect_diag *diag, struct prov_connect_result *out);
int connect_https(EVP_PKEY *pkey, const char *storage_dir, const struct connect_url *u,
                  struct connect_diag *diag, struct prov_connect_result *out);

/* A TCP connection with PROV_CONNECT_TIMEOUT_S send/receive timeouts; -1 and err on failure. */
int connect_tcp(const struct connect_url *u, char *err, size_t len);

/* MQTT 3.1.1 packets for the WebSocket transport (connect_mqtt.c); return the length. */
size_t connect_mqtt_connect_packet(const char *client_id, unsigned char *buf, size_t cap);
size_t connect_mqtt_publish_packet(const char *topic, const char *payload, unsigned short id,
                                   unsigned char *buf, size_t cap);

#define PROV_CONNECT_TIMEOUT_S 20

#endif
