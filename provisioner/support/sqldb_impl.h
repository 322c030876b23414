/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_SQLDB_IMPL_H
#define PROV_SQLDB_IMPL_H

/*
 * The stores behind the SQL seam (sqldb.h): each implementation (sqldb_sqlite.c,
 * sqldb_pg.c) exports one const ops table and embeds struct prov_sqldb (and struct
 * prov_sqldb_stmt) first in its own handle; sqldb.c dispatches. Only for those files.
 */
#include "sqldb.h"

struct prov_sqldb_ops {
    enum prov_sqldb_dialect dialect;
    void (*close)(struct prov_sqldb *db);
    const char *(*errmsg)(struct prov_sqldb *db);
    int (*exec)(struct prov_sqldb *db, const char *sql);
    int (*begin)(struct prov_sqldb *db);
    int (*commit)(struct prov_sqldb *db);
    void (*rollback)(struct prov_sqldb *db);
    long long (*changes)(struct prov_sqldb *db);
    long long (*last_id)(struct prov_sqldb *db);
    int (*has_table)(struct prov_sqldb *db, const char *name, bool *out);
    int (*prepare)(struct prov_sqldb *db, const char *sql, struct prov_sqldb_stmt **out);
    void (*finalize)(struct prov_sqldb_stmt *st);
    void (*reset)(struct prov_sqldb_stmt *st);
    int (*bind_text)(struct prov_sqldb_stmt *st, int i, const char *text);
    int (*bind_int)(struct prov_sqldb_stmt *st, int i, long long v);
    int (*bind_blob)(struct prov_sqldb_stmt *st, int i, const void *p, size_t len);
    int (*step)(struct prov_sqldb_stmt *st);
    bool (*column_null)(struct prov_sqldb_stmt *st, int i);
    const char *(*column_text)(struct prov_sqldb_stmt *st, int i);
    long long (*column_int)(struct prov_sqldb_stmt *st, int i);
    const void *(*column_blob)(struct prov_sqldb_stmt *st, int i, size_t *len);
};

struct prov_sqldb {
    const struct prov_sqldb_ops *ops;
};

struct prov_sqldb_stmt {
    struct prov_sqldb *db;
};

#endif
