/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The shared ledger's administration (ledger.h, doc/ledger.md): its schema, and a station's
 * SQLite journal moved into it with its audit trail. The journal's rules are not involved:
 * an import copies what another journal already decided, in one transaction of the ledger.
 */
#include "ledger.h"

#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "error.h"
#include "log.h"
#include "journal_internal.h"
#include "journal_pg.h"
#include "journal_store.h"

static int need_uri(const char *uri)
{
    if (!journal_pg_is_uri(uri)) {
        return prov_fail(PROV_ERR_USAGE,
                         "ledger: the journal is not a ledger (a postgresql:// URI expected, "
                         "[provisioner] journal or --journal)");
    }
    return 0;
}

int prov_ledger_schema(const char *uri, const char *password, bool is_init,
                       struct prov_ledger_schema *out)
{
    struct prov_journal *j = NULL;
    struct journal_store *s;
    int r;

    memset(out, 0, sizeof(*out));
    out->newest = journal_pg_schema_newest();
    r = need_uri(uri);
    r = r ? r : journal_open_mode(uri, password, "ledger", JOURNAL_STORE_ADMIN, &j);
    if (r < 0) {
        return r;
    }
    s = j->store;
    out->from = out->to = s->ops->schema_version(s);
    if (out->from > out->newest) {
        r = prov_fail(PROV_ERR_JOURNAL,
                      "journal %s: schema version %d is newer than this provisioner's (%d); "
                      "use the provisioner that wrote it",
                      s->name, out->from, out->newest);
    } else if (is_init && out->from > 0 && out->from < out->newest) {
        r = prov_fail(PROV_ERR_JOURNAL,
                      "journal %s: a ledger of schema version %d is there already; run "
                      "`provisioner ledger migrate` to bring it to %d",
                      s->name, out->from, out->newest);
    } else if (!is_init && out->from == 0) {
        r = prov_fail(PROV_ERR_JOURNAL,
                      "journal %s: no ledger in this database; run `provisioner ledger init`",
                      s->name);
    } else if (out->from < out->newest) {
        r = journal_pg_migrate(s, &journal_upgrade_audit, &out->from, &out->to);
    }
    prov_journal_close(j);
    return r;
}

/* The import: the SQLite journal read, the ledger written, ids mapped old -> new. */
struct import {
    sqlite3 *db;
    struct journal_pg *pg;
    const char *path;
    struct prov_ledger_import *out;
};

static int sqlite_fail(struct import *im, const char *what)
{
    return prov_fail(PROV_ERR_JOURNAL, "journal %s: %s: %s", im->path, what,
                     sqlite3_errmsg(im->db));
}

/* A parameter after the SQLite columns, computed from the row (into out, 128 bytes). */
typedef int (*extra_fn)(struct import *im, sqlite3_stmt *st, char *out);

/* Binds one SQLite row as the ledger's parameters (types as journal_pg_exec). */
struct row_params {
    const char *values[16];
    int lengths[16];
    int formats[16];
    char nums[16][24];
    char extra[128];
    int n;
};

static int bind_row(struct import *im, sqlite3_stmt *st, const char *types, extra_fn extra,
                    struct row_params *p)
{
    memset(p, 0, sizeof(*p));
    p->n = (int)strlen(types);
    for (int i = 0; i < p->n; i++) {
        p->values[i] = (const char *)sqlite3_column_text(st, i);
        if (types[i] == 'b') {
            p->values[i] = sqlite3_column_blob(st, i);
            p->lengths[i] = sqlite3_column_bytes(st, i);
            p->formats[i] = 1;
        } else if (types[i] == 'i' && sqlite3_column_type(st, i) != SQLITE_NULL) {
            snprintf(p->nums[i], sizeof(p->nums[i]), "%lld", sqlite3_column_int64(st, i));
            p->values[i] = p->nums[i];
        }
    }
    if (extra != NULL) {
        int r = extra(im, st, p->extra);

        if (r < 0) {
            return r;
        }
        p->values[p->n++] = p->extra;
    }
    return 0;
}

