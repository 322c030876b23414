/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The PostgreSQL store's connection (journal_pg_db.h): connecting, the session's writer lock,
 * reconnecting with backoff; statements with arguments bound by a type string, sent with
 * PQexecParams (text parameters, bytea in binary), one statement at a time on the
 * connection; and the masked URI every message names the ledger by.
 */
#include "journal_pg_db.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>
#include <openssl/crypto.h>

#include "error.h"
#include "log.h"

#define MAX_PARAMS 16

/* Reconnect attempts and the first pause (doubled each time): about 8 s in all. */
#define RECONNECT_TRIES 6
#define RECONNECT_FIRST_MS 250
/* how long a reconnected session waits for the server process of a COMMIT in doubt */
#define IN_DOUBT_WAIT_MS 60000

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

static PGresult *exec_v(struct journal_pg_db *db, const char *what, char sqlstate[6],
                        char *constraint, size_t cap, const char *sql, const char *types,
                        va_list ap)
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
    if (db->is_away) {
        prov_fail(PROV_ERR_JOURNAL, "journal %s: %s: the database went away and stays away",
                  db->name, what);
        return NULL;
    }
    if (!db->is_in_txn && PQstatus(db->conn) != CONNECTION_OK && journal_pg_reconnect(db) < 0) {
        return NULL;
    }
    pthread_mutex_lock(&db->conn_lock);
    res = PQexecParams(db->conn, sql, p.n, NULL, p.values, p.lengths, p.formats, 0);
    st = PQresultStatus(res);
    /*
     * The connection broke (a server restart, a failover, a terminated backend) under a
     * statement outside a transaction: BEGIN or a read, or a lease write by token, each of
     * which may run again. Inside a transaction nothing is retried: the journal fails the
     * transition and the next one reads the row back.
     */
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && !db->is_in_txn &&
        PQstatus(db->conn) == CONNECTION_BAD) {
        PQclear(res);
        pthread_mutex_unlock(&db->conn_lock);
        if (journal_pg_reconnect(db) < 0) {
            return NULL;
        }
        pthread_mutex_lock(&db->conn_lock);
        res = PQexecParams(db->conn, sql, p.n, NULL, p.values, p.lengths, p.formats, 0);
        st = PQresultStatus(res);
    }
    if (res != NULL && (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)) {
        pthread_mutex_unlock(&db->conn_lock);
        return res;
    }
    server_message(db->conn, res, msg, sizeof(msg));
    if (sqlstate != NULL && res != NULL && PQresultErrorField(res, PG_DIAG_SQLSTATE) != NULL) {
        snprintf(sqlstate, 6, "%s", PQresultErrorField(res, PG_DIAG_SQLSTATE));
    }
    if (constraint != NULL && res != NULL &&
        PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME) != NULL) {
        snprintf(constraint, cap, "%s", PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME));
    }
    pthread_mutex_unlock(&db->conn_lock);
    PQclear(res);
    prov_fail(PROV_ERR_JOURNAL, "journal %s: %s: %s", db->name, what, msg);
    return NULL;
}

PGresult *journal_pg_exec(struct journal_pg_db *db, const char *what, char sqlstate[6],
                          char *constraint, size_t cap, const char *sql, const char *types, ...)
{
    PGresult *res;
    va_list ap;

    va_start(ap, types);
    res = exec_v(db, what, sqlstate, constraint, cap, sql, types, ap);
    va_end(ap);
    return res;
}

PGresult *journal_pg_vexec(struct journal_pg_db *db, const char *what, const char *sql,
                           const char *types, va_list ap)
{
    return exec_v(db, what, NULL, NULL, 0, sql, types, ap);
}

int journal_pg_run(struct journal_pg_db *db, const char *what, const char *sql, const char *types,
                   ...)
{
    PGresult *res;
    va_list ap;

    va_start(ap, types);
    res = exec_v(db, what, NULL, NULL, 0, sql, types, ap);
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

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

PGconn *journal_pg_connect(const struct journal_pg_db *db)
{
    const char *keys[] = {"application_name", "connect_timeout", "dbname", "password", NULL};
    const char *values[] = {"provisioner", "10", db->conninfo, db->password, NULL};

    if (db->password == NULL) {
        keys[3] = NULL;
    }
    return PQconnectdbParams(keys, values, 1);
}

/* The server's notices (warnings) are the tool's debug output, not lines on stderr. */
static void server_notice(void *ctx, const char *message)
{
    prov_debug("journal", "journal %s: %s", ((struct journal_pg_db *)ctx)->name, message);
}

static int connect_fail(struct journal_pg_db *db, const char *what)
{
    char msg[512];
    size_t n;

    snprintf(msg, sizeof(msg), "%s", db->conn ? PQerrorMessage(db->conn) : "out of memory");
    for (n = strlen(msg); n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' '); n--) {
        msg[n - 1] = '\0';
    }
    for (char *c = msg; *c != '\0'; c++) {
        *c = *c == '\n' ? ' ' : *c;
    }
    return prov_fail(PROV_ERR_JOURNAL, "journal %s: %s: %s", db->name, what, msg);
}

