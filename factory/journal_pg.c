/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The journal's PostgreSQL store (journal_store.h, doc/ledger.md): the shared ledger of a line
 * of stations. The rules stay in journal.c; this file keeps the same promises as the SQLite
 * store with the server's means:
 *  - every transaction takes its station's transaction-scoped advisory lock first, so one
 *    station's transactions are serialized as BEGIN IMMEDIATE serializes them on a SQLite
 *    file (its audit chain needs a total order), while stations run side by side;
 *  - the writer lock is a session advisory lock, shared by batches and stations (rows are
 *    claimed by leases), exclusive for a schema change, released by the server when the
 *    session ends, however it ends;
 *  - a row lock is an advisory lock on a connection of its own, so that two threads of one
 *    process exclude each other as two processes do;
 *  - the uniqueness rules are constraints of the database (doc/ledger.md lists them), so a
 *    second certificate cannot be committed even by a client that skips journal.c.
 * A COMMIT whose connection broke has an unknown outcome: it is reported as a failure and the
 * next transition reads the row back (the state the server holds), never guesses.
 */
#include "journal_pg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pq_api.h"
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "error.h"
#include "journal.h"
#include "journal_internal.h"
#include "journal_store.h"
#include "log.h"
#include "pg_conn.h"

/*
 * The schema, one step per version, as in the SQLite store: a change is a new step at the
 * end, never an edit of an earlier one. Version 1 is the SQLite journal's schema 5 with the
 * database's own guarantees: the certificate's issuer (SHA-256 of its DER name) and device
 * serial, so that a certificate serial is unique per issuer and a device serial has one
 * current certificate per issuer across all lots (superseded ones stay recorded).
 */
