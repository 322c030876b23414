/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The mTLS proof: one SSL_CTX recipe (hardware key, fullchain.pem, server-ca.pem as the only
 * trust anchor set) for every transport, and one diagnosis of who refused whom. The
 * transports live in connect_mqtt.c (libmosquitto), connect_https.c (libcurl) and
 * connect_ws.c (MQTT over WebSocket).
 */
#include "connect.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "error.h"
#include "signer.h"

static CRYPTO_ONCE index_once = CRYPTO_ONCE_STATIC_INIT;
static int diag_index = -1;

static void make_index(void)
{
    diag_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

static struct connect_diag *diag_of(const SSL *ssl)
{
    return SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), diag_index);
}

const char *prov_connect_outcome_name(enum prov_connect_outcome o)
{
    static const char *const names[] = {"ok",          "unreachable", "server-refused",
                                        "client-refused", "handshake", "protocol"};

    return (unsigned)o < sizeof(names) / sizeof(names[0]) ? names[o] : "?";
}

/* Our verification of the server: remember the first failure (leaf-most wins). */
static int verify_cb(int ok, X509_STORE_CTX *sctx)
{
    SSL *ssl = X509_STORE_CTX_get_ex_data(sctx, SSL_get_ex_data_X509_STORE_CTX_idx());
    struct connect_diag *d = ssl ? diag_of(ssl) : NULL;
    X509 *cur = X509_STORE_CTX_get_current_cert(sctx);

    if (!ok && d != NULL && d->verify_error == 0) {
        d->verify_error = X509_STORE_CTX_get_error(sctx);
        d->verify_depth = X509_STORE_CTX_get_error_depth(sctx);
        if (cur != NULL) {
            X509_NAME_oneline(X509_get_subject_name(cur), d->verify_subject,
                              sizeof(d->verify_subject));
        }
    }
    return ok;
}

/*
 * libmosquitto's mosquitto_connect runs SSL_connect on a blocking socket with no timeout: a
 * server that accepts TCP and never answers would hang the station. Bounding each read and
 * write turns that into WANT_READ, and the caller's deadline then applies. (libcurl's sockets
 * are non-blocking and untouched; connect_ws sets the same bounds itself.)
 */
static void bound_blocking_socket(int fd)
{
    struct timeval tv = {.tv_sec = PROV_CONNECT_TIMEOUT_S};
    int flags = fd >= 0 ? fcntl(fd, F_GETFL) : -1;

    if (flags >= 0 && !(flags & O_NONBLOCK)) {
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    }
}

/* Alerts from the server, and the protocol version once the handshake is done. */
static void info_cb(const SSL *ssl, int where, int ret)
{
    struct connect_diag *d = diag_of(ssl);

    if (d == NULL) {
        return;
    }
    if ((where & SSL_CB_READ_ALERT) == SSL_CB_READ_ALERT && (ret >> 8) == SSL3_AL_FATAL &&
        d->alert_received < 0) {
        d->alert_received = ret & 0xff;
    }
    if (where & SSL_CB_HANDSHAKE_START) {
        bound_blocking_socket(SSL_get_fd(ssl));
    }
    if (where & SSL_CB_HANDSHAKE_DONE) {
        d->is_handshake_done = true;
        snprintf(d->tls_version, sizeof(d->tls_version), "%s", SSL_get_version(ssl));
    }
}

static int load_chain(SSL_CTX *ctx, const char *path)
{
    FILE *f = fopen(path, "r");
    X509 *x = NULL;
    int n = 0;
    int r = 0;

    if (f == NULL) {
        return prov_fail(PROV_ERR_IO, "%s: cannot open", path);
    }
    while (r == 0 && (x = PEM_read_X509(f, NULL, NULL, NULL)) != NULL) {
        if ((n == 0 ? SSL_CTX_use_certificate(ctx, x) : SSL_CTX_add0_chain_cert(ctx, x)) != 1) {
            r = prov_fail_ossl(PROV_ERR_INPUT, "%s: certificate %d cannot be used", path, n);
        }
        if (n == 0 || r < 0) {
            X509_free(x); /* use_certificate takes its own reference; add0 took ours */
        }
        n++;
    }
    ERR_clear_error(); /* the end of the file reads as an error */
    fclose(f);
    if (r == 0 && n == 0) {
        r = prov_fail(PROV_ERR_INPUT, "%s: no certificate", path);
    }
    return r;
}

