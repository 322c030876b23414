/* SPDX-License-Identifier: Apache-2.0 */
/* SQLite helpers of the journal and the reads: rows, lots, counts (journal_internal.h). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sqlite3.h>

#include "error.h"
#include "journal.h"
#include "journal_internal.h"

static const char *const state_names[PROV_JOURNAL_STATE_COUNT] = {
    "none", "intent", "issued", "stored", "proven", "failed", "superseded",
};

void journal_now(char *out, size_t cap)
{
    struct timespec ts;
    struct tm tm;
    size_t n;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = strftime(out, cap, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, cap - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

void journal_hex(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

int journal_db_fail(struct prov_journal *j, const char *what)
{
    return prov_fail(PROV_ERR_JOURNAL, "journal %s: %s: %s", j->path, what, sqlite3_errmsg(j->db));
}

/*
 * Binds by a type string: 't' text (NULL binds NULL), 'i' long long, 'b' blob (pointer then
 * size_t length).
 */
static int bind_args(sqlite3_stmt *st, const char *types, va_list ap)
{
    int rc = SQLITE_OK;

    for (int i = 0; types[i] != '\0' && rc == SQLITE_OK; i++) {
        if (types[i] == 't') {
            const char *s = va_arg(ap, const char *);

            rc = s ? sqlite3_bind_text(st, i + 1, s, -1, SQLITE_TRANSIENT)
                   : sqlite3_bind_null(st, i + 1);
        } else if (types[i] == 'i') {
            rc = sqlite3_bind_int64(st, i + 1, va_arg(ap, long long));
        } else {
            const void *b = va_arg(ap, const void *);
            size_t n = va_arg(ap, size_t);

            rc = b ? sqlite3_bind_blob(st, i + 1, b, (int)n, SQLITE_TRANSIENT)
                   : sqlite3_bind_null(st, i + 1);
        }
    }
    return rc;
}

/*
 * A kept statement for sql that nobody is using, else a new one, kept while there is room.
 * A slot being prepared is marked busy before the lock is dropped, so no other thread takes
 * it meanwhile.
 */
static int stmt_acquire(struct prov_journal *j, const char *sql, sqlite3_stmt **out)
{
    struct journal_stmt *slot = NULL;
    int rc;

    *out = NULL;
    pthread_mutex_lock(&j->stmt_lock);
    for (size_t i = 0; i < JOURNAL_STMT_CACHE; i++) {
        struct journal_stmt *e = &j->stmts[i];

        if (e->st == NULL) {
            if (slot == NULL && !e->busy) {
                slot = e;
            }
        } else if (!e->busy && strcmp(sqlite3_sql(e->st), sql) == 0) {
            e->busy = true;
            *out = e->st;
            pthread_mutex_unlock(&j->stmt_lock);
            return SQLITE_OK;
        }
    }
    if (slot != NULL) {
        slot->busy = true;
    }
    pthread_mutex_unlock(&j->stmt_lock);
    rc = sqlite3_prepare_v3(j->db, sql, -1, slot != NULL ? SQLITE_PREPARE_PERSISTENT : 0, out,
                            NULL);
    if (slot != NULL) {
        pthread_mutex_lock(&j->stmt_lock);
        if (rc == SQLITE_OK) {
            slot->st = *out;
        } else {
            slot->busy = false;
        }
        pthread_mutex_unlock(&j->stmt_lock);
    }
    return rc;
}

int journal_release(struct prov_journal *j, sqlite3_stmt *st)
{
    struct journal_stmt *kept = NULL;
    int rc;

    if (st == NULL) {
        return SQLITE_OK;
    }
    pthread_mutex_lock(&j->stmt_lock);
    for (size_t i = 0; i < JOURNAL_STMT_CACHE && kept == NULL; i++) {
        if (j->stmts[i].st == st) {
            kept = &j->stmts[i];
        }
    }
    pthread_mutex_unlock(&j->stmt_lock);
    if (kept == NULL) {
        return sqlite3_finalize(st);
    }
    /* reset ends the statement's read and reports a failed step as finalize would. */
    rc = sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    pthread_mutex_lock(&j->stmt_lock);
    kept->busy = false;
    pthread_mutex_unlock(&j->stmt_lock);
    return rc;
}