static const char *const schema_steps[] = {
    "CREATE TABLE schema_version(version INTEGER PRIMARY KEY,"
    " applied TIMESTAMPTZ NOT NULL DEFAULT now(), tool TEXT NOT NULL);"
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE lot(id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL UNIQUE, manifest TEXT,"
    " created TEXT NOT NULL);"
    "CREATE TABLE run(id BIGSERIAL PRIMARY KEY, lot_id BIGINT NOT NULL REFERENCES lot(id),"
    " reissue TEXT NOT NULL, started TEXT NOT NULL, finished TEXT,"
    " request BIGINT REFERENCES run(id));"
    "CREATE TABLE device(id BIGSERIAL PRIMARY KEY, lot_id BIGINT NOT NULL REFERENCES lot(id),"
    " serial TEXT NOT NULL, device_uri TEXT NOT NULL, state TEXT NOT NULL CHECK (state IN"
    "  ('intent','issued','stored','proven','failed','superseded')),"
    " key_id BYTEA, key_uri TEXT, storage TEXT, cert_id BIGINT, error TEXT,"
    " attempts INTEGER NOT NULL DEFAULT 0, updated TEXT NOT NULL, UNIQUE (lot_id, serial));"
    "CREATE TABLE certificate(id BIGSERIAL PRIMARY KEY,"
    " device_id BIGINT NOT NULL REFERENCES device(id), device_serial TEXT NOT NULL,"
    " issuer TEXT NOT NULL, cert_serial TEXT NOT NULL, pubkey_sha256 TEXT NOT NULL,"
    " sha256 TEXT NOT NULL, not_after TEXT NOT NULL, key_id BYTEA NOT NULL,"
    " der BYTEA NOT NULL, issued TEXT NOT NULL, superseded TEXT,"
    " superseded_run BIGINT REFERENCES run(id), device_uri TEXT, retired TEXT,"
    " CONSTRAINT certificate_serial_per_issuer UNIQUE (issuer, cert_serial),"
    " CONSTRAINT certificate_pubkey UNIQUE (pubkey_sha256));"
    "ALTER TABLE device ADD CONSTRAINT device_cert FOREIGN KEY (cert_id)"
    " REFERENCES certificate(id);"
    "CREATE UNIQUE INDEX certificate_current ON certificate(issuer, device_serial)"
    " WHERE superseded IS NULL;"
    "CREATE INDEX certificate_by_device ON certificate(device_id);"
    "CREATE TABLE audit(seq BIGINT PRIMARY KEY, at TEXT NOT NULL, lot TEXT NOT NULL,"
    " serial TEXT NOT NULL, event TEXT NOT NULL, detail TEXT NOT NULL,"
    " prev_hash TEXT NOT NULL, hash TEXT NOT NULL);"
    "CREATE INDEX audit_by_serial ON audit(lot, serial, seq);"
    "CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS"
    " $$BEGIN RAISE EXCEPTION 'the audit table is append-only'; END$$;"
    "CREATE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON audit"
    " FOR EACH ROW EXECUTE FUNCTION audit_append_only();"
    "CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit"
    " FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();"
    "CREATE TABLE station_claim(lot_id BIGINT NOT NULL REFERENCES lot(id),"
    " serial TEXT NOT NULL, identity TEXT NOT NULL, instance TEXT NOT NULL,"
    " claimed TEXT NOT NULL, PRIMARY KEY (lot_id, serial), UNIQUE (lot_id, identity));",
    /*
     * 2: one audit chain per station (chain: the station's name; "" holds the records made
     * before), each with its head, so that every chain verifies alone; and the work of a
     * lot, claimed by leases (journal_pg_lease.c): the station, a token from a sequence that
     * only grows (fencing: a write whose token is not the row's current one is refused) and
     * the lease's expiry.
     */
    "ALTER TABLE audit ADD COLUMN chain TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE audit DROP CONSTRAINT audit_pkey;"
    "ALTER TABLE audit ADD PRIMARY KEY (chain, seq);"
    "CREATE TABLE audit_head(chain TEXT PRIMARY KEY, seq BIGINT NOT NULL, hash TEXT NOT NULL);"
    "INSERT INTO audit_head(chain, seq, hash) SELECT '', split_part(value, ':', 1)::bigint,"
    " split_part(value, ':', 2) FROM meta WHERE key = 'audit_head';"
    "DELETE FROM meta WHERE key = 'audit_head';"
    "CREATE SEQUENCE lease_token;"
    "CREATE TABLE work(lot_id BIGINT NOT NULL REFERENCES lot(id), serial TEXT NOT NULL,"
    " station TEXT, token BIGINT, expires TIMESTAMPTZ, done BOOLEAN NOT NULL DEFAULT false,"
    " PRIMARY KEY (lot_id, serial));"
    "CREATE INDEX work_open ON work(lot_id) WHERE NOT done;",
    /*
     * 3: the fencing check as a function (journal_pg_lease.c), so that it goes to the server
     * in one pipeline with the write it guards: it locks the row's work entry and refuses a
     * write whose lease token is not the row's (JOURNAL_PG_REFUSED_CLASS, the line as said).
     */
    "CREATE FUNCTION prov_fence(p_lot BIGINT, p_serial TEXT, p_token BIGINT) RETURNS void"
    " LANGUAGE plpgsql AS $$"
    "DECLARE w_token BIGINT; w_station TEXT;"
    "BEGIN"
    " SELECT token, coalesce(station, '') INTO w_token, w_station FROM work"
    "  WHERE lot_id = p_lot AND serial = p_serial FOR UPDATE;"
    " IF FOUND AND (p_token <> 0 OR w_token IS NOT NULL) AND w_token IS DISTINCT FROM p_token"
    " THEN"
    "  RAISE EXCEPTION USING ERRCODE = '" JOURNAL_PG_REFUSED_CLASS "001', MESSAGE = format("
    "   'serial %s: this station''s lease on the row was taken over (now %s); its write is"
    " refused', p_serial,"
    "   CASE WHEN w_station <> '' THEN 'station ' || w_station ELSE 'released' END);"
    " END IF;"
    "END$$;",
    /*
     * 4: a claim in one statement (journal_pg_lease.c): the row's work entry made when the
     * lot has none yet, taken when nobody holds a live lease on it (FOR UPDATE SKIP LOCKED: a
     * row another claimer is taking is not waited for), else who holds it; and who finished a
     * row and when (done_by, done_at), so that a station does not read back, row by row, what
     * another station finished while it ran (doc/ledger.md, "Work distribution"). outcome:
     * 'mine' (token: the lease's), 'held' (holder: the station holding it), 'done' (finished,
     * read as such), 'finished' (done by holder at or after p_since). at: the claim's time,
     * the p_since of the station's later claims.
     */
    "ALTER TABLE work ADD COLUMN done_by TEXT, ADD COLUMN done_at TIMESTAMPTZ;"
    "CREATE FUNCTION prov_claim(p_lot BIGINT, p_serial TEXT, p_station TEXT, p_seconds INTEGER,"
    " p_reopen BOOLEAN, p_since TIMESTAMPTZ, OUT token BIGINT, OUT holder TEXT,"
    " OUT outcome TEXT, OUT at TIMESTAMPTZ) LANGUAGE plpgsql AS $$"
    "DECLARE w work%ROWTYPE;"
    "BEGIN"
    " at := now();"
    " INSERT INTO work(lot_id, serial) VALUES (p_lot, p_serial) ON CONFLICT DO NOTHING;"
    " SELECT * INTO w FROM work c WHERE c.lot_id = p_lot AND c.serial = p_serial"
    "  AND (NOT c.done OR p_reopen) AND (c.station IS NULL OR c.expires < now())"
    "  FOR UPDATE SKIP LOCKED;"
    " IF FOUND THEN"
    "  UPDATE work c SET station = p_station, token = nextval('lease_token'),"
    "   expires = now() + p_seconds * interval '1 second', done = false"
    "   WHERE c.lot_id = p_lot AND c.serial = p_serial RETURNING c.token INTO token;"
    "  holder := p_station; outcome := 'mine'; RETURN;"
    " END IF;"
    " SELECT * INTO w FROM work c WHERE c.lot_id = p_lot AND c.serial = p_serial;"
    " holder := CASE WHEN w.done THEN coalesce(w.done_by, '?') ELSE coalesce(w.station, '?') END;"
    " outcome := CASE WHEN NOT w.done THEN 'held'"
    "  WHEN NOT p_reopen AND p_since IS NOT NULL AND w.done_at >= p_since"
    "   AND w.done_by IS DISTINCT FROM p_station THEN 'finished' ELSE 'done' END;"
    "END$$;",
    /*
     * 5: a station's audit record chained by the server (journal_pg.c, pg_audit_chain), so
     * that a transition's write needs no answer before it: prov_audit reads the chain's head
     * (under the station's lock, which the transaction holds) and hashes the record exactly
     * as provisioner/support/audit_hash.c does: SHA-256 of the previous hash's 32 bytes, the
     * sequence number as 8 bytes big-endian, then each of at, lot, serial, event, detail as
     * its length (4 bytes big-endian) and its bytes in the client's encoding, the bytes a
     * client reads back and `ledger verify` hashes again. prov_step is a row's transition in
     * one call: the fencing check, the row's update and its audit record.
     */
    "CREATE FUNCTION prov_audit(p_chain TEXT, p_at TEXT, p_lot TEXT, p_serial TEXT,"
    " p_event TEXT, p_detail TEXT) RETURNS void LANGUAGE plpgsql AS $$"
    "DECLARE h_seq BIGINT; h_hash TEXT; b BYTEA;"
    " enc TEXT := current_setting('client_encoding');"
    "BEGIN"
    " SELECT seq, hash INTO h_seq, h_hash FROM audit_head WHERE chain = p_chain;"
    " IF NOT FOUND THEN h_seq := 0; h_hash := repeat('0', 64); END IF;"
    " h_seq := h_seq + 1;"
    " b := decode(h_hash, 'hex') || int8send(h_seq);"
    " b := b || int4send(octet_length(convert_to(p_at, enc))) || convert_to(p_at, enc);"
    " b := b || int4send(octet_length(convert_to(p_lot, enc))) || convert_to(p_lot, enc);"
    " b := b || int4send(octet_length(convert_to(p_serial, enc))) || convert_to(p_serial, enc);"
    " b := b || int4send(octet_length(convert_to(p_event, enc))) || convert_to(p_event, enc);"
    " b := b || int4send(octet_length(convert_to(p_detail, enc))) || convert_to(p_detail, enc);"
    " INSERT INTO audit(chain, seq, at, lot, serial, event, detail, prev_hash, hash)"
    "  VALUES (p_chain, h_seq, p_at, p_lot, p_serial, p_event, p_detail, h_hash,"
    "  encode(sha256(b), 'hex'));"
    " INSERT INTO audit_head(chain, seq, hash) VALUES (p_chain, h_seq, encode(sha256(b), 'hex'))"
    "  ON CONFLICT (chain) DO UPDATE SET seq = excluded.seq, hash = excluded.hash;"
    "END$$;"
    "CREATE FUNCTION prov_step(p_lot BIGINT, p_serial TEXT, p_token BIGINT, p_device_uri TEXT,"
    " p_state TEXT, p_key_id BYTEA, p_key_uri TEXT, p_storage TEXT, p_cert_id BIGINT,"
    " p_error TEXT, p_attempts INTEGER, p_updated TEXT, p_id BIGINT, p_chain TEXT, p_at TEXT,"
    " p_alot TEXT, p_aserial TEXT, p_event TEXT, p_detail TEXT) RETURNS void"
    " LANGUAGE plpgsql AS $$"
    "BEGIN"
    " PERFORM prov_fence(p_lot, p_serial, p_token);"
    " UPDATE device SET device_uri = p_device_uri, state = p_state, key_id = p_key_id,"
    "  key_uri = p_key_uri, storage = p_storage, cert_id = nullif(p_cert_id, 0),"
    "  error = p_error, attempts = p_attempts, updated = p_updated WHERE id = p_id;"
    " PERFORM prov_audit(p_chain, p_at, p_alot, p_aserial, p_event, p_detail);"
    "END$$;",
};

#define SCHEMA_VERSION ((int)(sizeof(schema_steps) / sizeof(schema_steps[0])))

int journal_pg_schema_newest(void)
{
    return SCHEMA_VERSION;
}

/* Ends a failed transaction; on the connection, one statement at a time as every other. */
static void pg_rollback(struct journal_pg *j)
{
    pthread_mutex_lock(&j->db.conn_lock);
    j->db.n_round_trips++;
    j->db.n_statements++;
    PQclear(PQexec(j->db.conn, "ROLLBACK"));
    pthread_mutex_unlock(&j->db.conn_lock);
}

/* Closes the transaction, rolling back what the server saw of it. */
static void txn_abort(struct journal_pg *j)
{
    j->step_at = 0;
    free(j->fin_serial);
    j->fin_serial = NULL;
    if (journal_pg_txn_close(&j->db)) {
        pg_rollback(j);
    }
}

/*
 * Opens a transaction: BEGIN and the transaction-scoped advisory lock of lock_sql (param: its
 * $1, or NULL), sent with the transaction's first statement (journal_pg_defer).
 */
static int begin_locked(struct journal_pg *j, const char *lock_sql, const char *param)
{
    int r;

    journal_pg_txn_open(&j->db);
    r = journal_pg_defer(&j->db, "begin", NULL, NULL, "BEGIN", "");
    r = r ? r : journal_pg_defer(&j->db, "begin", NULL, NULL, lock_sql, param ? "t" : "", param);
    if (r < 0) {
        txn_abort(j);
    }
    return r;
}

/*
 * A transaction takes its station's lock (LOCK_STATION_CLASS, hash of the station's name):
 * the station's audit chain needs one order, other stations' transactions run beside it.
 * What several stations touch at once is ordered by the database itself: a row by FOR
 * UPDATE, its lease by the fencing check, a lot's creation by its UNIQUE name. BEGIN and the
 * lock go to the server with the transaction's first statement: one round trip. The chain's
 * head (which only this station's transactions move, under that lock) is read by the server
 * itself when it appends a record (prov_audit, schema step 5).
 */
static int pg_begin(struct journal_store *s)
{
    struct journal_pg *j = journal_pg_of(s);

    j->step_at = 0;
    return begin_locked(j, "SELECT pg_advisory_xact_lock(" LOCK_STATION_CLASS ", hashtext($1))",
                        j->station);
}

static int pg_end(struct journal_store *s, int r)
{
    struct journal_pg *j = journal_pg_of(s);
    bool is_broken;
    bool is_fin = false;
    int pid;

    /* a row finished: its lease ends in the same transaction (no round trip of its own) */
    if (r == 0 && j->fin_serial != NULL) {
        r = journal_pg_lease_end_with(&j->leases, j->fin_lot, j->fin_serial, &is_fin);
    }
    if (r != 0) {
        txn_abort(j);
        return r;
    }
    j->step_at = 0;
    pid = PQbackendPID(j->db.conn);
    /* a COMMIT is never sent twice: once sent, its outcome is the server's to say */
    j->db.is_txn_sent = true;
    r = journal_pg_run(&j->db, "commit", "COMMIT", "");
    is_broken = PQstatus(j->db.conn) != CONNECTION_OK;
    journal_pg_txn_close(&j->db);
    if (r < 0 && is_broken) {
        free(j->fin_serial); /* its lease stays listed: ended by token later, or it expires */
        j->fin_serial = NULL;
        j->db.in_doubt_pid = pid; /* the next session waits for it (await_in_doubt) */
        /*
         * The server may have committed: libpq's words for the broken connection would hide
         * that. Nothing is done on the strength of this transition; the next one (or the
         * next run) reads the row back from the ledger.
         */
        prov_error_clear();
        return prov_fail(PROV_ERR_JOURNAL,
                         "journal %s: the connection broke during the COMMIT: its outcome is "
                         "unknown, so nothing is done on its strength; the row is read back from "
                         "the ledger when the same command runs again",
                         j->base.name);
    }
    if (r < 0) {
        pg_rollback(j);
    }
    if (r == 0 && is_fin) {
        journal_pg_lease_forget(&j->leases, j->fin_lot, j->fin_serial);
    }
    free(j->fin_serial);
    j->fin_serial = NULL;
    return r;
}

static int read_version(struct journal_pg *j, int *version)
{
    PGresult *res;

    *version = 0;
    res = journal_pg_exec(&j->db, "cannot read its schema version", NULL, NULL, 0,
                          "SELECT to_regclass('schema_version') IS NOT NULL", "");
    if (res == NULL) {
        return PROV_ERR_JOURNAL;
    }
    if (strcmp(PQgetvalue(res, 0, 0), "t") == 0) {
        PQclear(res);
        res = journal_pg_exec(&j->db, "cannot read its schema version", NULL, NULL, 0,
                              "SELECT coalesce(max(version), 0) FROM schema_version", "");
        if (res == NULL) {
            return PROV_ERR_JOURNAL;
        }
        *version = (int)journal_pg_ll(res, 0, 0);
    }
    PQclear(res);
    return 0;
}

static int refuse_newer(struct journal_pg *j, int version)
{
    return prov_fail(PROV_ERR_JOURNAL,
                     "journal %s: schema version %d is newer than this provisioner's (%d); use "
                     "the provisioner that wrote it",
                     j->base.name, version, SCHEMA_VERSION);
}

/*
 * Runs the steps the ledger lacks, in one transaction under the schema lock (DDL is
 * transactional here: a kill leaves the ledger as it was). Stations keep running: their
 * transactions wait for the schema lock's holder only where they touch a table it alters.
 */
int journal_pg_migrate(struct journal_store *s, const struct journal_upgrade_hook *hook, int *from,
                       int *to)
{
    struct journal_pg *j = journal_pg_of(s);
    const int target = SCHEMA_VERSION;
    int version = 0;
    int r;

    /* migrations queue behind each other; no station runs (the writer lock is exclusive) */
    r = begin_locked(j, "SELECT pg_advisory_xact_lock(" LOCK_SCHEMA ")", NULL);
    r = r ? r : read_version(j, &version);
    if (r == 0 && version > SCHEMA_VERSION) {
        r = refuse_newer(j, version);
    }
    for (int i = version; r == 0 && i < target; i++) {
        PGresult *res;

        pthread_mutex_lock(&j->db.conn_lock);
        res = PQexec(j->db.conn, schema_steps[i]);
        pthread_mutex_unlock(&j->db.conn_lock);
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            r = prov_fail(PROV_ERR_JOURNAL, "journal %s: cannot set up its schema: %s",
                          j->base.name, PQresultErrorMessage(res));
        }
        PQclear(res);
        r = r ? r
              : journal_pg_run(&j->db, "schema",
                               "INSERT INTO schema_version(version, tool)"
                               " VALUES ($1, 'provisioner')",
                               "i", (long long)(i + 1));
    }
    if (r == 0 && version > 0 && version < target && hook != NULL) {
        r = hook->fn(hook->ctx, s, version, target);
    }
    r = pg_end(s, r);
    if (r == 0) {
        j->schema_version = version > target ? version : target;
        *from = version;
        *to = j->schema_version;
    }
    return r;
}

