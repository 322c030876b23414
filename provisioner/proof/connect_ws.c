/* SPDX-License-Identifier: Apache-2.0 */
/*
 * wss://: MQTT 3.1.1 over a WebSocket (RFC 6455, subprotocol "mqtt") over TLS, written here
 * on OpenSSL. libmosquitto 2.0.11 has no WebSocket client, and libwebsockets 4.1 installs its
 * own certificate verification callback on a provided SSL_CTX (accepting self-signed servers
 * by default), which would hide who refused whom. The client needs one upgrade request, one
 * masked frame per MQTT packet and the reading of a few small frames.
 */
#include "connect_transport.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "error.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11" /* RFC 6455 §1.3 */

struct ws {
    SSL *ssl;
    int fd;
    char err[256]; /* the transport failure, for the classification */
};

static void ssl_error(struct ws *w, int ret)
{
    unsigned long e = ERR_peek_last_error();
    int se = SSL_get_error(w->ssl, ret);

    if (e != 0) {
        ERR_error_string_n(e, w->err, sizeof(w->err));
    } else if (se == SSL_ERROR_SYSCALL) {
        snprintf(w->err, sizeof(w->err), "%s", errno ? strerror(errno) : "connection closed");
    } else if (se == SSL_ERROR_WANT_READ || se == SSL_ERROR_WANT_WRITE) {
        /* the socket's timeout (connect_tcp) expired */
        snprintf(w->err, sizeof(w->err), "no answer from the server within %d s",
                 PROV_CONNECT_TIMEOUT_S);
    } else if (se == SSL_ERROR_ZERO_RETURN) {
        snprintf(w->err, sizeof(w->err), "the server closed the connection");
    } else {
        snprintf(w->err, sizeof(w->err), "TLS error %d", se);
    }
    ERR_clear_error();
}

static int write_all(struct ws *w, const void *buf, size_t len)
{
    size_t n = 0;

    if (len > 0 && SSL_write_ex(w->ssl, buf, len, &n) != 1) {
        ssl_error(w, 0);
        return -1;
    }
    return 0;
}

static int read_exact(struct ws *w, unsigned char *buf, size_t len)
{
    size_t got = 0;

    while (got < len) {
        size_t n = 0;
        int ret = SSL_read_ex(w->ssl, buf + got, len - got, &n);

        if (ret != 1) {
            ssl_error(w, ret);
            return -1;
        }
        got += n;
    }
    return 0;
}

/* One masked binary frame (a client must mask, RFC 6455 §5.3). */
static int send_frame(struct ws *w, unsigned char opcode, const unsigned char *data, size_t len)
{
    unsigned char frame[16 + 1024];
    unsigned char mask[4];
    size_t i = 0;

    if (len > 1024 || RAND_bytes(mask, sizeof(mask)) != 1) {
        return -1;
    }
    frame[i++] = (unsigned char)(0x80 | opcode);
    if (len < 126) {
        frame[i++] = (unsigned char)(0x80 | len);
    } else {
        frame[i++] = 0x80 | 126;
        frame[i++] = (unsigned char)(len >> 8);
        frame[i++] = (unsigned char)len;
    }
    memcpy(frame + i, mask, 4);
    i += 4;
    for (size_t k = 0; k < len; k++) {
        frame[i++] = data[k] ^ mask[k % 4];
    }
    return write_all(w, frame, i);
}

/*
 * The next MQTT packet from binary frames (a small packet; MQTT may span frames, and a
 * frame may carry several packets, but CONNACK and PUBACK are 4 bytes and come alone from
 * the brokers this proves against). Control frames: ping is answered, close ends.
 */
