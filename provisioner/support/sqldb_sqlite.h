/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_SQLDB_SQLITE_H
#define PROV_SQLDB_SQLITE_H

#include <sqlite3.h>

#include "sqldb.h"

/*
 * The seam (sqldb.h) over a SQLite connection the caller opened and keeps: closing the seam
 * (prov_sqldb_close) frees only the seam, never conn. NULL when out of memory.
 */
struct prov_sqldb *prov_sqldb_sqlite_wrap(sqlite3 *conn);

#endif
