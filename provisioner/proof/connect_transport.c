/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What every transport of the mTLS proof shares: one SSL_CTX recipe (hardware key,
 * fullchain.pem, server-ca.pem as the only trust anchor set) with its diagnosis of who
 * refused whom, the classification of a failure, URL splitting over the transports table
 * (connect.c) and a TCP connection with timeouts.
 */
#include "connect_transport.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "error.h"

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

/* "the scheme must be mqtts://, https:// or wss://", naming the table's schemes in order. */
static int scheme_refused(const char *url, const struct connect_transport *table, size_t n)
{
    char list[256] = "";
    size_t len = 0;

    for (size_t i = 0; i < n && len < sizeof(list); i++) {
        len += (size_t)snprintf(list + len, sizeof(list) - len, "%s%s://",
                                i == 0 ? "" : i + 1 < n ? ", " : " or ", table[i].scheme);
    }
    return prov_fail(PROV_ERR_USAGE, "%s: the scheme must be %s", url, list);
}

/* scheme://host[:port][/path]; no user info, query or fragment where the row has no path. */
int connect_url_split(const char *url, const struct connect_transport *table, size_t n,
                      struct connect_url *u, const struct connect_transport **row)
{
    const struct connect_transport *t = NULL;
    const char *p = strstr(url, "://");
    const char *host;
    const char *end;
    size_t len;

    memset(u, 0, sizeof(*u));
    if (p == NULL || (size_t)(p - url) >= sizeof(u->scheme)) {
        goto bad;
    }
    memcpy(u->scheme, url, (size_t)(p - url));
    for (size_t i = 0; i < n && t == NULL; i++) {
        if (strcmp(u->scheme, table[i].scheme) == 0) {
            t = &table[i];
        }
    }
    if (t == NULL) {
        return scheme_refused(url, table, n);
    }
    u->port = t->default_port;
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
    if (!t->has_path && *end != '\0' && strcmp(end, "/") != 0) {
        return prov_fail(PROV_ERR_USAGE, "%s: an %s:// URL has no path", url, t->scheme);
    }
    if (strlen(end) >= sizeof(u->path)) {
        goto bad;
    }
    snprintf(u->path, sizeof(u->path), "%s", *end ? end : "/");
    snprintf(u->host_port, sizeof(u->host_port), strchr(u->host, ':') ? "[%s]:%d" : "%s:%d",
             u->host, u->port);
    if (row != NULL) {
        *row = t;
    }
    return 0;
bad:
    return prov_fail(PROV_ERR_USAGE, "%s: not a URL of the form SCHEME://HOST[:PORT][/PATH]",
                     url);
}

int connect_tcp(const struct connect_url *u, char *err, size_t len)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    struct timeval tv = {.tv_sec = PROV_CONNECT_TIMEOUT_S};
    char port[8];
    int fd = -1;
    int rc;

    snprintf(port, sizeof(port), "%d", u->port);
    rc = getaddrinfo(u->host, port, &hints, &res);
    if (rc != 0) {
        snprintf(err, len, "%s", gai_strerror(rc));
        return -1;
    }
    for (struct addrinfo *a = res; a != NULL; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) {
            continue;
        }
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
            break;
        }
        snprintf(err, len, "%s", strerror(errno));
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}
