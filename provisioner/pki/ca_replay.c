/* SPDX-License-Identifier: Apache-2.0 */
/* The CMP transactions the CA service answered, in the CA index (ca_replay.h). */
#include "ca_replay.h"

#include "ca_index_handle.h"
#include "error.h"
#include "hex.h"

static int db_fail(struct prov_ca_index *ix, const char *what)
{
    return prov_fail(PROV_ERR_JOURNAL, "CA index %s: %s: %s", prov_ca_index_path(ix), what,
                     prov_sqldb_errmsg(prov_ca_index_sql(ix)));
}

/* Runs sql with the parameters of types (sqldb.h, prov_sqldb_bindv); rows are not wanted. */
static int run(struct prov_ca_index *ix, const char *sql, const char *types, ...)
{
    struct prov_sqldb_stmt *st = NULL;
    va_list ap;
    int rc;

    if (prov_sqldb_prepare(prov_ca_index_sql(ix), sql, &st) != 0) {
        return db_fail(ix, "cannot prepare");
    }
    va_start(ap, types);
    rc = prov_sqldb_bindv(st, types, ap);
    va_end(ap);
    rc = rc == 0 ? prov_sqldb_step(st) : rc;
    prov_sqldb_finalize(st);
    return rc == PROV_SQLDB_ROW || rc == PROV_SQLDB_DONE ? 0
                                                         : db_fail(ix, "cannot write the CMP "
                                                                       "transactions");
}

int prov_ca_replay_is_known(struct prov_ca_index *ix, const unsigned char *tid, size_t len,
                            time_t now, bool *is_known)
{
    char hex[2 * PROV_CA_REPLAY_TID_MAX + 1];
    struct prov_sqldb_stmt *st = NULL;
    int rc;

    *is_known = false;
    if (len > PROV_CA_REPLAY_TID_MAX) {
        return 0; /* never remembered */
    }
    prov_hex_encode(tid, len, hex);
    prov_ca_index_lock(ix);
    if (prov_sqldb_prepare(prov_ca_index_sql(ix),
                           "SELECT 1 FROM cmp_transaction WHERE id = ? AND expires_at > ?",
                           &st) != 0) {
        rc = db_fail(ix, "cannot prepare");
        prov_ca_index_unlock(ix);
        return rc;
    }
    prov_sqldb_bind_text(st, 1, hex);
    prov_sqldb_bind_int(st, 2, (long long)now);
    rc = prov_sqldb_step(st);
    *is_known = rc == PROV_SQLDB_ROW;
    prov_sqldb_finalize(st);
    rc = rc == PROV_SQLDB_ROW || rc == PROV_SQLDB_DONE
             ? 0
             : db_fail(ix, "cannot read the CMP transactions");
    prov_ca_index_unlock(ix);
    return rc;
}

int prov_ca_replay_remember_in(struct prov_ca_index *ix, const unsigned char *tid, size_t len,
                               time_t now, time_t expires_at)
{
    char hex[2 * PROV_CA_REPLAY_TID_MAX + 1];
    int r;

    if (len > PROV_CA_REPLAY_TID_MAX) {
        return prov_fail(PROV_ERR_INPUT, "CMP transactionID of %zu bytes: longer than %d", len,
                         PROV_CA_REPLAY_TID_MAX);
    }
    prov_hex_encode(tid, len, hex);
    r = run(ix, "DELETE FROM cmp_transaction WHERE expires_at <= ?", "i", (long long)now);
    if (r == 0) {
        r = run(ix,
                "INSERT INTO cmp_transaction(id, seen_at, expires_at) VALUES (?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                "tii", hex, (long long)now, (long long)expires_at);
    }
    return r;
}

int prov_ca_replay_remember(struct prov_ca_index *ix, const unsigned char *tid, size_t len,
                            time_t now, time_t expires_at)
{
    int r;

    if (len > PROV_CA_REPLAY_TID_MAX) {
        return prov_fail(PROV_ERR_INPUT, "CMP transactionID of %zu bytes: longer than %d", len,
                         PROV_CA_REPLAY_TID_MAX);
    }
    prov_ca_index_lock(ix);
    r = prov_ca_index_begin_write(ix);
    if (r < 0) {
        prov_ca_index_unlock(ix);
        return r;
    }
    r = prov_ca_replay_remember_in(ix, tid, len, now, expires_at);
    r = prov_ca_index_end_write(ix, r, "cannot commit the CMP transaction");
    prov_ca_index_unlock(ix);
    return r;
}
