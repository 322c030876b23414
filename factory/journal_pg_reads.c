/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The PostgreSQL store's reads (journal_pg.h): rows with their current certificate, lots,
 * counts, the keys the ledger expects on devices, and the audit records for verification;
 * the same questions as journal_sqlite_reads.c asks, in the server's dialect.
 */
#include "journal_pg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pq_api.h"

#include "error.h"
#include "journal.h"
#include "journal_store.h"

#define DEVICE_SELECT                                                                              \
    "SELECT d.id, l.name, d.serial, d.device_uri, d.state, d.key_id, d.key_uri, d.storage,"        \
    " d.error, d.attempts, d.updated, d.cert_id, c.der, c.cert_serial, c.sha256,"                  \
    " c.pubkey_sha256, c.not_after,"                                                               \
    " (SELECT count(*) FROM certificate s WHERE s.device_id = d.id"                                \
    "  AND s.superseded IS NOT NULL),"                                                             \
    " (SELECT count(*) FROM certificate s WHERE s.device_id = d.id"                                \
    "  AND s.superseded IS NOT NULL AND s.retired IS NULL)"                                        \
    " FROM device d JOIN lot l ON l.id = d.lot_id"                                                 \
    " LEFT JOIN certificate c ON c.id = d.cert_id "

/* Fills d from row i of a DEVICE_SELECT result; *dev_id and *cert_id when asked for. */
static int fill_device(const PGresult *res, int i, struct prov_journal_device *d, long long *dev_id,
                       long long *cert_id)
{
    unsigned char *key;
    size_t n = 0;

    memset(d, 0, sizeof(*d));
    if (dev_id != NULL) {
        *dev_id = journal_pg_ll(res, i, 0);
    }
    if (cert_id != NULL) {
        *cert_id = journal_pg_ll(res, i, 11);
    }
    d->lot = journal_pg_strdup(res, i, 1);
    d->serial = journal_pg_strdup(res, i, 2);
    d->device_uri = journal_pg_strdup(res, i, 3);
    d->state = journal_state_parse(PQgetvalue(res, i, 4));
    key = journal_pg_bytes(res, i, 5, &n);
    if (key != NULL && n > 0 && n <= PROV_JOURNAL_KEY_ID_MAX) {
        memcpy(d->key_id, key, n);
        d->key_id_len = n;
    }
    free(key);
    d->key_uri = journal_pg_strdup(res, i, 6);
    d->storage = journal_pg_strdup(res, i, 7);
    d->error = journal_pg_strdup(res, i, 8);
    d->attempts = (int)journal_pg_ll(res, i, 9);
    journal_pg_copy(res, i, 10, d->updated, sizeof(d->updated));
    d->cert_der = journal_pg_bytes(res, i, 12, &d->cert_der_len);
    journal_pg_copy(res, i, 13, d->cert_serial, sizeof(d->cert_serial));
    journal_pg_copy(res, i, 14, d->sha256, sizeof(d->sha256));
    journal_pg_copy(res, i, 15, d->pubkey_sha256, sizeof(d->pubkey_sha256));
    journal_pg_copy(res, i, 16, d->not_after, sizeof(d->not_after));
    d->n_superseded = (int)journal_pg_ll(res, i, 17);
    d->n_unretired = (int)journal_pg_ll(res, i, 18);
    if (d->lot == NULL || d->serial == NULL || d->device_uri == NULL ||
        (!PQgetisnull(res, i, 12) && d->cert_der == NULL)) {
        prov_journal_device_clear(d);
        return PROV_ERR_NOMEM;
    }
    return 0;
}

/* Inside a transaction the row is about to be written back: it is read with its row lock. */
int journal_pg_row_get(struct journal_store *s, long long lot_id, const char *serial,
                       struct prov_journal_device *d, long long *dev_id, long long *cert_id)
{
    struct journal_pg *j = journal_pg_of(s);
    PGresult *res;
    int r = 0;

    memset(d, 0, sizeof(*d));
    *dev_id = 0;
    *cert_id = 0;
    res = journal_pg_exec(&j->db, serial, NULL, NULL, 0,
                          j->db.is_in_txn ? DEVICE_SELECT "WHERE d.lot_id = $1 AND d.serial = $2"
                                                          " FOR UPDATE OF d"
                                          : DEVICE_SELECT "WHERE d.lot_id = $1 AND d.serial = $2",
                          "it", lot_id, serial);
    if (res == NULL) {
        return PROV_ERR_JOURNAL;
    }
    if (PQntuples(res) > 0) {
        r = fill_device(res, 0, d, dev_id, cert_id);
    }
    PQclear(res);
    return r;
}

