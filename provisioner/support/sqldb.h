/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_SQLDB_H
#define PROV_SQLDB_H

/*
 * A thin SQL seam, so that one code path can run over more than one store (the CA index,
 * provisioner/pki/ca_index*.c, doc/revocation.md). Statements use SQLite's placeholders: ?N
 * (?1, ?2, ...), or a bare ? for the number after the largest so far; parameters are 1-based,
 * columns 0-based, as in SQLite. Every call that fails returns a
 * negative value and leaves the reason in prov_sqldb_errmsg; the caller names the object.
 *
 * Implementations (an ops table each, sqldb_impl.h): sqldb_sqlite.c (a SQLite connection the
 * caller opened) and sqldb_pg.c (a PostgreSQL connection of its own). On PostgreSQL the
 * placeholders become $N once, at prepare; the statement is prepared on the server; every
 * parameter and column is text except blobs (bytea); a refused constraint is SQLSTATE 23xxx.
 * Text that differs between the dialects (DDL) is chosen by prov_sqldb_dialect.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

struct prov_sqldb;
struct prov_sqldb_stmt;

enum {
    PROV_SQLDB_DONE = 0, /* prov_sqldb_step: no (more) rows */
    PROV_SQLDB_ROW = 1,  /* prov_sqldb_step: a row is ready for the column accessors */
    PROV_SQLDB_ERROR = -1,
    PROV_SQLDB_CONSTRAINT = -2, /* a UNIQUE, CHECK or foreign-key constraint refused the row */
};

enum prov_sqldb_dialect {
    PROV_SQLDB_SQLITE,
    PROV_SQLDB_POSTGRESQL,
};

enum prov_sqldb_dialect prov_sqldb_dialect(struct prov_sqldb *db);

/* Closes the seam (and the connection, when the seam opened it). NULL is fine. */
void prov_sqldb_close(struct prov_sqldb *db);

/* Whether the store has a table called name: 0, or PROV_SQLDB_ERROR. */
int prov_sqldb_has_table(struct prov_sqldb *db, const char *name, bool *out);

/* The last failure's text on db (never NULL). */
const char *prov_sqldb_errmsg(struct prov_sqldb *db);

/* Runs sql (one or more statements, no parameters, no rows wanted). */
int prov_sqldb_exec(struct prov_sqldb *db, const char *sql);

/*
 * The writers' transaction: begins with the store's writer lock held (SQLite: BEGIN
 * IMMEDIATE; PostgreSQL: BEGIN and a transaction-level advisory lock, so that every host
 * writing the same database waits for it), so that read-check-write sequences inside it see
 * no other writer; commit and rollback end it. A commit of a transaction the server already
 * aborted fails. rollback is safe to call when the transaction already ended.
 */
int prov_sqldb_begin(struct prov_sqldb *db);
int prov_sqldb_commit(struct prov_sqldb *db);
void prov_sqldb_rollback(struct prov_sqldb *db);

/* Rows the last INSERT, UPDATE or DELETE changed. */
long long prov_sqldb_changes(struct prov_sqldb *db);

int prov_sqldb_prepare(struct prov_sqldb *db, const char *sql, struct prov_sqldb_stmt **out);
void prov_sqldb_finalize(struct prov_sqldb_stmt *st);
/* Makes st ready to run again; its bindings are cleared. */
void prov_sqldb_reset(struct prov_sqldb_stmt *st);

/* text NULL and blob NULL bind SQL NULL. Values are copied. */
int prov_sqldb_bind_text(struct prov_sqldb_stmt *st, int i, const char *text);
int prov_sqldb_bind_int(struct prov_sqldb_stmt *st, int i, long long v);
int prov_sqldb_bind_blob(struct prov_sqldb_stmt *st, int i, const void *p, size_t len);

/*
 * Binds the arguments in ap to st's parameters 1, 2, ... by a type string, one letter an
 * argument: 't' text (const char *, NULL binds NULL), 'i' long long, 'b' blob (const void *
 * then size_t length; NULL binds NULL). 0, or the first failed bind's code.
 */
int prov_sqldb_bindv(struct prov_sqldb_stmt *st, const char *types, va_list ap);

/*
 * The id of the row the last INSERT on db added: SQLite's rowid (INTEGER PRIMARY KEY), on
 * PostgreSQL the session's last generated identity value (lastval()): call it right after an
 * INSERT into a table whose id the store generates, and only then.
 */
long long prov_sqldb_last_id(struct prov_sqldb *db);

/* PROV_SQLDB_ROW, PROV_SQLDB_DONE, or a negative PROV_SQLDB_* code. */
int prov_sqldb_step(struct prov_sqldb_stmt *st);

/* The current row's columns; valid until the next step, reset or finalize. */
bool prov_sqldb_column_null(struct prov_sqldb_stmt *st, int i);
const char *prov_sqldb_column_text(struct prov_sqldb_stmt *st, int i); /* NULL for SQL NULL */
long long prov_sqldb_column_int(struct prov_sqldb_stmt *st, int i);
const void *prov_sqldb_column_blob(struct prov_sqldb_stmt *st, int i, size_t *len);

/* Copies column i's text into out (empty for SQL NULL), truncated to cap. */
void prov_sqldb_column_copy(struct prov_sqldb_stmt *st, int i, char *out, size_t cap);

#endif