/*
 * A writer creates the schema of an empty database (one transaction, so a station and a batch
 * starting together do not both make it); an older schema waits for `ledger migrate`, which
 * the operator runs (doc/ledger.md), and a newer one is refused.
 */
static int schema_check(struct journal_pg *j, const struct journal_upgrade_hook *hook)
{
    int version = 0;
    int from = 0;
    int to = 0;
    int r;

    r = read_version(j, &version);
    if (r < 0) {
        return r;
    }
    if (version > SCHEMA_VERSION) {
        return refuse_newer(j, version);
    }
    if (version == 0 && j->db.mode != JOURNAL_STORE_READ) {
        return journal_pg_migrate(&j->base, hook, &from, &to);
    }
    if (version == 0) {
        return prov_fail(PROV_ERR_INPUT,
                         "journal %s: no ledger in this database (run "
                         "`provisioner ledger init`)",
                         j->base.name);
    }
    /* readers too: an older ledger lacks what the reads ask for (the chains of version 2) */
    if (version < SCHEMA_VERSION) {
        return prov_fail(PROV_ERR_JOURNAL,
                         "journal %s: schema version %d is older than this provisioner's (%d); "
                         "run `provisioner ledger migrate`",
                         j->base.name, version, SCHEMA_VERSION);
    }
    j->schema_version = version;
    return 0;
}