void journal_stmts_free(struct prov_journal *j)
{
    for (size_t i = 0; i < JOURNAL_STMT_CACHE; i++) {
        sqlite3_finalize(j->stmts[i].st);
        j->stmts[i].st = NULL;
        j->stmts[i].busy = false;
    }
}

/* A statement for sql with the arguments bound (*st may be set even when this fails). */
static int stmt_bound(struct prov_journal *j, sqlite3_stmt **st, const char *sql,
                      const char *types, va_list ap)
{
    int rc = stmt_acquire(j, sql, st);

    return rc == SQLITE_OK ? bind_args(*st, types, ap) : rc;
}

/* Prepares sql with its arguments bound; the caller steps and calls journal_release. */
int journal_query(struct prov_journal *j, sqlite3_stmt **st, const char *sql, const char *types,
                  ...)
{
    va_list ap;
    int rc;

    va_start(ap, types);
    rc = stmt_bound(j, st, sql, types, ap);
    va_end(ap);
    if (rc != SQLITE_OK) {
        int r = journal_db_fail(j, "query");

        journal_release(j, *st);
        *st = NULL;
        return r;
    }
    return 0;
}

/* Runs a statement that returns no rows. Returns the SQLite code (SQLITE_DONE on success). */
int journal_exec(struct prov_journal *j, const char *sql, const char *types, ...)
{
    sqlite3_stmt *st = NULL;
    va_list ap;
    int rc;

    va_start(ap, types);
    rc = stmt_bound(j, &st, sql, types, ap);
    va_end(ap);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
    }
    /* release keeps the error so that sqlite3_errmsg still describes it. */
    journal_release(j, st);
    return rc;
}

void journal_rollback(struct prov_journal *j)
{
    sqlite3_exec(j->db, "ROLLBACK", NULL, NULL, NULL);
}

int journal_end(struct prov_journal *j, int r)
{
    if (r == 0) {
        return journal_commit(j);
    }
    journal_rollback(j);
    return r;
}

int journal_begin(struct prov_journal *j)
{
    if (journal_exec(j, "BEGIN IMMEDIATE", "") != SQLITE_DONE) {
        return journal_db_fail(j, "begin");
    }
    return 0;
}

int journal_commit(struct prov_journal *j)
{
    if (journal_exec(j, "COMMIT", "") != SQLITE_DONE) {
        int r = journal_db_fail(j, "commit");

        journal_rollback(j);
        return r;
    }
    return 0;
}

static char *col_strdup(sqlite3_stmt *st, int i)
{
    const unsigned char *s = sqlite3_column_text(st, i);

    return s ? strdup((const char *)s) : NULL;
}

void journal_col_copy(sqlite3_stmt *st, int i, char *out, size_t cap)
{
    const unsigned char *s = sqlite3_column_text(st, i);

    snprintf(out, cap, "%s", s ? (const char *)s : "");
}

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

