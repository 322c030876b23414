/* SPDX-License-Identifier: Apache-2.0 */
/* The SQL seam over SQLite (sqldb.h, sqldb_sqlite.h). */
#include "sqldb_sqlite.h"

#include <stdlib.h>

#include "sqldb_impl.h"

struct lite_db {
    struct prov_sqldb base;
    sqlite3 *conn;
};

struct lite_stmt {
    struct prov_sqldb_stmt base;
    sqlite3_stmt *st;
};

static sqlite3 *conn_of(struct prov_sqldb *db)
{
    return ((struct lite_db *)db)->conn;
}

static sqlite3_stmt *stmt_of(struct prov_sqldb_stmt *st)
{
    return ((struct lite_stmt *)st)->st;
}

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

static const struct prov_sqldb_ops lite_ops;

struct prov_sqldb *prov_sqldb_sqlite_wrap(sqlite3 *conn)
{
    struct lite_db *db = calloc(1, sizeof(*db));

    if (db == NULL) {
        return NULL;
    }
    db->base.ops = &lite_ops;
    db->conn = conn;
    return &db->base;
}

static void lite_close(struct prov_sqldb *db)
{
    free(db);
}

static const char *lite_errmsg(struct prov_sqldb *db)
{
    return sqlite3_errmsg(conn_of(db));
}

static int lite_exec(struct prov_sqldb *db, const char *sql)
{
    return code(sqlite3_exec(conn_of(db), sql, NULL, NULL, NULL));
}

static int lite_begin(struct prov_sqldb *db)
{
    return lite_exec(db, "BEGIN IMMEDIATE");
}

static int lite_commit(struct prov_sqldb *db)
{
    return lite_exec(db, "COMMIT");
}

static void lite_rollback(struct prov_sqldb *db)
{
    if (!sqlite3_get_autocommit(conn_of(db))) {
        sqlite3_exec(conn_of(db), "ROLLBACK", NULL, NULL, NULL);
    }
}

static long long lite_changes(struct prov_sqldb *db)
{
    return sqlite3_changes64(conn_of(db));
}

static int lite_prepare(struct prov_sqldb *db, const char *sql, struct prov_sqldb_stmt **out)
{
    struct lite_stmt *s = calloc(1, sizeof(*s));

    *out = NULL;
    if (s == NULL) {
        return PROV_SQLDB_ERROR;
    }
    s->base.db = db;
    if (sqlite3_prepare_v2(conn_of(db), sql, -1, &s->st, NULL) != SQLITE_OK) {
        free(s);
        return PROV_SQLDB_ERROR;
    }
    *out = &s->base;
    return 0;
}

static void lite_finalize(struct prov_sqldb_stmt *st)
{
    if (st != NULL) {
        sqlite3_finalize(stmt_of(st));
        free(st);
    }
}

static void lite_reset(struct prov_sqldb_stmt *st)
{
    sqlite3_reset(stmt_of(st));
    sqlite3_clear_bindings(stmt_of(st));
}

static int lite_bind_text(struct prov_sqldb_stmt *st, int i, const char *text)
{
    return code(text == NULL ? sqlite3_bind_null(stmt_of(st), i)
                             : sqlite3_bind_text(stmt_of(st), i, text, -1, SQLITE_TRANSIENT));
}

static int lite_bind_int(struct prov_sqldb_stmt *st, int i, long long v)
{
    return code(sqlite3_bind_int64(stmt_of(st), i, v));
}

static int lite_bind_blob(struct prov_sqldb_stmt *st, int i, const void *p, size_t len)
{
    return code(p == NULL ? sqlite3_bind_null(stmt_of(st), i)
                          : sqlite3_bind_blob64(stmt_of(st), i, p, len, SQLITE_TRANSIENT));
}

static int lite_step(struct prov_sqldb_stmt *st)
{
    return code(sqlite3_step(stmt_of(st)));
}

static bool lite_column_null(struct prov_sqldb_stmt *st, int i)
{
    return sqlite3_column_type(stmt_of(st), i) == SQLITE_NULL;
}

static const char *lite_column_text(struct prov_sqldb_stmt *st, int i)
{
    return (const char *)sqlite3_column_text(stmt_of(st), i);
}

static long long lite_column_int(struct prov_sqldb_stmt *st, int i)
{
    return sqlite3_column_int64(stmt_of(st), i);
}

static const void *lite_column_blob(struct prov_sqldb_stmt *st, int i, size_t *len)
{
    const void *p = sqlite3_column_blob(stmt_of(st), i);

    *len = (size_t)sqlite3_column_bytes(stmt_of(st), i);
    return p;
}

static long long lite_last_id(struct prov_sqldb *db)
{
    return sqlite3_last_insert_rowid(conn_of(db));
}


static int lite_has_table(struct prov_sqldb *db, const char *name, bool *out)
{
    sqlite3_stmt *st = NULL;
    int rc;

    *out = false;
    rc = sqlite3_prepare_v2(conn_of(db),
                            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?",
                            -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
        *out = rc == SQLITE_ROW && sqlite3_column_int(st, 0) > 0;
    }
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 0 : PROV_SQLDB_ERROR;
}

static const struct prov_sqldb_ops lite_ops = {
    .dialect = PROV_SQLDB_SQLITE,
    .close = lite_close,
    .errmsg = lite_errmsg,
    .exec = lite_exec,
    .begin = lite_begin,
    .commit = lite_commit,
    .rollback = lite_rollback,
    .changes = lite_changes,
    .last_id = lite_last_id,
    .has_table = lite_has_table,
    .prepare = lite_prepare,
    .finalize = lite_finalize,
    .reset = lite_reset,
    .bind_text = lite_bind_text,
    .bind_int = lite_bind_int,
    .bind_blob = lite_bind_blob,
    .step = lite_step,
    .column_null = lite_column_null,
    .column_text = lite_column_text,
    .column_int = lite_column_int,
    .column_blob = lite_column_blob,
};
