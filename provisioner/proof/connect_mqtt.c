/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mqtts:// through libmosquitto, given our own SSL_CTX (MOSQ_OPT_SSL_CTX without the library's
 * defaults: mosquitto_pub 2.0.11 cannot load an engine key, doc/platform.md), and what
 * the WebSocket transport shares with it: the proof's MQTT identity and the few MQTT 3.1.1
 * packets it writes itself.
 */
#include "connect_transport.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <mosquitto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "error.h"

static pthread_once_t lib_once = PTHREAD_ONCE_INIT;

static void lib_init(void)
{
    mosquitto_lib_init();
}

struct mqtt_state {
    const char *topic;
    int connack;       /* -1 until CONNACK */
    int mid;           /* the proof message */
    bool is_published; /* PUBACK received */
    int publish_rc;
};

static void on_connect(struct mosquitto *m, void *arg, int rc)
{
    struct mqtt_state *s = arg;

    s->connack = rc;
    if (rc == 0) {
        /* QoS 1: the broker acknowledges, so the session really carried application data. */
        s->publish_rc = mosquitto_publish(m, &s->mid, s->topic, 2, "ok", 1, false);
    } else {
        mosquitto_disconnect(m);
    }
}

static void on_publish(struct mosquitto *m, void *arg, int mid)
{
    struct mqtt_state *s = arg;

    if (mid == s->mid) {
        s->is_published = true;
        mosquitto_disconnect(m);
    }
}

int connect_mqtt(const struct connect_session *ses, struct connect_diag *diag,
                 struct prov_connect_result *out)
{
    const struct connect_url *u = ses->u;
    struct connect_mqtt_id id;
    struct mqtt_state s = {.topic = id.topic, .connack = -1, .mid = -1};
    struct mosquitto *m = NULL;
    time_t deadline = time(NULL) + PROV_CONNECT_TIMEOUT_S;
    char why[256];
    int rc;

    connect_mqtt_id_make(ses->storage_dir, &id);
    pthread_once(&lib_once, lib_init);
    m = mosquitto_new(id.client_id, true, &s);
    if (m == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "%s: cannot make an MQTT client", out->url);
    }
    mosquitto_int_option(m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
    if (mosquitto_void_option(m, MOSQ_OPT_SSL_CTX, ses->ctx) != MOSQ_ERR_SUCCESS ||
        mosquitto_int_option(m, MOSQ_OPT_SSL_CTX_WITH_DEFAULTS, 0) != MOSQ_ERR_SUCCESS) {
        mosquitto_destroy(m);
        return prov_fail(PROV_ERR_UNSUPPORTED, "%s: libmosquitto is built without TLS",
                         out->url);
    }
    mosquitto_connect_callback_set(m, on_connect);
    mosquitto_publish_callback_set(m, on_publish);
    errno = 0;
    rc = mosquitto_connect(m, u->host, u->port, 60);
    if (rc == MOSQ_ERR_ERRNO || rc == MOSQ_ERR_EAI) {
        if (!diag->is_handshake_done && diag->alert_received < 0 && diag->verify_error == 0 &&
            errno != EPROTO) {
            out->outcome = PROV_CONNECT_UNREACHABLE;
            snprintf(out->detail, sizeof(out->detail), "cannot connect to %s: %s", u->host_port,
                     rc == MOSQ_ERR_EAI ? "host name not resolved" : strerror(errno));
            goto out;
        }
    }
    while (rc == MOSQ_ERR_SUCCESS && !s.is_published && s.connack <= 0 && s.publish_rc == 0) {
        if (time(NULL) > deadline) {
            out->outcome = PROV_CONNECT_UNREACHABLE;
            snprintf(out->detail, sizeof(out->detail), "no answer from %s within %d s",
                     u->host_port, PROV_CONNECT_TIMEOUT_S);
            goto out;
        }
        rc = mosquitto_loop(m, 1000, 1);
    }
    out->app_status = s.connack;
    if (s.is_published) {
        out->outcome = PROV_CONNECT_OK;
        snprintf(out->detail, sizeof(out->detail),
                 "MQTT CONNACK accepted, PUBLISH to %s acknowledged", s.topic);
    } else if (s.connack > 0) {
        out->outcome = PROV_CONNECT_PROTOCOL;
        snprintf(out->detail, sizeof(out->detail), "the broker refused the MQTT CONNECT: %s",
                 mosquitto_connack_string(s.connack));
    } else if (s.publish_rc != 0) {
        out->outcome = PROV_CONNECT_PROTOCOL;
        snprintf(out->detail, sizeof(out->detail), "PUBLISH failed: %s",
                 mosquitto_strerror(s.publish_rc));
    } else {
        snprintf(why, sizeof(why), "%s",
                 rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc));
        connect_classify(diag, why, out);
    }