/*
 * Each row of sql (SQLite) inserted by ins into the ledger, its columns as $1... in order
 * (then extra's value). With map, the ledger remembers column 0 (the SQLite id) beside the
 * new id ins returns, in that temporary table of the transaction.
 */
static int copy_rows(struct import *im, const char *sql, const char *ins, const char *types,
                     extra_fn extra, const char *map, long long *count)
{
    sqlite3_stmt *st = NULL;
    int rc = SQLITE_DONE;
    int r = 0;

    if (sqlite3_prepare_v2(im->db, sql, -1, &st, NULL) != SQLITE_OK) {
        return sqlite_fail(im, "read");
    }
    while (r == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct row_params p;
        PGresult *res = NULL;

        r = bind_row(im, st, types, extra, &p);
        if (r == 0) {
            pthread_mutex_lock(&im->pg->db.conn_lock);
            res = PQexecParams(im->pg->db.conn, ins, p.n, NULL, p.values, p.lengths, p.formats, 0);
            pthread_mutex_unlock(&im->pg->db.conn_lock);
        }
        if (r == 0 && PQresultStatus(res) != PGRES_TUPLES_OK &&
            PQresultStatus(res) != PGRES_COMMAND_OK) {
            r = prov_fail(PROV_ERR_JOURNAL, "journal %s: import of %s: %s", im->pg->base.name,
                          im->path, PQresultErrorMessage(res));
        } else if (r == 0 && map != NULL && PQntuples(res) == 1) {
            char *m = NULL;

            if (asprintf(&m, "INSERT INTO %s(old, new) VALUES (%lld, %s)", map,
                         sqlite3_column_int64(st, 0), PQgetvalue(res, 0, 0)) < 0) {
                r = PROV_ERR_NOMEM;
            } else {
                r = journal_pg_run(&im->pg->db, "import", m, "");
            }
            free(m);
        }
        PQclear(res);
        *count += r == 0;
    }
    if (r == 0 && rc != SQLITE_DONE) {
        r = sqlite_fail(im, "read");
    }
    sqlite3_finalize(st);
    return r;
}

static int issuer_param(struct import *im, sqlite3_stmt *st, char *out)
{
    (void)im;
    return journal_pg_issuer(sqlite3_column_blob(st, 7), (size_t)sqlite3_column_bytes(st, 7), out);
}

static int chain_param(struct import *im, sqlite3_stmt *st, char *out)
{
    (void)st;
    snprintf(out, 128, "%s", im->out->chain);
    return 0;
}

static const char *const import_maps =
    "CREATE TEMP TABLE map_lot(old BIGINT PRIMARY KEY, new BIGINT) ON COMMIT DROP;"
    "CREATE TEMP TABLE map_run(old BIGINT PRIMARY KEY, new BIGINT) ON COMMIT DROP;"
    "CREATE TEMP TABLE map_device(old BIGINT PRIMARY KEY, new BIGINT) ON COMMIT DROP;"
    "CREATE TEMP TABLE map_cert(old BIGINT PRIMARY KEY, new BIGINT) ON COMMIT DROP;"
    "CREATE TEMP TABLE dev_cert(dev BIGINT, cert BIGINT) ON COMMIT DROP;";

