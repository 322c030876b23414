/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_SQLDB_PG_H
#define PROV_SQLDB_PG_H

#include "sqldb.h"

/*
 * The seam (sqldb.h) over a PostgreSQL connection of its own (sqldb_pg.c): uri is any libpq
 * URI (several hosts with target_session_attrs included), password the password itself or
 * NULL (libpq then reads PGPASSFILE or ~/.pgpass; pg_conn.h loads one from a file:/env:
 * source). lock_key names the writers' transaction-level advisory lock (two int4: the
 * tool's class, then lock_key; doc/ledger.md lists the keys). A connection that breaks
 * outside a transaction is made again (with backoff) before the next statement; one that
 * breaks inside fails that transaction. 0, or PROV_ERR_JOURNAL with one line naming the URI
 * with its password masked, or PROV_ERR_NOMEM; prov_sqldb_close closes it.
 */
int prov_sqldb_pg_open(const char *uri, const char *password, int lock_key,
                       struct prov_sqldb **out);

#endif
