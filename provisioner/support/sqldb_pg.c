/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The SQL seam over PostgreSQL (sqldb.h, sqldb_pg.h): statements translated to $N once and
 * prepared on the server once per session (kept by their text), run with PQexecPrepared,
 * text parameters and results except bytea parameters (binary).
 */
#include "sqldb_pg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pq_api.h"
#include <openssl/crypto.h>

#include "error.h"
#include "log.h"
#include "pg_conn.h"
#include "sqldb_impl.h"

/* The tool's advisory lock class ("prov"), shared with the ledger (doc/ledger.md). */
#define LOCK_CLASS 1886549878
#define PREPARED_MAX 256
#define RECONNECT_TRIES 6
#define RECONNECT_FIRST_MS 250

struct pg_db {
    struct prov_sqldb base;
    PGconn *conn;
    char *uri;      /* as given: never printed */
    char *name;     /* the URI with its password masked */
    char *password; /* or NULL */
    int lock_key;
    bool is_in_txn;      /* between a begin and its commit or rollback: never reconnected */
    unsigned generation; /* the session: a new one has no prepared statements */
    char *prepared[PREPARED_MAX]; /* translated text of the session's statement k */
    int n_prepared;
    long long changes;
    char err[512];
};

struct pg_stmt {
    struct prov_sqldb_stmt base;
    struct pg_db *db;
    char *sql; /* translated */
    int n_params;
    int k; /* its prepared statement in generation */
    unsigned generation;
    char **values;
    int *lengths;
    int *formats;
    PGresult *res;
    int row;
    bool is_run;
    unsigned char *blob; /* the last column_blob, decoded */
};

static struct pg_db *db_of(struct prov_sqldb *db)
{
    return (struct pg_db *)db;
}

static struct pg_stmt *stmt_of(struct prov_sqldb_stmt *st)
{
    return (struct pg_stmt *)st;
}

/* Records res's (or the connection's) message; the seam's code for it. */
static int failed(struct pg_db *db, const PGresult *res)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

    prov_pg_message(db->conn, res, db->err, sizeof(db->err));
    return state != NULL && strncmp(state, "23", 2) == 0 ? PROV_SQLDB_CONSTRAINT : PROV_SQLDB_ERROR;
}

/* Runs sql (no parameters); 0 or the seam's code, res cleared. */
static int simple(struct pg_db *db, const char *sql)
{
    PGresult *res = PQexec(db->conn, sql);
    ExecStatusType s = PQresultStatus(res);
    int rc = 0;

    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK) {
        rc = failed(db, res);
    } else if (s == PGRES_COMMAND_OK) {
        db->changes = strtoll(PQcmdTuples(res), NULL, 10);
    }
    PQclear(res);
    return rc;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

static void forget_prepared(struct pg_db *db)
{
    for (int k = 0; k < db->n_prepared; k++) {
        free(db->prepared[k]);
        db->prepared[k] = NULL;
    }
    db->n_prepared = 0;
    db->generation++;
}

/*
 * Outside a transaction, a broken connection is made again before the next statement (a
 * server restart, a failover to another host of the URI); its prepared statements are gone.
 */
static int usable(struct pg_db *db)
{
    long pause = RECONNECT_FIRST_MS;

    if (PQstatus(db->conn) == CONNECTION_OK) {
        return 0;
    }
    if (db->is_in_txn) {
        /* what the transaction did so far is gone with its session: it fails */
        return failed(db, NULL);
    }
    for (int i = 0; i < RECONNECT_TRIES; i++) {
        if (i > 0) {
            sleep_ms(pause);
            pause *= 2;
        }
        PQreset(db->conn);
        if (PQstatus(db->conn) == CONNECTION_OK) {
            forget_prepared(db);
            prov_warn("CA index %s: connected again", db->name);
            return 0;
        }
    }
    return failed(db, NULL);
}

