/* SPDX-License-Identifier: Apache-2.0 */
/*
 * https:// through libcurl. libcurl makes its own SSL_CTX; CURLOPT_SSL_CTX_FUNCTION hands it
 * to us before the handshake and we put the same recipe on it as on our own (hardware key,
 * fullchain.pem, server-ca.pem as the only trust), replacing the store libcurl loaded.
 */
#include "connect_transport.h"

#include <stdio.h>
#include <string.h>

#include "curl_api.h"
#include "error.h"

struct https_state {
    EVP_PKEY *pkey;
    const char *storage_dir;
    const struct connect_url *u;
    struct connect_diag *diag;
    int configure_rc;
    char body[512]; /* the start of the answer, for the message */
    size_t body_len;
};

static CURLcode on_ssl_ctx(CURL *curl, void *ssl_ctx, void *arg)
{
    struct https_state *s = arg;

    s->configure_rc = connect_configure_ctx(ssl_ctx, s->pkey, s->storage_dir, s->u->host,
                                            s->diag);
    return s->configure_rc == 0 ? CURLE_OK : CURLE_SSL_CERTPROBLEM;
}

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
    struct https_state *s = arg;
    size_t len = size * n;
    size_t room = sizeof(s->body) - 1 - s->body_len;
    size_t take = len < room ? len : room;

    memcpy(s->body + s->body_len, data, take);
    s->body_len += take;
    s->body[s->body_len] = '\0';
    return len;
}

/* The answer's text on one line (nginx explains a refused client certificate in its body). */
static void body_line(const char *body, char *out, size_t len)
{
    const char *title = strstr(body, "<title>");
    size_t i = 0;

    if (title != NULL) {
        body = title + 7;
    }
    for (; *body != '\0' && *body != '<' && i + 1 < len; body++) {
        out[i++] = (*body == '\n' || *body == '\r' || *body == '\t') ? ' ' : *body;
    }
    out[i] = '\0';
}

int connect_https(const struct connect_session *ses, struct connect_diag *diag,
                  struct prov_connect_result *out)
{
    const struct connect_url *u = ses->u;
    const char *storage_dir = ses->storage_dir;
    struct https_state s = {.pkey = ses->pkey, .storage_dir = storage_dir, .u = u, .diag = diag};
    char errbuf[CURL_ERROR_SIZE] = "";
    char server_ca[4096];
    char text[256];
    long status = 0;
    CURLcode rc;
    CURL *c;

    /* libcurl is loaded at the first https:// proof, not at start (curl_api.h) */
    if (prov_curl_load() < 0) {
        return prov_fail(PROV_ERR_INTERNAL, "%s: %s", out->url, prov_curl_why());
    }
    c = curl_easy_init();
    if (c == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "%s: cannot make an HTTP client", out->url);
    }
    snprintf(server_ca, sizeof(server_ca), "%s/server-ca.pem", storage_dir);
    curl_easy_setopt(c, CURLOPT_URL, out->url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, (long)PROV_CONNECT_TIMEOUT_S);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(c, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    /* Only server-ca.pem, never the system bundle (the callback replaces the store too). */
    curl_easy_setopt(c, CURLOPT_CAINFO, server_ca);
    curl_easy_setopt(c, CURLOPT_CAPATH, NULL);
    curl_easy_setopt(c, CURLOPT_SSL_SESSIONID_CACHE, 0L);
    curl_easy_setopt(c, CURLOPT_SSL_CTX_FUNCTION, on_ssl_ctx);
    curl_easy_setopt(c, CURLOPT_SSL_CTX_DATA, &s);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
    rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    if (s.configure_rc < 0) {
        return s.configure_rc;
    }
    out->app_status = status > 0 ? (int)status : -1;
    if (rc == CURLE_OK && status >= 200 && status < 300) {
        out->outcome = PROV_CONNECT_OK;
        snprintf(out->detail, sizeof(out->detail), "HTTP %ld", status);
    } else if (rc == CURLE_OK) {
        body_line(s.body, text, sizeof(text));
        /* nginx answers a client certificate it did not verify with 400 and this text
         * (its internal codes 495/496 are sent as 400). */
        out->outcome = strstr(text, "SSL certificate") != NULL || status == 495 || status == 496
                           ? PROV_CONNECT_SERVER_REFUSED
                           : PROV_CONNECT_PROTOCOL;
        snprintf(out->detail, sizeof(out->detail), "%sHTTP %ld: %s",
                 out->outcome == PROV_CONNECT_SERVER_REFUSED
                     ? "server did not trust our certificate: "
                     : "the server answered ",
                 status, text);
    } else if (rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST ||
               (rc == CURLE_OPERATION_TIMEDOUT && !diag->is_handshake_done)) {
        out->outcome = PROV_CONNECT_UNREACHABLE;
        snprintf(out->detail, sizeof(out->detail), "cannot connect to %s: %s", u->host_port,
                 errbuf[0] ? errbuf : curl_easy_strerror(rc));
    } else {
        connect_classify(diag, errbuf[0] ? errbuf : curl_easy_strerror(rc), out);
    }
    return out->outcome == PROV_CONNECT_OK ? 0 : PROV_ERR_VERIFY;
}