static void pg_close(struct journal_store *s)
{
    struct journal_pg *j = journal_pg_of(s);

    if (j == NULL) {
        return;
    }
    journal_pg_leases_stop(&j->leases);
    journal_pg_db_close(&j->db);
    free(j->fin_serial);
    free(j->station);
    free(j->base.name);
    free(j);
}

static int pg_schema_version(const struct journal_store *s)
{
    return ((const struct journal_pg *)s)->schema_version;
}

static const struct journal_store_ops pg_ops;

bool journal_pg_is_uri(const char *path)
{
    return prov_pg_is_uri(path);
}

int journal_pg_open(const char *uri, const char *password_spec, const char *station,
                    enum journal_store_mode mode, const struct journal_upgrade_hook *hook,
                    struct journal_store **out)
{
    struct journal_pg *j = calloc(1, sizeof(*j));
    int r = PROV_ERR_NOMEM;

    *out = NULL;
    if (j == NULL || (j->base.name = prov_pg_mask_uri(uri)) == NULL ||
        (j->db.conninfo = strdup(uri)) == NULL ||
        (j->station = strdup(station ? station : "")) == NULL) {
        pg_close(j ? &j->base : NULL);
        return prov_fail(PROV_ERR_NOMEM, "journal: out of memory");
    }
    j->base.ops = &pg_ops;
    journal_pg_db_init(&j->db, j->base.name, mode);
    journal_pg_leases_init(&j->leases, &j->db, j->station, JOURNAL_LEASE_DEFAULT);
    r = prov_pg_password(password_spec, "ledger password", &j->db.password);
    if (r < 0) {
        goto out;
    }
    r = journal_pg_db_connect(&j->db);
    if (r == 0 && mode == JOURNAL_STORE_ADMIN) {
        r = read_version(j, &j->schema_version); /* ledger init/migrate decide */
    } else if (r == 0) {
        r = schema_check(j, hook);
    }
    if (r == 0) {
        *out = &j->base;
        j = NULL;
    }
out:
    pg_close(j ? &j->base : NULL);
    return r;
}

