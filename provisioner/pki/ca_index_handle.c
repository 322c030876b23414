/* SPDX-License-Identifier: Apache-2.0 */
/* The CA index's handle: accessors for the index's files (ca_index_handle.h). */
#include "ca_index_handle.h"

#include <pthread.h>

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
