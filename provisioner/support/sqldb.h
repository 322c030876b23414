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
 * Implementations: sqldb_sqlite.c (a SQLite connection the caller opened). A store whose
 * dialect differs (PostgreSQL) implements the same operations.
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

/* The last failure's text on db (never NULL). */
const char *prov_sqldb_errmsg(struct prov_sqldb *db);

/* Runs sql (one or more statements, no parameters, no rows wanted). */
int prov_sqldb_exec(struct prov_sqldb *db, const char *sql);

/*
 * The writers' transaction: begins with the store's writer lock held (SQLite: BEGIN
 * IMMEDIATE), so that read-check-write sequences inside it see no other writer; commit and
 * rollback end it. rollback is safe to call when the transaction already ended.
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

/* The id (INTEGER PRIMARY KEY) of the row the last INSERT on db added. */
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
