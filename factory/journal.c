/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The journal on SQLite: opening (schema, durability settings, writer lock, crash hook) and
 * the transitions. Every transition is one BEGIN IMMEDIATE transaction that reads the row,
 * checks that the transition is legal, writes it and appends the audit record; with WAL and
 * synchronous=FULL the commit is durable when sqlite3_step returns. One connection, one
 * mutex: the audit chain needs a total order anyway, and a transition is far cheaper than
 * the key generation it records. Reads are in journal_db.c, the audit chain in
 * journal_audit.c.
 */
#include "journal.h"
#include "journal_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/sha.h>
#include <sqlite3.h>

#include "error.h"
#include "storage.h"

#define BUSY_TIMEOUT_MS 10000

static const char *const schema =
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS lot(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
    " manifest TEXT, created TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS run(id INTEGER PRIMARY KEY,"
    " lot_id INTEGER NOT NULL REFERENCES lot(id), reissue TEXT NOT NULL,"
    " started TEXT NOT NULL, finished TEXT);"
    "CREATE TABLE IF NOT EXISTS device(id INTEGER PRIMARY KEY,"
    " lot_id INTEGER NOT NULL REFERENCES lot(id), serial TEXT NOT NULL,"
    " device_uri TEXT NOT NULL,"
    " state TEXT NOT NULL CHECK (state IN"
    "  ('intent','issued','stored','proven','failed','superseded')),"
    " key_id BLOB, key_uri TEXT, storage TEXT, cert_id INTEGER REFERENCES certificate(id),"
    " error TEXT, attempts INTEGER NOT NULL DEFAULT 0, updated TEXT NOT NULL,"
    " UNIQUE (lot_id, serial));"
    /* Every certificate ever issued: a serial or a public key can be certified only once. */
    "CREATE TABLE IF NOT EXISTS certificate(id INTEGER PRIMARY KEY,"
    " device_id INTEGER NOT NULL REFERENCES device(id),"
    " cert_serial TEXT NOT NULL UNIQUE, pubkey_sha256 TEXT NOT NULL UNIQUE,"
    " sha256 TEXT NOT NULL, not_after TEXT NOT NULL, key_id BLOB NOT NULL,"
    " der BLOB NOT NULL, issued TEXT NOT NULL, superseded TEXT,"
    " superseded_run INTEGER REFERENCES run(id));"
    "CREATE TABLE IF NOT EXISTS audit(seq INTEGER PRIMARY KEY, at TEXT NOT NULL,"
    " lot TEXT NOT NULL, serial TEXT NOT NULL, event TEXT NOT NULL, detail TEXT NOT NULL,"
    " prev_hash TEXT NOT NULL, hash TEXT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS audit_by_serial ON audit(lot, serial, seq);"
    "CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit"
    " BEGIN SELECT RAISE(ABORT, 'the audit table is append-only'); END;"
    "CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit"
    " BEGIN SELECT RAISE(ABORT, 'the audit table is append-only'); END;"
    "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema', '1');";

static void crash_hook_init(struct prov_journal *j)
{
    const char *env = getenv("PROVISIONER_TEST_CRASH_AT");
    char name[32];
    long n = 0;

    j->crash_state = PROV_JOURNAL_NONE;
    if (env == NULL || sscanf(env, "%31[a-z]:%ld", name, &n) != 2 || n < 1) {
        return;
    }
    j->is_crash_at_run_end = strcmp(name, "run") == 0 && n == 1;
    j->crash_state = journal_state_parse(name);
    j->crash_after = n;
}

/*
 * Test-only pause hook: PROVISIONER_TEST_PAUSE_AT=<state>:<path> makes a writer, right after
 * each committed transition to <state>, create <path> and wait (up to 120 s) until it has
 * been removed. The station tests use it to remove a device, or hold one station, at an
 * exact instant without timing guesses.
 */
static void pause_hook_init(struct prov_journal *j)
{
    const char *env = getenv("PROVISIONER_TEST_PAUSE_AT");
    const char *colon = env ? strchr(env, ':') : NULL;
    char name[32];

    j->pause_state = PROV_JOURNAL_NONE;
    if (colon == NULL || colon[1] == '\0' || (size_t)(colon - env) >= sizeof(name)) {
        return;
    }
    memcpy(name, env, (size_t)(colon - env));
    name[colon - env] = '\0';
    j->pause_state = journal_state_parse(name);
    j->pause_path = strdup(colon + 1);
}

/* Called after the lock is released: other threads and processes go on meanwhile. */
static void pause_point(struct prov_journal *j, enum prov_journal_state s)
{
    int fd;

    if (j->pause_path == NULL || s != j->pause_state) {
        return;
    }
    fd = open(j->pause_path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd >= 0) {
        close(fd);
    }
    for (int i = 0; i < 12000 && access(j->pause_path, F_OK) == 0; i++) {
        usleep(10000);
    }
}

/* Called with j->lock held, after the commit: the transition is durable when we die. */
static void crash_point(struct prov_journal *j, enum prov_journal_state s)
{
    if (j->crash_state != PROV_JOURNAL_NONE && s == j->crash_state &&
        ++j->crash_count == j->crash_after) {
        _exit(137);
    }
}

static int take_lock(struct prov_journal *j, int how)
{
    char *lock_path = NULL;

    if (asprintf(&lock_path, "%s.lock", j->path) < 0) {
        return PROV_ERR_NOMEM;
    }
    j->lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (j->lock_fd < 0) {
        int r = prov_fail(PROV_ERR_JOURNAL, "journal %s: cannot open %s: %s", j->path, lock_path,
                          strerror(errno));

        free(lock_path);
        return r;
    }
    free(lock_path);
    if (flock(j->lock_fd, how | LOCK_NB) != 0) {
        return prov_fail(PROV_ERR_JOURNAL,
                         how == LOCK_EX ? "journal %s: in use by another batch run or station "
                                          "(lock %s.lock is held)"
                                        : "journal %s: in use by a batch run (lock %s.lock is "
                                          "held exclusively)",
                         j->path, j->path);
    }
    return 0;
}

static int journal_open(const char *path, bool writable, int lock_how, struct prov_journal **out)
{
    struct prov_journal *j = NULL;
    int flags = writable ? SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE : SQLITE_OPEN_READONLY;
    int r = PROV_ERR_NOMEM;

    *out = NULL;
    if (!writable && access(path, F_OK) != 0) {
        return prov_fail(PROV_ERR_NOT_FOUND, "journal %s: %s", path, strerror(errno));
    }
    j = calloc(1, sizeof(*j));
    if (j == NULL || (j->path = strdup(path)) == NULL) {
        free(j);
        return prov_fail(PROV_ERR_NOMEM, "journal %s: out of memory", path);
    }
    j->lock_fd = -1;
    pthread_mutex_init(&j->lock, NULL);
    pthread_mutex_init(&j->stmt_lock, NULL);
    if (writable) {
        r = take_lock(j, lock_how);
        if (r < 0) {
            goto out;
        }
    }
    if (sqlite3_open_v2(path, &j->db, flags | SQLITE_OPEN_FULLMUTEX, NULL) != SQLITE_OK) {
        r = journal_db_fail(j, "cannot open");
        goto out;
    }
    sqlite3_busy_timeout(j->db, BUSY_TIMEOUT_MS);
    if (writable &&
        (sqlite3_exec(j->db, "PRAGMA journal_mode=WAL", NULL, NULL, NULL) != SQLITE_OK ||
         sqlite3_exec(j->db, "PRAGMA synchronous=FULL", NULL, NULL, NULL) != SQLITE_OK ||
         sqlite3_exec(j->db, schema, NULL, NULL, NULL) != SQLITE_OK)) {
        r = journal_db_fail(j, "cannot set up");
        goto out;
    }
    if (sqlite3_exec(j->db, "PRAGMA foreign_keys=ON", NULL, NULL, NULL) != SQLITE_OK) {
        r = journal_db_fail(j, "cannot set up");
        goto out;
    }
    if (writable) {
        crash_hook_init(j);
        pause_hook_init(j);
    }
    *out = j;
    j = NULL;
    r = 0;
out:
    prov_journal_close(j);
    return r;
}

int prov_journal_open(const char *path, bool writable, struct prov_journal **out)
{
    return journal_open(path, writable, LOCK_EX, out);
}

int prov_journal_open_shared(const char *path, struct prov_journal **out)
{
    return journal_open(path, true, LOCK_SH, out);
}

const char *prov_journal_path(const struct prov_journal *j)
{
    return j != NULL ? j->path : NULL;
}

void prov_journal_close(struct prov_journal *j)
{
    if (j == NULL) {
        return;
    }
    journal_stmts_free(j);
    sqlite3_close(j->db);
    if (j->lock_fd >= 0) {
        close(j->lock_fd); /* releases the flock */
    }
    pthread_mutex_destroy(&j->lock);
    pthread_mutex_destroy(&j->stmt_lock);
    free(j->pause_path);
    free(j->path);
    free(j);
}

/* What every transition shares: the lock, the transaction, the row before, the lot name. */
struct txn {
    struct prov_journal_device d;
    long long dev_id;
    long long cert_id;
    char lot[256];
    char now[32];
};

static int txn_begin(struct prov_journal *j, long long lot_id, const char *serial, struct txn *t)
{
    int r;

    memset(t, 0, sizeof(*t));
    pthread_mutex_lock(&j->lock);
    r = journal_begin(j);
    if (r == 0) {
        r = journal_lot_name(j, lot_id, t->lot, sizeof(t->lot));
    }
    if (r == 0) {
        r = journal_read_device(j, lot_id, serial, &t->d, &t->dev_id, &t->cert_id);
    }
    if (r < 0) {
        journal_rollback(j);
        pthread_mutex_unlock(&j->lock);
        return r;
    }
    journal_now(t->now, sizeof(t->now));
    return 0;
}

/* Commits (or rolls back when r < 0), releases the lock, then the crash hook. */
static int txn_end(struct prov_journal *j, struct txn *t, int r, enum prov_journal_state to)
{
    r = journal_end(j, r);
    if (r == 0) {
        crash_point(j, to);
    }
    pthread_mutex_unlock(&j->lock);
    if (r == 0) {
        pause_point(j, to);
    }
    prov_journal_device_clear(&t->d);
    return r;
}

static int illegal(struct prov_journal *j, const char *serial, enum prov_journal_state from,
                   enum prov_journal_state to)
{
    return prov_fail(PROV_ERR_JOURNAL, "journal %s: serial %s: no transition from %s to %s",
                     j->path, serial, prov_journal_state_name(from), prov_journal_state_name(to));
}

int prov_journal_lot(struct prov_journal *j, const char *name, const char *manifest,
                     long long *lot_id)
{
    sqlite3_stmt *st = NULL;
    char now[32];
    int r;

    *lot_id = 0;
    pthread_mutex_lock(&j->lock);
    r = journal_begin(j);
    if (r < 0) {
        goto out;
    }
    r = journal_query(j, &st, "SELECT id FROM lot WHERE name = ?", "t", name);
    if (r == 0 && sqlite3_step(st) == SQLITE_ROW) {
        *lot_id = sqlite3_column_int64(st, 0);
    }
    journal_release(j, st);
    if (r == 0 && *lot_id == 0) {
        journal_now(now, sizeof(now));
        if (journal_exec(j, "INSERT INTO lot(name, manifest, created) VALUES (?, ?, ?)", "ttt",
                         name, manifest, now) != SQLITE_DONE) {
            r = journal_db_fail(j, name);
        } else {
            *lot_id = sqlite3_last_insert_rowid(j->db);
            r = journal_audit_append(j, name, "", "lot", manifest ? manifest : "");
        }
    }
    r = journal_end(j, r);
out:
    pthread_mutex_unlock(&j->lock);
    return r;
}

int prov_journal_run_begin(struct prov_journal *j, long long lot_id, const char *reissue_list,
                           long long *run_id, bool *is_resumed)
{
    sqlite3_stmt *st = NULL;
    char lot[256];
    char detail[64];
    char now[32];
    int r;

    *run_id = 0;
    *is_resumed = false;
    pthread_mutex_lock(&j->lock);
    r = journal_begin(j);
    if (r == 0) {
        r = journal_lot_name(j, lot_id, lot, sizeof(lot));
    }
    if (r == 0) {
        r = journal_query(j, &st,
                          "SELECT id, reissue, finished FROM run WHERE lot_id = ? "
                          "ORDER BY id DESC LIMIT 1",
                          "i", lot_id);
    }
    if (r == 0 && sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 2) == SQLITE_NULL &&
        strcmp((const char *)sqlite3_column_text(st, 1), reissue_list) == 0) {
        *run_id = sqlite3_column_int64(st, 0);
        *is_resumed = true;
    }
    journal_release(j, st);
    if (r == 0 && *run_id == 0) {
        journal_now(now, sizeof(now));
        if (journal_exec(j, "INSERT INTO run(lot_id, reissue, started) VALUES (?, ?, ?)", "itt",
                         lot_id, reissue_list, now) != SQLITE_DONE) {
            r = journal_db_fail(j, "run");
        } else {
            *run_id = sqlite3_last_insert_rowid(j->db);
        }
    }
    if (r == 0) {
        snprintf(detail, sizeof(detail), "run=%lld", *run_id);
        r = journal_audit_append(j, lot, "", *is_resumed ? "run-resumed" : "run-begin", detail);
    }
    r = journal_end(j, r);
    pthread_mutex_unlock(&j->lock);
    return r;
}