static int read_packet(struct ws *w, unsigned char *pkt, size_t cap, size_t *len)
{
    for (;;) {
        unsigned char h[2];
        unsigned char ext[8];
        unsigned char data[1024];
        size_t n;

        if (read_exact(w, h, 2) < 0) {
            return -1;
        }
        n = h[1] & 0x7f;
        if (n == 126 || n == 127) {
            size_t k = n == 126 ? 2 : 8;

            if (read_exact(w, ext, k) < 0) {
                return -1;
            }
            n = 0;
            for (size_t i = 0; i < k; i++) {
                n = n << 8 | ext[i];
            }
        }
        if ((h[1] & 0x80) || n > sizeof(data)) {
            snprintf(w->err, sizeof(w->err), "WebSocket frame from the server is %s",
                     (h[1] & 0x80) ? "masked" : "too large");
            return -1;
        }
        if (read_exact(w, data, n) < 0) {
            return -1;
        }
        switch (h[0] & 0x0f) {
        case 0x8:
            snprintf(w->err, sizeof(w->err), "the server closed the WebSocket (code %d)",
                     n >= 2 ? data[0] << 8 | data[1] : 0);
            return -1;
        case 0x9:
            if (send_frame(w, 0xA, data, n) < 0) {
                return -1;
            }
            continue;
        case 0x0:
        case 0x2:
            if (n > cap) {
                snprintf(w->err, sizeof(w->err), "MQTT packet too large");
                return -1;
            }
            memcpy(pkt, data, n);
            *len = n;
            return 0;
        default:
            continue;
        }
    }
}

/* base64(SHA-1(key || GUID)): the value the server must return (RFC 6455 §4.2.2). */
static void expected_accept(const char *key, char *out)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    char in[128];

    snprintf(in, sizeof(in), "%s%s", key, WS_GUID);
    EVP_Digest(in, strlen(in), md, &md_len, EVP_sha1(), NULL);
    EVP_EncodeBlock((unsigned char *)out, md, (int)md_len);
}

/* The value of header name in an HTTP response head, or NULL. */
static const char *header(const char *head, const char *name, char *val, size_t len)
{
    size_t nl = strlen(name);

    for (const char *p = strstr(head, "\r\n"); p != NULL; p = strstr(p + 2, "\r\n")) {
        if (strncasecmp(p + 2, name, nl) == 0 && p[2 + nl] == ':') {
            const char *v = p + 3 + nl;
            size_t n = 0;

            while (*v == ' ') {
                v++;
            }
            while (v[n] != '\r' && v[n] != '\0' && n + 1 < len) {
                n++;
            }
            memcpy(val, v, n);
            val[n] = '\0';
            return val;
        }
    }
    return NULL;
}

static int upgrade(struct ws *w, const struct connect_url *u, struct prov_connect_result *out)
{
    unsigned char nonce[16];
    char key[32];
    char want[64];
    char got[128];
    char req[1024];
    char head[4096];
    size_t n = 0;

    if (RAND_bytes(nonce, sizeof(nonce)) != 1) {
        return -1;
    }
    EVP_EncodeBlock((unsigned char *)key, nonce, sizeof(nonce));
    snprintf(req, sizeof(req),
             "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
             "Sec-WebSocket-Protocol: mqtt\r\n\r\n",
             u->path, u->host_port, key);
    if (write_all(w, req, strlen(req)) < 0) {
        return -1;
    }
    while (n + 1 < sizeof(head)) {
        if (read_exact(w, (unsigned char *)head + n, 1) < 0) {
            return -1;
        }
        head[++n] = '\0';
        if (n >= 4 && memcmp(head + n - 4, "\r\n\r\n", 4) == 0) {
            break;
        }
    }
    if (strncmp(head, "HTTP/1.1 101", 12) != 0) {
        out->outcome = PROV_CONNECT_PROTOCOL;
        out->app_status = n > 12 ? atoi(head + 9) : -1;
        snprintf(out->detail, sizeof(out->detail), "the server refused the WebSocket upgrade: %.*s",
                 (int)strcspn(head, "\r\n"), head);
        return 1;
    }
    expected_accept(key, want);
    if (header(head, "Sec-WebSocket-Accept", got, sizeof(got)) == NULL || strcmp(got, want) != 0) {
        out->outcome = PROV_CONNECT_PROTOCOL;
        snprintf(out->detail, sizeof(out->detail), "WebSocket upgrade: wrong Sec-WebSocket-Accept");
        return 1;
    }
    return 0;
}

