/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_FACTORY_JOURNAL_SQLITE_H
#define PROV_FACTORY_JOURNAL_SQLITE_H

/*
 * The SQLite store's insides (journal_sqlite.c), shared with its unit test only; the journal
 * itself sees the store through journal_store.h.
 */
#include <pthread.h>
#include <stdbool.h>

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

#endif