int prov_journal_run_end(struct prov_journal *j, long long run_id)
{
    sqlite3_stmt *st = NULL;
    char lot[256] = "";
    char detail[64];
    char now[32];
    int r;

    pthread_mutex_lock(&j->lock);
    r = journal_begin(j);
    if (r == 0) {
        r = journal_query(j, &st,
                          "SELECT l.name FROM run r JOIN lot l ON l.id = r.lot_id "
                          "WHERE r.id = ?",
                          "i", run_id);
    }
    if (r == 0 && sqlite3_step(st) == SQLITE_ROW) {
        journal_col_copy(st, 0, lot, sizeof(lot));
    }
    journal_release(j, st);
    journal_now(now, sizeof(now));
    if (r == 0 && journal_exec(j, "UPDATE run SET finished = ? WHERE id = ?", "ti", now, run_id) !=
                      SQLITE_DONE) {
        r = journal_db_fail(j, "run");
    }
    if (r == 0) {
        snprintf(detail, sizeof(detail), "run=%lld", run_id);
        r = journal_audit_append(j, lot, "", "run-end", detail);
    }
    r = journal_end(j, r);
    if (r == 0 && j->is_crash_at_run_end) {
        _exit(137);
    }
    pthread_mutex_unlock(&j->lock);
    return r;
}

