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
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/sha.h>
#include <sqlite3.h>

#include "error.h"
#include "log.h"
#include "storage.h"

#define BUSY_TIMEOUT_MS 10000

/*
 * The schema, one step per version; meta "schema" holds the version a journal has. Every
 * open brings a journal up to date with schema_update(), which runs the steps it lacks and
 * records the new version in ONE transaction: a process killed while it creates or upgrades
 * a journal leaves the journal as it was, never half-made. Step 1 says IF NOT EXISTS so that
 * it also completes a journal an older provisioner left half-made (it ran these statements
 * one by one, and a kill in between left, for example, no audit table).
 *
 * A change of the schema is a new step at the end of this list, never an edit of an earlier
 * one: journals in the field have run the earlier steps already.
 */
static const char *const schema_steps[] = {
    /* 1: lots, runs, devices, certificates and the audit chain */
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
    " BEGIN SELECT RAISE(ABORT, 'the audit table is append-only'); END;",
    /*
     * 2: station claims (journal_station.c), which stations used to create on their first
     * claim (hence IF NOT EXISTS): a device identity bound to one row of a lot.
     */
    "CREATE TABLE IF NOT EXISTS station_claim(lot_id INTEGER NOT NULL REFERENCES lot(id),"
    " serial TEXT NOT NULL, identity TEXT NOT NULL, instance TEXT NOT NULL,"
    " claimed TEXT NOT NULL, PRIMARY KEY (lot_id, serial), UNIQUE (lot_id, identity));",
    /*
     * 3: reissue requests. A run serves the request of its --reissue list: request is the id
     * of the request's first run (NULL in runs made before: each was its own request). Every
     * run of a request counts as one when a serial's reissue is looked up, so running the
     * same command again never reissues a serial twice (prov_journal_run_begin).
     */
    "ALTER TABLE run ADD COLUMN request INTEGER REFERENCES run(id);",
    /*
     * 4: the device each certificate's key was generated on, and when a superseded
     * certificate's key was deleted from it ("retired"). A reissue may move a serial to
     * another device, so the row's device no longer says where an old key lives. Filled in:
     * the current certificate is on the row's device (a station moves both together); a
     * superseded one is on the device its intent audit record names (the record with its
     * key id). Version 1 deleted superseded keys on the row's device before "proven", so a
     * superseded key on that same device of a proven row is retired; any other is not.
     */
    "ALTER TABLE certificate ADD COLUMN device_uri TEXT;"
    "ALTER TABLE certificate ADD COLUMN retired TEXT;"
    "UPDATE certificate SET device_uri = COALESCE("
    " (SELECT d.device_uri FROM device d WHERE d.cert_id = certificate.id),"
    " (SELECT substr(a.detail, length(p.prefix) + 1)"
    "  FROM (SELECT 'key_id=' || lower(hex(certificate.key_id)) || ' device=' AS prefix) p,"
    "  device d JOIN lot l ON l.id = d.lot_id"
    "  JOIN audit a ON a.lot = l.name AND a.serial = d.serial AND a.event = 'intent'"
    "  WHERE d.id = certificate.device_id"
    "  AND substr(a.detail, 1, length(p.prefix)) = p.prefix"
    "  ORDER BY a.seq DESC LIMIT 1),"
    " (SELECT d.device_uri FROM device d WHERE d.id = certificate.device_id));"
    "UPDATE certificate SET retired = (SELECT d.updated FROM device d"
    "  WHERE d.id = certificate.device_id)"
    " WHERE superseded IS NOT NULL AND EXISTS (SELECT 1 FROM device d"
    "  WHERE d.id = certificate.device_id AND d.state = 'proven'"
    "  AND d.device_uri = certificate.device_uri);",
    /*
     * 5: certificates by their device row. Reading a row counts its superseded and unretired
     * certificates, and without this index each count scanned the whole table (17 ms per row
     * read at 10,000 certificates).
     */
    "CREATE INDEX IF NOT EXISTS certificate_by_device ON certificate(device_id);",
};

#define SCHEMA_VERSION ((long long)(sizeof(schema_steps) / sizeof(schema_steps[0])))

