/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The CA index's schema (ca_index_handle.h): its versioned steps, their PostgreSQL form, and
 * the import of an older CA's issued-keys with the first step (ca_index.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ca_index_handle.h"
#include "error.h"
#include "log.h"

#define SCHEMA_VERSION 7

/*
 * Schema version 1, created in one transaction with the import of issued-keys. A later
 * version adds a numbered step (schema_steps) and raises SCHEMA_VERSION; an older index is
 * brought up to date step by step in one transaction, an index newer than the tool is refused.
 */
static const char *const schema_v1 =
    "CREATE TABLE meta(name TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE attempt(id INTEGER PRIMARY KEY, serial TEXT NOT NULL,"
    " device_uri TEXT NOT NULL, key_id BLOB NOT NULL, storage TEXT NOT NULL,"
    " old_key_uri TEXT, pin_source TEXT, started_at TEXT NOT NULL, finished_at TEXT,"
    " outcome TEXT CHECK (outcome IN ('delivered', 'failed', 'cleaned')));"
    "CREATE INDEX attempt_open_by_serial ON attempt(serial) WHERE finished_at IS NULL;"
    "CREATE INDEX attempt_open_by_device ON attempt(device_uri) WHERE finished_at IS NULL;"
    "CREATE TABLE certificate(id INTEGER PRIMARY KEY,"
    " cert_serial TEXT NOT NULL UNIQUE,"
    " pubkey_sha256 TEXT NOT NULL UNIQUE,"
    " serial TEXT NOT NULL, issued_by TEXT NOT NULL, lot TEXT, journal TEXT, device_uri TEXT,"
    " key_uri TEXT,"
    " profile TEXT, issuer_sha256 TEXT, not_before TEXT, not_after TEXT, der BLOB,"
    " issued_at TEXT NOT NULL,"
    " status TEXT NOT NULL"
    "  CHECK (status IN ('issued', 'delivered', 'superseded', 'abandoned')),"
    " superseded_by INTEGER REFERENCES certificate(id),"
    " attempt_id INTEGER REFERENCES attempt(id),"
    " revoked_at TEXT, revocation_reason INTEGER, invalidity_date TEXT);"
    "CREATE INDEX certificate_by_serial ON certificate(serial, id);"
    "CREATE INDEX certificate_by_attempt ON certificate(attempt_id)"
    " WHERE attempt_id IS NOT NULL;"
    "CREATE INDEX certificate_undelivered ON certificate(id)"
    " WHERE status IN ('issued', 'abandoned');"
    "INSERT INTO meta(name, value) VALUES ('schema_version', '1');";

/*
 * Step 2: revocations (ca_index_revoke.c). One row per revoked certificate (a revocation is
 * final, so a certificate has at most one), the numbers of the CRLs made so far, and the
 * index's audit trail: until this step the index had none (the certificate rows are their own
 * record); from here every revocation appends a hash-chained record, as the batch journal's
 * audit does (factory/journal_audit.c). The certificate table's revoked_at,
 * revocation_reason and invalidity_date columns stay NULL: the revocation table is the record.
 */
static const char *const schema_v2 =
    "CREATE TABLE revocation(cert_serial TEXT PRIMARY KEY REFERENCES certificate(cert_serial),"
    " reason INTEGER NOT NULL, revoked_at TEXT NOT NULL, invalidity_date TEXT,"
    " revoked_by TEXT NOT NULL);"
    "CREATE TABLE audit(seq INTEGER PRIMARY KEY, at TEXT NOT NULL, event TEXT NOT NULL,"
    " serial TEXT NOT NULL, cert_serial TEXT NOT NULL, detail TEXT NOT NULL,"
    " prev_sha256 TEXT NOT NULL, sha256 TEXT NOT NULL);"
    "INSERT INTO meta(name, value) VALUES ('crl_number', '0'), ('root_crl_number', '0');"
    "UPDATE meta SET value = '2' WHERE name = 'schema_version';";

/*
 * Step 3: who may ask the CA service (ca_registry.c, doc/ca-service.md): the stations, each by
 * its current identity certificate (whose revocation is in the revocation table like any
 * other's), and the lots the CA's operator registered: a cap (the CA's own count, never a
 * station's word) and the stations that may issue for each.
 */
