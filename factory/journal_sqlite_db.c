/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The SQLite store's statements (journal_sqlite.h): arguments bound by a type string, and
 * prepared statements kept for the connection's life and handed out to one user at a time.
 */
#include "journal_sqlite.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "error.h"
#include "sqlite_bind.h"

/* Records "journal PATH: what: <sqlite message>" (PROV_ERR_JOURNAL). */
int journal_db_fail(struct journal_sqlite *j, const char *what)
{
    return prov_fail(PROV_ERR_JOURNAL, "journal %s: %s: %s", j->base.name, what,
                     sqlite3_errmsg(j->db));
}
/*
 * A kept statement for sql that nobody is using, else a new one, kept while there is room.
 * A slot being prepared is marked busy before the lock is dropped, so no other thread takes
 * it meanwhile.
 */
static int stmt_acquire(struct journal_sqlite *j, const char *sql, sqlite3_stmt **out)
{
    struct journal_stmt *slot = NULL;
    int rc;

    *out = NULL;
    pthread_mutex_lock(&j->stmt_lock);
    for (size_t i = 0; i < JOURNAL_STMT_CACHE; i++) {
        struct journal_stmt *e = &j->stmts[i];

        if (e->st == NULL) {
            if (slot == NULL && !e->busy) {
                slot = e;
            }
        } else if (!e->busy && strcmp(sqlite3_sql(e->st), sql) == 0) {
            e->busy = true;
            *out = e->st;
            pthread_mutex_unlock(&j->stmt_lock);
            return SQLITE_OK;
        }
    }
    if (slot != NULL) {
        slot->busy = true;
    }
    pthread_mutex_unlock(&j->stmt_lock);
    rc =
        sqlite3_prepare_v3(j->db, sql, -1, slot != NULL ? SQLITE_PREPARE_PERSISTENT : 0, out, NULL);
    if (slot != NULL) {
        pthread_mutex_lock(&j->stmt_lock);
        if (rc == SQLITE_OK) {
            slot->st = *out;
        } else {
            slot->busy = false;
        }
        pthread_mutex_unlock(&j->stmt_lock);
    }
    return rc;
}

int journal_release(struct journal_sqlite *j, sqlite3_stmt *st)
{
    struct journal_stmt *kept = NULL;
    int rc;

    if (st == NULL) {
        return SQLITE_OK;
    }
    pthread_mutex_lock(&j->stmt_lock);
    for (size_t i = 0; i < JOURNAL_STMT_CACHE && kept == NULL; i++) {
        if (j->stmts[i].st == st) {
            kept = &j->stmts[i];
        }
    }
    pthread_mutex_unlock(&j->stmt_lock);
    if (kept == NULL) {
        return sqlite3_finalize(st);
    }
    /* reset ends the statement's read and reports a failed step as finalize would. */
    rc = sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    pthread_mutex_lock(&j->stmt_lock);
    kept->busy = false;
    pthread_mutex_unlock(&j->stmt_lock);
    return rc;
}

void journal_stmts_free(struct journal_sqlite *j)
{
    for (size_t i = 0; i < JOURNAL_STMT_CACHE; i++) {
        sqlite3_finalize(j->stmts[i].st);
        j->stmts[i].st = NULL;
        j->stmts[i].busy = false;
    }
}

/* A statement for sql with the arguments bound (*st may be set even when this fails). */
static int stmt_bound(struct journal_sqlite *j, sqlite3_stmt **st, const char *sql,
                      const char *types, va_list ap)
{
    int rc = stmt_acquire(j, sql, st);

    return rc == SQLITE_OK ? prov_sqlite_bind(*st, types, ap) : rc;
}

/* Prepares sql with its arguments bound; the caller steps and calls journal_release. */
int journal_query(struct journal_sqlite *j, sqlite3_stmt **st, const char *sql, const char *types,
                  ...)
{
    va_list ap;
    int rc;

    va_start(ap, types);
    rc = stmt_bound(j, st, sql, types, ap);
    va_end(ap);
    if (rc != SQLITE_OK) {
        int r = journal_db_fail(j, "query");

        journal_release(j, *st);
        *st = NULL;
        return r;
    }
    return 0;
}

/* Runs a statement that returns no rows. Returns the SQLite code (SQLITE_DONE on success). */
int journal_exec(struct journal_sqlite *j, const char *sql, const char *types, ...)
{
    sqlite3_stmt *st = NULL;
    va_list ap;
    int rc;

    va_start(ap, types);
    rc = stmt_bound(j, &st, sql, types, ap);
    va_end(ap);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
    }
    /* release keeps the error so that sqlite3_errmsg still describes it. */
    journal_release(j, st);
    return rc;
}

char *journal_col_strdup(sqlite3_stmt *st, int i)
{
    const unsigned char *s = sqlite3_column_text(st, i);

    return s ? strdup((const char *)s) : NULL;
}

void journal_col_copy(sqlite3_stmt *st, int i, char *out, size_t cap)
{
    const unsigned char *s = sqlite3_column_text(st, i);

    snprintf(out, cap, "%s", s ? (const char *)s : "");
}