/*
 * SQLite's placeholders (?N, or ? for the number after the largest so far) as $N, outside
 * string literals, quoted identifiers and comments. *n: the number of parameters.
 */
static char *translate(const char *sql, int *n)
{
    size_t len = strlen(sql);
    char *out = malloc(len * 4 + 1); /* "?" becomes at most "$NNN" */
    char *o = out;
    int max = 0;

    *n = 0;
    if (out == NULL) {
        return NULL;
    }
    for (const char *p = sql; *p != '\0';) {
        if (*p == '\'' || *p == '"') {
            char q = *p;

            *o++ = *p++;
            while (*p != '\0' && !(*p == q && p[1] != q)) {
                if (*p == q) {
                    *o++ = *p++; /* a doubled quote inside */
                }
                *o++ = *p++;
            }
            if (*p != '\0') {
                *o++ = *p++;
            }
        } else if (p[0] == '-' && p[1] == '-') {
            while (*p != '\0' && *p != '\n') {
                *o++ = *p++;
            }
        } else if (*p == '?') {
            int k;

            p++;
            if (*p >= '0' && *p <= '9') {
                char *end = NULL;

                k = (int)strtol(p, &end, 10);
                p = end;
            } else {
                k = max + 1;
            }
            max = k > max ? k : max;
            o += sprintf(o, "$%d", k);
        } else {
            *o++ = *p++;
        }
    }
    *o = '\0';
    *n = max;
    return out;
}

/* Prepares st's text on the session (once per session and text); 0 or the seam's code. */
static int prepare_on_session(struct pg_db *db, struct pg_stmt *st)
{
    char name[24];
    PGresult *res;
    int k;

    for (k = 0; k < db->n_prepared; k++) {
        if (strcmp(db->prepared[k], st->sql) == 0) {
            st->k = k;
            st->generation = db->generation;
            return 0;
        }
    }
    k = db->n_prepared < PREPARED_MAX ? db->n_prepared : -1;
    st->k = k;
    st->generation = db->generation;
    if (k < 0) {
        return 0; /* no room: run unnamed (PQexecParams) */
    }
    snprintf(name, sizeof(name), "prov_ix_%d", k);
    res = PQprepare(db->conn, name, st->sql, st->n_params, NULL);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        int rc = failed(db, res);

        PQclear(res);
        return rc;
    }
    PQclear(res);
    db->prepared[k] = strdup(st->sql);
    if (db->prepared[k] == NULL) {
        st->k = -1; /* prepared but not remembered: run unnamed */
        return 0;
    }
    db->n_prepared++;
    return 0;
}

static void clear_bindings(struct pg_stmt *st)
{
    for (int i = 0; i < st->n_params; i++) {
        free(st->values[i]);
        st->values[i] = NULL;
        st->lengths[i] = 0;
        st->formats[i] = 0;
    }
}

static void clear_result(struct pg_stmt *st)
{
    PQclear(st->res);
    st->res = NULL;
    st->is_run = false;
    st->row = 0;
    PQfreemem(st->blob);
    st->blob = NULL;
}

static void pg_finalize(struct prov_sqldb_stmt *base)
{
    struct pg_stmt *st = stmt_of(base);

    clear_result(st);
    if (st->values != NULL) {
        clear_bindings(st);
    }
    free(st->values);
    free(st->lengths);
    free(st->formats);
    free(st->sql);
    free(st);
}