int prov_journal_record_intent(struct prov_journal *j, long long lot_id, const char *serial,
                               const char *device_uri, const char *storage,
                               const unsigned char *key_id, size_t key_id_len)
{
    char key_hex[2 * PROV_JOURNAL_KEY_ID_MAX + 1];
    char *detail = NULL;
    struct txn t;
    enum prov_journal_state from;
    int rc;
    int r;

    if (key_id_len == 0 || key_id_len > PROV_JOURNAL_KEY_ID_MAX) {
        return prov_fail(PROV_ERR_INTERNAL, "serial %s: key id of %zu bytes", serial, key_id_len);
    }
    r = txn_begin(j, lot_id, serial, &t);
    if (r < 0) {
        return r;
    }
    from = t.d.state;
    if (!(from == PROV_JOURNAL_NONE || from == PROV_JOURNAL_INTENT ||
          from == PROV_JOURNAL_SUPERSEDED || (from == PROV_JOURNAL_FAILED && t.cert_id == 0))) {
        r = illegal(j, serial, from, PROV_JOURNAL_INTENT);
        goto out;
    }
    if (from == PROV_JOURNAL_NONE) {
        rc = journal_exec(j,
                          "INSERT INTO device(lot_id, serial, device_uri, state, key_id, storage,"
                          " attempts, updated) VALUES (?, ?, ?, 'intent', ?, ?, 1, ?)",
                          "ittbtt", lot_id, serial, device_uri, key_id, key_id_len, storage, t.now);
    } else {
        rc = journal_exec(j,
                          "UPDATE device SET state = 'intent', device_uri = ?, key_id = ?,"
                          " storage = ?, key_uri = NULL, error = NULL, attempts = attempts + 1,"
                          " updated = ? WHERE id = ?",
                          "tbtti", device_uri, key_id, key_id_len, storage, t.now, t.dev_id);
    }
    if (rc != SQLITE_DONE) {
        r = journal_db_fail(j, serial);
        goto out;
    }
    journal_hex(key_id, key_id_len, key_hex);
    if (asprintf(&detail, "key_id=%s device=%s", key_hex, device_uri) < 0) {
        detail = NULL;
        r = PROV_ERR_NOMEM;
        goto out;
    }
    r = journal_audit_append(j, t.lot, serial, "intent", detail);
out:
    free(detail);
    return txn_end(j, &t, r, PROV_JOURNAL_INTENT);
}

