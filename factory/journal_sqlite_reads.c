/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The SQLite store's reads (journal_sqlite.h): rows with their current certificate, lots,
 * counts, the keys the journal expects on devices, and the audit records for verification.
 * A reader of a journal older than the newest schema asks only for what its version holds.
 */
#include "journal_sqlite.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "error.h"
#include "journal.h"
#include "journal_store.h"

#define DEVICE_COLUMNS_HEAD                                                                        \
    "SELECT d.id, l.name, d.serial, d.device_uri, d.state, d.key_id, d.key_uri, d.storage,"        \
    " d.error, d.attempts, d.updated, d.cert_id, c.der, c.cert_serial, c.sha256,"                  \
    " c.pubkey_sha256, c.not_after,"                                                               \
    " (SELECT count(*) FROM certificate s WHERE s.device_id = d.id"                                \
    "  AND s.superseded IS NOT NULL),"
#define DEVICE_COLUMNS_TAIL                                                                        \
    " FROM device d JOIN lot l ON l.id = d.lot_id"                                                 \
    " LEFT JOIN certificate c ON c.id = d.cert_id "
/* certificate.retired is JOURNAL_SCHEMA_CERT_DEVICE: an older journal (read only) counts none */
#define UNRETIRED_V2                                                                               \
    " (SELECT count(*) FROM certificate s WHERE s.device_id = d.id"                                \
    "  AND s.superseded IS NOT NULL AND s.retired IS NULL)"

static const char *device_select(const struct journal_sqlite *j, const char *where_v1,
                                 const char *where_v2)
{
    return j->schema_version >= JOURNAL_SCHEMA_CERT_DEVICE ? where_v2 : where_v1;
}

#define DEVICE_SELECT(j, where)                                                                    \
    device_select((j), DEVICE_COLUMNS_HEAD " 0" DEVICE_COLUMNS_TAIL where,                         \
                  DEVICE_COLUMNS_HEAD UNRETIRED_V2 DEVICE_COLUMNS_TAIL where)

/* Fills d from a DEVICE_SELECT row; *dev_id and *cert_id (0: none) when asked for. */
static int fill_device(sqlite3_stmt *st, struct prov_journal_device *d, long long *dev_id,
                       long long *cert_id)
{
    const void *blob;
    int n;

    memset(d, 0, sizeof(*d));
    if (dev_id != NULL) {
        *dev_id = sqlite3_column_int64(st, 0);
    }
    if (cert_id != NULL) {
        *cert_id = sqlite3_column_int64(st, 11);
    }
    d->lot = journal_col_strdup(st, 1);
    d->serial = journal_col_strdup(st, 2);
    d->device_uri = journal_col_strdup(st, 3);
    d->state = journal_state_parse((const char *)sqlite3_column_text(st, 4));
    blob = sqlite3_column_blob(st, 5);
    n = sqlite3_column_bytes(st, 5);
    if (blob != NULL && n > 0 && n <= PROV_JOURNAL_KEY_ID_MAX) {
        memcpy(d->key_id, blob, (size_t)n);
        d->key_id_len = (size_t)n;
    }
    d->key_uri = journal_col_strdup(st, 6);
    d->storage = journal_col_strdup(st, 7);
    d->error = journal_col_strdup(st, 8);
    d->attempts = sqlite3_column_int(st, 9);
    journal_col_copy(st, 10, d->updated, sizeof(d->updated));
    blob = sqlite3_column_blob(st, 12);
    n = sqlite3_column_bytes(st, 12);
    if (blob != NULL && n > 0) {
        d->cert_der = malloc((size_t)n);
        if (d->cert_der == NULL) {
            prov_journal_device_clear(d);
            return PROV_ERR_NOMEM;
        }
        memcpy(d->cert_der, blob, (size_t)n);
        d->cert_der_len = (size_t)n;
    }
    journal_col_copy(st, 13, d->cert_serial, sizeof(d->cert_serial));
    journal_col_copy(st, 14, d->sha256, sizeof(d->sha256));
    journal_col_copy(st, 15, d->pubkey_sha256, sizeof(d->pubkey_sha256));
    journal_col_copy(st, 16, d->not_after, sizeof(d->not_after));
    d->n_superseded = sqlite3_column_int(st, 17);
    d->n_unretired = sqlite3_column_int(st, 18);
    if (d->lot == NULL || d->serial == NULL || d->device_uri == NULL) {
        prov_journal_device_clear(d);
        return PROV_ERR_NOMEM;
    }
    return 0;
}

