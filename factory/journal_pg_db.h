/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_FACTORY_JOURNAL_PG_DB_H
#define PROV_FACTORY_JOURNAL_PG_DB_H

/*
 * The bottom of the PostgreSQL store (doc/ledger.md): its connection to the ledger, the
 * session's writer lock, reconnecting, and statements with bound arguments
 * (journal_pg_db.c). The leases (journal_pg_lease.h) and the store (journal_pg.h) stand on
 * it; it knows neither.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

#include "pq_api.h"

#include "journal_store.h"

/* Advisory lock keys (two int4: the tool's class, then which lock); doc/ledger.md. */
#define LOCK_CLASS "1886549878"         /* "prov" */
#define LOCK_STATION_CLASS "1886549879" /* with hashtext(station): a station's transactions */
#define LOCK_WRITER LOCK_CLASS ", 2"
#define LOCK_SCHEMA LOCK_CLASS ", 3"

/*
 * The SQLSTATE class of the refusals that the ledger's own functions raise (schema step 3,
 * journal_pg.c): their message is the whole line, said to the operator as it is.
 */
#define JOURNAL_PG_REFUSED_CLASS "PV"

struct pg_pending;

/* How many statements a session prepares (journal_pg_db.c); more go unnamed. */
#define JOURNAL_PG_PREPARED_MAX 64

struct journal_pg_db {
    const char *name; /* the URI with any password masked (the store's name) */
    PGconn *conn;
    char *conninfo;               /* the URI as given (never printed: it may hold a password) */
    char *password;               /* from the password source, or NULL (libpq finds its own) */
    enum journal_store_mode mode; /* which session lock to take again after a reconnect */
    pthread_mutex_t conn_lock;    /* one statement at a time on the connection */
    bool is_in_txn;               /* between begin and end */
    bool is_txn_sent;             /* the server has seen the transaction's BEGIN */
    struct pg_pending *pending;   /* statements sent with the next one (journal_pg_defer) */
    size_t n_pending;
    size_t cap_pending;
    char *prepared[JOURNAL_PG_PREPARED_MAX]; /* the session's prepared statements, by number */
    int n_prepared;
    bool is_away;                     /* reconnecting failed: every op fails at once (closed) */
    unsigned long long n_round_trips; /* statements and pipelines sent (the debug output) */
    unsigned long long n_statements;
    unsigned long long ns_waited; /* in those round trips */
    int in_doubt_pid;             /* the server process of a COMMIT whose connection broke */
};

/* Sets up db (name, URI and password are the caller's until journal_pg_db_close). */
void journal_pg_db_init(struct journal_pg_db *db, const char *name, enum journal_store_mode mode);

/*
 * Connects db and takes its session's writer lock (shared, or exclusive in ADMIN mode; none
 * in READ mode); 0 or PROV_ERR_JOURNAL with one line.
 */
int journal_pg_db_connect(struct journal_pg_db *db);

/* Disconnects (the server releases the session's locks), wipes and frees the password and
 * the URI. */
void journal_pg_db_close(struct journal_pg_db *db);

/* A new connection with the store's URI and password (row locks, lease renewal). */
PGconn *journal_pg_connect(const struct journal_pg_db *db);

/*
 * Connects again after the connection broke, with backoff, and takes the session's writer
 * lock again; outside a transaction only: a transaction whose connection broke has an
 * unknown outcome, and the journal reads the row back instead of guessing.
 */
int journal_pg_reconnect(struct journal_pg_db *db);

/*
 * Runs sql with its arguments bound by a type string, as the SQLite store does: 't' text
 * (NULL binds NULL), 'i' long long, 'b' bytea (pointer, then size_t length). Returns the
 * result (PGRES_COMMAND_OK or PGRES_TUPLES_OK), or NULL with the error recorded as
 * "journal NAME: what: <server message>". *sqlstate, when not NULL, receives the error's
 * SQLSTATE ("" when none) and *constraint the violated constraint's name.
 */
PGresult *journal_pg_exec(struct journal_pg_db *db, const char *what, char sqlstate[6],
                          char *constraint, size_t cap, const char *sql, const char *types, ...);

/* journal_pg_exec without the error's details, for a caller's own variadic helper. */
PGresult *journal_pg_vexec(struct journal_pg_db *db, const char *what, const char *sql,
                           const char *types, va_list ap);

/* Runs sql that returns nothing; 0 or the recorded error. */
int journal_pg_run(struct journal_pg_db *db, const char *what, const char *sql, const char *types,
                   ...);

/*
 * Queues sql (arguments bound and copied as by journal_pg_exec) to be sent in one pipeline
 * with the next statement run on the connection: one round trip for both. Its result only has
 * to succeed (on_result, when not NULL, sees it); when it fails, that next statement fails
 * with its error, named by what, and nothing after it in the pipeline runs. Inside a
 * transaction only, so that a failure rolls it back. 0 or PROV_ERR_NOMEM.
 */
int journal_pg_defer(struct journal_pg_db *db, const char *what,
                     void (*on_result)(void *ctx, const PGresult *res), void *ctx, const char *sql,
                     const char *types, ...);

/*
 * Replaces the last k queued statements (journal_pg_defer) with sql, whose arguments are
 * theirs, in their order, then the ones bound here by types: several statements become one
 * call of a server-side function. PROV_ERR_INTERNAL when fewer than k are queued.
 */
int journal_pg_defer_merged(struct journal_pg_db *db, size_t k, const char *what, const char *sql,
                            const char *types, ...);

/*
 * A transaction opens (its BEGIN is deferred by the caller) and closes: the close drops what
 * is still queued and says whether the server saw anything of the transaction (when not,
 * there is nothing to commit or roll back).
 */
void journal_pg_txn_open(struct journal_pg_db *db);
bool journal_pg_txn_close(struct journal_pg_db *db);

/* Column c of row i: a copy (NULL for NULL), into out ("" for NULL), as a number. */
char *journal_pg_strdup(const PGresult *res, int i, int c);
void journal_pg_copy(const PGresult *res, int i, int c, char *out, size_t cap);
long long journal_pg_ll(const PGresult *res, int i, int c);
/* strings as a text[] literal ({"a","b"}, quotes and backslashes escaped); NULL: no memory */
char *journal_pg_text_array(const char *const *strings, size_t n);

/* A bytea column decoded; *len 0 and NULL for NULL. malloc'd (free it). */
unsigned char *journal_pg_bytes(const PGresult *res, int i, int c, size_t *len);

#endif