static int pg_prepare(struct prov_sqldb *base, const char *sql, struct prov_sqldb_stmt **out)
{
    struct pg_db *db = db_of(base);
    struct pg_stmt *st = calloc(1, sizeof(*st));
    int rc = PROV_SQLDB_ERROR;

    if (st == NULL) {
        return PROV_SQLDB_ERROR;
    }
    st->base.db = base;
    st->db = db;
    st->sql = translate(sql, &st->n_params);
    if (st->sql != NULL) {
        size_t n = st->n_params > 0 ? (size_t)st->n_params : 1;

        st->values = calloc(n, sizeof(*st->values));
        st->lengths = calloc(n, sizeof(*st->lengths));
        st->formats = calloc(n, sizeof(*st->formats));
    }
    if (st->sql == NULL || st->values == NULL || st->lengths == NULL || st->formats == NULL) {
        snprintf(db->err, sizeof(db->err), "out of memory");
    } else if ((rc = usable(db)) == 0) {
        rc = prepare_on_session(db, st);
    }
    if (rc != 0) {
        pg_finalize(&st->base);
        return rc;
    }
    *out = &st->base;
    return 0;
}

static void pg_reset(struct prov_sqldb_stmt *base)
{
    struct pg_stmt *st = stmt_of(base);

    clear_result(st);
    clear_bindings(st);
}

static int bind_copy(struct pg_stmt *st, int i, const void *p, size_t len, int format)
{
    if (i < 1 || i > st->n_params) {
        snprintf(st->db->err, sizeof(st->db->err), "parameter %d out of range", i);
        return PROV_SQLDB_ERROR;
    }
    free(st->values[i - 1]);
    st->values[i - 1] = NULL;
    st->lengths[i - 1] = 0;
    st->formats[i - 1] = format;
    if (p == NULL) {
        return 0;
    }
    st->values[i - 1] = malloc(len + 1);
    if (st->values[i - 1] == NULL) {
        snprintf(st->db->err, sizeof(st->db->err), "out of memory");
        return PROV_SQLDB_ERROR;
    }
    memcpy(st->values[i - 1], p, len);
    st->values[i - 1][len] = '\0';
    st->lengths[i - 1] = (int)len;
    return 0;
}

static int pg_bind_text(struct prov_sqldb_stmt *base, int i, const char *text)
{
    return bind_copy(stmt_of(base), i, text, text ? strlen(text) : 0, 0);
}

static int pg_bind_int(struct prov_sqldb_stmt *base, int i, long long v)
{
    char num[24];

    snprintf(num, sizeof(num), "%lld", v);
    return bind_copy(stmt_of(base), i, num, strlen(num), 0);
}

static int pg_bind_blob(struct prov_sqldb_stmt *base, int i, const void *p, size_t len)
{
    return bind_copy(stmt_of(base), i, p, len, 1);
}

/* Runs st once on the session (prepared again on a new one): 0 (st->res set) or the code. */
static int exec_once(struct pg_db *db, struct pg_stmt *st)
{
    int rc = usable(db);

    if (rc == 0 && st->generation != db->generation) {
        rc = prepare_on_session(db, st);
    }
    if (rc != 0) {
        return rc;
    }
    if (st->k >= 0) {
        char name[24];

        snprintf(name, sizeof(name), "prov_ix_%d", st->k);
        st->res = PQexecPrepared(db->conn, name, st->n_params, (const char *const *)st->values,
                                 st->lengths, st->formats, 0);
    } else {
        st->res = PQexecParams(db->conn, st->sql, st->n_params, NULL,
                               (const char *const *)st->values, st->lengths, st->formats, 0);
    }
    if (PQresultStatus(st->res) == PGRES_COMMAND_OK || PQresultStatus(st->res) == PGRES_TUPLES_OK) {
        return 0;
    }
    rc = failed(db, st->res);
    PQclear(st->res);
    st->res = NULL;
    return rc;
}