/* The row (the journal holds its lock, or the caller is a reader). */
int journal_sqlite_row_get(struct journal_store *s, long long lot_id, const char *serial,
                           struct prov_journal_device *d, long long *dev_id, long long *cert_id)
{
    struct journal_sqlite *j = journal_sqlite_of(s);
    sqlite3_stmt *st = NULL;
    int rc;
    int r;

    memset(d, 0, sizeof(*d));
    *dev_id = 0;
    *cert_id = 0;
    r = journal_query(j, &st, DEVICE_SELECT(j, "WHERE d.lot_id = ? AND d.serial = ?"), "it", lot_id,
                      serial);
    if (r < 0) {
        return r;
    }
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        r = fill_device(st, d, dev_id, cert_id);
    } else if (rc != SQLITE_DONE) {
        r = journal_db_fail(j, serial);
    }
    journal_release(j, st);
    return r;
}

int journal_sqlite_audit_foreach(struct journal_store *s,
                                 int (*fn)(void *ctx, const struct journal_audit_record *rec),
                                 void *ctx)
{
    struct journal_sqlite *j = journal_sqlite_of(s);
    sqlite3_stmt *st = NULL;
    int r;

    r = journal_query(j, &st,
                      "SELECT seq, at, lot, serial, event, detail, prev_hash, hash "
                      "FROM audit ORDER BY seq",
                      "");
    while (r == 0 && sqlite3_step(st) == SQLITE_ROW) {
        struct journal_audit_record a = {
            .seq = sqlite3_column_int64(st, 0),
            .at = (const char *)sqlite3_column_text(st, 1),
            .lot = (const char *)sqlite3_column_text(st, 2),
            .serial = (const char *)sqlite3_column_text(st, 3),
            .event = (const char *)sqlite3_column_text(st, 4),
            .detail = (const char *)sqlite3_column_text(st, 5),
            .prev_hash = (const char *)sqlite3_column_text(st, 6),
            .hash = (const char *)sqlite3_column_text(st, 7),
        };

        r = fn(ctx, &a);
    }
    journal_release(j, st);
    return r;
}

/*
 * Each device row beside its newest audit record that is a state (a station's claim, a
 * device found under a new name, a retired superseded key and an identity seen replaced
 * outside the lot are not states) and its newest "issued" record.
 */
int journal_sqlite_audit_rows(struct journal_store *s,
                              int (*fn)(void *ctx, const struct journal_row_audit *row), void *ctx)
{
    struct journal_sqlite *j = journal_sqlite_of(s);
    sqlite3_stmt *st = NULL;
    int r;

    r = journal_query(j, &st,
                      "SELECT l.name, d.serial, d.state, c.sha256,"
                      " (SELECT a.event FROM audit a WHERE a.lot = l.name AND a.serial = d.serial"
                      "  AND a.event NOT IN ('claim', 'device-moved', 'retired', 'outside-change')"
                      "  ORDER BY a.seq DESC LIMIT 1),"
                      " (SELECT a.detail FROM audit a WHERE a.lot = l.name AND a.serial = d.serial"
                      "  AND a.event = 'issued' ORDER BY a.seq DESC LIMIT 1)"
                      " FROM device d JOIN lot l ON l.id = d.lot_id"
                      " LEFT JOIN certificate c ON c.id = d.cert_id",
                      "");
    while (r == 0 && sqlite3_step(st) == SQLITE_ROW) {
        struct journal_row_audit a = {
            .lot = (const char *)sqlite3_column_text(st, 0),
            .serial = (const char *)sqlite3_column_text(st, 1),
            .state = (const char *)sqlite3_column_text(st, 2),
            .sha256 = (const char *)sqlite3_column_text(st, 3),
            .last_event = (const char *)sqlite3_column_text(st, 4),
            .issued_detail = (const char *)sqlite3_column_text(st, 5),
        };

        r = fn(ctx, &a);
    }
    journal_release(j, st);
    return r;
}