/*
 * The schema version recorded in meta; 0 when there is no meta table or no version in it
 * (a new file, or one whose creation was interrupted before the version was recorded).
 */
static int schema_version(struct prov_journal *j, long long *version)
{
    sqlite3_stmt *st = NULL;
    int rc;
    int r = 0;

    *version = 0;
    rc = sqlite3_prepare_v2(j->db, "SELECT value FROM meta WHERE key = 'schema'", -1, &st, NULL);
    if (rc != SQLITE_OK) {
        bool is_no_meta = strstr(sqlite3_errmsg(j->db), "no such table") != NULL;

        sqlite3_finalize(st);
        return is_no_meta ? 0 : journal_db_fail(j, "cannot read its schema version");
    }
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *version = sqlite3_column_int64(st, 0);
    } else if (rc != SQLITE_DONE) {
        r = journal_db_fail(j, "cannot read its schema version");
    }
    sqlite3_finalize(st);
    return r;
}

static bool has_history(struct prov_journal *j)
{
    sqlite3_stmt *st = NULL;
    bool is_any = false;

    if (journal_query(j, &st, "SELECT 1 FROM audit LIMIT 1", "") == 0) {
        is_any = sqlite3_step(st) == SQLITE_ROW;
    }
    journal_release(j, st);
    return is_any;
}

/* Runs the schema steps the journal lacks, and records the version, in one transaction. */
static int schema_update(struct prov_journal *j)
{
    long long version = 0;
    int r;

    r = journal_begin(j);
    if (r < 0) {
        return r;
    }
    /* read again inside the transaction: another process may have just done it */
    r = schema_version(j, &version);
    if (r == 0 && version > SCHEMA_VERSION) {
        r = prov_fail(PROV_ERR_JOURNAL,
                      "journal %s: schema version %lld is newer than this provisioner's (%lld); "
                      "use the provisioner that wrote it",
                      j->path, version, SCHEMA_VERSION);
    }
    for (long long i = version; r == 0 && i < SCHEMA_VERSION; i++) {
        if (sqlite3_exec(j->db, schema_steps[i], NULL, NULL, NULL) != SQLITE_OK) {
            r = journal_db_fail(j, "cannot set up its schema");
        }
    }
    if (r == 0 && version < SCHEMA_VERSION &&
        journal_exec(j, "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema', ?)", "i",
                     SCHEMA_VERSION) != SQLITE_DONE) {
        r = journal_db_fail(j, "cannot record its schema version");
    }
    /* an upgrade of a journal with records is part of its history (a new one has none) */
    if (r == 0 && version > 0 && version < SCHEMA_VERSION && has_history(j)) {
        char detail[48];

        snprintf(detail, sizeof(detail), "%lld->%lld", version, SCHEMA_VERSION);
        r = journal_audit_append(j, "", "", "schema", detail);
    }
    r = journal_end(j, r);
    if (r == 0) {
        j->schema_version = (int)SCHEMA_VERSION;
    }
    return r;
}

/*
 * Brings the schema up to date (schema_update) unless it is. A journal that has tables but no
 * version was left half-made by an interrupted creation: it is completed, and said so.
 */