out:
    mosquitto_destroy(m);
    return out->outcome == PROV_CONNECT_OK ? 0 : PROV_ERR_VERIFY;
}

/* The certificate's CN names the proof topic (brokers with use_identity_as_username take it
 * as the username); the client id is fresh, so a proof never takes over a device session. */
void connect_mqtt_id_make(const char *storage_dir, struct connect_mqtt_id *id)
{
    unsigned char rnd[4] = {0};
    char path[4096];
    char cn[128];
    FILE *f;
    X509 *x = NULL;

    RAND_bytes(rnd, sizeof(rnd));
    snprintf(id->client_id, sizeof(id->client_id), "proof-%02x%02x%02x%02x", rnd[0], rnd[1],
             rnd[2], rnd[3]);
    snprintf(cn, sizeof(cn), "unnamed");
    snprintf(path, sizeof(path), "%s/fullchain.pem", storage_dir);
    f = fopen(path, "r");
    if (f != NULL) {
        x = PEM_read_X509(f, NULL, NULL, NULL);
        fclose(f);
    }
    if (x != NULL) {
        X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, (int)sizeof(cn));
        X509_free(x);
    }
    /* MQTT topic levels: '+', '#' and '/' in a CN would change what the topic means. */
    for (char *p = cn; *p != '\0'; p++) {
        if (*p == '+' || *p == '#' || *p == '/') {
            *p = '_';
        }
    }
    snprintf(id->topic, sizeof(id->topic), "provisioner/proof/%s", cn);
    ERR_clear_error();
}

/* ---- MQTT 3.1.1 packets (OASIS MQTT 3.1.1 §3.1, §3.3) ------------------------------------ */

static size_t put_remaining_length(unsigned char *p, size_t n)
{
    size_t i = 0;

    do {
        unsigned char b = n % 128;

        n /= 128;
        p[i++] = (unsigned char)(n > 0 ? b | 0x80 : b);
    } while (n > 0 && i < 4);
    return i;
}

static size_t put_string(unsigned char *p, const char *s)
{
    size_t len = strlen(s);

    p[0] = (unsigned char)(len >> 8);
    p[1] = (unsigned char)len;
    memcpy(p + 2, s, len);
    return len + 2;
}

size_t connect_mqtt_connect_packet(const char *client_id, unsigned char *buf, size_t cap)
{
    size_t body = 10 + 2 + strlen(client_id);
    size_t i = 0;

    if (strlen(client_id) > 65535 || body + 5 > cap) {
        return 0;
    }
    buf[i++] = 0x10;
    i += put_remaining_length(buf + i, body);
    i += put_string(buf + i, "MQTT");
    buf[i++] = 4;    /* protocol level 3.1.1 */
    buf[i++] = 0x02; /* clean session, no will, no username/password: the certificate is it */
    buf[i++] = 0;
    buf[i++] = 60;   /* keep alive, seconds */
    i += put_string(buf + i, client_id);
    return i;
}

size_t connect_mqtt_publish_packet(const char *topic, const char *payload, unsigned short id,
                                   unsigned char *buf, size_t cap)
{
    size_t body = 2 + strlen(topic) + 2 + strlen(payload);
    size_t i = 0;

    if (strlen(topic) > 65535 || body + 5 > cap) {
        return 0;
    }
    buf[i++] = 0x32; /* PUBLISH, QoS 1 */
    i += put_remaining_length(buf + i, body);
    i += put_string(buf + i, topic);
    buf[i++] = (unsigned char)(id >> 8);
    buf[i++] = (unsigned char)id;
    memcpy(buf + i, payload, strlen(payload));
    return i + strlen(payload);
}
