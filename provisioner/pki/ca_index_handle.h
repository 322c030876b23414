/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_CA_INDEX_HANDLE_H
#define PROV_CA_INDEX_HANDLE_H

/*
 * The CA index's handle (ca_index_handle.c): the open database, its lock file and mutex, the
 * statements ca_index.c keeps, and the accessors the index's other files (ca_index_schema.c:
 * the schema; ca_index_revoke.c: revocations, CRL numbers, the audit trail; ca_registry.c:
 * stations and lots) use. Those files
 * depend on it and it on none of them. Not for callers outside provisioner/pki/ca_index*.c and
 * provisioner/pki/ca_registry.c.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#include <sqlite3.h>

#include "ca_index.h"
#include "sqldb.h"

/* The statements ca_index.c prepares once and keeps (its stmt_sql has their text). */
enum ca_index_stmt {
    ST_CURRENT,    /* the serial's current certificate */
    ST_BY_PUBKEY,  /* a certificate of this public key */
    ST_INSERT,
    ST_SUPERSEDE,
    ST_DELIVERED,
    ST_LOT_COUNT,  /* a serial new to its lot counts towards the lot's cap */
    ST_COUNT,
};

struct prov_ca_index {
    sqlite3 *db;
    struct prov_sqldb *sql; /* the SQL seam over db (provisioner/support/sqldb.h) */
    char *path;
    int lock_fd;           /* index.sqlite.lock: one byte per running attempt (OFD locks) */
    pthread_mutex_t lock;  /* one transaction at a time on the connection */
    struct prov_sqldb_stmt *st[ST_COUNT];
    bool is_in_issue;      /* between begin and record/abort (lock held) */
    long crash_after;      /* test-only crash hook (ca_index.c, crash_point) */
    long crash_count;
};

/*
 * The connection, through the SQL seam (sqldb.h), and the index file's path; the caller holds
 * the lock for the connection.
 */
struct prov_sqldb *prov_ca_index_sql(struct prov_ca_index *ix);
const char *prov_ca_index_path(const struct prov_ca_index *ix);

/* The mutex that serializes the connection's transactions (ca_index.h). */
void prov_ca_index_lock(struct prov_ca_index *ix);
void prov_ca_index_unlock(struct prov_ca_index *ix);

/*
 * The writers' transaction on the index (provisioner/support/sqldb.h: one writer at a time,
 * whatever the store). begin: 0 or PROV_ERR_JOURNAL. end commits when r is 0, else (or when
 * the commit fails, named by what) rolls back; returns r or the commit's failure.
 */
int prov_ca_index_begin_write(struct prov_ca_index *ix);
int prov_ca_index_end_write(struct prov_ca_index *ix, int r, const char *what);

/* Records "CA index PATH: what: <the store's message>"; returns PROV_ERR_JOURNAL. */
int prov_ca_index_fail(struct prov_ca_index *ix, const char *what);

/*
 * One statement, bound by a type string ('t' text or NULL, 'i' long long, 'b' blob + size_t),
 * run to its first row or the end: PROV_SQLDB_ROW (the caller reads and finalizes *out),
 * PROV_SQLDB_DONE (finalized), or PROV_ERR_JOURNAL (finalized, recorded).
 */
int prov_ca_index_run(struct prov_ca_index *ix, const char *sql, struct prov_sqldb_stmt **out,
                      const char *types, ...);

/*
 * Creates the schema in a new index (importing <ca_dir>/issued-keys with it) or brings an
 * older one up to date, each in one writers' transaction (ca_index_schema.c); an index newer
 * than the tool is refused. 0 or PROV_ERR_JOURNAL.
 */
int prov_ca_index_set_up_schema(struct prov_ca_index *ix, const char *ca_dir);

/* For a reader (prov_ca_index_open_read): the schema is this provisioner's, else
 * PROV_ERR_JOURNAL naming the versions; nothing is created or upgraded. */
int prov_ca_index_check_schema(struct prov_ca_index *ix);

/* Now as the index writes times: RFC 3339 UTC with milliseconds. */
void prov_ca_index_now_text(char *out, size_t cap);

/*
 * Inside the issuing transaction (prov_ca_index_record): every certificate that the new
 * certificate new_id superseded is recorded as revoked with reason superseded, with its
 * audit record. PROV_ERR_JOURNAL; the caller rolls back.
 */
int prov_ca_index_revoke_superseded(struct prov_ca_index *ix, long long new_id, const char *serial);

/*
 * Appends one record to the index's hash-chained audit trail (ca_index_revoke.c), inside the
 * caller's transaction. PROV_ERR_JOURNAL.
 */
int prov_ca_index_audit_append(struct prov_ca_index *ix, const char *at, const char *event,
                               const char *serial, const char *cert_serial, const char *detail);

#endif