int journal_pg_audit_foreach(struct journal_store *s,
                             int (*fn)(void *ctx, const struct journal_audit_record *rec),
                             void *ctx)
{
    PGresult *res;
    int r = 0;

    res = journal_pg_exec(&journal_pg_of(s)->db, "audit", NULL, NULL, 0,
                          "SELECT a.seq, a.at, a.lot, a.serial, a.event, a.detail, a.prev_hash,"
                          " a.hash, a.chain, h.seq, h.hash FROM audit a"
                          " LEFT JOIN audit_head h ON h.chain = a.chain ORDER BY a.chain, a.seq",
                          "");
    if (res == NULL) {
        return PROV_ERR_JOURNAL;
    }
    for (int i = 0; r == 0 && i < PQntuples(res); i++) {
        struct journal_audit_record a = {
            .seq = journal_pg_ll(res, i, 0),
            .at = PQgetvalue(res, i, 1),
            .lot = PQgetvalue(res, i, 2),
            .serial = PQgetvalue(res, i, 3),
            .event = PQgetvalue(res, i, 4),
            .detail = PQgetvalue(res, i, 5),
            .prev_hash = PQgetvalue(res, i, 6),
            .hash = PQgetvalue(res, i, 7),
            .chain = PQgetvalue(res, i, 8),
            .chain_head_seq = journal_pg_ll(res, i, 9),
            .chain_head_hash = PQgetvalue(res, i, 10),
        };

        r = fn(ctx, &a);
    }
    PQclear(res);
    return r;
}

static const char *or_null(const PGresult *res, int i, int c)
{
    return PQgetisnull(res, i, c) ? NULL : PQgetvalue(res, i, c);
}

/* Each row beside its newest audit record that is a state, and its newest "issued" record. */
int journal_pg_audit_rows(struct journal_store *s,
                          int (*fn)(void *ctx, const struct journal_row_audit *row), void *ctx)
{
    PGresult *res;
    int r = 0;

    res = journal_pg_exec(
        &journal_pg_of(s)->db, "audit", NULL, NULL, 0,
        "SELECT l.name, d.serial, d.state, c.sha256,"
        " (SELECT a.event FROM audit a WHERE a.lot = l.name AND a.serial = d.serial"
        "  AND a.event NOT IN ('claim', 'device-moved', 'retired', 'outside-change')"
        "  ORDER BY a.at DESC, a.seq DESC LIMIT 1),"
        " (SELECT a.detail FROM audit a WHERE a.lot = l.name AND a.serial = d.serial"
        "  AND a.event = 'issued' ORDER BY a.at DESC, a.seq DESC LIMIT 1)"
        " FROM device d JOIN lot l ON l.id = d.lot_id LEFT JOIN certificate c ON c.id = d.cert_id",
        "");
    if (res == NULL) {
        return PROV_ERR_JOURNAL;
    }
    for (int i = 0; r == 0 && i < PQntuples(res); i++) {
        struct journal_row_audit a = {
            .lot = PQgetvalue(res, i, 0),
            .serial = PQgetvalue(res, i, 1),
            .state = PQgetvalue(res, i, 2),
            .sha256 = or_null(res, i, 3),
            .last_event = or_null(res, i, 4),
            .issued_detail = or_null(res, i, 5),
        };

        r = fn(ctx, &a);
    }
    PQclear(res);
    return r;
}

int journal_pg_foreach_lot(struct journal_store *s,
                           int (*fn)(void *ctx, long long lot_id, const char *name,
                                     const char *manifest),
                           void *ctx)
{
    PGresult *res;
    int r = 0;

    res = journal_pg_exec(&journal_pg_of(s)->db, "lot", NULL, NULL, 0,
                          "SELECT id, name, coalesce(manifest, '') FROM lot ORDER BY name", "");
    if (res == NULL) {
        return PROV_ERR_JOURNAL;
    }
    for (int i = 0; r == 0 && i < PQntuples(res); i++) {
        r = fn(ctx, journal_pg_ll(res, i, 0), PQgetvalue(res, i, 1), PQgetvalue(res, i, 2));
    }
    PQclear(res);
    return r;
}

/* Column 0 of the first row as a number (0 when none). */
static int first_ll(struct journal_store *s, const char *what, long long *out, const char *sql,
                    const char *types, ...)
{
    PGresult *res;
    va_list ap;

    va_start(ap, types);
    res = journal_pg_vexec(&journal_pg_of(s)->db, what, sql, types, ap);
    va_end(ap);
    *out = 0;
    if (res == NULL) {
        return PROV_ERR_JOURNAL;
    }
    if (PQntuples(res) > 0) {
        *out = journal_pg_ll(res, 0, 0);
    }
    PQclear(res);
    return 0;
}