static const char *const schema_v3 =
    "CREATE TABLE station(name TEXT PRIMARY KEY,"
    " cert_serial TEXT NOT NULL REFERENCES certificate(cert_serial), added_at TEXT NOT NULL);"
    "CREATE TABLE lot(name TEXT PRIMARY KEY, cap INTEGER NOT NULL CHECK (cap > 0),"
    " added_at TEXT NOT NULL);"
    "CREATE TABLE lot_station(lot TEXT NOT NULL REFERENCES lot(name),"
    " station TEXT NOT NULL REFERENCES station(name), PRIMARY KEY (lot, station));"
    "CREATE INDEX certificate_by_lot ON certificate(lot) WHERE lot IS NOT NULL;"
    "UPDATE meta SET value = '3' WHERE name = 'schema_version';";

/*
 * Step 4: a lot's terms (ca_registry.c, doc/ca-service.md): whether it allows a reissue, the
 * profiles it may use (none listed: any), the device serials it may issue (from the manifest;
 * none listed: any), and each station's rate on it (certificates per minute; 0: no limit).
 */
static const char *const schema_v4 =
    "ALTER TABLE lot ADD COLUMN reissue INTEGER NOT NULL DEFAULT 0 CHECK (reissue IN (0, 1));"
    "ALTER TABLE lot_station ADD COLUMN per_minute INTEGER NOT NULL DEFAULT 0"
    " CHECK (per_minute >= 0);"
    "CREATE TABLE lot_profile(lot TEXT NOT NULL REFERENCES lot(name), profile TEXT NOT NULL,"
    " PRIMARY KEY (lot, profile));"
    "CREATE TABLE lot_serial(lot TEXT NOT NULL REFERENCES lot(name), serial TEXT NOT NULL,"
    " PRIMARY KEY (lot, serial));"
    "UPDATE meta SET value = '4' WHERE name = 'schema_version';";

/*
 * Step 5: the CMP transactions the CA service answered (ca_replay.c), so that a replay is
 * refused across restarts; each kept until the certificate that signed its request expires.
 */
static const char *const schema_v5 =
    "CREATE TABLE cmp_transaction(id TEXT PRIMARY KEY, seen_at BIGINT NOT NULL,"
    " expires_at BIGINT NOT NULL);"
    "CREATE INDEX cmp_transaction_by_expiry ON cmp_transaction(expires_at);"
    "UPDATE meta SET value = '5' WHERE name = 'schema_version';";

/*
 * Step 6: a station's own rate across all its lots (ca_registry.c; 0: no limit), beside each
 * lot's rate for it (step 4).
 */
static const char *const schema_v6 =
    "ALTER TABLE station ADD COLUMN per_minute BIGINT NOT NULL DEFAULT 0"
    " CHECK (per_minute >= 0);"
    "UPDATE meta SET value = '6' WHERE name = 'schema_version';";

/*
 * Step 7: what a station's request reads stays the same size however much the index holds.
 * A lot keeps its count of devices (distinct serials it has certificates for: its cap's
 * measure), raised with the certificate that brings a new serial (ca_index.c) instead of
 * counted over the lot on every request; (lot, serial) finds a device in its lot; (issued_by,
 * issued_at) reads a station's last minute for its rates (ca_registry.c) without a scan.
 */
static const char *const schema_v7 =
    "ALTER TABLE lot ADD COLUMN devices INTEGER NOT NULL DEFAULT 0 CHECK (devices >= 0);"
    "UPDATE lot SET devices ="
    " (SELECT count(DISTINCT serial) FROM certificate WHERE certificate.lot = lot.name);"
    "CREATE INDEX certificate_by_lot_serial ON certificate(lot, serial) WHERE lot IS NOT NULL;"
    "DROP INDEX certificate_by_lot;"
    "CREATE INDEX certificate_by_issuer_time ON certificate(issued_by, issued_at);"
    "UPDATE meta SET value = '7' WHERE name = 'schema_version';";

/* The steps after version 1, in order: schema_steps[i] makes version i + 2. */
static const char *const schema_steps[] = {schema_v2, schema_v3, schema_v4, schema_v5,
                                           schema_v6, schema_v7};

/*
 * The steps' DDL is written for SQLite; on PostgreSQL three of its words differ, and only in
 * the DDL: a rowid key (INTEGER PRIMARY KEY) is a generated identity, a BLOB is bytea, and
 * every other INTEGER is 64 bits as SQLite's are. The rest (partial indexes, CHECK, ALTER
 * TABLE ADD COLUMN, the statements the index runs) is one text for both.
 */