/* Lots, runs and rows, in the order of their references. */
static int import_rows(struct import *im)
{
    long long ignored = 0;
    int r;

    r = copy_rows(im, "SELECT id, name, manifest, created FROM lot ORDER BY id",
                  "INSERT INTO lot(name, manifest, created) SELECT $2, $3, $4"
                  " WHERE $1::bigint IS NOT NULL RETURNING id",
                  "ittt", NULL, "map_lot", &im->out->lots);
    r = r ? r
          : copy_rows(im,
                      "SELECT id, lot_id, reissue, started, finished, request FROM run ORDER BY id",
                      "INSERT INTO run(lot_id, reissue, started, finished, request)"
                      " SELECT (SELECT new FROM map_lot WHERE old = $2), $3, $4, $5,"
                      " (SELECT new FROM map_run WHERE old = $6::bigint)"
                      " WHERE $1::bigint IS NOT NULL RETURNING id",
                      "iittti", NULL, "map_run", &ignored);
    r = r ? r
          : copy_rows(im,
                      "SELECT id, lot_id, serial, device_uri, state, key_id, key_uri, storage,"
                      " error, attempts, updated, cert_id FROM device ORDER BY id",
                      "WITH d AS (INSERT INTO device(lot_id, serial, device_uri, state, key_id,"
                      " key_uri, storage, error, attempts, updated) SELECT (SELECT new FROM"
                      " map_lot WHERE old = $2), $3, $4, $5, $6, $7, $8, $9, $10, $11"
                      " WHERE $1::bigint IS NOT NULL RETURNING id)"
                      " INSERT INTO dev_cert SELECT d.id, $12::bigint FROM d RETURNING dev",
                      "iitttbtttiti", NULL, "map_device", &im->out->devices);
    return r;
}

