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

#include "pq_api.h"
#include <openssl/crypto.h>

#include "error.h"
#include "log.h"
#include "pg_conn.h"

#define MAX_PARAMS 24

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

/*
 * A statement sent with the next one (journal_pg_defer): its arguments copied, and what to do
 * with its result, which only has to be a success otherwise.
 */
struct pg_pending {
    char *what;
    char *sql;
    int n;
    char *values[MAX_PARAMS];
    int lengths[MAX_PARAMS];
    int formats[MAX_PARAMS];
    void (*on_result)(void *ctx, const PGresult *res);
    void *ctx;
};

static void pending_clear(struct journal_pg_db *db)
{
    for (size_t i = 0; i < db->n_pending; i++) {
        struct pg_pending *q = &db->pending[i];

        for (int k = 0; k < q->n; k++) {
            free(q->values[k]);
        }
        free(q->what);
        free(q->sql);
    }
    db->n_pending = 0;
}

/* Copies p into a pending statement; PROV_ERR_NOMEM. */
static int pending_add(struct journal_pg_db *db, const char *what, const char *sql,
                       const struct params *p, void (*on_result)(void *, const PGresult *),
                       void *ctx)
{
    struct pg_pending *q;

    if (db->n_pending == db->cap_pending) {
        size_t cap = db->cap_pending ? 2 * db->cap_pending : 8;
        struct pg_pending *more = realloc(db->pending, cap * sizeof(*more));

        if (more == NULL) {
            return prov_fail(PROV_ERR_NOMEM, "journal %s: out of memory", db->name);
        }
        db->pending = more;
        db->cap_pending = cap;
    }
    q = &db->pending[db->n_pending];
    memset(q, 0, sizeof(*q));
    q->what = strdup(what);
    q->sql = strdup(sql);
    q->n = p->n;
    q->on_result = on_result;
    q->ctx = ctx;
    db->n_pending++; /* counted now, so that pending_clear frees a half-made copy */
    for (int k = 0; k < p->n; k++) {
        q->lengths[k] = p->lengths[k];
        q->formats[k] = p->formats[k];
        if (p->values[k] != NULL) {
            size_t len = p->formats[k] ? (size_t)p->lengths[k] : strlen(p->values[k]) + 1;

            q->values[k] = malloc(len ? len : 1);
            if (q->values[k] == NULL) {
                return prov_fail(PROV_ERR_NOMEM, "journal %s: out of memory", db->name);
            }
            memcpy(q->values[k], p->values[k], len);
        }
    }
    if (q->what == NULL || q->sql == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "journal %s: out of memory", db->name);
    }
    return 0;
}

static bool is_ok(const PGresult *res)
{
    ExecStatusType st = PQresultStatus(res);

    return res != NULL && (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK);
}

/* The name of prepared statement k on the session. */
static void prepared_name(int k, char name[24])
{
    snprintf(name, 24, "prov_%d", k);
}

/* The session's prepared statement of sql: its number, or -1. */
static int prepared_find(const struct journal_pg_db *db, const char *sql)
{
    for (int k = 0; k < db->n_prepared; k++) {
        if (db->prepared[k] != NULL && strcmp(db->prepared[k], sql) == 0) {
            return k;
        }
    }
    return -1;
}

/* Forgets the session's prepared statements (a new session has none). */
static void prepared_clear(struct journal_pg_db *db)
{
    for (int k = 0; k < db->n_prepared; k++) {
        free(db->prepared[k]);
        db->prepared[k] = NULL;
    }
    db->n_prepared = 0;
}

/* One message of a pipeline: a statement's preparation, or its execution. */
struct pipe_item {
    bool is_prepare;
    size_t stmt; /* pending index; n_pending: the caller's statement */
    int k;       /* its prepared statement, or -1 */
};

/*
 * Queues statement i (sql, its n arguments) as the execution of the session's prepared
 * statement, preparing it first (in the same pipeline) when the session has not yet; a
 * statement the table has no room for goes unnamed. False when libpq refused to queue.
 */
static bool queue_stmt(struct journal_pg_db *db, size_t i, const char *sql, int n,
                       const char *const *values, const int *lengths, const int *formats,
                       struct pipe_item *items, size_t *n_items)
{
    char name[24];
    int k = prepared_find(db, sql);

