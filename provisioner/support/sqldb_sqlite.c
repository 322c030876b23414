/* SPDX-License-Identifier: Apache-2.0 */
/* The SQL seam over SQLite (sqldb.h, sqldb_sqlite.h). */
#include "sqldb_sqlite.h"

#include <stdio.h>
#include <stdlib.h>

struct prov_sqldb {
    sqlite3 *conn;
};

struct prov_sqldb_stmt {
    sqlite3_stmt *st;
};

static int code(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_DONE: return PROV_SQLDB_DONE;
    case SQLITE_ROW: return PROV_SQLDB_ROW;
    case SQLITE_CONSTRAINT: return PROV_SQLDB_CONSTRAINT;
    default: return PROV_SQLDB_ERROR;
    }
}

struct prov_sqldb *prov_sqldb_sqlite_wrap(sqlite3 *conn)
{
    struct prov_sqldb *db = calloc(1, sizeof(*db));

    if (db != NULL) {
        db->conn = conn;
    }
    return db;
}

void prov_sqldb_close(struct prov_sqldb *db)
{
    free(db);
}

const char *prov_sqldb_errmsg(struct prov_sqldb *db)
{
    return sqlite3_errmsg(db->conn);
}

int prov_sqldb_exec(struct prov_sqldb *db, const char *sql)
{
    return code(sqlite3_exec(db->conn, sql, NULL, NULL, NULL));
}

int prov_sqldb_begin(struct prov_sqldb *db)
{
    return prov_sqldb_exec(db, "BEGIN IMMEDIATE");
}

int prov_sqldb_commit(struct prov_sqldb *db)
{
    return prov_sqldb_exec(db, "COMMIT");
}

void prov_sqldb_rollback(struct prov_sqldb *db)
{
    if (!sqlite3_get_autocommit(db->conn)) {
        sqlite3_exec(db->conn, "ROLLBACK", NULL, NULL, NULL);
    }
}

long long prov_sqldb_changes(struct prov_sqldb *db)
{
    return sqlite3_changes64(db->conn);
}

int prov_sqldb_prepare(struct prov_sqldb *db, const char *sql, struct prov_sqldb_stmt **out)
{
    struct prov_sqldb_stmt *s = calloc(1, sizeof(*s));

    *out = NULL;
    if (s == NULL) {
        return PROV_SQLDB_ERROR;
    }
    if (sqlite3_prepare_v2(db->conn, sql, -1, &s->st, NULL) != SQLITE_OK) {
        free(s);
        return PROV_SQLDB_ERROR;
    }
    *out = s;
    return 0;
}

void prov_sqldb_finalize(struct prov_sqldb_stmt *st)
{
    if (st != NULL) {
        sqlite3_finalize(st->st);
        free(st);
    }
}

void prov_sqldb_reset(struct prov_sqldb_stmt *st)
{
    sqlite3_reset(st->st);
    sqlite3_clear_bindings(st->st);
}

int prov_sqldb_bind_text(struct prov_sqldb_stmt *st, int i, const char *text)
{
    return code(text == NULL ? sqlite3_bind_null(st->st, i)
                             : sqlite3_bind_text(st->st, i, text, -1, SQLITE_TRANSIENT));
}

int prov_sqldb_bind_int(struct prov_sqldb_stmt *st, int i, long long v)
{
    return code(sqlite3_bind_int64(st->st, i, v));
}

int prov_sqldb_bind_blob(struct prov_sqldb_stmt *st, int i, const void *p, size_t len)
{
    return code(p == NULL ? sqlite3_bind_null(st->st, i)
                          : sqlite3_bind_blob64(st->st, i, p, len, SQLITE_TRANSIENT));
}

int prov_sqldb_step(struct prov_sqldb_stmt *st)
{
    return code(sqlite3_step(st->st));
}

bool prov_sqldb_column_null(struct prov_sqldb_stmt *st, int i)
{
    return sqlite3_column_type(st->st, i) == SQLITE_NULL;
}

const char *prov_sqldb_column_text(struct prov_sqldb_stmt *st, int i)
{
    return (const char *)sqlite3_column_text(st->st, i);
}

long long prov_sqldb_column_int(struct prov_sqldb_stmt *st, int i)
{
    return sqlite3_column_int64(st->st, i);
}

const void *prov_sqldb_column_blob(struct prov_sqldb_stmt *st, int i, size_t *len)
{
    const void *p = sqlite3_column_blob(st->st, i);

    *len = (size_t)sqlite3_column_bytes(st->st, i);
    return p;
}

void prov_sqldb_column_copy(struct prov_sqldb_stmt *st, int i, char *out, size_t cap)
{
    const char *t = prov_sqldb_column_text(st, i);

    snprintf(out, cap, "%s", t != NULL ? t : "");
}

long long prov_sqldb_last_id(struct prov_sqldb *db)
{
    return sqlite3_last_insert_rowid(db->conn);
}

int prov_sqldb_bindv(struct prov_sqldb_stmt *st, const char *types, va_list ap)
{
    int rc = 0;

    for (int i = 0; rc == 0 && types[i] != '\0'; i++) {
        if (types[i] == 't') {
            rc = prov_sqldb_bind_text(st, i + 1, va_arg(ap, const char *));
        } else if (types[i] == 'i') {
            rc = prov_sqldb_bind_int(st, i + 1, va_arg(ap, long long));
        } else {
            const void *p = va_arg(ap, const void *);
            size_t len = va_arg(ap, size_t);

            rc = prov_sqldb_bind_blob(st, i + 1, p, len);
        }
    }
    return rc;
}