/* CONNECT, CONNACK, PUBLISH (QoS 1), PUBACK, DISCONNECT, close. */
static int mqtt_session(struct ws *w, const struct connect_mqtt_id *id,
                        struct prov_connect_result *out)
{
    unsigned char pkt[1024];
    size_t len;

    len = connect_mqtt_connect_packet(id->client_id, pkt, sizeof(pkt));
    if (len == 0 || send_frame(w, 0x2, pkt, len) < 0 || read_packet(w, pkt, sizeof(pkt), &len) < 0) {
        return -1;
    }
    if (len != 4 || pkt[0] != 0x20 || pkt[1] != 2) {
        out->outcome = PROV_CONNECT_PROTOCOL;
        snprintf(out->detail, sizeof(out->detail), "the broker's first packet is not a CONNACK");
        return 1;
    }
    out->app_status = pkt[3];
    if (pkt[3] != 0) {
        out->outcome = PROV_CONNECT_PROTOCOL;
        snprintf(out->detail, sizeof(out->detail),
                 "the broker refused the MQTT CONNECT: CONNACK return code %d", pkt[3]);
        return 1;
    }
    len = connect_mqtt_publish_packet(id->topic, "ok", 1, pkt, sizeof(pkt));
    if (len == 0 || send_frame(w, 0x2, pkt, len) < 0 || read_packet(w, pkt, sizeof(pkt), &len) < 0) {
        return -1;
    }
    if (len != 4 || pkt[0] != 0x40 || pkt[3] != 1) {
        out->outcome = PROV_CONNECT_PROTOCOL;
        snprintf(out->detail, sizeof(out->detail), "the broker did not acknowledge the PUBLISH");
        return 1;
    }
    pkt[0] = 0xE0;
    pkt[1] = 0;
    send_frame(w, 0x2, pkt, 2);
    pkt[0] = 1000 >> 8;
    pkt[1] = 1000 & 0xff;
    send_frame(w, 0x8, pkt, 2);
    out->outcome = PROV_CONNECT_OK;
    snprintf(out->detail, sizeof(out->detail),
             "WebSocket upgraded, MQTT CONNACK accepted, PUBLISH to %s acknowledged", id->topic);
    return 0;
}

int connect_ws(const struct connect_session *ses, struct connect_diag *diag,
               struct prov_connect_result *out)
{
    const struct connect_url *u = ses->u;
    struct connect_mqtt_id id;
    struct ws w = {.fd = -1};
    int rc;

    connect_mqtt_id_make(ses->storage_dir, &id);
    w.fd = connect_tcp(u, w.err, sizeof(w.err));
    if (w.fd < 0) {
        out->outcome = PROV_CONNECT_UNREACHABLE;
        snprintf(out->detail, sizeof(out->detail), "cannot connect to %s: %s", u->host_port,
                 w.err);
        return PROV_ERR_VERIFY;
    }
    w.ssl = SSL_new(ses->ctx);
    if (w.ssl == NULL || SSL_set_fd(w.ssl, w.fd) != 1 ||
        (strchr(u->host, ':') == NULL && SSL_set_tlsext_host_name(w.ssl, u->host) != 1)) {
        rc = prov_fail_ossl(PROV_ERR_CRYPTO, "%s: cannot set up TLS", out->url);
        goto out;
    }
    rc = SSL_connect(w.ssl);
    if (rc != 1) {
        ssl_error(&w, rc);
        rc = -1;
    } else {
        rc = upgrade(&w, u, out);
        if (rc == 0) {
            rc = mqtt_session(&w, &id, out);
        }
    }
    if (rc < 0) {
        connect_classify(diag, w.err, out);
    }
    if (rc >= 0) {
        SSL_shutdown(w.ssl);
    }
    rc = out->outcome == PROV_CONNECT_OK ? 0 : PROV_ERR_VERIFY;
out:
    SSL_free(w.ssl);
    close(w.fd);
    return rc;
}