static int pg_step(struct prov_sqldb_stmt *base)
{
    struct pg_stmt *st = stmt_of(base);
    struct pg_db *db = st->db;
    bool was_idle = !db->is_in_txn;
    int rc;

    if (st->is_run) {
        PQfreemem(st->blob);
        st->blob = NULL;
        st->row++;
        return st->row < PQntuples(st->res) ? PROV_SQLDB_ROW : PROV_SQLDB_DONE;
    }
    rc = exec_once(db, st);
    /*
     * The connection broke under a statement outside a transaction (a server restart, a
     * terminated backend, a failover): it runs again on a new session. Inside a transaction
     * nothing is retried: the transaction fails, and the caller's rollback ends it.
     */
    if (rc != 0 && was_idle && PQstatus(db->conn) == CONNECTION_BAD) {
        rc = exec_once(db, st);
    }
    if (rc != 0) {
        return rc;
    }
    st->is_run = true;
    st->row = 0;
    db->changes = strtoll(PQcmdTuples(st->res), NULL, 10);
    return PQntuples(st->res) > 0 ? PROV_SQLDB_ROW : PROV_SQLDB_DONE;
}

static bool has_value(struct pg_stmt *st, int i)
{
    return st->res != NULL && st->row < PQntuples(st->res) && i < PQnfields(st->res) &&
           !PQgetisnull(st->res, st->row, i);
}

static bool pg_column_null(struct prov_sqldb_stmt *base, int i)
{
    return !has_value(stmt_of(base), i);
}

static const char *pg_column_text(struct prov_sqldb_stmt *base, int i)
{
    struct pg_stmt *st = stmt_of(base);

    return has_value(st, i) ? PQgetvalue(st->res, st->row, i) : NULL;
}

/* Integers as SQLite gives them: booleans are 1 and 0. */
static long long pg_column_int(struct prov_sqldb_stmt *base, int i)
{
    const char *t = pg_column_text(base, i);

    if (t == NULL) {
        return 0;
    }
    if (strcmp(t, "t") == 0 || strcmp(t, "f") == 0) {
        return t[0] == 't';
    }
    return strtoll(t, NULL, 10);
}

static const void *pg_column_blob(struct prov_sqldb_stmt *base, int i, size_t *len)
{
    struct pg_stmt *st = stmt_of(base);
    const char *t = pg_column_text(base, i);

    *len = 0;
    PQfreemem(st->blob);
    st->blob = t ? PQunescapeBytea((const unsigned char *)t, len) : NULL;
    return *len > 0 ? st->blob : NULL;
}

static const char *pg_errmsg(struct prov_sqldb *base)
{
    return db_of(base)->err;
}

static int pg_exec(struct prov_sqldb *base, const char *sql)
{
    struct pg_db *db = db_of(base);
    int rc = usable(db);

    return rc == 0 ? simple(db, sql) : rc;
}

static int pg_begin(struct prov_sqldb *base)
{
    struct pg_db *db = db_of(base);
    char sql[96];
    int rc = usable(db);

    snprintf(sql, sizeof(sql), "BEGIN; SELECT pg_advisory_xact_lock(%d, %d)", LOCK_CLASS,
             db->lock_key);
    rc = rc == 0 ? simple(db, sql) : rc;
    if (rc != 0 && PQtransactionStatus(db->conn) != PQTRANS_IDLE) {
        PQclear(PQexec(db->conn, "ROLLBACK"));
    }
    db->is_in_txn = rc == 0;
    return rc;
}

/* A COMMIT of an aborted transaction answers ROLLBACK: that is a failure here. */
static int pg_commit(struct prov_sqldb *base)
{
    struct pg_db *db = db_of(base);
    PGresult *res = PQexec(db->conn, "COMMIT");
    int rc = 0;

    db->is_in_txn = false;
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        rc = failed(db, res);
    } else if (strcmp(PQcmdStatus(res), "COMMIT") != 0) {
        snprintf(db->err, sizeof(db->err), "the transaction was rolled back by the server");
        rc = PROV_SQLDB_ERROR;
    }
    PQclear(res);
    return rc;
}

static void pg_rollback(struct prov_sqldb *base)
{
    struct pg_db *db = db_of(base);
    PGTransactionStatusType s = PQtransactionStatus(db->conn);

    db->is_in_txn = false;
    if (s == PQTRANS_INTRANS || s == PQTRANS_INERROR) {
        PQclear(PQexec(db->conn, "ROLLBACK"));
    }
}