    if (k < 0 && db->n_prepared < JOURNAL_PG_PREPARED_MAX &&
        (db->prepared[db->n_prepared] = strdup(sql)) != NULL) {
        k = db->n_prepared++;
        prepared_name(k, name);
        items[(*n_items)++] = (struct pipe_item){.is_prepare = true, .stmt = i, .k = k};
        if (PQsendPrepare(db->conn, name, sql, n, NULL) != 1) {
            return false;
        }
    }
    items[(*n_items)++] = (struct pipe_item){.is_prepare = false, .stmt = i, .k = k};
    if (k < 0) {
        return PQsendQueryParams(db->conn, sql, n, NULL, values, lengths, formats, 0) == 1;
    }
    prepared_name(k, name);
    return PQsendQueryPrepared(db->conn, name, n, values, lengths, formats, 0) == 1;
}

/*
 * Sends the pending statements and then sql in one pipeline (one round trip), each as a
 * prepared statement of the session (parsed and planned once per session), and reads every
 * result. Returns sql's result when all succeeded; otherwise NULL, with *bad the first failed
 * result (NULL when the connection gave none) and *what the statement it belongs to. The
 * caller holds conn_lock.
 */
static PGresult *send_pipeline(struct journal_pg_db *db, const char *sql, const struct params *p,
                               PGresult **bad, const char **what)
{
    size_t n = db->n_pending;
    size_t n_items = 0;
    struct pipe_item *items = malloc(2 * (n + 1) * sizeof(*items));
    PGresult *out = NULL;
    PGresult *res;
    bool is_sent = items != NULL && PQenterPipelineMode(db->conn) == 1;

    *bad = NULL;
    for (size_t i = 0; is_sent && i < n; i++) {
        struct pg_pending *q = &db->pending[i];

        is_sent = queue_stmt(db, i, q->sql, q->n, (const char *const *)q->values, q->lengths,
                             q->formats, items, &n_items);
    }
    is_sent =
        is_sent && queue_stmt(db, n, sql, p->n, p->values, p->lengths, p->formats, items, &n_items);
    is_sent = is_sent && PQpipelineSync(db->conn) == 1;
    for (size_t i = 0; is_sent && i < n_items; i++) {
        const struct pipe_item *it = &items[i];

        res = PQgetResult(db->conn);
        if (res == NULL) {
            break; /* the connection broke: no more results (a new session prepares anew) */
        }
        for (PGresult *end = PQgetResult(db->conn); end != NULL; end = PQgetResult(db->conn)) {
            PQclear(end);
        }
        if (it->is_prepare && !is_ok(res)) {
            free(db->prepared[it->k]); /* not prepared: never named again */
            db->prepared[it->k] = NULL;
        }
        if (is_ok(res) && !it->is_prepare && it->stmt < n &&
            db->pending[it->stmt].on_result != NULL) {
            db->pending[it->stmt].on_result(db->pending[it->stmt].ctx, res);
        }
        if (is_ok(res) && !it->is_prepare && it->stmt == n && *bad == NULL) {
            out = res;
        } else if (!is_ok(res) && *bad == NULL && PQresultStatus(res) != PGRES_PIPELINE_ABORTED) {
            *bad = res;
            *what = it->stmt < n ? db->pending[it->stmt].what : NULL;
        } else {
            PQclear(res);
        }
    }
    if (out != NULL || *bad != NULL) {
        res = PQgetResult(db->conn); /* the sync's */
        PQclear(res);
    }
    if (items != NULL && PQexitPipelineMode(db->conn) != 1 && out != NULL) {
        PQclear(out); /* results left over: the connection is not what it was */
        out = NULL;
    }
    if (*bad != NULL && out != NULL) {
        PQclear(out);
        out = NULL;
    }
    free(items);
    return out;
}

/* Sends the pending statements with sql; sql's result or NULL (see send_pipeline). */
static PGresult *send_all(struct journal_pg_db *db, const char *sql, const struct params *p,
                          PGresult **bad, const char **what)
{
    *bad = NULL;
    *what = NULL;
    db->n_round_trips++;
    db->n_statements += db->n_pending + 1;
    return send_pipeline(db, sql, p, bad, what);
}

/* send_all, its time counted for the debug output (what the ledger costs a station). */
static PGresult *timed_send(struct journal_pg_db *db, const char *sql, const struct params *p,
                            PGresult **bad, const char **what)
{
    struct timespec t0;
    struct timespec t1;
    PGresult *res;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    res = send_all(db, sql, p, bad, what);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    db->ns_waited +=
        (unsigned long long)((t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec));
    return res;
}

