/* SPDX-License-Identifier: Apache-2.0 */
/* The CA index's handle: accessors for the index's files (ca_index_handle.h). */
#include "ca_index_handle.h"

#include <pthread.h>
#include <stdarg.h>

#include "error.h"
#include "timestamp.h"

struct prov_sqldb *prov_ca_index_sql(struct prov_ca_index *ix)
{
    return ix->sql;
}

const char *prov_ca_index_path(const struct prov_ca_index *ix)
{
    return ix->path;
}

void prov_ca_index_lock(struct prov_ca_index *ix)
{
    pthread_mutex_lock(&ix->lock);
}

void prov_ca_index_unlock(struct prov_ca_index *ix)
{
    pthread_mutex_unlock(&ix->lock);
}

void prov_ca_index_now_text(char *out, size_t cap)
{
    prov_timestamp_now(out, cap);
}

int prov_ca_index_begin_write(struct prov_ca_index *ix)
{
    if (prov_sqldb_begin(ix->sql) != 0) {
        return prov_fail(PROV_ERR_JOURNAL, "CA index %s: cannot begin: %s", ix->path,
                         prov_sqldb_errmsg(ix->sql));
    }
    return 0;
}

int prov_ca_index_end_write(struct prov_ca_index *ix, int r, const char *what)
{
    if (r == 0 && prov_sqldb_commit(ix->sql) != 0) {
        r = prov_fail(PROV_ERR_JOURNAL, "CA index %s: %s: %s", ix->path, what,
                      prov_sqldb_errmsg(ix->sql));
    }
    if (r < 0) {
        prov_sqldb_rollback(ix->sql);
    }
    return r;
}

int prov_ca_index_fail(struct prov_ca_index *ix, const char *what)
{
    return prov_fail(PROV_ERR_JOURNAL, "CA index %s: %s: %s", ix->path, what,
                     prov_sqldb_errmsg(ix->sql));
}

/*
 * One statement, bound by a type string ('t' text or NULL, 'i' long long, 'b' blob + size_t),
 * run to its first row or the end: PROV_SQLDB_ROW (the caller reads and finalizes *out),
 * PROV_SQLDB_DONE (finalized), or an error (finalized, recorded).
 */
int prov_ca_index_run(struct prov_ca_index *ix, const char *sql, struct prov_sqldb_stmt **out,
                      const char *types, ...)
{
    struct prov_sqldb_stmt *st = NULL;
    va_list ap;
    int rc;

    *out = NULL;
    rc = prov_sqldb_prepare(ix->sql, sql, &st);
    va_start(ap, types);
    if (rc == 0) {
        rc = prov_sqldb_bindv(st, types, ap);
    }
    va_end(ap);
    if (rc == 0) {
        rc = prov_sqldb_step(st);
    }
    if (rc == PROV_SQLDB_ROW) {
        *out = st;
        return rc;
    }
    if (rc != PROV_SQLDB_DONE) {
        prov_ca_index_fail(ix, "query failed");
    }
    prov_sqldb_finalize(st);
    return rc == PROV_SQLDB_DONE ? rc : PROV_ERR_JOURNAL;
}
