/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_CONNECT_RESULT_H
#define PROV_CONNECT_RESULT_H

/*
 * What one end-of-line proof found: filled by the transport that ran it (connect_https.c,
 * connect_mqtt.c, connect_ws.c) and handed to the caller of prov_connect_prove (connect.h).
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

#endif