int connect_configure_ctx(SSL_CTX *ctx, EVP_PKEY *pkey, const char *storage_dir,
                          const char *host, struct connect_diag *diag)
{
    char path[4096];
    X509_STORE *store = NULL;
    X509_VERIFY_PARAM *vp = SSL_CTX_get0_param(ctx);
    int r;

    if (CRYPTO_THREAD_run_once(&index_once, make_index) != 1 || diag_index < 0) {
        return prov_fail_ossl(PROV_ERR_CRYPTO, "cannot set up the TLS context");
    }
    snprintf(path, sizeof(path), "%s/fullchain.pem", storage_dir);
    SSL_CTX_clear_chain_certs(ctx);
    r = load_chain(ctx, path);
    if (r < 0) {
        return r;
    }
    if (SSL_CTX_use_PrivateKey(ctx, pkey) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
        return prov_fail_ossl(PROV_ERR_VERIFY, "%s: the device key does not match its first "
                              "certificate", path);
    }
    /* A store of its own: nothing but server-ca.pem is trusted (no default paths). */
    snprintf(path, sizeof(path), "%s/server-ca.pem", storage_dir);
    store = X509_STORE_new();
    if (store == NULL || X509_STORE_load_file(store, path) != 1) {
        X509_STORE_free(store);
        return prov_fail_ossl(PROV_ERR_INPUT, "%s: cannot load as the server trust", path);
    }
    SSL_CTX_set_cert_store(ctx, store);
    if ((X509_VERIFY_PARAM_set1_ip_asc(vp, host) != 1 &&
         X509_VERIFY_PARAM_set1_host(vp, host, 0) != 1) ||
        X509_VERIFY_PARAM_set_purpose(vp, X509_PURPOSE_SSL_SERVER) != 1 ||
        SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
        return prov_fail_ossl(PROV_ERR_CRYPTO, "cannot set the TLS verification parameters");
    }
    ERR_clear_error(); /* set1_ip_asc fails on a name, which is expected */
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, verify_cb);
    SSL_CTX_set_info_callback(ctx, info_cb);
    SSL_CTX_set_ex_data(ctx, diag_index, diag);
    return 0;
}

static void detail(struct prov_connect_result *out, enum prov_connect_outcome o, const char *fmt,
                   ...) __attribute__((format(printf, 3, 4)));

static void detail(struct prov_connect_result *out, enum prov_connect_outcome o, const char *fmt,
                   ...)
{
    va_list ap;

    out->outcome = o;
    va_start(ap, fmt);
    vsnprintf(out->detail, sizeof(out->detail), fmt, ap);
    va_end(ap);
}

/* Alerts a server sends when it does not accept the client's certificate (RFC 8446 §6.2). */
static bool alert_refuses_certificate(int alert)
{
    switch (alert) {
    case SSL_AD_BAD_CERTIFICATE:
    case SSL_AD_UNSUPPORTED_CERTIFICATE:
    case SSL_AD_CERTIFICATE_REVOKED:
    case SSL_AD_CERTIFICATE_EXPIRED:
    case SSL_AD_CERTIFICATE_UNKNOWN:
    case SSL_AD_UNKNOWN_CA:
    case SSL_AD_ACCESS_DENIED:
    case SSL_AD_DECRYPT_ERROR:
    case SSL_AD_CERTIFICATE_REQUIRED:
        return true;
    default:
        return false;
    }
}

void connect_classify(const struct connect_diag *d, const char *transport_error,
                      struct prov_connect_result *out)
{
    const char *why = transport_error && *transport_error ? transport_error : "failed";

