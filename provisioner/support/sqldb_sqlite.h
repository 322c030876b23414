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

/*
 * The page cache of the tool's SQLite files (the journal, journal_sqlite.c; the CA index,
 * ca_index.c), in KiB. SQLite's default (2,000 KiB each) fills as a lot grows and is most of
 * what a batch's memory grows by up to 10,000 devices (bench/README.md, rss); what a page
 * miss costs is a read from the operating system's cache (bench/run.sh --only device).
 */
#define PROV_SQLITE_CACHE_PRAGMA "PRAGMA cache_size=-512"

#endif