int journal_sqlite_foreach_lot(struct journal_store *s,
                               int (*fn)(void *ctx, long long lot_id, const char *name,
                                         const char *manifest),
                               void *ctx)
{
    struct journal_sqlite *j = journal_sqlite_of(s);
    sqlite3_stmt *st = NULL;
    int r;

    r = journal_query(j, &st, "SELECT id, name, manifest FROM lot ORDER BY name", "");
    while (r == 0 && sqlite3_step(st) == SQLITE_ROW) {
        const char *manifest = (const char *)sqlite3_column_text(st, 2);

        r = fn(ctx, sqlite3_column_int64(st, 0), (const char *)sqlite3_column_text(st, 1),
               manifest ? manifest : "");
    }
    journal_release(j, st);
    return r;
}

int journal_sqlite_superseded_in_request(struct journal_store *s, long long lot_id,
                                         const char *serial, long long request, long long *by_run)
{
    struct journal_sqlite *j = journal_sqlite_of(s);
    sqlite3_stmt *st = NULL;
    int r;

    *by_run = 0;
    r = journal_query(j, &st,
                      "SELECT r.id FROM certificate c JOIN device d ON d.id = c.device_id"
                      " JOIN run r ON r.id = c.superseded_run WHERE d.lot_id = ? AND"
                      " d.serial = ? AND coalesce(r.request, r.id) = ? ORDER BY r.id LIMIT 1",
                      "iti", lot_id, serial, request);
    if (r == 0 && sqlite3_step(st) == SQLITE_ROW) {
        *by_run = sqlite3_column_int64(st, 0);
    }
    journal_release(j, st);
    return r;
}

int journal_sqlite_last_superseded(struct journal_store *s, long long lot_id, const char *serial,
                                   unsigned char **der, size_t *len)
{
    struct journal_sqlite *j = journal_sqlite_of(s);
    sqlite3_stmt *st = NULL;
    int r;

    *der = NULL;
    *len = 0;
    r = journal_query(j, &st,
                      "SELECT c.der FROM certificate c JOIN device d ON d.id = c.device_id"
                      " WHERE d.lot_id = ? AND d.serial = ? AND c.superseded IS NOT NULL"
                      " ORDER BY c.id DESC LIMIT 1",
                      "it", lot_id, serial);
    if (r == 0 && sqlite3_step(st) == SQLITE_ROW && sqlite3_column_bytes(st, 0) > 0) {
        *len = (size_t)sqlite3_column_bytes(st, 0);
        *der = malloc(*len);
        if (*der == NULL) {
            r = PROV_ERR_NOMEM;
            *len = 0;
        } else {
            memcpy(*der, sqlite3_column_blob(st, 0), *len);
        }
    }
    journal_release(j, st);
    return r;
}

static int fill_old_key(sqlite3_stmt *st, struct prov_journal_old_key *k)
{
    const void *id = sqlite3_column_blob(st, 3);
    int n = sqlite3_column_bytes(st, 3);

    memset(k, 0, sizeof(*k));
    k->lot = journal_col_strdup(st, 0);
    k->serial = journal_col_strdup(st, 1);
    k->device_uri = journal_col_strdup(st, 2);
    if (id != NULL && n > 0 && n <= PROV_JOURNAL_KEY_ID_MAX) {
        memcpy(k->key_id, id, (size_t)n);
        k->key_id_len = (size_t)n;
    }
    journal_col_copy(st, 4, k->cert_serial, sizeof(k->cert_serial));
    journal_col_copy(st, 5, k->pubkey_sha256, sizeof(k->pubkey_sha256));
    journal_col_copy(st, 6, k->superseded, sizeof(k->superseded));
    return k->lot && k->serial && k->device_uri ? 0 : PROV_ERR_NOMEM;
}