/* A new row's id, when its INSERT's result comes back (w lives until the transaction ends). */
static void row_inserted(void *ctx, const PGresult *res)
{
    struct journal_row *w = ctx;

    if (PQntuples(res) == 1) {
        w->id = journal_pg_ll(res, 0, 0);
    }
}

static int pg_row_put(struct journal_store *s, struct journal_row *w)
{
    struct journal_pg *j = journal_pg_of(s);
    const char *state = prov_journal_state_name(w->state);
    int r;

    /* every write of a row is fenced: a station whose lease was taken over writes nothing */
    r = journal_pg_fence(&j->leases, w->lot_id, w->serial);
    if (r < 0) {
        return r;
    }
    if (w->state == PROV_JOURNAL_PROVEN && w->error == NULL) {
        /* finished, with no failure noted beside it (an outside change fails the row) */
        free(j->fin_serial);
        j->fin_serial = strdup(w->serial); /* out of memory: the lease ends on its own */
        j->fin_lot = w->lot_id;
    }
    /*
     * An update's result is its success: sent with the next statement (the COMMIT, mostly).
     * When the transition's audit record follows at once, the fence, the update and the
     * record become one call (pg_audit_chain).
     */
    if (w->id != 0) {
        r = journal_pg_defer(&j->db, w->serial, NULL, NULL,
                             "UPDATE device SET device_uri = $1, state = $2, key_id = $3,"
                             " key_uri = $4, storage = $5, cert_id = nullif($6::bigint, 0),"
                             " error = $7, attempts = $8, updated = $9 WHERE id = $10",
                             "ttbttititi", w->device_uri, state, w->key_id, w->key_id_len,
                             w->key_uri, w->storage, w->cert_id, w->error, (long long)w->attempts,
                             w->updated, w->id);
        j->step_at = r == 0 ? j->db.n_pending : 0;
        return r;
    }
    /* a new row's id is nothing its transition needs before the COMMIT: sent with it too */
    return journal_pg_defer(&j->db, w->serial, row_inserted, w,
                            "INSERT INTO device(lot_id, serial, device_uri, state, key_id, key_uri,"
                            " storage, cert_id, error, attempts, updated) VALUES ($1, $2, $3, $4,"
                            " $5, $6, $7, nullif($8::bigint, 0), $9, $10, $11) RETURNING id",
                            "itttbttitit", w->lot_id, w->serial, w->device_uri, state, w->key_id,
                            w->key_id_len, w->key_uri, w->storage, w->cert_id, w->error,
                            (long long)w->attempts, w->updated);
}

/* Runs sql and copies column 0 of its first row into out ("" and *found false when none). */
static int pg_text(struct journal_pg *j, const char *what, char *out, size_t cap, bool *found,
                   const char *sql, const char *types, ...)
{
    PGresult *res;
    va_list ap;

    va_start(ap, types);
    res = journal_pg_vexec(&j->db, what, sql, types, ap);
    va_end(ap);
    out[0] = '\0';
    *found = false;
    if (res == NULL) {
        return PROV_ERR_JOURNAL;
    }
    if (PQntuples(res) > 0) {
        journal_pg_copy(res, 0, 0, out, cap);
        *found = true;
    }
    PQclear(res);
    return 0;
}

static int pg_lot_name(struct journal_store *s, long long lot_id, char *out, size_t cap)
{
    struct journal_pg *j = journal_pg_of(s);
    bool found;
    int r;

    /* a lot's name never changes: asked for by every transition, read once */
    if (lot_id == j->lot_id && j->lot_id != 0) {
        snprintf(out, cap, "%s", j->lot_name);
        return 0;
    }
    r = pg_text(j, "lot", out, cap, &found, "SELECT name FROM lot WHERE id = $1", "i", lot_id);
    if (r == 0 && !found) {
        r = prov_fail(PROV_ERR_JOURNAL, "journal %s: no lot %lld", s->name, lot_id);
    }
    if (r == 0 && strlen(out) < sizeof(j->lot_name)) {
        snprintf(j->lot_name, sizeof(j->lot_name), "%s", out);
        j->lot_id = lot_id;
    }
    return r;
}

static int pg_lot_find(struct journal_store *s, const char *name, long long *id)
{
    char v[32];
    bool found;
    int r;

    r = pg_text(journal_pg_of(s), name, v, sizeof(v), &found, "SELECT id FROM lot WHERE name = $1",
                "t", name);
    *id = found ? strtoll(v, NULL, 10) : 0;
    return r;
}

static int pg_lot_insert(struct journal_store *s, const char *name, const char *manifest,
                         const char *now, long long *id)
{
    char v[32];
    bool found;
    int r;

    /* another station may have made the lot since this one looked: then it is that one */
    r = pg_text(journal_pg_of(s), name, v, sizeof(v), &found,
                "INSERT INTO lot(name, manifest, created) VALUES ($1, $2, $3)"
                " ON CONFLICT (name) DO NOTHING RETURNING id",
                "ttt", name, manifest, now);
    if (r == 0 && !found) {
        r = pg_text(journal_pg_of(s), name, v, sizeof(v), &found,
                    "SELECT id FROM lot WHERE name = $1", "t", name);
    }
    *id = found ? strtoll(v, NULL, 10) : 0;
    return r;
}

int journal_pg_issuer(const unsigned char *der, size_t len, char hex[65])
{
    const unsigned char *p = der;
    X509 *cert = d2i_X509(NULL, &p, (long)len);
    unsigned char *name = NULL;
    unsigned char md[32];
    unsigned int md_len = 0;
    int n = cert ? i2d_X509_NAME(X509_get_issuer_name(cert), &name) : -1;
    int ok = n > 0 && EVP_Digest(name, (size_t)n, md, &md_len, EVP_sha256(), NULL) == 1;

    OPENSSL_free(name);
    X509_free(cert);
    if (!ok || md_len != 32) {
        return prov_fail(PROV_ERR_JOURNAL, "journal: a certificate to record does not parse");
    }
    journal_hex(md, 32, hex);
    return 0;
}