/*
 * The session's writer lock. Batches and stations share it: on the ledger they work side by
 * side (rows are claimed by leases, journal_pg_lease.c). ledger migrate takes it exclusively,
 * so that no process that knows only the older schema writes while it changes.
 */
static int take_writer_lock(struct journal_pg_db *db)
{
    PGresult *res;
    bool is_held;

    if (db->mode == JOURNAL_STORE_READ) {
        return 0;
    }
    res = journal_pg_exec(db, "writer lock", NULL, NULL, 0,
                          db->mode == JOURNAL_STORE_ADMIN
                              ? "SELECT pg_try_advisory_lock(" LOCK_WRITER ")"
                              : "SELECT pg_try_advisory_lock_shared(" LOCK_WRITER ")",
                          "");
    if (res == NULL) {
        return PROV_ERR_JOURNAL;
    }
    is_held = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    if (!is_held) {
        return prov_fail(PROV_ERR_JOURNAL,
                         db->mode == JOURNAL_STORE_ADMIN
                             ? "journal %s: stations or batch runs are working on the ledger; "
                               "stop them before changing its schema"
                             : "journal %s: its schema is being changed (ledger migrate holds "
                               "its writer lock)",
                         db->name);
    }
    return 0;
}

/*
 * A COMMIT whose connection broke may still be running on the server (a deferred trigger, a
 * synchronous standby's answer): nothing this session reads shows its outcome until that
 * server process has ended. Waits for it (IN_DOUBT_WAIT_MS), so that the row read back is
 * the state the server holds; after that, the outcome stays unknown (PROV_ERR_JOURNAL).
 */
static int await_in_doubt(struct journal_pg_db *db)
{
    char pid[16];
    const char *param = pid;
    bool is_gone = false;

    snprintf(pid, sizeof(pid), "%d", db->in_doubt_pid);
    for (long waited = 0; !is_gone && waited < IN_DOUBT_WAIT_MS; waited += 100) {
        PGresult *res;

        if (waited > 0) {
            sleep_ms(100);
        }
        pthread_mutex_lock(&db->conn_lock);
        res = PQexecParams(db->conn, "SELECT 1 FROM pg_stat_activity WHERE pid = $1", 1, NULL,
                           &param, NULL, NULL, 0);
        is_gone = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 0;
        PQclear(res);
        pthread_mutex_unlock(&db->conn_lock);
    }
    if (!is_gone) {
        return prov_fail(PROV_ERR_JOURNAL,
                         "journal %s: the server still runs the COMMIT whose connection broke: "
                         "its outcome is unknown (run the same command again)",
                         db->name);
    }
    db->in_doubt_pid = 0;
    return 0;
}

int journal_pg_reconnect(struct journal_pg_db *db)
{
    long pause = RECONNECT_FIRST_MS;

    for (int i = 0; i < RECONNECT_TRIES; i++) {
        if (i > 0) {
            sleep_ms(pause);
            pause *= 2;
        }
        pthread_mutex_lock(&db->conn_lock);
        PQreset(db->conn);
        pthread_mutex_unlock(&db->conn_lock);
        if (PQstatus(db->conn) == CONNECTION_OK) {
            prov_warn("journal %s: connected again", db->name);
            return db->in_doubt_pid != 0 && await_in_doubt(db) < 0 ? PROV_ERR_JOURNAL
                                                                   : take_writer_lock(db);
        }
    }
    db->is_away = true; /* fail closed, and fast: no row waits for the backoff again */
    return connect_fail(db, "the database stays away");
}

void journal_pg_db_init(struct journal_pg_db *db, const char *name, enum journal_store_mode mode)
{
    db->name = name;
    db->mode = mode;
    pthread_mutex_init(&db->conn_lock, NULL);
}

int journal_pg_db_connect(struct journal_pg_db *db)
{
    db->conn = journal_pg_connect(db);
    if (db->conn == NULL || PQstatus(db->conn) != CONNECTION_OK) {
        return connect_fail(db, "cannot connect");
    }
    PQsetNoticeProcessor(db->conn, server_notice, db);
    return take_writer_lock(db);
}

void journal_pg_db_close(struct journal_pg_db *db)
{
    PQfinish(db->conn); /* the server releases the session's advisory locks */
    db->conn = NULL;
    if (db->password != NULL) {
        OPENSSL_cleanse(db->password, strlen(db->password));
    }
    free(db->password);
    free(db->conninfo);
    db->password = NULL;
    db->conninfo = NULL;
    pthread_mutex_destroy(&db->conn_lock);
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
