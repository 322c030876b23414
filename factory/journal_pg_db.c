/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The PostgreSQL store's statements (journal_pg.h): arguments bound by a type string, sent
 * with PQexecParams (text parameters, bytea in binary), one statement at a time on the
 * connection; and the masked URI every message names the ledger by.
 */
#include "journal_pg.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "error.h"

#define MAX_PARAMS 16

struct params {
    const char *values[MAX_PARAMS];
    int lengths[MAX_PARAMS];
    int formats[MAX_PARAMS];
    char numbers[MAX_PARAMS][24];
    int n;
};

static void bind_params(struct params *p, const char *types, va_list ap)
{
    memset(p, 0, sizeof(*p));
    for (const char *t = types; *t != '\0' && p->n < MAX_PARAMS; t++, p->n++) {
        switch (*t) {
        case 'i':
            snprintf(p->numbers[p->n], sizeof(p->numbers[p->n]), "%lld", va_arg(ap, long long));
            p->values[p->n] = p->numbers[p->n];
            break;
        case 'b':
            p->values[p->n] = va_arg(ap, const char *);
            p->lengths[p->n] = (int)va_arg(ap, size_t);
            p->formats[p->n] = 1;
            if (p->lengths[p->n] == 0) {
                p->values[p->n] = NULL; /* an empty key id is none, as in the SQLite store */
            }
            break;
        default: p->values[p->n] = va_arg(ap, const char *); break;
        }
    }
}

/* The server's message without its trailing newline, into out. */
static void server_message(const PGconn *conn, const PGresult *res, char *out, size_t cap)
{
    const char *m = res ? PQresultErrorMessage(res) : NULL;
    size_t n;

    if (m == NULL || *m == '\0') {
        m = PQerrorMessage(conn);
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

static PGresult *exec_v(struct journal_pg *j, const char *what, char sqlstate[6], char *constraint,
                        size_t cap, const char *sql, const char *types, va_list ap)
{
    struct params p;
    PGresult *res = NULL;
    ExecStatusType st;
    char msg[512];

    if (sqlstate != NULL) {
        sqlstate[0] = '\0';
    }
    if (constraint != NULL && cap > 0) {
        constraint[0] = '\0';
    }
    bind_params(&p, types, ap);
    if (j->is_away) {
        prov_fail(PROV_ERR_JOURNAL, "journal %s: %s: the database went away and stays away",
                  j->base.name, what);
        return NULL;
    }
    if (!j->is_in_txn && PQstatus(j->conn) != CONNECTION_OK && journal_pg_reconnect(j) < 0) {
        return NULL;
    }
    pthread_mutex_lock(&j->conn_lock);
    res = PQexecParams(j->conn, sql, p.n, NULL, p.values, p.lengths, p.formats, 0);
    st = PQresultStatus(res);
    /*
     * The connection broke (a server restart, a failover, a terminated backend) under a
     * statement outside a transaction: BEGIN or a read, or a lease write by token, each of
     * which may run again. Inside a transaction nothing is retried: the journal fails the
     * transition and the next one reads the row back.
     */
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && !j->is_in_txn &&
        PQstatus(j->conn) == CONNECTION_BAD) {
        PQclear(res);
        pthread_mutex_unlock(&j->conn_lock);
        if (journal_pg_reconnect(j) < 0) {
            return NULL;
        }
        pthread_mutex_lock(&j->conn_lock);
        res = PQexecParams(j->conn, sql, p.n, NULL, p.values, p.lengths, p.formats, 0);
        st = PQresultStatus(res);
    }
    if (res != NULL && (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)) {
        pthread_mutex_unlock(&j->conn_lock);
        return res;
    }
    server_message(j->conn, res, msg, sizeof(msg));
    if (sqlstate != NULL && res != NULL && PQresultErrorField(res, PG_DIAG_SQLSTATE) != NULL) {
        snprintf(sqlstate, 6, "%s", PQresultErrorField(res, PG_DIAG_SQLSTATE));
    }
    if (constraint != NULL && res != NULL &&
        PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME) != NULL) {
        snprintf(constraint, cap, "%s", PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME));
    }
    pthread_mutex_unlock(&j->conn_lock);
    PQclear(res);
    prov_fail(PROV_ERR_JOURNAL, "journal %s: %s: %s", j->base.name, what, msg);
    return NULL;
}

PGresult *journal_pg_exec(struct journal_pg *j, const char *what, char sqlstate[6],
                          char *constraint, size_t cap, const char *sql, const char *types, ...)
{
    PGresult *res;
    va_list ap;

    va_start(ap, types);
    res = exec_v(j, what, sqlstate, constraint, cap, sql, types, ap);
    va_end(ap);
    return res;
}

PGresult *journal_pg_vexec(struct journal_pg *j, const char *what, const char *sql,
                           const char *types, va_list ap)
{
    return exec_v(j, what, NULL, NULL, 0, sql, types, ap);
}

int journal_pg_run(struct journal_pg *j, const char *what, const char *sql, const char *types,
                   ...)
{
    PGresult *res;
    va_list ap;

    va_start(ap, types);
    res = exec_v(j, what, NULL, NULL, 0, sql, types, ap);
    va_end(ap);
    if (res == NULL) {
        return PROV_ERR_JOURNAL;
    }
    PQclear(res);
    return 0;
}

char *journal_pg_strdup(const PGresult *res, int i, int c)
{
    return PQgetisnull(res, i, c) ? NULL : strdup(PQgetvalue(res, i, c));
}

void journal_pg_copy(const PGresult *res, int i, int c, char *out, size_t cap)
{
    snprintf(out, cap, "%s", PQgetisnull(res, i, c) ? "" : PQgetvalue(res, i, c));
}

long long journal_pg_ll(const PGresult *res, int i, int c)
{
    return PQgetisnull(res, i, c) ? 0 : strtoll(PQgetvalue(res, i, c), NULL, 10);
}

unsigned char *journal_pg_bytes(const PGresult *res, int i, int c, size_t *len)
{
    unsigned char *raw;
    unsigned char *out;

    *len = 0;
    if (PQgetisnull(res, i, c)) {
        return NULL;
    }
    raw = PQunescapeBytea((const unsigned char *)PQgetvalue(res, i, c), len);
    if (raw == NULL) {
        return NULL;
    }
    out = malloc(*len ? *len : 1);
    if (out != NULL) {
        memcpy(out, raw, *len);
    } else {
        *len = 0;
    }
    PQfreemem(raw);
    return out;
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

char *journal_pg_mask(const char *uri)
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