static const char *device_select(const struct prov_journal *j, const char *where_v1,
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
    d->lot = col_strdup(st, 1);
    d->serial = col_strdup(st, 2);
    d->device_uri = col_strdup(st, 3);
    d->state = journal_state_parse((const char *)sqlite3_column_text(st, 4));
    blob = sqlite3_column_blob(st, 5);
    n = sqlite3_column_bytes(st, 5);
    if (blob != NULL && n > 0 && n <= PROV_JOURNAL_KEY_ID_MAX) {
        memcpy(d->key_id, blob, (size_t)n);
        d->key_id_len = (size_t)n;
    }
    d->key_uri = col_strdup(st, 6);
    d->storage = col_strdup(st, 7);
    d->error = col_strdup(st, 8);
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

/* The row (without the lock: callers hold it or are readers). */
int journal_read_device(struct prov_journal *j, long long lot_id, const char *serial,
                        struct prov_journal_device *d, long long *dev_id, long long *cert_id)
{
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

int journal_lot_name(struct prov_journal *j, long long lot_id, char *out, size_t cap)
{
    sqlite3_stmt *st = NULL;
    int r;

    r = journal_query(j, &st, "SELECT name FROM lot WHERE id = ?", "i", lot_id);
    if (r < 0) {
        return r;
    }
    if (sqlite3_step(st) == SQLITE_ROW) {
        journal_col_copy(st, 0, out, cap);
    } else {
        r = prov_fail(PROV_ERR_JOURNAL, "journal %s: no lot %lld", j->path, lot_id);
    }
    journal_release(j, st);
    return r;
}

int prov_journal_get(struct prov_journal *j, long long lot_id, const char *serial,
                     struct prov_journal_device *out)
{
    long long dev_id;
    long long cert_id;
    int r;

    pthread_mutex_lock(&j->lock);
    r = journal_read_device(j, lot_id, serial, out, &dev_id, &cert_id);
    pthread_mutex_unlock(&j->lock);
    return r;
}

int prov_journal_foreach_lot(struct prov_journal *j,
                             int (*fn)(void *ctx, long long lot_id, const char *name,
                                       const char *manifest),
                             void *ctx)
{
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

int prov_journal_find_lot(struct prov_journal *j, const char *name, long long *lot_id)
{
    sqlite3_stmt *st = NULL;
    int r;

    *lot_id = 0;
    pthread_mutex_lock(&j->lock);
    r = journal_query(j, &st, "SELECT id FROM lot WHERE name = ?", "t", name);
    if (r == 0) {
        if (sqlite3_step(st) == SQLITE_ROW) {
            *lot_id = sqlite3_column_int64(st, 0);
        } else {
            r = prov_fail(PROV_ERR_NOT_FOUND, "journal %s: no lot \"%s\"", j->path, name);
        }
    }
    journal_release(j, st);
    pthread_mutex_unlock(&j->lock);
    return r;
}

int prov_journal_superseded_in_request(struct prov_journal *j, long long lot_id,
                                       const char *serial, long long request, long long *by_run)
{
    sqlite3_stmt *st = NULL;
    int r;

    *by_run = 0;
    pthread_mutex_lock(&j->lock);
    r = journal_query(j, &st,
                      "SELECT r.id FROM certificate c JOIN device d ON d.id = c.device_id"
                      " JOIN run r ON r.id = c.superseded_run WHERE d.lot_id = ? AND"
                      " d.serial = ? AND coalesce(r.request, r.id) = ? ORDER BY r.id LIMIT 1",
                      "iti", lot_id, serial, request);
    if (r == 0 && sqlite3_step(st) == SQLITE_ROW) {
        *by_run = sqlite3_column_int64(st, 0);
    }
    journal_release(j, st);
    pthread_mutex_unlock(&j->lock);
    return r;
}

int prov_journal_last_superseded(struct prov_journal *j, long long lot_id, const char *serial,
                                 unsigned char **der, size_t *len)
{
    sqlite3_stmt *st = NULL;
    int r;

    *der = NULL;
    *len = 0;
    pthread_mutex_lock(&j->lock);
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
    pthread_mutex_unlock(&j->lock);
    return r;
}

void prov_journal_old_keys_free(struct prov_journal_old_key *keys, size_t n)
{
    for (size_t i = 0; keys != NULL && i < n; i++) {
        free(keys[i].lot);
        free(keys[i].serial);
        free(keys[i].device_uri);
    }
    free(keys);
}

static int fill_old_key(sqlite3_stmt *st, struct prov_journal_old_key *k)
{
    const void *id = sqlite3_column_blob(st, 3);
    int n = sqlite3_column_bytes(st, 3);

    memset(k, 0, sizeof(*k));
    k->lot = col_strdup(st, 0);
    k->serial = col_strdup(st, 1);
    k->device_uri = col_strdup(st, 2);
    if (id != NULL && n > 0 && n <= PROV_JOURNAL_KEY_ID_MAX) {
        memcpy(k->key_id, id, (size_t)n);
        k->key_id_len = (size_t)n;
    }
    journal_col_copy(st, 4, k->cert_serial, sizeof(k->cert_serial));
    journal_col_copy(st, 5, k->pubkey_sha256, sizeof(k->pubkey_sha256));
    journal_col_copy(st, 6, k->superseded, sizeof(k->superseded));
    return k->lot && k->serial && k->device_uri ? 0 : PROV_ERR_NOMEM;
}

int prov_journal_unretired_keys(struct prov_journal *j, long long lot_id, const char *serial,
                                struct prov_journal_old_key **keys, size_t *n)
{
    sqlite3_stmt *st = NULL;
    size_t cap = 0;
    int r = 0;

    *keys = NULL;
    *n = 0;
    if (j->schema_version < JOURNAL_SCHEMA_CERT_DEVICE) {
        return 0;
    }
    pthread_mutex_lock(&j->lock);
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
    pthread_mutex_unlock(&j->lock);
    if (r < 0) {
        prov_journal_old_keys_free(*keys, *n);
        *keys = NULL;
        *n = 0;
    }
    return r;
}

int prov_journal_row_has_cert(struct prov_journal *j, long long lot_id, const char *serial,
                              const char *sha256, bool *out)
{
    sqlite3_stmt *st = NULL;
    int r;

    *out = false;
    pthread_mutex_lock(&j->lock);
    r = journal_query(j, &st,
                      "SELECT 1 FROM certificate c JOIN device d ON d.id = c.device_id"
                      " WHERE d.lot_id = ? AND d.serial = ? AND c.sha256 = ?",
                      "itt", lot_id, serial, sha256);
    if (r == 0) {
        *out = sqlite3_step(st) == SQLITE_ROW;
    }
    journal_release(j, st);
    pthread_mutex_unlock(&j->lock);
    return r;
}

int prov_journal_foreach_key(struct prov_journal *j,
                             int (*fn)(void *ctx, const struct prov_journal_key_ref *k),
                             void *ctx)
{
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
        return prov_fail(PROV_ERR_NOMEM, "journal %s: out of memory", j->path);
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

int prov_journal_schema_version(const struct prov_journal *j)
{
    return j->schema_version;
}

int prov_journal_foreach(struct prov_journal *j, long long lot_id,
                         int (*fn)(void *ctx, const struct prov_journal_device *d), void *ctx)
{
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

int prov_journal_counts(struct prov_journal *j, long long lot_id,
                        long long counts[PROV_JOURNAL_STATE_COUNT], long long *n_superseded)
{
    sqlite3_stmt *st = NULL;
    int r;

    memset(counts, 0, sizeof(long long) * PROV_JOURNAL_STATE_COUNT);
    *n_superseded = 0;
    pthread_mutex_lock(&j->lock);
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
    pthread_mutex_unlock(&j->lock);
    return r;
}

void prov_journal_device_clear(struct prov_journal_device *d)
{
    if (d == NULL) {
        return;
    }
    free(d->lot);
    free(d->serial);
    free(d->device_uri);
    free(d->key_uri);
    free(d->storage);
    free(d->error);
    free(d->cert_der);
    memset(d, 0, sizeof(*d));
}

const char *prov_journal_state_name(enum prov_journal_state s)
{
    return (unsigned)s < PROV_JOURNAL_STATE_COUNT ? state_names[s] : "?";
}

enum prov_journal_state journal_state_parse(const char *s)
{
    for (int i = 1; i < PROV_JOURNAL_STATE_COUNT; i++) {
        if (s != NULL && strcmp(s, state_names[i]) == 0) {
            return (enum prov_journal_state)i;
        }
    }
    return PROV_JOURNAL_NONE;
}