    if (d->verify_error != 0) {
        detail(out, PROV_CONNECT_CLIENT_REFUSED,
               "we did not trust the server: certificate %d (%s): %s (verify error %d)",
               d->verify_depth, d->verify_subject,
               X509_verify_cert_error_string(d->verify_error), d->verify_error);
    } else if (d->alert_received >= 0 && alert_refuses_certificate(d->alert_received)) {
        detail(out, PROV_CONNECT_SERVER_REFUSED,
               "server did not trust our certificate: TLS alert \"%s\" (%d) from the server",
               SSL_alert_desc_string_long(d->alert_received),
               d->alert_received);
    } else if (d->alert_received >= 0) {
        detail(out, PROV_CONNECT_HANDSHAKE, "TLS alert \"%s\" (%d) from the server: %s",
               SSL_alert_desc_string_long(d->alert_received),
               d->alert_received, why);
    } else {
        detail(out, PROV_CONNECT_HANDSHAKE, "%s: %s",
               d->is_handshake_done ? "connection failed after the TLS handshake"
                                    : "TLS handshake failed",
               why);
    }
}

/* scheme://host[:port][/path]; no user info, query or fragment for mqtts. */
int connect_parse_url(const char *url, struct connect_url *u)
{
    const char *p = strstr(url, "://");
    const char *host;
    const char *end;
    size_t len;

    memset(u, 0, sizeof(*u));
    if (p == NULL || (size_t)(p - url) >= sizeof(u->scheme)) {
        goto bad;
    }
    memcpy(u->scheme, url, (size_t)(p - url));
    if (strcmp(u->scheme, "mqtts") == 0) {
        u->port = 8883;
    } else if (strcmp(u->scheme, "https") == 0 || strcmp(u->scheme, "wss") == 0) {
        u->port = 443;
    } else {
        return prov_fail(PROV_ERR_USAGE, "%s: the scheme must be mqtts://, https:// or wss://",
                         url);
    }
    host = p + 3;
    if (*host == '[') {
        end = strchr(host, ']');
        if (end == NULL) {
            goto bad;
        }
        len = (size_t)(end - host - 1);
        host++;
        end++;
    } else {
        end = host + strcspn(host, ":/?#@");
        len = (size_t)(end - host);
    }
    if (len == 0 || len >= sizeof(u->host) || *end == '@') {
        goto bad;
    }
    memcpy(u->host, host, len);
    if (*end == ':') {
        char *num_end;
        long port = strtol(end + 1, &num_end, 10);

        if (num_end == end + 1 || port < 1 || port > 65535) {
            goto bad;
        }
        u->port = (int)port;
        end = num_end;
    }
    if (*end != '\0' && *end != '/') {
        goto bad;
    }
    if (strcmp(u->scheme, "mqtts") == 0 && *end != '\0' && strcmp(end, "/") != 0) {
        return prov_fail(PROV_ERR_USAGE, "%s: an mqtts:// URL has no path", url);
    }
    if (strlen(end) >= sizeof(u->path)) {
        goto bad;
    }
    snprintf(u->path, sizeof(u->path), "%s", *end ? end : "/");
    snprintf(u->host_port, sizeof(u->host_port), strchr(u->host, ':') ? "[%s]:%d" : "%s:%d",
             u->host, u->port);
    return 0;
bad:
    return prov_fail(PROV_ERR_USAGE, "%s: not a URL of the form SCHEME://HOST[:PORT][/PATH]",
                     url);
}

/*
 * TLS 1.3 finishes the handshake on the client before the server has looked at the client's
 * certificate; the server's refusal (an alert) then races with the first request we send, and
 * when the request arrives first the server's close turns into a TCP reset that discards the
 * alert. So when a transport failed after a handshake with no alert and no verification
 * error, connect once more and only read: the alert, if there is one, arrives undisturbed.
 */
static void probe_refusal(EVP_PKEY *pkey, const char *storage_dir, const struct connect_url *u,
                          struct connect_diag *diag)
{
    struct connect_diag probe = {.alert_received = -1};
    struct connect_url plain = *u;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL *ssl = NULL;
    char err[128];
    char byte;
    size_t n;
    int fd = -1;

