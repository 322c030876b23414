/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_FACTORY_JOURNAL_PG_H
#define PROV_FACTORY_JOURNAL_PG_H

/*
 * The PostgreSQL store's insides (doc/ledger.md), shared by its files (journal_pg.c:
 * connection, schema, locks, writes; journal_pg_db.c: statements; journal_pg_reads.c: reads);
 * the journal itself sees the store through journal_store.h.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

#include <libpq-fe.h>

#include "journal_store.h"

struct journal_pg {
    struct journal_store base; /* base.name: the URI with any password masked */
    PGconn *conn;
    char *conninfo;                /* the URI as given (never printed: it may hold a password) */
    char *password;                /* from the password source, or NULL (libpq finds its own) */
    char *station;                 /* this station's name: its audit chain, its leases */
    enum journal_store_mode mode;  /* which session lock to take again after a reconnect */
    pthread_mutex_t conn_lock;     /* one statement at a time on the connection */
    bool is_in_txn;                /* between begin and end */
    bool is_away;                  /* reconnecting failed: every op fails at once (closed) */
    int in_doubt_pid;              /* the server process of a COMMIT whose connection broke */
    char *begin_sql;               /* BEGIN and the station's lock, one round trip */
    long long lot_id;              /* the lot whose name is lot_name (0: none yet) */
    char lot_name[256];
    int schema_version;
    /* leases (journal_pg_lease.c): the rows this process holds, renewed by a thread */
    int lease_seconds;
    struct pg_lease *leases;
    pthread_mutex_t lease_lock; /* guards leases and is_renew_stop */
    pthread_cond_t renew_cond;
    pthread_t renew_thread;
    PGconn *renew_conn; /* the renewal's own connection; NULL until the first claim */
    bool is_renew_stop;
};

static inline struct journal_pg *journal_pg_of(struct journal_store *s)
{
    return (struct journal_pg *)s;
}

/*
 * Runs sql with its arguments bound by a type string, as the SQLite store does: 't' text
 * (NULL binds NULL), 'i' long long, 'b' bytea (pointer, then size_t length). Returns the
 * result (PGRES_COMMAND_OK or PGRES_TUPLES_OK), or NULL with the error recorded as
 * "journal NAME: what: <server message>". *sqlstate, when not NULL, receives the error's
 * SQLSTATE ("" when none) and *constraint the violated constraint's name.
 */
PGresult *journal_pg_exec(struct journal_pg *j, const char *what, char sqlstate[6],
                          char *constraint, size_t cap, const char *sql, const char *types, ...);

/* journal_pg_exec without the error's details, for a caller's own variadic helper. */
PGresult *journal_pg_vexec(struct journal_pg *j, const char *what, const char *sql,
                           const char *types, va_list ap);

/* Runs sql that returns nothing; 0 or the recorded error. */
int journal_pg_run(struct journal_pg *j, const char *what, const char *sql, const char *types,
                   ...);

/* Column c of row i: a copy (NULL for NULL), into out ("" for NULL), as a number. */
char *journal_pg_strdup(const PGresult *res, int i, int c);
void journal_pg_copy(const PGresult *res, int i, int c, char *out, size_t cap);
long long journal_pg_ll(const PGresult *res, int i, int c);
/* A bytea column decoded; *len 0 and NULL for NULL. malloc'd (free it). */
unsigned char *journal_pg_bytes(const PGresult *res, int i, int c, size_t *len);

/*
 * Connects again after the connection broke (journal_pg.c), with backoff, and takes the
 * session's writer lock again; outside a transaction only: a transaction whose connection
 * broke has an unknown outcome, and the journal reads the row back instead of guessing.
 */
int journal_pg_reconnect(struct journal_pg *j);

/* The SHA-256 of a certificate's DER issuer name, hex: what "per issuer" compares. */
int journal_pg_issuer(const unsigned char *der, size_t len, char hex[65]);

/* A new connection with the store's URI and password (row locks, lease renewal). */
PGconn *journal_pg_connect(const struct journal_pg *j);

/* The leases (journal_pg_lease.c): the ops of the same names (journal_store.h). */
int journal_pg_lease_claim(struct journal_store *s, long long lot_id, const char *serial,
                           bool is_reopen, char *holder, size_t cap, bool *is_mine);
int journal_pg_lease_end(struct journal_store *s, long long lot_id, const char *serial,
                         bool is_done);

/*
 * Inside a transaction, before a row is written: PROV_ERR_JOURNAL when the row is claimed and
 * its lease token is not the one this process holds (taken over, or released by an operator).
 */
int journal_pg_fence(struct journal_pg *j, long long lot_id, const char *serial);

/* The hash of a chain's record seq ("" when there is none): an anchor's check. */
int journal_pg_audit_hash(struct journal_store *s, const char *chain, long long seq,
                          char hash[65]);

/* Stops the renewal thread and forgets the leases (the close). */
void journal_pg_leases_stop(struct journal_pg *j);

/* The newest schema version this provisioner knows (journal_pg.c). */
int journal_pg_schema_newest(void);

/*
 * Brings the ledger's schema up to date in one transaction under the schema lock; *from and
 * *to say what it did (equal when nothing). A newer schema is refused.
 */
int journal_pg_migrate(struct journal_store *s, const struct journal_upgrade_hook *hook,
                       int *from, int *to);


/* The reads (journal_pg_reads.c): the ops of the same names (journal_store.h). */
int journal_pg_row_get(struct journal_store *s, long long lot_id, const char *serial,
                       struct prov_journal_device *d, long long *dev_id, long long *cert_id);
int journal_pg_audit_foreach(struct journal_store *s,
                             int (*fn)(void *ctx, const struct journal_audit_record *rec),
                             void *ctx);
int journal_pg_audit_rows(struct journal_store *s,
                          int (*fn)(void *ctx, const struct journal_row_audit *row), void *ctx);
int journal_pg_foreach_lot(struct journal_store *s,
                           int (*fn)(void *ctx, long long lot_id, const char *name,
                                     const char *manifest),
                           void *ctx);
int journal_pg_superseded_in_request(struct journal_store *s, long long lot_id, const char *serial,
                                     long long request, long long *by_run);
int journal_pg_last_superseded(struct journal_store *s, long long lot_id, const char *serial,
                               unsigned char **der, size_t *len);
int journal_pg_unretired_keys(struct journal_store *s, long long lot_id, const char *serial,
                              struct prov_journal_old_key **keys, size_t *n);
int journal_pg_row_has_cert(struct journal_store *s, long long lot_id, const char *serial,
                            const char *sha256, bool *out);
int journal_pg_foreach_key(struct journal_store *s,
                           int (*fn)(void *ctx, const struct prov_journal_key_ref *k), void *ctx);
int journal_pg_foreach_device(struct journal_store *s, long long lot_id,
                              int (*fn)(void *ctx, const struct prov_journal_device *d),
                              void *ctx);
int journal_pg_counts(struct journal_store *s, long long lot_id,
                      long long counts[PROV_JOURNAL_STATE_COUNT], long long *n_superseded);

#endif
