/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The mTLS proof: the table of transports, one row per URL scheme, and what happens around
 * the transport a URL picks (the hardware key, the SSL_CTX for the transports that use ours,
 * a second look for a refusal TLS 1.3 hid). The transports live in connect_mqtt.c
 * (libmosquitto), connect_https.c (libcurl) and connect_ws.c (MQTT over WebSocket); what
 * they share in connect_transport.c.
 */
#include "connect.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>

#include "connect_transport.h"
#include "error.h"
#include "signer.h"

/* The order is the order a refused scheme's message names them in. */
static const struct connect_transport transports[] = {
    {.scheme = "mqtts", .default_port = 8883, .has_path = false, .prove = connect_mqtt},
    {.scheme = "https", .default_port = 443, .has_path = true, .makes_own_ctx = true,
     .prove = connect_https},
    {.scheme = "wss", .default_port = 443, .has_path = true, .prove = connect_ws},
};

#define N_TRANSPORTS (sizeof(transports) / sizeof(transports[0]))

const char *prov_connect_outcome_name(enum prov_connect_outcome o)
{
    static const char *const names[] = {"ok",          "unreachable", "server-refused",
                                        "client-refused", "handshake", "protocol"};

    return (unsigned)o < sizeof(names) / sizeof(names[0]) ? names[o] : "?";
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

int connect_parse_url(const char *url, struct connect_url *u)
{
    return connect_url_split(url, transports, N_TRANSPORTS, u, NULL);
}

int prov_connect_url_check(const char *url)
{
    struct connect_url u;

    return connect_parse_url(url, &u);
}

int prov_connect_prove(struct prov_key *key, const char *storage_dir, const char *url,
                       struct prov_connect_result *out)
{
    struct connect_diag diag = {.alert_received = -1};
    struct connect_url u;
    const struct connect_transport *t = NULL;
    struct connect_session session;
    EVP_PKEY *pkey = NULL;
    SSL_CTX *ctx = NULL;
    int r;

    memset(out, 0, sizeof(*out));
    out->app_status = -1;
    out->outcome = PROV_CONNECT_HANDSHAKE;
    snprintf(out->url, sizeof(out->url), "%s", url);
    r = connect_url_split(url, transports, N_TRANSPORTS, &u, &t);
    if (r < 0) {
        snprintf(out->detail, sizeof(out->detail), "%s", prov_error_message());
        return r;
    }
    r = prov_signer_pkey(key, &pkey);
    if (r < 0) {
        goto out;
    }
    if (!t->makes_own_ctx) {
        ctx = SSL_CTX_new(TLS_client_method());
        if (ctx == NULL) {
            r = prov_fail_ossl(PROV_ERR_CRYPTO, "%s: cannot make a TLS context", url);
            goto out;
        }
        r = connect_configure_ctx(ctx, pkey, storage_dir, u.host, &diag);
        if (r < 0) {
            goto out;
        }
    }
    session = (struct connect_session){.u = &u, .pkey = pkey, .storage_dir = storage_dir,
                                       .ctx = ctx};
    r = t->prove(&session, &diag, out);
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