static const char *const pg_words[][2] = {
    {"INTEGER PRIMARY KEY", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"},
    {"BLOB", "BYTEA"},
    {"INTEGER", "BIGINT"},
};

/*
 * What PostgreSQL lacks of what the index's statements use, made with step 3 (whose lists of
 * stations and lots join names with SQLite's group_concat; the order comes from a subquery,
 * as on SQLite).
 */
static const char *const pg_step3_extra =
    "CREATE OR REPLACE FUNCTION prov_concat(acc TEXT, v TEXT, sep TEXT) RETURNS TEXT"
    " LANGUAGE SQL IMMUTABLE AS"
    " $$ SELECT CASE WHEN v IS NULL THEN acc WHEN acc IS NULL THEN v"
    " ELSE acc || sep || v END $$;"
    "CREATE OR REPLACE AGGREGATE group_concat(TEXT, TEXT) (SFUNC = prov_concat, STYPE = TEXT);";

/* The step's text for the index's store; malloc'd (NULL when out of memory). */
static char *schema_step(struct prov_ca_index *ix, const char *sql)
{
    char *out = NULL;

    if (prov_sqldb_dialect(ix->sql) != PROV_SQLDB_POSTGRESQL) {
        return strdup(sql);
    }
    if (asprintf(&out, "%s%s", sql, sql == schema_v3 ? pg_step3_extra : "") < 0) {
        return NULL;
    }
    for (size_t w = 0; out != NULL && w < sizeof(pg_words) / sizeof(pg_words[0]); w++) {
        const char *from = pg_words[w][0];
        const char *to = pg_words[w][1];
        size_t n = strlen(from);
        char *grown;
        char *p = out;

        while ((p = strstr(p, from)) != NULL) {
            size_t at = (size_t)(p - out);

            if (asprintf(&grown, "%.*s%s%s", (int)at, out, to, p + n) < 0) {
                free(out);
                return NULL;
            }
            free(out);
            out = grown;
            p = out + at + strlen(to);
        }
    }
    return out;
}

/* Runs a schema step (schema_step) on the index. */
static int exec_step(struct prov_ca_index *ix, const char *sql)
{
    char *text = schema_step(ix, sql);
    int r;

    if (text == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "CA index: out of memory");
    }
    r = prov_sqldb_exec(ix->sql, text) == 0 ? 0
                                            : prov_ca_index_fail(ix, "cannot change the schema");
    free(text);
    return r;
}

static int commit(struct prov_ca_index *ix)
{
    return prov_sqldb_commit(ix->sql) == 0 ? 0 : prov_ca_index_fail(ix, "cannot commit");
}

/* One "SPKI-SHA256 CERT-SERIAL DEVICE-SERIAL" line of issued-keys into the new index. */
static int import_line(struct prov_ca_index *ix, const char *path, unsigned line_no, char *line,
                       const char *at, long *n)
{
    char hash[80], cert_serial[80], serial[80];
    struct prov_sqldb_stmt *st = NULL;
    int rc;

    line[strcspn(line, "\r\n")] = '\0';
    if (line[0] == '\0') {
        return 0;
    }
    if (sscanf(line, "%79s %79s %79s", hash, cert_serial, serial) != 3 || strlen(hash) != 64 ||
        strspn(hash, "0123456789abcdef") != 64) {
        prov_warn("%s:%u: not \"SPKI-SHA256 CERT-SERIAL DEVICE-SERIAL\"; not imported", path,
                  line_no);
        return 0;
    }
    rc = prov_ca_index_run(ix,
                           "INSERT INTO certificate(cert_serial, pubkey_sha256, serial, issued_by,"
                           " issued_at, status) VALUES (?, ?, ?, 'issued-keys', ?, 'delivered')"
                           " ON CONFLICT DO NOTHING",
                           &st, "tttt", cert_serial, hash, serial, at);
    if (rc != PROV_SQLDB_DONE) {
        prov_sqldb_finalize(st);
        return PROV_ERR_JOURNAL;
    }
    if (prov_sqldb_changes(ix->sql) == 0) {
        prov_warn("%s:%u: key or certificate serial already imported; line skipped", path, line_no);
    } else {
        (*n)++;
    }
    return 0;
}

/*
 * issued-keys of a CA from before the index (`sign` wrote it): every line becomes a
 * delivered certificate (the output was written after the line), with what the line holds.
 */