static PGresult *exec_v(struct journal_pg_db *db, const char *what, char sqlstate[6],
                        char *constraint, size_t cap, const char *sql, const char *types,
                        va_list ap)
{
    struct params p;
    PGresult *res = NULL;
    PGresult *bad = NULL;
    const char *bad_what = NULL;
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
    if (!db->is_txn_sent && PQstatus(db->conn) != CONNECTION_OK && journal_pg_reconnect(db) < 0) {
        return NULL;
    }
    pthread_mutex_lock(&db->conn_lock);
    res = timed_send(db, sql, &p, &bad, &bad_what);
    /*
     * The connection broke (a server restart, a failover, a terminated backend) before the
     * server saw anything of a transaction (its BEGIN goes with its first statement), or
     * under a statement outside a transaction (a read, a lease write by token): each may run
     * again. Once a transaction has reached the server nothing is retried: the journal fails
     * the transition and the next one reads the row back.
     */
    if (res == NULL && !db->is_txn_sent && PQstatus(db->conn) == CONNECTION_BAD) {
        PQclear(bad);
        pthread_mutex_unlock(&db->conn_lock);
        if (journal_pg_reconnect(db) < 0) {
            return NULL;
        }
        pthread_mutex_lock(&db->conn_lock);
        res = timed_send(db, sql, &p, &bad, &bad_what);
    }
    db->is_txn_sent = db->is_in_txn;
    if (res != NULL) {
        pending_clear(db); /* sent */
        pthread_mutex_unlock(&db->conn_lock);
        return res;
    }
    prov_pg_message(db->conn, bad, msg, sizeof(msg));
    if (sqlstate != NULL && bad != NULL && PQresultErrorField(bad, PG_DIAG_SQLSTATE) != NULL) {
        snprintf(sqlstate, 6, "%s", PQresultErrorField(bad, PG_DIAG_SQLSTATE));
    }
    if (constraint != NULL && bad != NULL &&
        PQresultErrorField(bad, PG_DIAG_CONSTRAINT_NAME) != NULL) {
        snprintf(constraint, cap, "%s", PQresultErrorField(bad, PG_DIAG_CONSTRAINT_NAME));
    }
    /* a refusal of the ledger's own functions (doc/ledger.md) is a whole line of its own */
    if (bad != NULL && PQresultErrorField(bad, PG_DIAG_SQLSTATE) != NULL &&
        strncmp(PQresultErrorField(bad, PG_DIAG_SQLSTATE), JOURNAL_PG_REFUSED_CLASS, 2) == 0 &&
        PQresultErrorField(bad, PG_DIAG_MESSAGE_PRIMARY) != NULL) {
        prov_fail(PROV_ERR_JOURNAL, "%s", PQresultErrorField(bad, PG_DIAG_MESSAGE_PRIMARY));
    } else {
        prov_fail(PROV_ERR_JOURNAL, "journal %s: %s: %s", db->name, bad_what ? bad_what : what,
                  msg);
    }
    pending_clear(db); /* sent or not, dropped: the failed transaction is rolled back */
    pthread_mutex_unlock(&db->conn_lock);
    PQclear(bad);
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

int journal_pg_defer(struct journal_pg_db *db, const char *what,
                     void (*on_result)(void *ctx, const PGresult *res), void *ctx, const char *sql,
                     const char *types, ...)
{
    struct params p;
    va_list ap;
    int r;

    va_start(ap, types);
    bind_params(&p, types, ap);
    va_end(ap);
    pthread_mutex_lock(&db->conn_lock);
    r = pending_add(db, what, sql, &p, on_result, ctx);
    pthread_mutex_unlock(&db->conn_lock);
    return r;
}

int journal_pg_defer_merged(struct journal_pg_db *db, size_t k, const char *what, const char *sql,
                            const char *types, ...)
{
    struct params p;
    struct params all;
    struct pg_pending *q;
    va_list ap;
    int r = 0;

    va_start(ap, types);
    bind_params(&p, types, ap);
    va_end(ap);
    memset(&all, 0, sizeof(all));
    pthread_mutex_lock(&db->conn_lock);
    if (k > db->n_pending) {
        pthread_mutex_unlock(&db->conn_lock);
        return prov_fail(PROV_ERR_INTERNAL, "journal %s: %s: nothing to merge", db->name, what);
    }
    /* the queued statements' arguments first, in their order (their copies stay theirs) */
    for (size_t i = db->n_pending - k; i < db->n_pending; i++) {
        q = &db->pending[i];
        for (int a = 0; a < q->n && all.n < MAX_PARAMS; a++, all.n++) {
            all.values[all.n] = q->values[a];
            all.lengths[all.n] = q->lengths[a];
            all.formats[all.n] = q->formats[a];
        }
    }
    for (int a = 0; a < p.n && all.n < MAX_PARAMS; a++, all.n++) {
        all.values[all.n] = p.values[a];
        all.lengths[all.n] = p.lengths[a];
        all.formats[all.n] = p.formats[a];
    }
    /* copied into a new entry at the end, then the merged ones go and it takes their place */
    r = pending_add(db, what, sql, &all, NULL, NULL);
    if (r == 0) {
        struct pg_pending merged = db->pending[db->n_pending - 1];
        size_t first = db->n_pending - 1 - k;

        db->n_pending--;
        for (size_t i = first; i < db->n_pending; i++) {
            q = &db->pending[i];
            for (int a = 0; a < q->n; a++) {
                free(q->values[a]);
            }
            free(q->what);
            free(q->sql);
        }
        db->pending[first] = merged;
        db->n_pending = first + 1;
    }
    pthread_mutex_unlock(&db->conn_lock);
    return r;
}

void journal_pg_txn_open(struct journal_pg_db *db)
{
    db->is_in_txn = true;
    db->is_txn_sent = false;
}

bool journal_pg_txn_close(struct journal_pg_db *db)
{
    bool was_sent = db->is_txn_sent;

    pthread_mutex_lock(&db->conn_lock);
    pending_clear(db);
    pthread_mutex_unlock(&db->conn_lock);
    db->is_in_txn = false;
    db->is_txn_sent = false;
    return was_sent;
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
    return prov_pg_connect(db->conninfo, db->password);
}

/* The server's notices (warnings) are the tool's debug output, not lines on stderr. */
static void server_notice(void *ctx, const char *message)
{
    prov_debug("journal", "journal %s: %s", ((struct journal_pg_db *)ctx)->name, message);
}

static int connect_fail(struct journal_pg_db *db, const char *what)
{
    char msg[512];

    prov_pg_message(db->conn, NULL, msg, sizeof(msg));
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

/* Connects again; the session's own statements (the writer lock) go alone. */
static int reconnect(struct journal_pg_db *db)
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
            prepared_clear(db);
            prov_warn("journal %s: connected again", db->name);
            return db->in_doubt_pid != 0 && await_in_doubt(db) < 0 ? PROV_ERR_JOURNAL
                                                                   : take_writer_lock(db);
        }
    }
    db->is_away = true; /* fail closed, and fast: no row waits for the backoff again */
    return connect_fail(db, "the database stays away");
}