/* Certificates (the issuer from each DER), the current ones on their rows, claims, audit. */
static int import_certs(struct import *im)
{
    long long ignored = 0;
    int r;

    r = copy_rows(im,
                  "SELECT id, device_id, cert_serial, pubkey_sha256, sha256, not_after, key_id,"
                  " der, issued, superseded, superseded_run, device_uri, retired"
                  " FROM certificate ORDER BY id",
                  "INSERT INTO certificate(device_id, device_serial, issuer, cert_serial,"
                  " pubkey_sha256, sha256, not_after, key_id, der, issued, superseded,"
                  " superseded_run, device_uri, retired) SELECT m.new, d.serial, $14, $3, $4,"
                  " $5, $6, $7, $8, $9, $10, (SELECT new FROM map_run WHERE old = $11::bigint),"
                  " $12, $13 FROM map_device m JOIN device d ON d.id = m.new"
                  " WHERE m.old = $2 AND $1::bigint IS NOT NULL RETURNING certificate.id",
                  "iittttbbttitt", issuer_param, "map_cert", &im->out->certificates);
    r = r ? r
          : journal_pg_run(&im->pg->db, "import",
                           "UPDATE device d SET cert_id = mc.new FROM dev_cert dc"
                           " JOIN map_cert mc ON mc.old = dc.cert WHERE d.id = dc.dev",
                           "");
    r = r ? r
          : copy_rows(im, "SELECT lot_id, serial, identity, instance, claimed FROM station_claim",
                      "INSERT INTO station_claim(lot_id, serial, identity, instance, claimed)"
                      " SELECT (SELECT new FROM map_lot WHERE old = $1), $2, $3, $4, $5",
                      "itttt", NULL, NULL, &ignored);
    r = r ? r
          : copy_rows(im,
                      "SELECT seq, at, lot, serial, event, detail, prev_hash, hash FROM audit"
                      " ORDER BY seq",
                      "INSERT INTO audit(seq, at, lot, serial, event, detail, prev_hash, hash,"
                      " chain) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                      "ittttttt", chain_param, NULL, &im->out->audit_records);
    r = r ? r
          : journal_pg_run(&im->pg->db, "import",
                           "INSERT INTO audit_head(chain, seq, hash) SELECT chain, seq, hash"
                           " FROM audit WHERE chain = $1 ORDER BY seq DESC LIMIT 1",
                           "t", im->out->chain);
    return r;
}

/* Refuses a lot or a chain the ledger has already: nothing is imported twice. */
static int import_check(struct import *im)
{
    PGresult *res;
    int r = 0;

    res = journal_pg_exec(&im->pg->db, "import", NULL, NULL, 0,
                          "SELECT (SELECT count(*) FROM audit_head WHERE chain = $1)", "t",
                          im->out->chain);
    if (res == NULL) {
        return PROV_ERR_JOURNAL;
    }
    if (journal_pg_ll(res, 0, 0) > 0) {
        r = prov_fail(PROV_ERR_JOURNAL, "journal %s: %s was imported already (audit chain %s)",
                      im->pg->base.name, im->path, im->out->chain);
    }
    PQclear(res);
    return r;
}

int prov_ledger_import(const char *uri, const char *password, const char *path,
                       struct prov_ledger_import *out)
{
    struct prov_journal *sj = NULL;
    struct prov_journal *j = NULL;
    struct import im = {.path = path, .out = out};
    char *copy = strdup(path);
    struct journal_store *s;
    int r;

    memset(out, 0, sizeof(*out));
    if (copy == NULL) {
        return PROV_ERR_NOMEM;
    }
    snprintf(out->chain, sizeof(out->chain), "import:%s", basename(copy));
    free(copy);
    /* the file brought to the current SQLite schema first; no station may write it meanwhile */
    r = need_uri(uri);
    r = r ? r : prov_journal_open(path, true, &sj);
    if (r == 0) {
        struct prov_journal_audit audit;

        /* a broken chain is not moved into the ledger, where it would pass for whole */
        r = prov_journal_verify_audit(sj, &audit);
    }
    prov_journal_close(sj);
    if (r == 0 && sqlite3_open_v2(path, &im.db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        r = sqlite_fail(&im, "cannot open");
    }
    r = r ? r : journal_open_mode(uri, password, out->chain, JOURNAL_STORE_SHARED, &j);
    if (r < 0) {
        sqlite3_close(im.db);
        return r;
    }
    s = j->store;
    im.pg = (struct journal_pg *)s;
    r = s->ops->begin(s);
    if (r == 0) {
        r = import_check(&im);
        for (const char *q = import_maps; r == 0 && *q != '\0';) {
            const char *e = strchr(q, ';');
            char *one = strndup(q, (size_t)(e - q));

            r = one ? journal_pg_run(&im.pg->db, "import", one, "") : PROV_ERR_NOMEM;
            free(one);
            q = e + 1;
        }
        r = r ? r : import_rows(&im);
        r = r ? r : import_certs(&im);
        r = s->ops->end(s, r);
    }
    prov_journal_close(j);
    sqlite3_close(im.db);
    return r;
}

int prov_ledger_release(const char *uri, const char *password, const char *station, long long *n)
{
    struct prov_journal *j = NULL;
    struct journal_pg *pg;
    PGresult *res = NULL;
    int r;

    *n = 0;
    r = need_uri(uri);
    r = r ? r : journal_open_mode(uri, password, "ledger", JOURNAL_STORE_SHARED, &j);
    if (r < 0) {
        return r;
    }
    pg = (struct journal_pg *)j->store;
    /* the token goes too: a late write of the old holder is refused (fencing) */
    res = journal_pg_exec(&pg->db, station, NULL, NULL, 0,
                          "UPDATE work SET station = NULL, token = NULL, expires = NULL"
                          " WHERE station = $1 AND NOT done",
                          "t", station);
    if (res == NULL) {
        r = PROV_ERR_JOURNAL;
    } else {
        *n = strtoll(PQcmdTuples(res), NULL, 10);
    }
    PQclear(res);
    prov_journal_close(j);
    return r;
}

struct prov_ledger_hold {
    struct prov_journal *j;
    char *serial;
    size_t n;
    long long *lot_ids;
    bool *is_done; /* what each row was: a finished row is finished again at the release */
};

struct lot_list {
    size_t n;
    long long *ids;
    char **names;
};

static int add_lot(void *ctx, long long lot_id, const char *name, const char *manifest)
{
    struct lot_list *l = ctx;
    long long *ids = realloc(l->ids, (l->n + 1) * sizeof(*ids));
    char **names = ids ? realloc(l->names, (l->n + 1) * sizeof(*names)) : NULL;

    (void)manifest;
    l->ids = ids ? ids : l->ids;
    l->names = names ? names : l->names;
    if (ids == NULL || names == NULL || (names[l->n] = strdup(name)) == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "ledger: out of memory");
    }
    ids[l->n++] = lot_id;
    return 0;
}

/* Leases the row of h's serial in the lot, when the ledger has one. */
static int hold_row(struct prov_ledger_hold *h, long long lot_id, const char *lot)
{
    struct prov_journal_device d;
    char holder[128];
    enum prov_journal_lease lease = PROV_JOURNAL_LEASE_HELD;
    bool is_done;
    int r;

    memset(&d, 0, sizeof(d));
    r = prov_journal_get(h->j, lot_id, h->serial, &d);
    if (r < 0 || d.state == PROV_JOURNAL_NONE) {
        prov_journal_device_clear(&d);
        return r;
    }
    is_done = d.cert_der != NULL;
    prov_journal_device_clear(&d);
    r = prov_journal_lease_claim(h->j, lot_id, h->serial, true, holder, sizeof(holder), &lease);
    if (r == 0 && lease != PROV_JOURNAL_LEASE_MINE) {
        return prov_fail(PROV_ERR_JOURNAL,
                         "serial %s: station %s is working on it in the ledger (lot %s): not "
                         "reissued while it does (ledger release --station %s ends its lease)",
                         h->serial, holder, lot, holder);
    }
    if (r == 0) {
        h->lot_ids[h->n] = lot_id;
        h->is_done[h->n] = is_done;
        h->n++;
    }
    return r;
}

int prov_ledger_hold_serial(const struct prov_config *cfg, const char *station, const char *serial,
                            struct prov_ledger_hold **out)
{
    struct prov_ledger_hold *h = NULL;
    struct lot_list lots = {0};
    int r;

    *out = NULL;
    if (!prov_journal_is_ledger(cfg->journal)) {
        return 0;
    }
    h = calloc(1, sizeof(*h));
    if (h == NULL || (h->serial = strdup(serial)) == NULL) {
        free(h);
        return prov_fail(PROV_ERR_NOMEM, "ledger: out of memory");
    }
    r = prov_journal_open_shared_with(cfg->journal, cfg->journal_password, station, &h->j);
    if (r == 0 && cfg->journal_lease > 0) {
        prov_journal_set_lease(h->j, cfg->journal_lease);
    }
    r = r ? r : prov_journal_foreach_lot(h->j, add_lot, &lots);
    if (r == 0 && lots.n > 0) {
        h->lot_ids = calloc(lots.n, sizeof(*h->lot_ids));
        h->is_done = calloc(lots.n, sizeof(*h->is_done));
        r = h->lot_ids && h->is_done ? 0 : prov_fail(PROV_ERR_NOMEM, "ledger: out of memory");
    }
    for (size_t i = 0; r == 0 && i < lots.n; i++) {
        r = hold_row(h, lots.ids[i], lots.names[i]);
    }
    for (size_t i = 0; i < lots.n; i++) {
        free(lots.names[i]);
    }
    free(lots.names);
    free(lots.ids);
    if (r < 0) {
        prov_ledger_hold_release(h);
        return r;
    }
    *out = h;
    return 0;
}

void prov_ledger_hold_release(struct prov_ledger_hold *h)
{
    if (h == NULL) {
        return;
    }
    for (size_t i = 0; i < h->n; i++) {
        if (prov_journal_lease_end(h->j, h->lot_ids[i], h->serial, h->is_done[i]) < 0) {
            /* it expires on its own; the row is claimable then */
            prov_warn("serial %s: %s", h->serial, prov_error_message());
            prov_error_clear();
        }
    }
    prov_journal_close(h->j);
    free(h->lot_ids);
    free(h->is_done);
    free(h->serial);
    free(h);
}
