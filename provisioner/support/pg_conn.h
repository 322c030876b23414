/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_PG_CONN_H
#define PROV_PG_CONN_H

/*
 * What every PostgreSQL user of the tool shares (pg_conn.c): the shared ledger
 * (factory/journal_pg_db.c, doc/ledger.md) and the CA index on PostgreSQL
 * (sqldb_pg.c, doc/revocation.md). A URI is never printed as given: it may hold a password.
 */
#include <stdbool.h>
#include <stddef.h>

#include "pq_api.h"

/* Whether s is a libpq URI (postgresql:// or postgres://), not a file. */
bool prov_pg_is_uri(const char *s);

/*
 * A copy of uri with any password in it (user:PASSWORD@, password=...) replaced by "****":
 * the name messages use. NULL when out of memory.
 */
char *prov_pg_mask_uri(const char *uri);

/*
 * The password named by spec (file:PATH or env:VAR, provisioner/support/secret.h), copied
 * into *out (wiped and freed by the caller), or *out NULL when spec is NULL (libpq then finds
 * its own: PGPASSFILE, ~/.pgpass). what names it in errors. The secret.h errors, or NOMEM.
 */
int prov_pg_password(const char *spec, const char *what, char **out);

/*
 * A new connection to uri (every libpq URI: several hosts, target_session_attrs, sslmode),
 * with password when not NULL, the tool's application_name and a 10 s connect timeout.
 * The caller checks PQstatus. NULL when out of memory or when libpq cannot be loaded
 * (pq_api.h): prov_pg_message then says which.
 */
PGconn *prov_pg_connect(const char *uri, const char *password);

/* The server's (or the connection's) last message on one line, into out. */
void prov_pg_message(const PGconn *conn, const PGresult *res, char *out, size_t cap);

#endif