int journal_pg_superseded_in_request(struct journal_store *s, long long lot_id, const char *serial,
                                     long long request, long long *by_run)
{
    return first_ll(s, serial, by_run,
                    "SELECT r.id FROM certificate c JOIN device d ON d.id = c.device_id"
                    " JOIN run r ON r.id = c.superseded_run WHERE d.lot_id = $1 AND"
                    " d.serial = $2 AND coalesce(r.request, r.id) = $3 ORDER BY r.id LIMIT 1",
                    "iti", lot_id, serial, request);
}

int journal_pg_last_superseded(struct journal_store *s, long long lot_id, const char *serial,
                               unsigned char **der, size_t *len)
{
    PGresult *res;
    int r = 0;

    *der = NULL;
    *len = 0;
    res = journal_pg_exec(&journal_pg_of(s)->db, serial, NULL, NULL, 0,
                          "SELECT c.der FROM certificate c JOIN device d ON d.id = c.device_id"
                          " WHERE d.lot_id = $1 AND d.serial = $2 AND c.superseded IS NOT NULL"
                          " ORDER BY c.id DESC LIMIT 1",
                          "it", lot_id, serial);
    if (res == NULL) {
        return PROV_ERR_JOURNAL;
    }
    if (PQntuples(res) > 0) {
        *der = journal_pg_bytes(res, 0, 0, len);
        r = *der == NULL ? PROV_ERR_NOMEM : 0;
    }
    PQclear(res);
    return r;
}

int journal_pg_unretired_keys(struct journal_store *s, long long lot_id, const char *serial,
                              struct prov_journal_old_key **keys, size_t *n)
{
    PGresult *res;
    int r = 0;
    int rows;

    *keys = NULL;
    *n = 0;
    res = journal_pg_exec(&journal_pg_of(s)->db, "certificate", NULL, NULL, 0,
                          "SELECT l.name, d.serial, c.device_uri, c.key_id, c.cert_serial,"
                          " c.pubkey_sha256, c.superseded"
                          " FROM certificate c JOIN device d ON d.id = c.device_id"
                          " JOIN lot l ON l.id = d.lot_id"
                          " WHERE c.superseded IS NOT NULL AND c.retired IS NULL"
                          " AND ($1 = 0 OR d.lot_id = $1) AND ($2::text IS NULL OR d.serial = $2)"
                          " ORDER BY l.name, d.serial, c.id",
                          "it", lot_id, serial);
    if (res == NULL) {
        return PROV_ERR_JOURNAL;
    }
    rows = PQntuples(res);
    *keys = rows > 0 ? calloc((size_t)rows, sizeof(**keys)) : NULL;
    if (rows > 0 && *keys == NULL) {
        r = PROV_ERR_NOMEM;
    }
    for (int i = 0; r == 0 && i < rows; i++) {
        struct prov_journal_old_key *k = &(*keys)[i];
        size_t len = 0;
        unsigned char *id = journal_pg_bytes(res, i, 3, &len);

        k->lot = journal_pg_strdup(res, i, 0);
        k->serial = journal_pg_strdup(res, i, 1);
        k->device_uri = journal_pg_strdup(res, i, 2);
        if (id != NULL && len > 0 && len <= PROV_JOURNAL_KEY_ID_MAX) {
            memcpy(k->key_id, id, len);
            k->key_id_len = len;
        }
        free(id);
        journal_pg_copy(res, i, 4, k->cert_serial, sizeof(k->cert_serial));
        journal_pg_copy(res, i, 5, k->pubkey_sha256, sizeof(k->pubkey_sha256));
        journal_pg_copy(res, i, 6, k->superseded, sizeof(k->superseded));
        *n = (size_t)i + 1;
        r = k->lot && k->serial && k->device_uri ? 0 : PROV_ERR_NOMEM;
    }
    PQclear(res);
    if (r < 0) {
        prov_journal_old_keys_free(*keys, *n);
        *keys = NULL;
        *n = 0;
    }
    return r;
}

int journal_pg_row_has_cert(struct journal_store *s, long long lot_id, const char *serial,
                            const char *sha256, bool *out)
{
    long long one = 0;
    int r;

    r = first_ll(s, serial, &one,
                 "SELECT 1 FROM certificate c JOIN device d ON d.id = c.device_id"
                 " WHERE d.lot_id = $1 AND d.serial = $2 AND c.sha256 = $3 LIMIT 1",
                 "itt", lot_id, serial, sha256);
    *out = one == 1;
    return r;
}