static int pg_cert_insert(struct journal_store *s, const struct journal_cert *c, long long *cert_id,
                          enum journal_unique *broken)
{
    struct journal_pg *j = journal_pg_of(s);
    char issuer[65];
    char state[6];
    char constraint[64];
    PGresult *res;
    int r;

    r = journal_pg_issuer(c->der, c->der_len, issuer);
    if (r < 0) {
        return r;
    }
    res = journal_pg_exec(&j->db, c->cert_serial, state, constraint, sizeof(constraint),
                          "INSERT INTO certificate(device_id, device_serial, issuer, cert_serial,"
                          " pubkey_sha256, sha256, not_after, key_id, der, issued, device_uri)"
                          " SELECT $1, d.serial, $2, $3, $4, $5, $6, $7, $8, $9, $10"
                          " FROM device d WHERE d.id = $1 RETURNING id",
                          "itttttbbtt", c->device_id, issuer, c->cert_serial, c->pubkey_sha256,
                          c->sha256, c->not_after, c->key_id, c->key_id_len, c->der, c->der_len,
                          c->issued, c->device_uri);
    if (res == NULL && strcmp(state, "23505") == 0) {
        prov_error_clear(); /* the journal names the broken rule itself */
        *broken = strcmp(constraint, "certificate_pubkey") == 0    ? JOURNAL_UNIQUE_PUBKEY
                  : strcmp(constraint, "certificate_current") == 0 ? JOURNAL_UNIQUE_CURRENT
                                                                   : JOURNAL_UNIQUE_CERT_SERIAL;
        return PROV_ERR_ALREADY_ISSUED;
    }
    if (res == NULL) {
        return PROV_ERR_JOURNAL;
    }
    if (PQntuples(res) != 1) {
        PQclear(res);
        return prov_fail(PROV_ERR_JOURNAL, "journal %s: no device row %lld", s->name, c->device_id);
    }
    *cert_id = journal_pg_ll(res, 0, 0);
    PQclear(res);
    return 0;
}

static int pg_cert_supersede(struct journal_store *s, long long cert_id, const char *now,
                             long long run_id)
{
    return journal_pg_run(&journal_pg_of(s)->db, "certificate",
                          "UPDATE certificate SET superseded = $1,"
                          " superseded_run = nullif($2::bigint, 0) WHERE id = $3",
                          "tii", now, run_id, cert_id);
}

static int pg_cert_unretired(struct journal_store *s, long long dev_id, const char *cert_serial,
                             char *key_hex, char *device, size_t cap, bool *found)
{
    PGresult *res;
    unsigned char *id;
    size_t n = 0;

    key_hex[0] = '\0';
    device[0] = '\0';
    *found = false;
    res = journal_pg_exec(&journal_pg_of(s)->db, cert_serial, NULL, NULL, 0,
                          "SELECT key_id, device_uri FROM certificate WHERE device_id = $1"
                          " AND cert_serial = $2 AND superseded IS NOT NULL AND retired IS NULL",
                          "it", dev_id, cert_serial);
    if (res == NULL) {
        return PROV_ERR_JOURNAL;
    }
    if (PQntuples(res) > 0) {
        id = journal_pg_bytes(res, 0, 0, &n);
        if (id != NULL && n > 0 && n <= PROV_JOURNAL_KEY_ID_MAX) {
            journal_hex(id, n, key_hex);
        }
        free(id);
        journal_pg_copy(res, 0, 1, device, cap);
        *found = true;
    }
    PQclear(res);
    return 0;
}

static int pg_cert_retire(struct journal_store *s, long long dev_id, const char *cert_serial,
                          const char *now)
{
    return journal_pg_run(&journal_pg_of(s)->db, cert_serial,
                          "UPDATE certificate SET retired = $1 WHERE device_id = $2"
                          " AND cert_serial = $3",
                          "tit", now, dev_id, cert_serial);
}

static int pg_cert_move(struct journal_store *s, long long dev_id, const char *old_uri,
                        const char *new_uri)
{
    return journal_pg_run(&journal_pg_of(s)->db, "certificate",
                          "UPDATE certificate SET device_uri = $1 WHERE device_uri = $2"
                          " AND device_id = $3",
                          "tti", new_uri, old_uri, dev_id);
}

static int pg_run_newest(struct journal_store *s, long long lot_id, const char *list, long long *id,
                         long long *request, bool *is_unfinished)
{
    PGresult *res;

    *id = 0;
    *request = 0;
    *is_unfinished = false;
    res = journal_pg_exec(&journal_pg_of(s)->db, "run", NULL, NULL, 0,
                          "SELECT id, coalesce(request, id), finished IS NULL FROM run"
                          " WHERE lot_id = $1 AND reissue = $2 ORDER BY id DESC LIMIT 1",
                          "it", lot_id, list);
    if (res == NULL) {
        return PROV_ERR_JOURNAL;
    }
    if (PQntuples(res) > 0) {
        *id = journal_pg_ll(res, 0, 0);
        *request = journal_pg_ll(res, 0, 1);
        *is_unfinished = strcmp(PQgetvalue(res, 0, 2), "t") == 0;
    }
    PQclear(res);
    return 0;
}

static int pg_run_reissued_proven(struct journal_store *s, long long lot_id, const char *serial,
                                  long long request, bool *out)
{
    char v[8];

    return pg_text(journal_pg_of(s), serial, v, sizeof(v), out,
                   "SELECT 1 FROM certificate c JOIN device d ON d.id = c.device_id"
                   " JOIN run r ON r.id = c.superseded_run WHERE d.lot_id = $1 AND"
                   " d.serial = $2 AND d.state = 'proven' AND coalesce(r.request, r.id) = $3"
                   " LIMIT 1",
                   "iti", lot_id, serial, request);
}

