/* SPDX-License-Identifier: Apache-2.0 */
/* The CA index's handle: accessors for the index's files (ca_index_handle.h). */
#include "ca_index_handle.h"

#include <pthread.h>

#include "timestamp.h"

sqlite3 *prov_ca_index_db(struct prov_ca_index *ix)
{
    return ix->db;
}

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