int journal_sqlite_unretired_keys(struct journal_store *s, long long lot_id, const char *serial,
                                  struct prov_journal_old_key **keys, size_t *n)
{
    struct journal_sqlite *j = journal_sqlite_of(s);
    sqlite3_stmt *st = NULL;
    size_t cap = 0;
    int r = 0;

    *keys = NULL;
    *n = 0;
    if (j->schema_version < JOURNAL_SCHEMA_CERT_DEVICE) {
        return 0;
    }
    r = journal_query(j, &st,
                      "SELECT l.name, d.serial, c.device_uri, c.key_id, c.cert_serial,"
                      " c.pubkey_sha256, c.superseded"
                      " FROM certificate c JOIN device d ON d.id = c.device_id"
                      " JOIN lot l ON l.id = d.lot_id"
                      " WHERE c.superseded IS NOT NULL AND c.retired IS NULL"
                      " AND (? = 0 OR d.lot_id = ?) AND (? IS NULL OR d.serial = ?)"
                      " ORDER BY l.name, d.serial, c.id",
                      "iitt", lot_id, lot_id, serial, serial);
    while (r == 0 && sqlite3_step(st) == SQLITE_ROW) {
        if (*n == cap) {
            size_t ncap = cap ? cap * 2 : 4;
            struct prov_journal_old_key *a = realloc(*keys, ncap * sizeof(*a));

            if (a == NULL) {
                r = PROV_ERR_NOMEM;
                break;
            }
            *keys = a;
            cap = ncap;
        }
        r = fill_old_key(st, &(*keys)[*n]);
        (*n)++;
    }
    journal_release(j, st);
    if (r < 0) {
        prov_journal_old_keys_free(*keys, *n);
        *keys = NULL;
        *n = 0;
    }
    return r;
}

int journal_sqlite_row_has_cert(struct journal_store *s, long long lot_id, const char *serial,
                                const char *sha256, bool *out)
{
    struct journal_sqlite *j = journal_sqlite_of(s);
    sqlite3_stmt *st = NULL;
    int r;

    *out = false;
    r = journal_query(j, &st,
                      "SELECT 1 FROM certificate c JOIN device d ON d.id = c.device_id"
                      " WHERE d.lot_id = ? AND d.serial = ? AND c.sha256 = ?",
                      "itt", lot_id, serial, sha256);
    if (r == 0) {
        *out = sqlite3_step(st) == SQLITE_ROW;
    }
    journal_release(j, st);
    return r;
}

int journal_sqlite_foreach_key(struct journal_store *s,
                               int (*fn)(void *ctx, const struct prov_journal_key_ref *k),
                               void *ctx)
{
    struct journal_sqlite *j = journal_sqlite_of(s);
    static const char *const head =
        "SELECT l.name, d.serial, d.device_uri, d.key_id,"
        " CASE WHEN d.cert_id IS NULL AND d.state IN ('intent', 'failed') THEN 'interrupted'"
        " ELSE 'current' END"
        " FROM device d JOIN lot l ON l.id = d.lot_id WHERE d.key_id IS NOT NULL"
        " UNION ALL SELECT l.name, d.serial, ";
    static const char *const tail_v2 =
        "c.device_uri, c.key_id, 'superseded'"
        " FROM certificate c JOIN device d ON d.id = c.device_id JOIN lot l ON l.id = d.lot_id"
        " WHERE c.superseded IS NOT NULL AND c.retired IS NULL";
    static const char *const tail_v1 =
        "d.device_uri, c.key_id, 'superseded'"
        " FROM certificate c JOIN device d ON d.id = c.device_id JOIN lot l ON l.id = d.lot_id"
        " WHERE c.superseded IS NOT NULL";
    sqlite3_stmt *st = NULL;
    char *sql = NULL;
    int r;

    if (asprintf(&sql, "%s%s", head,
                 j->schema_version >= JOURNAL_SCHEMA_CERT_DEVICE ? tail_v2 : tail_v1) < 0) {
        return prov_fail(PROV_ERR_NOMEM, "journal %s: out of memory", s->name);
    }
    r = journal_query(j, &st, sql, "");
    while (r == 0 && sqlite3_step(st) == SQLITE_ROW) {
        struct prov_journal_key_ref k = {
            .lot = (const char *)sqlite3_column_text(st, 0),
            .serial = (const char *)sqlite3_column_text(st, 1),
            .device_uri = (const char *)sqlite3_column_text(st, 2),
            .key_id = sqlite3_column_blob(st, 3),
            .key_id_len = (size_t)sqlite3_column_bytes(st, 3),
            .role = (const char *)sqlite3_column_text(st, 4),
        };

        if (k.device_uri != NULL && k.key_id != NULL && k.key_id_len > 0) {
            r = fn(ctx, &k);
        }
    }
    journal_release(j, st);
    free(sql);
    return r;
}