static int schema_ensure(struct prov_journal *j)
{
    long long version = 0;
    bool has_tables = false;
    sqlite3_stmt *st = NULL;
    int r;

    r = schema_version(j, &version);
    if (r < 0 || version == SCHEMA_VERSION) {
        j->schema_version = (int)version;
        return r;
    }
    if (version == 0 && sqlite3_prepare_v2(j->db, "SELECT 1 FROM sqlite_master", -1, &st,
                                           NULL) == SQLITE_OK) {
        has_tables = sqlite3_step(st) == SQLITE_ROW;
    }
    sqlite3_finalize(st);
    r = schema_update(j);
    if (r == 0 && has_tables) {
        prov_warn("journal %s: its creation had been interrupted; its schema is now complete",
                  j->path);
    }
    return r;
}

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

    if (j->pause_path == NULL || s == PROV_JOURNAL_NONE || s != j->pause_state) {
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

/*
 * The writer lock, "JOURNAL.lock". The last holder removes the file when it closes the
 * journal (release_lock), so that a finished run leaves nothing but the journal; a lock file
 * can only be removed safely because every taker checks, once it holds the lock, that the
 * file it locked is still the one at the path - else it locked a file being removed, and
 * takes the new one instead.
 */
static int take_lock(struct prov_journal *j, int how)
{
    char *lock_path = NULL;
    int r = 0;

    if (asprintf(&lock_path, "%s.lock", j->path) < 0) {
        return PROV_ERR_NOMEM;
    }
    for (int tries = 0; r == 0; tries++) {
        struct stat held;
        struct stat now;

        j->lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (j->lock_fd < 0) {
            r = prov_fail(PROV_ERR_JOURNAL, "journal %s: cannot open %s: %s", j->path,
                          lock_path, strerror(errno));
        } else if (flock(j->lock_fd, how | LOCK_NB) != 0) {
            r = prov_fail(PROV_ERR_JOURNAL,
                          how == LOCK_EX ? "journal %s: in use by another batch run or station "
                                           "(lock %s.lock is held)"
                                         : "journal %s: in use by a batch run (lock %s.lock is "
                                           "held exclusively)",
                          j->path, j->path);
        } else if (fstat(j->lock_fd, &held) == 0 && stat(lock_path, &now) == 0 &&
                   held.st_dev == now.st_dev && held.st_ino == now.st_ino) {
            break;
        } else if (tries == 100) {
            r = prov_fail(PROV_ERR_JOURNAL, "journal %s: %s keeps being replaced", j->path,
                          lock_path);
        } else {
            close(j->lock_fd); /* removed by its last holder meanwhile: take the new one */
            j->lock_fd = -1;
        }
    }
    free(lock_path);
    return r;
}

/*
 * Removes the lock file when nobody else holds it (a station asks for the lock exclusively,
 * without waiting, which fails while another station holds it shared), then lets it go.
 */
static void release_lock(struct prov_journal *j)
{
    char *lock_path = NULL;

    if (j->lock_fd < 0) {
        return;
    }
    if (flock(j->lock_fd, LOCK_EX | LOCK_NB) == 0 &&
        asprintf(&lock_path, "%s.lock", j->path) >= 0) {
        unlink(lock_path);
        free(lock_path);
    }
    close(j->lock_fd); /* releases the flock */
    j->lock_fd = -1;
}

/*
 * A reader (status, report) never changes a journal it can read: one made by an older
 * provisioner is read as its version holds (j->schema_version, journal_db.c), so that a
 * station still running that provisioner can go on writing it. Only a journal left half-made
 * by an interrupted creation (tables, no version: no records either) is completed
 * (schema_ensure, one transaction) through a connection that may write; a reader that may
 * not write it is told why. A journal newer than this provisioner is refused.
 */
static int reader_schema(struct prov_journal *j)
{
    long long version = 0;
    int r;

    r = schema_version(j, &version);
    if (r < 0) {
        return r;
    }
    if (version > SCHEMA_VERSION) {
        return prov_fail(PROV_ERR_JOURNAL,
                         "journal %s: schema version %lld is newer than this provisioner's "
                         "(%lld); use the provisioner that wrote it",
                         j->path, version, SCHEMA_VERSION);
    }
    if (version > 0) {
        j->schema_version = (int)version;
        return 0;
    }
    sqlite3_close(j->db);
    j->db = NULL;
    if (sqlite3_open_v2(j->path, &j->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX, NULL) !=
            SQLITE_OK ||
        sqlite3_exec(j->db, "PRAGMA synchronous=FULL", NULL, NULL, NULL) != SQLITE_OK) {
        return prov_fail(PROV_ERR_JOURNAL,
                         "journal %s: its schema is incomplete and it cannot be opened for "
                         "writing to complete it: %s",
                         j->path, j->db ? sqlite3_errmsg(j->db) : "out of memory");
    }
    sqlite3_busy_timeout(j->db, BUSY_TIMEOUT_MS);
    return schema_ensure(j);
}

static int journal_open(const char *path, bool writable, int lock_how, struct prov_journal **out)
{
    struct prov_journal *j = NULL;
    int flags = writable ? SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE : SQLITE_OPEN_READONLY;
    int r = PROV_ERR_NOMEM;

    *out = NULL;
    if (!writable && access(path, F_OK) != 0) {
        /* a journal to read (status, report) is the operator's input: exit 2, not 4 */
        return prov_fail(PROV_ERR_INPUT, "journal %s: %s", path, strerror(errno));
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
         sqlite3_exec(j->db, "PRAGMA synchronous=FULL", NULL, NULL, NULL) != SQLITE_OK)) {
        r = journal_db_fail(j, "cannot set up");
        goto out;
    }
    r = writable ? schema_ensure(j) : reader_schema(j);
    if (r < 0) {
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
    release_lock(j); /* after the close: the WAL is checkpointed and gone by then */
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

/* Whether every serial of list (comma-separated) was reissued by request and is proven since. */
static int request_is_complete(struct prov_journal *j, long long lot_id, const char *list,
                               long long request, bool *out)
{
    char *copy = strdup(list);
    char *save = NULL;
    int r = copy ? 0 : PROV_ERR_NOMEM;

    *out = true;
    for (char *s = copy ? strtok_r(copy, ",", &save) : NULL; s != NULL && r == 0 && *out;
         s = strtok_r(NULL, ",", &save)) {
        sqlite3_stmt *st = NULL;

        r = journal_query(j, &st,
                          "SELECT 1 FROM certificate c JOIN device d ON d.id = c.device_id"
                          " JOIN run r ON r.id = c.superseded_run WHERE d.lot_id = ? AND"
                          " d.serial = ? AND d.state = 'proven' AND coalesce(r.request, r.id) = ?",
                          "iti", lot_id, s, request);
        *out = r == 0 && sqlite3_step(st) == SQLITE_ROW;
        journal_release(j, st);
    }
    free(copy);
    return r;
}

/*
 * The newest run of the lot with this reissue list decides (inside the transaction): its
 * request is continued, by taking that run up again when it did not finish, else by a new
 * run of the same request. With is_again a request that has reissued and proven every
 * serial of its list is not continued: a new request begins. Nothing found: a new request.
 */
static int pick_run(struct prov_journal *j, long long lot_id, const char *reissue_list,
                    bool is_again, struct prov_journal_run *run)
{
    sqlite3_stmt *st = NULL;
    long long newest = 0;
    long long request = 0;
    bool is_unfinished = false;
    bool is_complete = false;
    int r;

    r = journal_query(j, &st,
                      "SELECT id, coalesce(request, id), finished IS NULL FROM run"
                      " WHERE lot_id = ? AND reissue = ? ORDER BY id DESC LIMIT 1",
                      "it", lot_id, reissue_list);
    if (r == 0 && sqlite3_step(st) == SQLITE_ROW) {
        newest = sqlite3_column_int64(st, 0);
        request = sqlite3_column_int64(st, 1);
        is_unfinished = sqlite3_column_int(st, 2) != 0;
    }
    journal_release(j, st);
    if (r == 0 && newest != 0 && is_again) {
        r = request_is_complete(j, lot_id, reissue_list, request, &is_complete);
    }
    if (r < 0 || newest == 0 || is_complete) {
        return r;
    }
    run->request = request;
    run->is_resumed = is_unfinished;
    run->is_continued = !is_unfinished;
    run->id = is_unfinished ? newest : 0;
    return 0;
}

int prov_journal_run_begin(struct prov_journal *j, long long lot_id, const char *reissue_list,
                           bool is_again, struct prov_journal_run *run)
{
    char lot[256];
    char detail[128];
    char now[32];
    int r;

    memset(run, 0, sizeof(*run));
    pthread_mutex_lock(&j->lock);
    r = journal_begin(j);
    if (r == 0) {
        r = journal_lot_name(j, lot_id, lot, sizeof(lot));
    }
    if (r == 0) {
        r = pick_run(j, lot_id, reissue_list, is_again, run);
    }
    if (r == 0 && run->id == 0) {
        journal_now(now, sizeof(now));
        if (journal_exec(j, "INSERT INTO run(lot_id, reissue, started) VALUES (?, ?, ?)", "itt",
                         lot_id, reissue_list, now) != SQLITE_DONE) {
            r = journal_db_fail(j, "run");
        } else {
            run->id = sqlite3_last_insert_rowid(j->db);
            run->request = run->request ? run->request : run->id;
        }
        if (r == 0 && journal_exec(j, "UPDATE run SET request = ? WHERE id = ?", "ii",
                                   run->request, run->id) != SQLITE_DONE) {
            r = journal_db_fail(j, "run");
        }
    }
    if (r == 0) {
        snprintf(detail, sizeof(detail), "run=%lld request=%lld%s", run->id, run->request,
                 is_again && run->request == run->id ? " again" : "");
        r = journal_audit_append(j, lot, "", run->is_resumed ? "run-resumed" : "run-begin",
                                 detail);
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
    /* the intent's device: where this key lives, even after a reissue moves the row */
    rc = journal_exec(j,
                      "INSERT INTO certificate(device_id, cert_serial, pubkey_sha256, sha256,"
                      " not_after, key_id, der, issued, device_uri)"
                      " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      "ittttbbtt", t.dev_id, f.serial_hex, pub, f.sha256_hex, f.not_after, key_id,
                      key_id_len, der, (size_t)len, t.now, t.d.device_uri);
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

int prov_journal_record_outside_change(struct prov_journal *j, long long lot_id, const char *serial,
                                       const char *reason)
{
    struct txn t;
    int r;

    r = txn_begin(j, lot_id, serial, &t);
    if (r < 0) {
        return r;
    }
    if (t.cert_id == 0) {
        r = prov_fail(PROV_ERR_JOURNAL, "journal %s: serial %s: no certificate to compare with",
                      j->path, serial);
        goto out;
    }
    if (journal_exec(j, "UPDATE device SET error = ?, updated = ? WHERE id = ?", "tti", reason,
                     t.now, t.dev_id) != SQLITE_DONE) {
        r = journal_db_fail(j, serial);
        goto out;
    }
    r = journal_audit_append(j, t.lot, serial, "outside-change",
                             reason ? reason : "storage holds the lot's identity again");
out:
    /* not a state: neither the crash nor the pause hook stops here */
    return txn_end(j, &t, r, PROV_JOURNAL_NONE);
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

int prov_journal_record_retired(struct prov_journal *j, long long lot_id, const char *serial,
                                const char *cert_serial)
{
    sqlite3_stmt *st = NULL;
    char *detail = NULL;
    char key_hex[2 * PROV_JOURNAL_KEY_ID_MAX + 1] = "";
    const char *device = NULL;
    struct txn t;
    int r;

    r = txn_begin(j, lot_id, serial, &t);
    if (r < 0) {
        return r;
    }
    r = journal_query(j, &st,
                      "SELECT c.key_id, c.device_uri FROM certificate c"
                      " WHERE c.device_id = ? AND c.cert_serial = ? AND c.superseded IS NOT NULL"
                      " AND c.retired IS NULL",
                      "it", t.dev_id, cert_serial);
    if (r == 0 && sqlite3_step(st) == SQLITE_ROW) {
        int n = sqlite3_column_bytes(st, 0);

        if (n > 0 && n <= PROV_JOURNAL_KEY_ID_MAX) {
            journal_hex(sqlite3_column_blob(st, 0), (size_t)n, key_hex);
        }
        device = (const char *)sqlite3_column_text(st, 1);
        if (asprintf(&detail, "cert_serial=%s key_id=%s device=%s", cert_serial, key_hex,
                     device ? device : "") < 0) {
            detail = NULL;
            r = PROV_ERR_NOMEM;
        }
    } else if (r == 0) {
        r = prov_fail(PROV_ERR_JOURNAL,
                      "journal %s: serial %s: no superseded certificate %s waiting to be retired",
                      j->path, serial, cert_serial);
    }
    journal_release(j, st);
    if (r == 0 && journal_exec(j,
                               "UPDATE certificate SET retired = ? WHERE device_id = ?"
                               " AND cert_serial = ?",
                               "tit", t.now, t.dev_id, cert_serial) != SQLITE_DONE) {
        r = journal_db_fail(j, serial);
    }
    r = r ? r : journal_audit_append(j, t.lot, serial, "retired", detail);
    free(detail);
    /* not a state: neither the crash nor the pause hook stops here */
    return txn_end(j, &t, r, PROV_JOURNAL_NONE);
}