static int import_issued_keys(struct prov_ca_index *ix, const char *ca_dir)
{
    char *path = NULL;
    char line[512];
    char at[32];
    char count[32];
    struct prov_sqldb_stmt *st = NULL;
    unsigned line_no = 0;
    long n = 0;
    FILE *f;
    int r = 0;

    if (asprintf(&path, "%s/issued-keys", ca_dir) < 0) {
        return prov_fail(PROV_ERR_NOMEM, "CA index: out of memory");
    }
    f = fopen(path, "r");
    if (f == NULL) {
        r = errno == ENOENT ? 0 : prov_fail(PROV_ERR_JOURNAL, "%s: %s", path, strerror(errno));
        free(path);
        return r;
    }
    prov_ca_index_now_text(at, sizeof(at));
    while (r == 0 && fgets(line, sizeof(line), f) != NULL) {
        r = import_line(ix, path, ++line_no, line, at, &n);
    }
    if (r == 0 && ferror(f)) {
        r = prov_fail(PROV_ERR_JOURNAL, "%s: read error", path);
    }
    fclose(f);
    snprintf(count, sizeof(count), "%ld", n);
    if (r == 0 &&
        prov_ca_index_run(ix, "INSERT INTO meta(name, value) VALUES ('issued_keys_imported', ?)",
                          &st, "t", count) != PROV_SQLDB_DONE) {
        prov_sqldb_finalize(st);
        r = PROV_ERR_JOURNAL;
    }
    if (r == 0 && n > 0) {
        prov_info("CA index %s: imported %ld certified keys from %s (left in place, no longer "
                  "written)",
                  ix->path, n, path);
    }
    free(path);
    return r;
}

/* The schema version, 0 when the index is new (no meta table yet). */
static int schema_version(struct prov_ca_index *ix, int *version)
{
    struct prov_sqldb_stmt *st = NULL;
    bool has_meta = false;
    int rc;

    *version = 0;
    if (prov_sqldb_has_table(ix->sql, "meta", &has_meta) != 0) {
        return prov_ca_index_fail(ix, "cannot read the schema");
    }
    if (!has_meta) {
        return 0;
    }
    rc = prov_ca_index_run(ix, "SELECT value FROM meta WHERE name = 'schema_version'", &st, "");
    if (rc == PROV_SQLDB_ROW) {
        const char *v = prov_sqldb_column_text(st, 0);

        *version = v != NULL ? atoi(v) : 0;
        prov_sqldb_finalize(st);
    }
    return rc == PROV_SQLDB_ROW || rc == PROV_SQLDB_DONE ? 0 : PROV_ERR_JOURNAL;
}

/* The steps from *version to SCHEMA_VERSION in one transaction (another process may race). */
static int upgrade_schema(struct prov_ca_index *ix, int *version)
{
    int r = prov_ca_index_begin_write(ix);

    if (r == 0) {
        r = schema_version(ix, version);
    }
    while (r == 0 && *version >= 1 && *version < SCHEMA_VERSION) {
        r = exec_step(ix, schema_steps[*version - 1]);
        *version += r == 0 ? 1 : 0;
    }
    r = r == 0 ? commit(ix) : r;
    if (r < 0) {
        prov_sqldb_rollback(ix->sql);
    }
    return r;
}

int prov_ca_index_set_up_schema(struct prov_ca_index *ix, const char *ca_dir)
{
    int version = 0;
    int r;

    r = schema_version(ix, &version);
    if (r == 0 && version == 0) {
        /* Two first opens at once: the write lock makes the second find the first's schema. */
        r = prov_ca_index_begin_write(ix);
        if (r == 0) {
            r = schema_version(ix, &version);
        }
        if (r == 0 && version == 0) {
            r = exec_step(ix, schema_v1);
            if (r == 0) {
                r = import_issued_keys(ix, ca_dir);
            }
            version = 1;
        }
        r = r == 0 ? commit(ix) : r;
        if (r < 0) {
            prov_sqldb_rollback(ix->sql);
        }
    }
    if (r == 0 && version >= 1 && version < SCHEMA_VERSION) {
        r = upgrade_schema(ix, &version);
    }
    if (r == 0 && version != SCHEMA_VERSION) {
        r = prov_fail(PROV_ERR_JOURNAL,
                      "CA index %s: schema version %d; this provisioner knows version %d", ix->path,
                      version, SCHEMA_VERSION);
    }
    return r;
}

int prov_ca_index_check_schema(struct prov_ca_index *ix)
{
    int version = 0;
    int r = schema_version(ix, &version);

    if (r == 0 && version < SCHEMA_VERSION) {
        return prov_fail(PROV_ERR_JOURNAL,
                         "CA index %s: schema version %d, older than this provisioner's %d; "
                         "any CA command on the CA host (ca show) brings it up to date",
                         ix->path, version, SCHEMA_VERSION);
    }
    if (r == 0 && version > SCHEMA_VERSION) {
        return prov_fail(PROV_ERR_JOURNAL,
                         "CA index %s: schema version %d; this provisioner knows version %d",
                         ix->path, version, SCHEMA_VERSION);
    }
    return r;
}
