/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_CONNECT_H
#define PROV_CONNECT_H

#include <stdbool.h>

#include <openssl/ssl.h>

#include "backend.h"
#include "connect_result.h"

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

/* Splits url by the transports table (PROV_ERR_USAGE naming it when no row can use it); the
 * parts are in connect_transport.h, for the proof's own files and its unit test. */
struct connect_url;
int connect_parse_url(const char *url, struct connect_url *u);

#endif