int journal_pg_foreach_key(struct journal_store *s,
                           int (*fn)(void *ctx, const struct prov_journal_key_ref *k), void *ctx)
{
    PGresult *res;
    int r = 0;

    res = journal_pg_exec(
        &journal_pg_of(s)->db, "keys", NULL, NULL, 0,
        "SELECT l.name, d.serial, d.device_uri, d.key_id,"
        " CASE WHEN d.cert_id IS NULL AND d.state IN ('intent', 'failed') THEN 'interrupted'"
        " ELSE 'current' END"
        " FROM device d JOIN lot l ON l.id = d.lot_id WHERE d.key_id IS NOT NULL"
        " UNION ALL SELECT l.name, d.serial, c.device_uri, c.key_id, 'superseded'"
        " FROM certificate c JOIN device d ON d.id = c.device_id JOIN lot l ON l.id = d.lot_id"
        " WHERE c.superseded IS NOT NULL AND c.retired IS NULL",
        "");
    if (res == NULL) {
        return PROV_ERR_JOURNAL;
    }
    for (int i = 0; r == 0 && i < PQntuples(res); i++) {
        size_t len = 0;
        unsigned char *id = journal_pg_bytes(res, i, 3, &len);
        struct prov_journal_key_ref k = {
            .lot = PQgetvalue(res, i, 0),
            .serial = PQgetvalue(res, i, 1),
            .device_uri = or_null(res, i, 2),
            .key_id = id,
            .key_id_len = len,
            .role = PQgetvalue(res, i, 4),
        };

        if (k.device_uri != NULL && id != NULL && len > 0) {
            r = fn(ctx, &k);
        }
        free(id);
    }
    PQclear(res);
    return r;
}

int journal_pg_foreach_device(struct journal_store *s, long long lot_id,
                              int (*fn)(void *ctx, const struct prov_journal_device *d), void *ctx)
{
    struct prov_journal_device d;
    PGresult *res;
    int r = 0;

    res = journal_pg_exec(&journal_pg_of(s)->db, "devices", NULL, NULL, 0,
                          DEVICE_SELECT "WHERE $1 = 0 OR d.lot_id = $1 ORDER BY l.name, d.serial",
                          "i", lot_id);
    if (res == NULL) {
        return PROV_ERR_JOURNAL;
    }
    for (int i = 0; r == 0 && i < PQntuples(res); i++) {
        r = fill_device(res, i, &d, NULL, NULL);
        if (r == 0) {
            r = fn(ctx, &d);
        }
        prov_journal_device_clear(&d);
    }
    PQclear(res);
    return r;
}

/*
 * One question for the page: the rows come in the order of their serials in the list, so that
 * each row's place is found walking the list once.
 */
int journal_pg_rows_of(struct journal_store *s, long long lot_id, const char *const *serials,
                       size_t n,
                       int (*fn)(void *ctx, size_t i, const struct prov_journal_device *d),
                       void *ctx)
{
    char *list = journal_pg_text_array(serials, n);
    struct prov_journal_device d;
    size_t at = 0;
    PGresult *res;
    int r = 0;

    if (list == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "journal %s: out of memory", s->name);
    }
    res = journal_pg_exec(&journal_pg_of(s)->db, "devices", NULL, NULL, 0,
                          DEVICE_SELECT "JOIN unnest($2::text[]) WITH ORDINALITY AS p(serial, i)"
                                        " ON p.serial = d.serial WHERE d.lot_id = $1"
                                        " ORDER BY p.i",
                          "it", lot_id, list);
    free(list);
    if (res == NULL) {
        return PROV_ERR_JOURNAL;
    }
    for (int k = 0; r == 0 && k < PQntuples(res); k++) {
        r = fill_device(res, k, &d, NULL, NULL);
        while (r == 0 && at < n && strcmp(serials[at], d.serial) != 0) {
            at++;
        }
        if (r == 0 && at < n) {
            r = fn(ctx, at++, &d);
        }
        prov_journal_device_clear(&d);
    }
    PQclear(res);
    return r;
}

int journal_pg_counts(struct journal_store *s, long long lot_id,
                      long long counts[PROV_JOURNAL_STATE_COUNT], long long *n_superseded)
{
    PGresult *res;

    memset(counts, 0, sizeof(long long) * PROV_JOURNAL_STATE_COUNT);
    *n_superseded = 0;
    res = journal_pg_exec(&journal_pg_of(s)->db, "counts", NULL, NULL, 0,
                          "SELECT state, count(*) FROM device WHERE $1 = 0 OR lot_id = $1"
                          " GROUP BY state",
                          "i", lot_id);
    if (res == NULL) {
        return PROV_ERR_JOURNAL;
    }
    for (int i = 0; i < PQntuples(res); i++) {
        counts[journal_state_parse(PQgetvalue(res, i, 0))] = journal_pg_ll(res, i, 1);
    }
    PQclear(res);
    return first_ll(s, "counts", n_superseded,
                    "SELECT count(*) FROM certificate c JOIN device d ON d.id = c.device_id"
                    " WHERE c.superseded IS NOT NULL AND ($1 = 0 OR d.lot_id = $1)",
                    "i", lot_id);
}