/* SHA-256 of the certificate's SubjectPublicKeyInfo: the identity of the key pair. */
static int pubkey_sha256(X509 *cert, char out[65])
{
    unsigned char *der = NULL;
    unsigned char md[SHA256_DIGEST_LENGTH];
    int len = i2d_PUBKEY(X509_get0_pubkey(cert), &der);

    if (len <= 0) {
        return prov_fail_ossl(PROV_ERR_CRYPTO, "certificate public key: cannot encode");
    }
    SHA256(der, (size_t)len, md);
    OPENSSL_free(der);
    journal_hex(md, sizeof(md), out);
    return 0;
}

/* Names which uniqueness rule a refused certificate broke. */
static int refuse_duplicate(struct prov_journal *j, const char *serial,
                            const struct prov_cert_facts *f, const char *pub)
{
    const char *msg = sqlite3_errmsg(j->db);

    if (strstr(msg, "pubkey_sha256") != NULL) {
        return prov_fail(PROV_ERR_ALREADY_ISSUED,
                         "serial %s: public key %s was already certified (journal %s)", serial, pub,
                         j->path);
    }
    return prov_fail(PROV_ERR_ALREADY_ISSUED,
                     "serial %s: certificate serial %s is already in journal %s", serial,
                     f->serial_hex, j->path);
}

