/* SPDX-License-Identifier: Apache-2.0 */
/* The CA index's handle: accessors for the index's files (ca_index_handle.h). */
#include "ca_index_handle.h"

#include <pthread.h>
#include <stdio.h>
#include <time.h>

sqlite3 *prov_ca_index_db(struct prov_ca_index *ix)
{
    return ix->db;
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
    struct timespec ts;
    struct tm tm;
    size_t n;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = strftime(out, cap, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, cap - n, ".%03ldZ", ts.tv_nsec / 1000000);
}