    if (ctx == NULL || connect_configure_ctx(ctx, pkey, storage_dir, u->host, &probe) < 0) {
        goto out;
    }
    fd = connect_tcp(&plain, err, sizeof(err));
    ssl = fd >= 0 ? SSL_new(ctx) : NULL;
    if (ssl == NULL || SSL_set_fd(ssl, fd) != 1) {
        goto out;
    }
    if (strchr(u->host, ':') == NULL) {
        SSL_set_tlsext_host_name(ssl, u->host);
    }
    if (SSL_connect(ssl) == 1) {
        SSL_read_ex(ssl, &byte, 1, &n); /* session tickets, then an alert or a timeout */
    }
    if (probe.alert_received >= 0 && diag->alert_received < 0) {
        diag->alert_received = probe.alert_received;
    }
out:
    prov_error_clear();
    ERR_clear_error();
    SSL_free(ssl);
    if (fd >= 0) {
        close(fd);
    }
    SSL_CTX_free(ctx);
}

int prov_connect_url_check(const char *url)
{
    struct connect_url u;

    return connect_parse_url(url, &u);
}

/* The certificate's CN names the proof topic (brokers with use_identity_as_username take it
 * as the username); the client id is fresh, so a proof never takes over a device session. */
static void mqtt_id(const char *storage_dir, struct connect_mqtt_id *id)
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

int prov_connect_prove(struct prov_key *key, const char *storage_dir, const char *url,
                       struct prov_connect_result *out)
{
    struct connect_diag diag = {.alert_received = -1};
    struct connect_url u;
    EVP_PKEY *pkey = NULL;
    SSL_CTX *ctx = NULL;
    struct connect_mqtt_id id;
    int r;

    memset(out, 0, sizeof(*out));
    out->app_status = -1;
    out->outcome = PROV_CONNECT_HANDSHAKE;
    snprintf(out->url, sizeof(out->url), "%s", url);
    r = connect_parse_url(url, &u);
    if (r < 0) {
        snprintf(out->detail, sizeof(out->detail), "%s", prov_error_message());
        return r;
    }
    r = prov_signer_pkey(key, &pkey);
    if (r < 0) {
        goto out;
    }
    mqtt_id(storage_dir, &id);
    if (strcmp(u.scheme, "https") == 0) {
        r = connect_https(pkey, storage_dir, &u, &diag, out);
    } else {
        ctx = SSL_CTX_new(TLS_client_method());
        if (ctx == NULL) {
            r = prov_fail_ossl(PROV_ERR_CRYPTO, "%s: cannot make a TLS context", url);
            goto out;
        }
        r = connect_configure_ctx(ctx, pkey, storage_dir, u.host, &diag);
        if (r < 0) {
            goto out;
        }
        r = strcmp(u.scheme, "mqtts") == 0 ? connect_mqtt(ctx, &u, &id, &diag, out)
                                           : connect_ws(ctx, &u, &id, &diag, out);
    }
    if (r == PROV_ERR_VERIFY && out->outcome == PROV_CONNECT_HANDSHAKE && diag.is_handshake_done &&
        diag.alert_received < 0 && diag.verify_error == 0) {
        char transport[sizeof(out->detail)];

        snprintf(transport, sizeof(transport), "%s", out->detail);
        probe_refusal(pkey, storage_dir, &u, &diag);
        if (diag.alert_received >= 0) {
            connect_classify(&diag, transport, out);
        }
    }
    snprintf(out->tls_version, sizeof(out->tls_version), "%s", diag.tls_version);
    if (r == 0 && out->outcome != PROV_CONNECT_OK) {
        r = PROV_ERR_VERIFY;
    }
    if (r == PROV_ERR_VERIFY) {
        prov_error_clear(); /* the transport's own errors are in out->detail */
        prov_fail(PROV_ERR_VERIFY, "%s: %s", url, out->detail);
    }
out:
    if (r < 0 && out->detail[0] == '\0' && prov_error_message() != NULL) {
        snprintf(out->detail, sizeof(out->detail), "%s", prov_error_message());
    }
    SSL_CTX_free(ctx);
    EVP_PKEY_free(pkey);
    return r;
}
