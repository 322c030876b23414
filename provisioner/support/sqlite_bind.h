/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_SQLITE_BIND_H
#define PROV_SQLITE_BIND_H

#include <stdarg.h>

#include <sqlite3.h>

/*
 * Binds the arguments in ap to st's parameters 1, 2, ... by a type string, one letter an
 * argument: 't' text (const char *, NULL binds NULL), 'i' long long, 'b' blob (const void *
 * then size_t length; NULL binds NULL). Values are copied (SQLITE_TRANSIENT). Returns the
 * SQLite code of the first bind that failed, else SQLITE_OK. The journal's SQLite store
 * (factory/journal_sqlite_db.c) binds through it; the CA index binds through the SQL seam
 * (sqldb.h, prov_sqldb_bindv).
 */
int prov_sqlite_bind(sqlite3_stmt *st, const char *types, va_list ap);

#endif
