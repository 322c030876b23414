/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_FACTORY_JOURNAL_SQLITE_H
#define PROV_FACTORY_JOURNAL_SQLITE_H

/*
 * The SQLite store's insides, shared by its files (journal_sqlite.c: connection, schema,
 * locks, writes; journal_sqlite_db.c: statements; journal_sqlite_reads.c: reads) and its unit
 * test only; the journal itself sees the store through journal_store.h.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#include <sqlite3.h>

#include "journal_store.h"

/*
 * Prepared statements kept for the connection's life: a batch runs the same two dozen
 * statements for every device, and parsing them again was a tenth of its instructions.
 */
#define JOURNAL_STMT_CACHE 32

struct journal_stmt {
    sqlite3_stmt *st;
    bool busy; /* handed out by journal_query, not yet given back by journal_release */
};

/*
 * The schema version (journal_sqlite.c, schema_steps) from which certificates record the
 * device their key was made on and when a superseded key was retired; a reader of an older
 * journal asks for neither.
 */
#define JOURNAL_SCHEMA_CERT_DEVICE 4

struct journal_sqlite {
    struct journal_store base;
    sqlite3 *db;
    int lock_fd;
    pthread_mutex_t stmt_lock; /* guards stmts: reads may run outside a transaction */
    int schema_version;        /* meta "schema": what the reads may ask for */
    bool is_sync_deferred;     /* synchronous=NORMAL set for the transaction (begin_deferred) */
    struct journal_stmt stmts[JOURNAL_STMT_CACHE];
};

/*
 * Prepares sql with its arguments bound by a type string: 't' text (NULL binds NULL), 'i'
 * long long, 'b' blob (pointer, then size_t length). The caller steps, then gives the
 * statement back with journal_release (never sqlite3_finalize: it may be a kept one).
 */
int journal_query(struct journal_sqlite *j, sqlite3_stmt **st, const char *sql, const char *types,
                  ...);

/*
 * Gives back a statement of journal_query (NULL is fine): a kept one is reset for its next
 * use, any other is finalized. Returns what sqlite3_reset/sqlite3_finalize returns, so the
 * connection's error message still describes a failed step.
 */
int journal_release(struct journal_sqlite *j, sqlite3_stmt *st);

/* Runs a statement that returns no rows; the SQLite code (SQLITE_DONE on success). */
int journal_exec(struct journal_sqlite *j, const char *sql, const char *types, ...);

/* Finalizes every kept statement: before the connection is closed. */
void journal_stmts_free(struct journal_sqlite *j);

/* Records "journal PATH: what: <sqlite message>" (PROV_ERR_JOURNAL). */
int journal_db_fail(struct journal_sqlite *j, const char *what);

/* Text column i: a copy (NULL for NULL), or into out ("" for NULL). */
char *journal_col_strdup(sqlite3_stmt *st, int i);
void journal_col_copy(sqlite3_stmt *st, int i, char *out, size_t cap);

static inline struct journal_sqlite *journal_sqlite_of(struct journal_store *s)
{
    return (struct journal_sqlite *)s;
}

/* The reads (journal_sqlite_reads.c): the ops of the same names (journal_store.h). */
int journal_sqlite_row_get(struct journal_store *s, long long lot_id, const char *serial,
                           struct prov_journal_device *d, long long *dev_id, long long *cert_id);
int journal_sqlite_audit_foreach(struct journal_store *s,
                                 int (*fn)(void *ctx, const struct journal_audit_record *rec),
                                 void *ctx);
int journal_sqlite_audit_rows(struct journal_store *s,
                              int (*fn)(void *ctx, const struct journal_row_audit *row), void *ctx);
int journal_sqlite_foreach_lot(struct journal_store *s,
                               int (*fn)(void *ctx, long long lot_id, const char *name,
                                         const char *manifest),
                               void *ctx);
int journal_sqlite_superseded_in_request(struct journal_store *s, long long lot_id,
                                         const char *serial, long long request, long long *by_run);
int journal_sqlite_last_superseded(struct journal_store *s, long long lot_id, const char *serial,
                                   unsigned char **der, size_t *len);
int journal_sqlite_unretired_keys(struct journal_store *s, long long lot_id, const char *serial,
                                  struct prov_journal_old_key **keys, size_t *n);
int journal_sqlite_row_has_cert(struct journal_store *s, long long lot_id, const char *serial,
                                const char *sha256, bool *out);
int journal_sqlite_foreach_key(struct journal_store *s,
                               int (*fn)(void *ctx, const struct prov_journal_key_ref *k),
                               void *ctx);
int journal_sqlite_rows_of(struct journal_store *s, long long lot_id, const char *const *serials,
                           size_t n,
                           int (*fn)(void *ctx, size_t i, const struct prov_journal_device *d),
                           void *ctx);
int journal_sqlite_foreach_device(struct journal_store *s, long long lot_id,
                                  int (*fn)(void *ctx, const struct prov_journal_device *d),
                                  void *ctx);
int journal_sqlite_counts(struct journal_store *s, long long lot_id,
                          long long counts[PROV_JOURNAL_STATE_COUNT], long long *n_superseded);

#endif