int prov_journal_record_issued(struct prov_journal *j, long long lot_id, const char *serial,
                               const unsigned char *key_id, size_t key_id_len, X509 *cert,
                               const char *key_uri)
{
    struct prov_cert_facts f;
    unsigned char *der = NULL;
    char pub[65];
    char *detail = NULL;
    struct txn t;
    int len;
    int rc;
    int r;

    r = prov_cert_facts(cert, &f);
    if (r == 0) {
        r = pubkey_sha256(cert, pub);
    }
    len = r == 0 ? i2d_X509(cert, &der) : -1;
    if (len <= 0) {
        return r < 0 ? r : prov_fail_ossl(PROV_ERR_CRYPTO, "serial %s: cannot encode", serial);
    }
    r = txn_begin(j, lot_id, serial, &t);
    if (r < 0) {
        OPENSSL_free(der);
        return r;
    }
    if (t.d.state != PROV_JOURNAL_INTENT) {
        r = illegal(j, serial, t.d.state, PROV_JOURNAL_ISSUED);
        goto out;
    }
    if (t.d.key_id_len != key_id_len || memcmp(t.d.key_id, key_id, key_id_len) != 0) {
        r = prov_fail(PROV_ERR_JOURNAL,
                      "journal %s: serial %s: the key is not the one the "
                      "intent recorded",
                      j->path, serial);
        goto out;
    }
    rc = journal_exec(j,
                      "INSERT INTO certificate(device_id, cert_serial, pubkey_sha256, sha256,"
                      " not_after, key_id, der, issued) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                      "ittttbbt", t.dev_id, f.serial_hex, pub, f.sha256_hex, f.not_after, key_id,
                      key_id_len, der, (size_t)len, t.now);
    if (rc == SQLITE_CONSTRAINT) {
        r = refuse_duplicate(j, serial, &f, pub);
        goto out;
    }
    if (rc != SQLITE_DONE ||
        journal_exec(j,
                     "UPDATE device SET state = 'issued', cert_id = ?, key_uri = ?, error = NULL,"
                     " updated = ? WHERE id = ?",
                     "itti", (long long)sqlite3_last_insert_rowid(j->db), key_uri, t.now,
                     t.dev_id) != SQLITE_DONE) {
        r = journal_db_fail(j, serial);
        goto out;
    }
    if (asprintf(&detail, "cert_serial=%s sha256=%s pubkey_sha256=%s", f.serial_hex, f.sha256_hex,
                 pub) < 0) {
        detail = NULL;
        r = PROV_ERR_NOMEM;
        goto out;
    }
    r = journal_audit_append(j, t.lot, serial, "issued", detail);
out:
    free(detail);
    OPENSSL_free(der);
    return txn_end(j, &t, r, PROV_JOURNAL_ISSUED);
}

/* Storage can be (re)written from any state that holds a certificate, a failed one too. */
static bool may_store(const struct txn *t)
{
    return t->d.state == PROV_JOURNAL_ISSUED || t->d.state == PROV_JOURNAL_STORED ||
           t->d.state == PROV_JOURNAL_PROVEN || (t->d.state == PROV_JOURNAL_FAILED && t->cert_id);
}

static bool may_prove(const struct txn *t)
{
    return t->d.state == PROV_JOURNAL_STORED;
}