static int pg_run_insert(struct journal_store *s, long long lot_id, const char *list,
                         const char *now, long long request, long long *id)
{
    char v[32];
    bool found;
    int r;

    r = pg_text(journal_pg_of(s), "run", v, sizeof(v), &found,
                "INSERT INTO run(lot_id, reissue, started, request) VALUES ($1, $2, $3,"
                " nullif($4::bigint, 0)) RETURNING id",
                "itti", lot_id, list, now, request);
    *id = found ? strtoll(v, NULL, 10) : 0;
    if (r == 0 && request == 0) {
        r = journal_pg_run(&journal_pg_of(s)->db, "run",
                           "UPDATE run SET request = id WHERE id = $1", "i", *id);
    }
    return r;
}

static int pg_run_finish(struct journal_store *s, long long run_id, const char *now, char *lot,
                         size_t cap)
{
    struct journal_pg *j = journal_pg_of(s);
    PGresult *res;
    char *heads = NULL;
    bool found;
    int r;

    r = pg_text(j, "run", lot, cap, &found,
                "UPDATE run r SET finished = $1 FROM lot l WHERE l.id = r.lot_id AND r.id = $2"
                " RETURNING l.name",
                "ti", now, run_id);
    if (r < 0) {
        return r;
    }
    /*
     * The lot's anchor: the heads of the other stations' chains as this run ends, recorded in
     * this station's chain, so that no chain can be rewritten whole behind the others' backs
     * (ledger verify compares every anchored head with the chain it names).
     */
    res = journal_pg_exec(&j->db, "anchor", NULL, NULL, 0,
                          "SELECT coalesce(string_agg(chain || ':' || seq || ':' || hash, ' '"
                          " ORDER BY chain), '') FROM audit_head WHERE chain <> $1",
                          "t", j->station);
    if (res == NULL) {
        return PROV_ERR_JOURNAL;
    }
    heads = strdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    if (heads == NULL) {
        return PROV_ERR_NOMEM;
    }
    if (heads[0] != '\0') {
        r = journal_audit_append(s, lot, "", "anchor", heads);
    }
    free(heads);
    return r;
}

int journal_pg_audit_hash(struct journal_store *s, const char *chain, long long seq, char hash[65])
{
    bool found;
    int r;

    r = pg_text(journal_pg_of(s), "audit", hash, 65, &found,
                "SELECT hash FROM audit WHERE chain = $1 AND seq = $2", "ti", chain, seq);
    if (r == 0 && !found) {
        hash[0] = '\0';
    }
    return r;
}

/* The head "seq:hash" in meta; an empty chain has seq 0 and the zero hash. */
static int pg_audit_head(struct journal_store *s, long long *seq, char hash[65])
{
    struct journal_pg *j = journal_pg_of(s);
    char v[96];
    bool found = true;
    const char *colon;
    int r = 0;

    *seq = 0;
    memcpy(hash, JOURNAL_ZERO_HASH, 65);
    r = pg_text(j, "audit", v, sizeof(v), &found,
                "SELECT seq || ':' || hash FROM audit_head WHERE chain = $1", "t", j->station);
    if (r < 0 || !found) {
        return r;
    }
    colon = strchr(v, ':');
    if (colon == NULL || strlen(colon + 1) != 64) {
        return prov_fail(PROV_ERR_JOURNAL, "journal %s: audit head is corrupt", s->name);
    }
    *seq = strtoll(v, NULL, 10);
    memcpy(hash, colon + 1, 65);
    return 0;
}

/*
 * A record with its hash computed here (journal_audit.c); the ledger's own records are
 * chained by the server (pg_audit_chain), so this is for a record made elsewhere.
 */
static int pg_audit_append(struct journal_store *s, const struct journal_audit_record *a)
{
    struct journal_pg *j = journal_pg_of(s);

    return journal_pg_defer(&j->db, "audit", NULL, NULL,
                            "WITH a AS (INSERT INTO audit(chain, seq, at, lot, serial, event,"
                            " detail, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9))"
                            " INSERT INTO audit_head(chain, seq, hash) VALUES ($1, $2, $9)"
                            " ON CONFLICT (chain) DO UPDATE SET seq = excluded.seq,"
                            " hash = excluded.hash",
                            "tittttttt", j->station, a->seq, a->at, a->lot, a->serial, a->event,
                            a->detail, a->prev_hash, a->hash);
}

/*
 * The station's next record, chained by the server under the station's lock (prov_audit,
 * schema step 5: the head read, the same hash as journal_audit.c computes, the record and
 * the new head), sent with the transaction's next statement (its COMMIT, mostly). When the
 * row's fenced update is what was queued last, the three become one call, prov_step.
 */
static int pg_audit_chain(struct journal_store *s, const char *at, const char *lot,
                          const char *serial, const char *event, const char *detail)
{
    struct journal_pg *j = journal_pg_of(s);
    bool is_step = j->step_at != 0 && j->step_at == j->db.n_pending && j->step_at >= 2;

    j->step_at = 0;
    if (is_step) {
        /* prov_fence's 3 arguments and the update's 10, then the record's */
        return journal_pg_defer_merged(&j->db, 2, serial,
                                       "SELECT prov_step($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,"
                                       " $11, $12, $13, $14, $15, $16, $17, $18, $19)",
                                       "tttttt", j->station, at, lot, serial, event, detail);
    }
    return journal_pg_defer(&j->db, "audit", NULL, NULL,
                            "SELECT prov_audit($1, $2, $3, $4, $5, $6)", "tttttt", j->station, at,
                            lot, serial, event, detail);
}

static int pg_claim_of(struct journal_store *s, long long lot_id, const char *identity, char *out,
                       size_t cap)
{
    bool found;

    return pg_text(journal_pg_of(s), identity, out, cap, &found,
                   "SELECT serial FROM station_claim WHERE lot_id = $1 AND identity = $2", "it",
                   lot_id, identity);
}

