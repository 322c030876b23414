/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_FACTORY_JOURNAL_INTERNAL_H
#define PROV_FACTORY_JOURNAL_INTERNAL_H

/*
 * Shared by journal.c (open, transitions), journal_db.c (SQLite helpers, reads) and
 * journal_audit.c (the hash chain); not an interface of the layer.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>

#include <sqlite3.h>

#include "journal.h"

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
 * The schema version (journal.c, schema_steps) from which certificates record the device
 * their key was made on and when a superseded key was retired; a reader of an older journal
 * asks for neither.
 */
#define JOURNAL_SCHEMA_CERT_DEVICE 4

struct prov_journal {
    sqlite3 *db;
    char *path;
    int lock_fd;
    pthread_mutex_t lock; /* serializes transactions on the one connection */
    pthread_mutex_t stmt_lock; /* guards stmts: reads may run outside a transaction */
    int schema_version;        /* meta "schema": what the reads may ask for */
    struct journal_stmt stmts[JOURNAL_STMT_CACHE];
    /* Test-only crash hook (journal.h). */
    enum prov_journal_state crash_state;
    long crash_after;
    long crash_count;
    bool is_crash_at_run_end; /* "run:1": after the run's end is committed */
    /* Test-only pause hook (journal.c). */
    enum prov_journal_state pause_state;
    char *pause_path;
};

/* RFC 3339 UTC with milliseconds. */
void journal_now(char *out, size_t cap);

/* Lower-case hex of n bytes into out (2n + 1 bytes). */
void journal_hex(const unsigned char *in, size_t n, char *out);

/* Records "journal PATH: what: <sqlite message>" (PROV_ERR_JOURNAL). */
int journal_db_fail(struct prov_journal *j, const char *what);

/*
 * Prepares sql with its arguments bound by a type string: 't' text (NULL binds NULL), 'i'
 * long long, 'b' blob (pointer, then size_t length). The caller steps, then gives the
 * statement back with journal_release (never sqlite3_finalize: it may be a kept one).
 */
int journal_query(struct prov_journal *j, sqlite3_stmt **st, const char *sql, const char *types,
                  ...);

/*
 * Gives back a statement of journal_query (NULL is fine): a kept one is reset for its next
 * use, any other is finalized. Returns what sqlite3_reset/sqlite3_finalize returns, so the
 * connection's error message still describes a failed step.
 */
int journal_release(struct prov_journal *j, sqlite3_stmt *st);

/* Finalizes every kept statement: before the connection is closed. */
void journal_stmts_free(struct prov_journal *j);

/* Runs a statement that returns no rows; the SQLite code (SQLITE_DONE on success). */
int journal_exec(struct prov_journal *j, const char *sql, const char *types, ...);

int journal_begin(struct prov_journal *j);
int journal_commit(struct prov_journal *j);
void journal_rollback(struct prov_journal *j);
/* Ends the open transaction: commits when r is 0, else rolls back; returns the outcome. */
int journal_end(struct prov_journal *j, int r);

/* Text column i into out, "" for NULL. */
void journal_col_copy(sqlite3_stmt *st, int i, char *out, size_t cap);

/* The row for (lot, serial), its id and its current certificate's id (0: none). */
int journal_read_device(struct prov_journal *j, long long lot_id, const char *serial,
                        struct prov_journal_device *d, long long *dev_id, long long *cert_id);

int journal_lot_name(struct prov_journal *j, long long lot_id, char *out, size_t cap);

/* A state by name; PROV_JOURNAL_NONE for anything else. */
enum prov_journal_state journal_state_parse(const char *s);

/* Appends one audit record inside the caller's transaction (journal_audit.c). */
int journal_audit_append(struct prov_journal *j, const char *lot, const char *serial,
                         const char *event, const char *detail);

#endif