static long long pg_changes(struct prov_sqldb *base)
{
    return db_of(base)->changes;
}

static long long pg_last_id(struct prov_sqldb *base)
{
    struct pg_db *db = db_of(base);
    PGresult *res = PQexec(db->conn, "SELECT lastval()");
    long long id = 0;

    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
        id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    } else {
        failed(db, res);
    }
    PQclear(res);
    return id;
}

static int pg_has_table(struct prov_sqldb *base, const char *name, bool *out)
{
    struct pg_db *db = db_of(base);
    PGresult *res;
    int rc = usable(db);

    *out = false;
    if (rc != 0) {
        return rc;
    }
    res = PQexecParams(db->conn,
                       "SELECT count(*) FROM pg_catalog.pg_tables"
                       " WHERE schemaname = current_schema() AND tablename = $1",
                       1, NULL, &name, NULL, NULL, 0);
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
        *out = strcmp(PQgetvalue(res, 0, 0), "0") != 0;
    } else {
        rc = failed(db, res);
    }
    PQclear(res);
    return rc;
}

static void pg_close(struct prov_sqldb *base)
{
    struct pg_db *db = db_of(base);

    PQfinish(db->conn);
    forget_prepared(db);
    if (db->password != NULL) {
        OPENSSL_cleanse(db->password, strlen(db->password));
    }
    free(db->password);
    if (db->uri != NULL) {
        OPENSSL_cleanse(db->uri, strlen(db->uri));
    }
    free(db->uri);
    free(db->name);
    free(db);
}

static const struct prov_sqldb_ops pg_ops = {
    .dialect = PROV_SQLDB_POSTGRESQL,
    .close = pg_close,
    .errmsg = pg_errmsg,
    .exec = pg_exec,
    .begin = pg_begin,
    .commit = pg_commit,
    .rollback = pg_rollback,
    .changes = pg_changes,
    .last_id = pg_last_id,
    .has_table = pg_has_table,
    .prepare = pg_prepare,
    .finalize = pg_finalize,
    .reset = pg_reset,
    .bind_text = pg_bind_text,
    .bind_int = pg_bind_int,
    .bind_blob = pg_bind_blob,
    .step = pg_step,
    .column_null = pg_column_null,
    .column_text = pg_column_text,
    .column_int = pg_column_int,
    .column_blob = pg_column_blob,
};

/* The server's notices are debug output, not lines on stderr. */
static void server_notice(void *ctx, const char *message)
{
    prov_debug("ca", "CA index %s: %s", ((struct pg_db *)ctx)->name, message);
}

int prov_sqldb_pg_open(const char *uri, const char *password, int lock_key, struct prov_sqldb **out)
{
    struct pg_db *db = calloc(1, sizeof(*db));
    char msg[512];

    *out = NULL;
    if (db == NULL || (db->uri = strdup(uri)) == NULL ||
        (db->name = prov_pg_mask_uri(uri)) == NULL ||
        (password != NULL && (db->password = strdup(password)) == NULL)) {
        if (db != NULL) {
            free(db->uri);
            free(db->name);
            free(db);
        }
        return prov_fail(PROV_ERR_NOMEM, "CA index: out of memory");
    }
    db->base.ops = &pg_ops;
    db->lock_key = lock_key;
    db->conn = prov_pg_connect(db->uri, db->password);
    if (db->conn == NULL || PQstatus(db->conn) != CONNECTION_OK) {
        prov_pg_message(db->conn, NULL, msg, sizeof(msg));
        prov_fail(PROV_ERR_JOURNAL, "CA index %s: cannot connect: %s", db->name, msg);
        pg_close(&db->base);
        return PROV_ERR_JOURNAL;
    }
    PQsetNoticeProcessor(db->conn, server_notice, db);
    *out = &db->base;
    return 0;
}