/* The transitions that change only the state (and clear the error); the audit detail is the
 * certificate serial, followed by note when given. */
static int simple_transition(struct prov_journal *j, long long lot_id, const char *serial,
                             enum prov_journal_state to, bool (*is_legal)(const struct txn *t),
                             const char *note)
{
    char detail[1024];
    struct txn t;
    int r;

    r = txn_begin(j, lot_id, serial, &t);
    if (r < 0) {
        return r;
    }
    if (!is_legal(&t)) {
        r = illegal(j, serial, t.d.state, to);
        goto out;
    }
    if (journal_exec(j, "UPDATE device SET state = ?, error = NULL, updated = ? WHERE id = ?",
                     "tti", prov_journal_state_name(to), t.now, t.dev_id) != SQLITE_DONE) {
        r = journal_db_fail(j, serial);
        goto out;
    }
    snprintf(detail, sizeof(detail), "%s%s%s", t.d.cert_serial, note ? " " : "", note ? note : "");
    r = journal_audit_append(j, t.lot, serial, prov_journal_state_name(to), detail);
out:
    return txn_end(j, &t, r, to);
}

int prov_journal_record_stored(struct prov_journal *j, long long lot_id, const char *serial)
{
    return simple_transition(j, lot_id, serial, PROV_JOURNAL_STORED, may_store, NULL);
}

int prov_journal_record_proven(struct prov_journal *j, long long lot_id, const char *serial)
{
    return simple_transition(j, lot_id, serial, PROV_JOURNAL_PROVEN, may_prove, NULL);
}

int prov_journal_record_proven_over(struct prov_journal *j, long long lot_id, const char *serial,
                                    const char *url)
{
    char note[600];

    snprintf(note, sizeof(note), "mtls=%s", url);
    return simple_transition(j, lot_id, serial, PROV_JOURNAL_PROVEN, may_prove, note);
}

int prov_journal_record_failed(struct prov_journal *j, long long lot_id, const char *serial,
                               const char *device_uri, const char *reason)
{
    struct txn t;
    int rc;
    int r;

    r = txn_begin(j, lot_id, serial, &t);
    if (r < 0) {
        return r;
    }
    if (t.d.state == PROV_JOURNAL_NONE) {
        rc = journal_exec(j,
                          "INSERT INTO device(lot_id, serial, device_uri, state, error, updated)"
                          " VALUES (?, ?, ?, 'failed', ?, ?)",
                          "itttt", lot_id, serial, device_uri, reason, t.now);
    } else {
        rc = journal_exec(j,
                          "UPDATE device SET state = 'failed', error = ?, updated = ? WHERE id = ?",
                          "tti", reason, t.now, t.dev_id);
    }
    if (rc != SQLITE_DONE) {
        r = journal_db_fail(j, serial);
        goto out;
    }
    r = journal_audit_append(j, t.lot, serial, "failed", reason);
out:
    return txn_end(j, &t, r, PROV_JOURNAL_FAILED);
}

int prov_journal_supersede(struct prov_journal *j, long long lot_id, const char *serial,
                           long long run_id)
{
    char detail[160];
    struct txn t;
    int r;

    r = txn_begin(j, lot_id, serial, &t);
    if (r < 0) {
        return r;
    }
    if (t.cert_id == 0 || !(t.d.state == PROV_JOURNAL_STORED || t.d.state == PROV_JOURNAL_PROVEN ||
                            t.d.state == PROV_JOURNAL_FAILED)) {
        r = illegal(j, serial, t.d.state, PROV_JOURNAL_SUPERSEDED);
        goto out;
    }
    if (journal_exec(j, "UPDATE certificate SET superseded = ?, superseded_run = ? WHERE id = ?",
                     "tii", t.now, run_id, t.cert_id) != SQLITE_DONE ||
        journal_exec(j,
                     "UPDATE device SET state = 'superseded', cert_id = NULL, error = NULL,"
                     " updated = ? WHERE id = ?",
                     "ti", t.now, t.dev_id) != SQLITE_DONE) {
        r = journal_db_fail(j, serial);
        goto out;
    }
    snprintf(detail, sizeof(detail), "cert_serial=%s run=%lld", t.d.cert_serial, run_id);
    r = journal_audit_append(j, t.lot, serial, "superseded", detail);
out:
    return txn_end(j, &t, r, PROV_JOURNAL_SUPERSEDED);
}