int journal_pg_reconnect(struct journal_pg_db *db)
{
    /* what the caller queued waits for the caller's statement, not for the writer lock's */
    size_t n_pending = db->n_pending;
    bool is_in_txn = db->is_in_txn;
    bool is_txn_sent = db->is_txn_sent;
    int r;

    db->n_pending = 0;
    db->is_in_txn = false;
    db->is_txn_sent = false;
    r = reconnect(db);
    db->n_pending = n_pending;
    db->is_in_txn = is_in_txn;
    db->is_txn_sent = is_txn_sent;
    return r;
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
    if (db->n_round_trips > 0) {
        /* what bench/ledger.sh reports as the ledger's cost per device */
        prov_debug("journal", "journal %s: %llu round trips, %llu statements, %.1f ms", db->name,
                   db->n_round_trips, db->n_statements, (double)db->ns_waited / 1e6);
    }
    PQfinish(db->conn); /* the server releases the session's advisory locks */
    db->conn = NULL;
    if (db->password != NULL) {
        OPENSSL_cleanse(db->password, strlen(db->password));
    }
    free(db->password);
    free(db->conninfo);
    pending_clear(db);
    free(db->pending);
    db->pending = NULL;
    prepared_clear(db);
    db->password = NULL;
    db->conninfo = NULL;
    pthread_mutex_destroy(&db->conn_lock);
}

char *journal_pg_text_array(const char *const *serials, size_t n)
{
    size_t cap = 3;
    size_t k = 0;
    char *out;

    for (size_t i = 0; i < n; i++) {
        cap += 2 * strlen(serials[i]) + 3;
    }
    out = malloc(cap);
    if (out == NULL) {
        return NULL;
    }
    out[k++] = '{';
    for (size_t i = 0; i < n; i++) {
        if (i > 0) {
            out[k++] = ',';
        }
        out[k++] = '"';
        for (const char *c = serials[i]; *c != '\0'; c++) {
            if (*c == '"' || *c == '\\') {
                out[k++] = '\\';
            }
            out[k++] = *c;
        }
        out[k++] = '"';
    }
    out[k++] = '}';
    out[k] = '\0';
    return out;
}