int journal_sqlite_foreach_device(struct journal_store *s, long long lot_id,
                                  int (*fn)(void *ctx, const struct prov_journal_device *d),
                                  void *ctx)
{
    struct journal_sqlite *j = journal_sqlite_of(s);
    struct prov_journal_device d;
    sqlite3_stmt *st = NULL;
    int r;

    /* No lock held across the callbacks: a reader's statement sees one snapshot anyway. */
    r = journal_query(j, &st,
                      DEVICE_SELECT(j, "WHERE ? = 0 OR d.lot_id = ? ORDER BY l.name, d.serial"),
                      "ii", lot_id, lot_id);
    while (r == 0 && sqlite3_step(st) == SQLITE_ROW) {
        r = fill_device(st, &d, NULL, NULL);
        if (r == 0) {
            r = fn(ctx, &d);
        }
        prov_journal_device_clear(&d);
    }
    journal_release(j, st);
    return r;
}

/* A lookup per serial: one prepared statement over the (lot_id, serial) index, no round trip. */
int journal_sqlite_rows_of(struct journal_store *s, long long lot_id, const char *const *serials,
                           size_t n,
                           int (*fn)(void *ctx, size_t i, const struct prov_journal_device *d),
                           void *ctx)
{
    struct prov_journal_device d;
    long long dev_id;
    long long cert_id;
    int r = 0;

    for (size_t i = 0; r == 0 && i < n; i++) {
        r = journal_sqlite_row_get(s, lot_id, serials[i], &d, &dev_id, &cert_id);
        if (r == 0 && dev_id != 0) {
            r = fn(ctx, i, &d);
        }
        prov_journal_device_clear(&d);
    }
    return r;
}

int journal_sqlite_counts(struct journal_store *s, long long lot_id,
                          long long counts[PROV_JOURNAL_STATE_COUNT], long long *n_superseded)
{
    struct journal_sqlite *j = journal_sqlite_of(s);
    sqlite3_stmt *st = NULL;
    int r;

    memset(counts, 0, sizeof(long long) * PROV_JOURNAL_STATE_COUNT);
    *n_superseded = 0;
    r = journal_query(j, &st,
                      "SELECT state, count(*) FROM device WHERE ? = 0 OR lot_id = ? GROUP BY state",
                      "ii", lot_id, lot_id);
    while (r == 0 && sqlite3_step(st) == SQLITE_ROW) {
        counts[journal_state_parse((const char *)sqlite3_column_text(st, 0))] =
            sqlite3_column_int64(st, 1);
    }
    journal_release(j, st);
    if (r == 0) {
        r = journal_query(j, &st,
                          "SELECT count(*) FROM certificate c JOIN device d ON d.id = c.device_id"
                          " WHERE c.superseded IS NOT NULL AND (? = 0 OR d.lot_id = ?)",
                          "ii", lot_id, lot_id);
    }
    if (r == 0 && sqlite3_step(st) == SQLITE_ROW) {
        *n_superseded = sqlite3_column_int64(st, 0);
    }
    journal_release(j, st);
    return r;
}
