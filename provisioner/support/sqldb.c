/* SPDX-License-Identifier: Apache-2.0 */
/* The SQL seam (sqldb.h): one call, the store's own operation (sqldb_impl.h). */
#include "sqldb_impl.h"

#include <stdio.h>

enum prov_sqldb_dialect prov_sqldb_dialect(struct prov_sqldb *db)
{
    return db->ops->dialect;
}

void prov_sqldb_close(struct prov_sqldb *db)
{
    if (db != NULL) {
        db->ops->close(db);
    }
}

const char *prov_sqldb_errmsg(struct prov_sqldb *db)
{
    return db->ops->errmsg(db);
}

int prov_sqldb_exec(struct prov_sqldb *db, const char *sql)
{
    return db->ops->exec(db, sql);
}

int prov_sqldb_begin(struct prov_sqldb *db)
{
    return db->ops->begin(db);
}

int prov_sqldb_commit(struct prov_sqldb *db)
{
    return db->ops->commit(db);
}

void prov_sqldb_rollback(struct prov_sqldb *db)
{
    db->ops->rollback(db);
}

long long prov_sqldb_changes(struct prov_sqldb *db)
{
    return db->ops->changes(db);
}

long long prov_sqldb_last_id(struct prov_sqldb *db)
{
    return db->ops->last_id(db);
}

int prov_sqldb_has_table(struct prov_sqldb *db, const char *name, bool *out)
{
    return db->ops->has_table(db, name, out);
}

int prov_sqldb_prepare(struct prov_sqldb *db, const char *sql, struct prov_sqldb_stmt **out)
{
    *out = NULL;
    return db->ops->prepare(db, sql, out);
}

void prov_sqldb_finalize(struct prov_sqldb_stmt *st)
{
    if (st != NULL) {
        st->db->ops->finalize(st);
    }
}

void prov_sqldb_reset(struct prov_sqldb_stmt *st)
{
    st->db->ops->reset(st);
}

int prov_sqldb_bind_text(struct prov_sqldb_stmt *st, int i, const char *text)
{
    return st->db->ops->bind_text(st, i, text);
}

int prov_sqldb_bind_int(struct prov_sqldb_stmt *st, int i, long long v)
{
    return st->db->ops->bind_int(st, i, v);
}

int prov_sqldb_bind_blob(struct prov_sqldb_stmt *st, int i, const void *p, size_t len)
{
    return st->db->ops->bind_blob(st, i, p, len);
}

int prov_sqldb_step(struct prov_sqldb_stmt *st)
{
    return st->db->ops->step(st);
}

bool prov_sqldb_column_null(struct prov_sqldb_stmt *st, int i)
{
    return st->db->ops->column_null(st, i);
}

const char *prov_sqldb_column_text(struct prov_sqldb_stmt *st, int i)
{
    return st->db->ops->column_text(st, i);
}

long long prov_sqldb_column_int(struct prov_sqldb_stmt *st, int i)
{
    return st->db->ops->column_int(st, i);
}

const void *prov_sqldb_column_blob(struct prov_sqldb_stmt *st, int i, size_t *len)
{
    return st->db->ops->column_blob(st, i, len);
}

void prov_sqldb_column_copy(struct prov_sqldb_stmt *st, int i, char *out, size_t cap)
{
    const char *t = prov_sqldb_column_text(st, i);

    snprintf(out, cap, "%s", t != NULL ? t : "");
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
