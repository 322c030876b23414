/* SPDX-License-Identifier: Apache-2.0 */
/* PostgreSQL connections as every user of the tool makes them (pg_conn.h). */
#include "pg_conn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "secret.h"

bool prov_pg_is_uri(const char *s)
{
    return s != NULL &&
           (strncmp(s, "postgresql://", 13) == 0 || strncmp(s, "postgres://", 11) == 0);
}

/* Overwrites s[from, to) with "****" in a copy that replaces *s (NULL, *s freed, on NOMEM). */
static int mask_span(char **s, size_t from, size_t to)
{
    char *out = NULL;

    if (asprintf(&out, "%.*s****%s", (int)from, *s, *s + to) < 0) {
        free(*s);
        *s = NULL;
        return -1;
    }
    free(*s);
    *s = out;
    return 0;
}

char *prov_pg_mask_uri(const char *uri)
{
    char *s = strdup(uri);
    const char *scheme = s ? strstr(s, "://") : NULL;
    char *p;

    if (scheme != NULL) {
        size_t start = (size_t)(scheme - s) + 3;
        size_t end = start + strcspn(s + start, "/?");
        char *at = NULL;

        for (size_t i = start; i < end; i++) {
            at = s[i] == '@' ? s + i : at;
        }
        p = at ? memchr(s + start, ':', (size_t)(at - (s + start))) : NULL;
        if (p != NULL && mask_span(&s, (size_t)(p - s) + 1, (size_t)(at - s)) < 0) {
            return NULL;
        }
    }
    for (size_t from = 0; s != NULL && (p = strstr(s + from, "password=")) != NULL;) {
        size_t v = (size_t)(p - s) + strlen("password=");
        size_t e = v + strcspn(s + v, "& ");

        if (mask_span(&s, v, e) < 0) {
            return NULL;
        }
        from = v + 4;
    }
    return s;
}

int prov_pg_password(const char *spec, const char *what, char **out)
{
    struct prov_secret *pw = NULL;
    int r;

    *out = NULL;
    if (spec == NULL) {
        return 0;
    }
    r = prov_secret_load(spec, what, &pw);
    if (r < 0) {
        return r;
    }
    *out = strdup(pw->data);
    prov_secret_free(pw);
    return *out != NULL ? 0 : prov_fail(PROV_ERR_NOMEM, "%s: out of memory", what);
}

PGconn *prov_pg_connect(const char *uri, const char *password)
{
    const char *keys[] = {"application_name", "connect_timeout", "dbname", "password", NULL};
    const char *values[] = {"provisioner", "10", uri, password, NULL};

    if (password == NULL) {
        keys[3] = NULL;
    }
    /* libpq is loaded now, not at start (pq_api.h); without it there is no connection */
    if (prov_pq_load() < 0) {
        return NULL;
    }
    return PQconnectdbParams(keys, values, 1);
}

void prov_pg_message(const PGconn *conn, const PGresult *res, char *out, size_t cap)
{
    const char *m = res ? PQresultErrorMessage(res) : NULL;
    size_t n;

    if (m == NULL || *m == '\0') {
        m = conn ? PQerrorMessage(conn) : *prov_pq_why() ? prov_pq_why() : "out of memory";
    }
    snprintf(out, cap, "%s", m && *m ? m : "no answer from the server");
    n = strlen(out);
    while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == ' ')) {
        out[--n] = '\0';
    }
    for (char *c = out; *c != '\0'; c++) {
        *c = *c == '\n' ? ' ' : *c;
    }
}