static int pg_claim_is_taken(struct journal_store *s, long long lot_id, const char *serial,
                             bool *out)
{
    char v[8];

    return pg_text(journal_pg_of(s), serial, v, sizeof(v), out,
                   "SELECT 1 WHERE EXISTS (SELECT 1 FROM station_claim WHERE lot_id = $1"
                   " AND serial = $2) OR EXISTS (SELECT 1 FROM device WHERE lot_id = $1"
                   " AND serial = $2)",
                   "it", lot_id, serial);
}

static int pg_claim_insert(struct journal_store *s, long long lot_id, const char *serial,
                           const char *identity, const char *instance, const char *now,
                           bool *is_claimed)
{
    char state[6];
    char constraint[64];
    PGresult *res;

    res = journal_pg_exec(&journal_pg_of(s)->db, serial, state, constraint, sizeof(constraint),
                          "INSERT INTO station_claim(lot_id, serial, identity, instance, claimed)"
                          " VALUES ($1, $2, $3, $4, $5)",
                          "itttt", lot_id, serial, identity, instance, now);
    *is_claimed =
        res == NULL && strcmp(state, "23505") == 0 && strcmp(constraint, "station_claim_pkey") == 0;
    PQclear(res);
    return res == NULL ? PROV_ERR_JOURNAL : 0;
}

/* A row lock: an advisory lock held by a connection of its own while it is open. */
struct pg_row_lock {
    struct prov_journal_row_lock base;
    PGconn *conn;
};

static void row_lock_release(struct prov_journal_row_lock *l)
{
    struct pg_row_lock *rl = (struct pg_row_lock *)l;

    PQfinish(rl->conn);
    free(rl);
}

static int pg_row_lock(struct journal_store *s, long long lot_id, const char *serial,
                       struct prov_journal_row_lock **out)
{
    struct journal_pg *j = journal_pg_of(s);
    struct pg_row_lock *rl = calloc(1, sizeof(*rl));
    const char *values[1];
    char *key = NULL;
    PGresult *res = NULL;
    int r = 0;

    *out = NULL;
    if (rl == NULL || asprintf(&key, "row:%lld:%s", lot_id, serial) < 0) {
        free(rl);
        return PROV_ERR_NOMEM;
    }
    values[0] = key;
    rl->conn = journal_pg_connect(&j->db);
    if (rl->conn == NULL || PQstatus(rl->conn) != CONNECTION_OK) {
        r = prov_fail(PROV_ERR_JOURNAL, "journal %s: cannot connect for a row lock: %s", s->name,
                      rl->conn ? PQerrorMessage(rl->conn) : "out of memory");
    } else {
        res = PQexecParams(rl->conn, "SELECT pg_try_advisory_lock(hashtextextended($1, 0))", 1,
                           NULL, values, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            r = prov_fail(PROV_ERR_JOURNAL, "journal %s: row lock: %s", s->name,
                          PQresultErrorMessage(res));
        } else if (strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
            r = prov_fail(PROV_ERR_JOURNAL,
                          "serial %s: another station is working on this row (its row lock is "
                          "held)",
                          serial);
        }
    }
    PQclear(res);
    free(key);
    if (r < 0) {
        PQfinish(rl->conn);
        free(rl);
        return r;
    }
    rl->base.release = row_lock_release;
    *out = &rl->base;
    return 0;
}

static bool pg_is_away(struct journal_store *s)
{
    return journal_pg_of(s)->db.is_away;
}

static void pg_set_lease(struct journal_store *s, int seconds)
{
    journal_pg_of(s)->leases.seconds = seconds;
}

static int pg_lease_claim(struct journal_store *s, long long lot_id, const char *serial,
                          bool is_reopen, char *holder, size_t cap, enum prov_journal_lease *out)
{
    return journal_pg_lease_claim(&journal_pg_of(s)->leases, lot_id, serial, is_reopen, holder, cap,
                                  out);
}

static int pg_lease_scan(struct journal_store *s, long long lot_id, const char *const *serials,
                         size_t n, bool *is_other)
{
    return journal_pg_lease_scan(&journal_pg_of(s)->leases, lot_id, serials, n, is_other);
}

static int pg_lease_end(struct journal_store *s, long long lot_id, const char *serial, bool is_done)
{
    return journal_pg_lease_end(&journal_pg_of(s)->leases, lot_id, serial, is_done);
}

static const struct journal_store_ops pg_ops = {
    .close = pg_close,
    .begin = pg_begin,
    .end = pg_end,
    .lot_name = pg_lot_name,
    .lot_find = pg_lot_find,
    .lot_insert = pg_lot_insert,
    .row_get = journal_pg_row_get,
    .row_put = pg_row_put,
    .cert_insert = pg_cert_insert,
    .cert_supersede = pg_cert_supersede,
    .cert_unretired = pg_cert_unretired,
    .cert_retire = pg_cert_retire,
    .cert_move = pg_cert_move,
    .run_newest = pg_run_newest,
    .run_reissued_proven = pg_run_reissued_proven,
    .run_insert = pg_run_insert,
    .run_finish = pg_run_finish,
    .audit_head = pg_audit_head,
    .audit_append = pg_audit_append,
    .audit_chain = pg_audit_chain,
    .claim_of = pg_claim_of,
    .claim_is_taken = pg_claim_is_taken,
    .claim_insert = pg_claim_insert,
    .row_lock = pg_row_lock,
    .schema_version = pg_schema_version,
    .superseded_in_request = journal_pg_superseded_in_request,
    .last_superseded = journal_pg_last_superseded,
    .unretired_keys = journal_pg_unretired_keys,
    .row_has_cert = journal_pg_row_has_cert,
    .counts = journal_pg_counts,
    .rows_of = journal_pg_rows_of,
    .audit_foreach = journal_pg_audit_foreach,
    .audit_rows = journal_pg_audit_rows,
    .foreach_lot = journal_pg_foreach_lot,
    .foreach_device = journal_pg_foreach_device,
    .foreach_key = journal_pg_foreach_key,
    .lease_claim = pg_lease_claim,
    .lease_scan = pg_lease_scan,
    .lease_end = pg_lease_end,
    .set_lease = pg_set_lease,
    .is_away = pg_is_away,
    .audit_hash = journal_pg_audit_hash,
};
