/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The journal's first store (journal_store.h): one SQLite file in WAL mode with
 * synchronous=FULL, so that a transaction is on disk when its commit returns (but for
 * begin_deferred's, at NORMAL); BEGIN IMMEDIATE and a busy timeout serialize writers across
 * processes, and flock on files beside the database says who may write at all (the writer
 * lock) and which station works on a row (row locks). The schema is made and upgraded here,
 * step by step. One connection per journal; the journal's mutex (journal.c) serializes the
 * transactions on it.
 */
#include "journal_sqlite.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "error.h"
#include "journal.h"
#include "journal_store.h"
#include "log.h"
#include "sqldb_sqlite.h"

#define BUSY_TIMEOUT_MS 10000

/* Transactions: BEGIN IMMEDIATE takes SQLite's write lock at once, so reads see the newest. */
static void sqlite_rollback(struct journal_sqlite *j)
{
    sqlite3_exec(j->db, "ROLLBACK", NULL, NULL, NULL);
}

/*
 * Back to synchronous=FULL after a deferred transaction. SQLite refuses to change the level
 * inside a transaction, so it is set around one; should it fail here, every later begin tries
 * again and refuses to start a transaction until it is FULL: no transition that must be on disk
 * when it returns ever commits at NORMAL.
 */
static int sync_full_again(struct journal_sqlite *j)
{
    if (j->is_sync_deferred) {
        if (sqlite3_exec(j->db, "PRAGMA synchronous=FULL", NULL, NULL, NULL) != SQLITE_OK) {
            return journal_db_fail(j, "cannot set synchronous=FULL again");
        }
        j->is_sync_deferred = false;
    }
    return 0;
}

static int sqlite_begin(struct journal_store *s)
{
    struct journal_sqlite *j = journal_sqlite_of(s);
    int r = sync_full_again(j);

    if (r < 0) {
        return r;
    }
    if (journal_exec(j, "BEGIN IMMEDIATE", "") != SQLITE_DONE) {
        return journal_db_fail(j, "begin");
    }
    return 0;
}

/*
 * In WAL mode synchronous=NORMAL commits without syncing the WAL; the commit's frames are
 * whole or ignored after a power cut (their checksums), and the next commit at FULL, which
 * syncs the whole WAL file, or the checkpoint at close, puts them on disk with its own.
 */
static int sqlite_begin_deferred(struct journal_store *s)
{
    struct journal_sqlite *j = journal_sqlite_of(s);
    int r = sync_full_again(j);

    if (r < 0) {
        return r;
    }
    if (sqlite3_exec(j->db, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL) != SQLITE_OK) {
        return journal_db_fail(j, "cannot set synchronous=NORMAL");
    }
    j->is_sync_deferred = true;
    if (journal_exec(j, "BEGIN IMMEDIATE", "") != SQLITE_DONE) {
        return journal_db_fail(j, "begin"); /* the next begin sets FULL again */
    }
    return 0;
}

static int sqlite_end(struct journal_store *s, int r)
{
    struct journal_sqlite *j = journal_sqlite_of(s);

    if (r != 0) {
        sqlite_rollback(j);
    } else if (journal_exec(j, "COMMIT", "") != SQLITE_DONE) {
        r = journal_db_fail(j, "commit");
        sqlite_rollback(j);
    }
    /* the outcome stands whatever this says: a failure here fails the next begin instead */
    if (j->is_sync_deferred &&
        sqlite3_exec(j->db, "PRAGMA synchronous=FULL", NULL, NULL, NULL) == SQLITE_OK) {
        j->is_sync_deferred = false;
    }
    return r;
}

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
static int schema_version(struct journal_sqlite *j, long long *version)
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

static bool has_history(struct journal_sqlite *j)
{
    sqlite3_stmt *st = NULL;
    bool is_any = false;

    if (journal_query(j, &st, "SELECT 1 FROM audit LIMIT 1", "") == 0) {
        is_any = sqlite3_step(st) == SQLITE_ROW;
    }
    journal_release(j, st);
    return is_any;
}

static int refuse_newer(struct journal_sqlite *j, long long version)
{
    return prov_fail(PROV_ERR_JOURNAL,
                     "journal %s: schema version %lld is newer than this provisioner's (%lld); "
                     "use the provisioner that wrote it",
                     j->base.name, version, SCHEMA_VERSION);
}

/*
 * Runs the schema steps the journal lacks, and records the version, in one transaction; an
 * upgrade of a journal with records is part of its history (hook), a new one has none.
 */
static int schema_update(struct journal_sqlite *j, const struct journal_upgrade_hook *hook)
{
    long long version = 0;
    int r;

    r = sqlite_begin(&j->base);
    if (r < 0) {
        return r;
    }
    /* read again inside the transaction: another process may have just done it */
    r = schema_version(j, &version);
    if (r == 0 && version > SCHEMA_VERSION) {
        r = refuse_newer(j, version);
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
    if (r == 0 && version > 0 && version < SCHEMA_VERSION && has_history(j) && hook != NULL) {
        r = hook->fn(hook->ctx, &j->base, version, SCHEMA_VERSION);
    }
    r = sqlite_end(&j->base, r);
    if (r == 0) {
        j->schema_version = (int)SCHEMA_VERSION;
    }
    return r;
}

/*
 * Brings the schema up to date (schema_update) unless it is. A journal that has tables but no
 * version was left half-made by an interrupted creation: it is completed, and said so.
 */
static int schema_ensure(struct journal_sqlite *j, const struct journal_upgrade_hook *hook)
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
    if (version == 0 &&
        sqlite3_prepare_v2(j->db, "SELECT 1 FROM sqlite_master", -1, &st, NULL) == SQLITE_OK) {
        has_tables = sqlite3_step(st) == SQLITE_ROW;
    }
    sqlite3_finalize(st);
    r = schema_update(j, hook);
    if (r == 0 && has_tables) {
        prov_warn("journal %s: its creation had been interrupted; its schema is now complete",
                  j->base.name);
    }
    return r;
}

/*
 * A reader (status, report) never changes a journal it can read: one made by an older
 * provisioner is read as its version holds (j->schema_version, the reads below), so that a
 * station still running that provisioner can go on writing it. Only a journal left half-made
 * by an interrupted creation (tables, no version: no records either) is completed
 * (schema_ensure, one transaction) through a connection that may write; a reader that may
 * not write it is told why. A journal newer than this provisioner is refused.
 */
static int reader_schema(struct journal_sqlite *j, const struct journal_upgrade_hook *hook)
{
    long long version = 0;
    int r;

    r = schema_version(j, &version);
    if (r < 0) {
        return r;
    }
    if (version > SCHEMA_VERSION) {
        return refuse_newer(j, version);
    }
    if (version > 0) {
        j->schema_version = (int)version;
        return 0;
    }
    sqlite3_close(j->db);
    j->db = NULL;
    if (sqlite3_open_v2(j->base.name, &j->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX,
                        NULL) != SQLITE_OK ||
        sqlite3_exec(j->db, "PRAGMA synchronous=FULL", NULL, NULL, NULL) != SQLITE_OK) {
        return prov_fail(PROV_ERR_JOURNAL,
                         "journal %s: its schema is incomplete and it cannot be opened for "
                         "writing to complete it: %s",
                         j->base.name, j->db ? sqlite3_errmsg(j->db) : "out of memory");
    }
    sqlite3_busy_timeout(j->db, BUSY_TIMEOUT_MS);
    return schema_ensure(j, hook);
}

/*
 * The writer lock, "JOURNAL.lock". The last holder removes the file when it closes the
 * journal (release_lock), so that a finished run leaves nothing but the journal; a lock file
 * can only be removed safely because every taker checks, once it holds the lock, that the
 * file it locked is still the one at the path - else it locked a file being removed, and
 * takes the new one instead.
 */
static int take_lock(struct journal_sqlite *j, int how)
{
    const char *path = j->base.name;
    char *lock_path = NULL;
    int r = 0;

    if (asprintf(&lock_path, "%s.lock", path) < 0) {
        return PROV_ERR_NOMEM;
    }
    for (int tries = 0; r == 0; tries++) {
        struct stat held;
        struct stat now;

        j->lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (j->lock_fd < 0) {
            r = prov_fail(PROV_ERR_JOURNAL, "journal %s: cannot open %s: %s", path, lock_path,
                          strerror(errno));
        } else if (flock(j->lock_fd, how | LOCK_NB) != 0) {
            r = prov_fail(PROV_ERR_JOURNAL,
                          how == LOCK_EX ? "journal %s: in use by another batch run or station "
                                           "(lock %s.lock is held)"
                                         : "journal %s: in use by a batch run (lock %s.lock is "
                                           "held exclusively)",
                          path, path);
        } else if (fstat(j->lock_fd, &held) == 0 && stat(lock_path, &now) == 0 &&
                   held.st_dev == now.st_dev && held.st_ino == now.st_ino) {
            break;
        } else if (tries == 100) {
            r = prov_fail(PROV_ERR_JOURNAL, "journal %s: %s keeps being replaced", path, lock_path);
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
static void release_lock(struct journal_sqlite *j)
{
    char *lock_path = NULL;

    if (j->lock_fd < 0) {
        return;
    }
    if (flock(j->lock_fd, LOCK_EX | LOCK_NB) == 0 &&
        asprintf(&lock_path, "%s.lock", j->base.name) >= 0) {
        unlink(lock_path);
        free(lock_path);
    }
    close(j->lock_fd); /* releases the flock */
    j->lock_fd = -1;
}

/* A row lock: a flock on "JOURNAL.row-LOT-SERIAL.lock", held while the descriptor is open. */
struct sqlite_row_lock {
    struct prov_journal_row_lock base;
    int fd;
};

static void row_lock_release(struct prov_journal_row_lock *l)
{
    struct sqlite_row_lock *rl = (struct sqlite_row_lock *)l;

    close(rl->fd);
    free(rl);
}

static int sqlite_row_lock(struct journal_store *s, long long lot_id, const char *serial,
                           struct prov_journal_row_lock **out)
{
    struct sqlite_row_lock *rl = NULL;
    char *path = NULL;
    int fd;
    int r = 0;

    *out = NULL;
    if (asprintf(&path, "%s.row-%lld-%s.lock", s->name, lot_id, serial) < 0) {
        return PROV_ERR_NOMEM;
    }
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        r = prov_fail(PROV_ERR_JOURNAL, "journal %s: cannot open %s: %s", s->name, path,
                      strerror(errno));
    } else if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        r = prov_fail(PROV_ERR_JOURNAL,
                      "serial %s: another station is working on this row (lock %s is held)", serial,
                      path);
    } else if ((rl = calloc(1, sizeof(*rl))) == NULL) {
        r = PROV_ERR_NOMEM;
    }
    free(path);
    if (r < 0) {
        if (fd >= 0) {
            close(fd);
        }
        return r;
    }
    rl->base.release = row_lock_release;
    rl->fd = fd;
    *out = &rl->base;
    return 0;
}

static void sqlite_close(struct journal_store *s)
{
    struct journal_sqlite *j = journal_sqlite_of(s);

    if (j == NULL) {
        return;
    }
    journal_stmts_free(j);
    sqlite3_close(j->db);
    release_lock(j); /* after the close: the WAL is checkpointed and gone by then */
    pthread_mutex_destroy(&j->stmt_lock);
    free(j->base.name);
    free(j);
}

static int sqlite_schema_version(const struct journal_store *s)
{
    return ((const struct journal_sqlite *)s)->schema_version;
}

static const struct journal_store_ops sqlite_ops;

int journal_sqlite_open(const char *path, enum journal_store_mode mode,
                        const struct journal_upgrade_hook *hook, struct journal_store **out)
{
    struct journal_sqlite *j = NULL;
    bool writable = mode != JOURNAL_STORE_READ;
    /*
     * A reader opens read-write too, without CREATE, and sets query_only: a SQLITE_OPEN_READONLY
     * connection to a WAL journal makes -wal and -shm beside it and, being unable to
     * checkpoint, leaves them when it closes, so `batch status` or `lot export` would change
     * the directory of a journal they only read. Read-write, the last connection to close
     * checkpoints and removes them; query_only refuses every write on it (doc/journal.md).
     */
    int flags = writable ? SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE : SQLITE_OPEN_READWRITE;
    int r;

    *out = NULL;
    if (!writable && access(path, F_OK) != 0) {
        /* a journal to read (status, report) is the operator's input: exit 2, not 4 */
        return prov_fail(PROV_ERR_INPUT, "journal %s: %s", path, strerror(errno));
    }
    j = calloc(1, sizeof(*j));
    if (j == NULL || (j->base.name = strdup(path)) == NULL) {
        free(j);
        return prov_fail(PROV_ERR_NOMEM, "journal %s: out of memory", path);
    }
    j->base.ops = &sqlite_ops;
    j->lock_fd = -1;
    pthread_mutex_init(&j->stmt_lock, NULL);
    if (writable) {
        r = take_lock(j, mode == JOURNAL_STORE_SHARED ? LOCK_SH : LOCK_EX);
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
    if (!writable && sqlite3_exec(j->db, "PRAGMA query_only=1", NULL, NULL, NULL) != SQLITE_OK) {
        r = journal_db_fail(j, "cannot set up");
        goto out;
    }
    r = writable ? schema_ensure(j, hook) : reader_schema(j, hook);
    if (r < 0) {
        goto out;
    }
    /* reader_schema may have reopened the journal to complete its schema: read-only again */
    if (!writable && sqlite3_exec(j->db, "PRAGMA query_only=1", NULL, NULL, NULL) != SQLITE_OK) {
        r = journal_db_fail(j, "cannot set up");
        goto out;
    }
    if (sqlite3_exec(j->db, "PRAGMA foreign_keys=ON", NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_exec(j->db, PROV_SQLITE_CACHE_PRAGMA, NULL, NULL, NULL) != SQLITE_OK) {
        r = journal_db_fail(j, "cannot set up");
        goto out;
    }
    *out = &j->base;
    j = NULL;
out:
    sqlite_close(j ? &j->base : NULL);
    return r;
}

static int sqlite_row_put(struct journal_store *s, struct journal_row *w)
{
    struct journal_sqlite *j = journal_sqlite_of(s);
    const char *state = prov_journal_state_name(w->state);
    int rc;

    if (w->id == 0) {
        rc = journal_exec(j,
                          "INSERT INTO device(lot_id, serial, device_uri, state, key_id, key_uri,"
                          " storage, cert_id, error, attempts, updated)"
                          " VALUES (?, ?, ?, ?, ?, ?, ?, nullif(?, 0), ?, ?, ?)",
                          "itttbttitit", w->lot_id, w->serial, w->device_uri, state, w->key_id,
                          w->key_id_len, w->key_uri, w->storage, w->cert_id, w->error,
                          (long long)w->attempts, w->updated);
        if (rc == SQLITE_DONE) {
            w->id = sqlite3_last_insert_rowid(j->db);
        }
    } else {
        rc = journal_exec(j,
                          "UPDATE device SET device_uri = ?, state = ?, key_id = ?, key_uri = ?,"
                          " storage = ?, cert_id = nullif(?, 0), error = ?, attempts = ?,"
                          " updated = ? WHERE id = ?",
                          "ttbttititi", w->device_uri, state, w->key_id, w->key_id_len, w->key_uri,
                          w->storage, w->cert_id, w->error, (long long)w->attempts, w->updated,
                          w->id);
    }
    return rc == SQLITE_DONE ? 0 : journal_db_fail(j, w->serial);
}

static int sqlite_lot_name(struct journal_store *s, long long lot_id, char *out, size_t cap)
{
    struct journal_sqlite *j = journal_sqlite_of(s);
    sqlite3_stmt *st = NULL;
    int r;

    r = journal_query(j, &st, "SELECT name FROM lot WHERE id = ?", "i", lot_id);
    if (r < 0) {
        return r;
    }
    if (sqlite3_step(st) == SQLITE_ROW) {
        journal_col_copy(st, 0, out, cap);
    } else {
        r = prov_fail(PROV_ERR_JOURNAL, "journal %s: no lot %lld", s->name, lot_id);
    }
    journal_release(j, st);
    return r;
}

static int sqlite_lot_find(struct journal_store *s, const char *name, long long *id)
{
    struct journal_sqlite *j = journal_sqlite_of(s);
    sqlite3_stmt *st = NULL;
    int r;

    *id = 0;
    r = journal_query(j, &st, "SELECT id FROM lot WHERE name = ?", "t", name);
    if (r == 0 && sqlite3_step(st) == SQLITE_ROW) {
        *id = sqlite3_column_int64(st, 0);
    }
    journal_release(j, st);
    return r;
}

static int sqlite_lot_insert(struct journal_store *s, const char *name, const char *manifest,
                             const char *now, long long *id)
{
    struct journal_sqlite *j = journal_sqlite_of(s);

    if (journal_exec(j, "INSERT INTO lot(name, manifest, created) VALUES (?, ?, ?)", "ttt", name,
                     manifest, now) != SQLITE_DONE) {
        return journal_db_fail(j, name);
    }
    *id = sqlite3_last_insert_rowid(j->db);
    return 0;
}

static int sqlite_cert_insert(struct journal_store *s, const struct journal_cert *c,
                              long long *cert_id, enum journal_unique *broken)
{
    struct journal_sqlite *j = journal_sqlite_of(s);
    int rc;

    rc = journal_exec(j,
                      "INSERT INTO certificate(device_id, cert_serial, pubkey_sha256, sha256,"
                      " not_after, key_id, der, issued, device_uri)"
                      " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      "ittttbbtt", c->device_id, c->cert_serial, c->pubkey_sha256, c->sha256,
                      c->not_after, c->key_id, c->key_id_len, c->der, c->der_len, c->issued,
                      c->device_uri);
    if (rc == SQLITE_CONSTRAINT) {
        *broken = strstr(sqlite3_errmsg(j->db), "pubkey_sha256") != NULL
                      ? JOURNAL_UNIQUE_PUBKEY
                      : JOURNAL_UNIQUE_CERT_SERIAL;
        return PROV_ERR_ALREADY_ISSUED;
    }
    if (rc != SQLITE_DONE) {
        return journal_db_fail(j, c->cert_serial);
    }
    *cert_id = sqlite3_last_insert_rowid(j->db);
    return 0;
}

static int sqlite_cert_supersede(struct journal_store *s, long long cert_id, const char *now,
                                 long long run_id)
{
    struct journal_sqlite *j = journal_sqlite_of(s);

    if (journal_exec(j, "UPDATE certificate SET superseded = ?, superseded_run = ? WHERE id = ?",
                     "tii", now, run_id, cert_id) != SQLITE_DONE) {
        return journal_db_fail(j, "certificate");
    }
    return 0;
}

static int sqlite_cert_unretired(struct journal_store *s, long long dev_id, const char *cert_serial,
                                 char *key_hex, char *device, size_t cap, bool *found)
{
    struct journal_sqlite *j = journal_sqlite_of(s);
    sqlite3_stmt *st = NULL;
    int r;

    key_hex[0] = '\0';
    device[0] = '\0';
    *found = false;
    r = journal_query(j, &st,
                      "SELECT c.key_id, c.device_uri FROM certificate c"
                      " WHERE c.device_id = ? AND c.cert_serial = ? AND c.superseded IS NOT NULL"
                      " AND c.retired IS NULL",
                      "it", dev_id, cert_serial);
    if (r == 0 && sqlite3_step(st) == SQLITE_ROW) {
        int n = sqlite3_column_bytes(st, 0);

        if (n > 0 && n <= PROV_JOURNAL_KEY_ID_MAX) {
            journal_hex(sqlite3_column_blob(st, 0), (size_t)n, key_hex);
        }
        journal_col_copy(st, 1, device, cap);
        *found = true;
    }
    journal_release(j, st);
    return r;
}

static int sqlite_cert_retire(struct journal_store *s, long long dev_id, const char *cert_serial,
                              const char *now)
{
    struct journal_sqlite *j = journal_sqlite_of(s);

    if (journal_exec(j,
                     "UPDATE certificate SET retired = ? WHERE device_id = ? AND cert_serial = ?",
                     "tit", now, dev_id, cert_serial) != SQLITE_DONE) {
        return journal_db_fail(j, cert_serial);
    }
    return 0;
}

static int sqlite_cert_move(struct journal_store *s, long long dev_id, const char *old_uri,
                            const char *new_uri)
{
    struct journal_sqlite *j = journal_sqlite_of(s);

    if (journal_exec(j,
                     "UPDATE certificate SET device_uri = ? WHERE device_uri = ? AND device_id = ?",
                     "tti", new_uri, old_uri, dev_id) != SQLITE_DONE) {
        return journal_db_fail(j, "certificate");
    }
    return 0;
}

static int sqlite_run_newest(struct journal_store *s, long long lot_id, const char *list,
                             long long *id, long long *request, bool *is_unfinished)
{
    struct journal_sqlite *j = journal_sqlite_of(s);
    sqlite3_stmt *st = NULL;
    int r;

    *id = 0;
    *request = 0;
    *is_unfinished = false;
    r = journal_query(j, &st,
                      "SELECT id, coalesce(request, id), finished IS NULL FROM run"
                      " WHERE lot_id = ? AND reissue = ? ORDER BY id DESC LIMIT 1",
                      "it", lot_id, list);
    if (r == 0 && sqlite3_step(st) == SQLITE_ROW) {
        *id = sqlite3_column_int64(st, 0);
        *request = sqlite3_column_int64(st, 1);
        *is_unfinished = sqlite3_column_int(st, 2) != 0;
    }
    journal_release(j, st);
    return r;
}

static int sqlite_run_reissued_proven(struct journal_store *s, long long lot_id, const char *serial,
                                      long long request, bool *out)
{
    struct journal_sqlite *j = journal_sqlite_of(s);
    sqlite3_stmt *st = NULL;
    int r;

    r = journal_query(j, &st,
                      "SELECT 1 FROM certificate c JOIN device d ON d.id = c.device_id"
                      " JOIN run r ON r.id = c.superseded_run WHERE d.lot_id = ? AND"
                      " d.serial = ? AND d.state = 'proven' AND coalesce(r.request, r.id) = ?",
                      "iti", lot_id, serial, request);
    *out = r == 0 && sqlite3_step(st) == SQLITE_ROW;
    journal_release(j, st);
    return r;
}

static int sqlite_run_insert(struct journal_store *s, long long lot_id, const char *list,
                             const char *now, long long request, long long *id)
{
    struct journal_sqlite *j = journal_sqlite_of(s);

    if (journal_exec(j, "INSERT INTO run(lot_id, reissue, started) VALUES (?, ?, ?)", "itt", lot_id,
                     list, now) != SQLITE_DONE) {
        return journal_db_fail(j, "run");
    }
    *id = sqlite3_last_insert_rowid(j->db);
    if (journal_exec(j, "UPDATE run SET request = ? WHERE id = ?", "ii", request ? request : *id,
                     *id) != SQLITE_DONE) {
        return journal_db_fail(j, "run");
    }
    return 0;
}

static int sqlite_run_finish(struct journal_store *s, long long run_id, const char *now, char *lot,
                             size_t cap)
{
    struct journal_sqlite *j = journal_sqlite_of(s);
    sqlite3_stmt *st = NULL;
    int r;

    lot[0] = '\0';
    r = journal_query(j, &st,
                      "SELECT l.name FROM run r JOIN lot l ON l.id = r.lot_id WHERE r.id = ?", "i",
                      run_id);
    if (r == 0 && sqlite3_step(st) == SQLITE_ROW) {
        journal_col_copy(st, 0, lot, cap);
    }
    journal_release(j, st);
    if (r == 0 && journal_exec(j, "UPDATE run SET finished = ? WHERE id = ?", "ti", now, run_id) !=
                      SQLITE_DONE) {
        r = journal_db_fail(j, "run");
    }
    return r;
}

/* Reads the head "seq:hash" from meta; an empty chain has seq 0 and the zero hash. */
static int sqlite_audit_head(struct journal_store *s, long long *seq, char hash[65])
{
    struct journal_sqlite *j = journal_sqlite_of(s);
    sqlite3_stmt *st = NULL;
    int r;

    *seq = 0;
    memcpy(hash, JOURNAL_ZERO_HASH, 65);
    r = journal_query(j, &st, "SELECT value FROM meta WHERE key = 'audit_head'", "");
    if (r < 0) {
        return r;
    }
    if (sqlite3_step(st) == SQLITE_ROW) {
        const char *v = (const char *)sqlite3_column_text(st, 0);
        const char *colon = v ? strchr(v, ':') : NULL;

        if (colon == NULL || strlen(colon + 1) != 64) {
            journal_release(j, st);
            return prov_fail(PROV_ERR_JOURNAL, "journal %s: audit head is corrupt", s->name);
        }
        *seq = strtoll(v, NULL, 10);
        memcpy(hash, colon + 1, 65);
    }
    journal_release(j, st);
    return 0;
}

static int sqlite_audit_append(struct journal_store *s, const struct journal_audit_record *a)
{
    struct journal_sqlite *j = journal_sqlite_of(s);
    char head[96];

    snprintf(head, sizeof(head), "%lld:%s", a->seq, a->hash);
    if (journal_exec(j,
                     "INSERT INTO audit(seq, at, lot, serial, event, detail, prev_hash, hash) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     "ittttttt", a->seq, a->at, a->lot, a->serial, a->event, a->detail,
                     a->prev_hash, a->hash) != SQLITE_DONE ||
        journal_exec(j, "INSERT OR REPLACE INTO meta(key, value) VALUES ('audit_head', ?)", "t",
                     head) != SQLITE_DONE) {
        return journal_db_fail(j, "audit");
    }
    return 0;
}

static int sqlite_claim_of(struct journal_store *s, long long lot_id, const char *identity,
                           char *out, size_t cap)
{
    struct journal_sqlite *j = journal_sqlite_of(s);
    sqlite3_stmt *st = NULL;
    int r;

    out[0] = '\0';
    r = journal_query(j, &st, "SELECT serial FROM station_claim WHERE lot_id = ? AND identity = ?",
                      "it", lot_id, identity);
    if (r == 0 && sqlite3_step(st) == SQLITE_ROW) {
        journal_col_copy(st, 0, out, cap);
    }
    journal_release(j, st);
    return r;
}

static int sqlite_claim_is_taken(struct journal_store *s, long long lot_id, const char *serial,
                                 bool *out)
{
    static const char *const sql[] = {
        "SELECT 1 FROM station_claim WHERE lot_id = ? AND serial = ?",
        "SELECT 1 FROM device WHERE lot_id = ? AND serial = ?",
    };
    struct journal_sqlite *j = journal_sqlite_of(s);
    int r = 0;

    *out = false;
    for (size_t i = 0; i < 2 && r == 0 && !*out; i++) {
        sqlite3_stmt *st = NULL;
        int rc = SQLITE_ERROR;

        r = journal_query(j, &st, sql[i], "it", lot_id, serial);
        if (r == 0) {
            rc = sqlite3_step(st);
            *out = rc == SQLITE_ROW;
        }
        if (r == 0 && rc != SQLITE_ROW && rc != SQLITE_DONE) {
            r = journal_db_fail(j, serial);
        }
        journal_release(j, st);
    }
    return r;
}

static int sqlite_claim_insert(struct journal_store *s, long long lot_id, const char *serial,
                               const char *identity, const char *instance, const char *now,
                               bool *is_claimed)
{
    struct journal_sqlite *j = journal_sqlite_of(s);

    *is_claimed = false;
    if (journal_exec(j,
                     "INSERT INTO station_claim(lot_id, serial, identity, instance, claimed)"
                     " VALUES (?, ?, ?, ?, ?)",
                     "itttt", lot_id, serial, identity, instance, now) != SQLITE_DONE) {
        *is_claimed = sqlite3_extended_errcode(j->db) == SQLITE_CONSTRAINT_PRIMARYKEY;
        return journal_db_fail(j, serial);
    }
    return 0;
}

static const struct journal_store_ops sqlite_ops = {
    .close = sqlite_close,
    .begin = sqlite_begin,
    .end = sqlite_end,
    .begin_deferred = sqlite_begin_deferred,
    .lot_name = sqlite_lot_name,
    .lot_find = sqlite_lot_find,
    .lot_insert = sqlite_lot_insert,
    .row_get = journal_sqlite_row_get,
    .row_put = sqlite_row_put,
    .cert_insert = sqlite_cert_insert,
    .cert_supersede = sqlite_cert_supersede,
    .cert_unretired = sqlite_cert_unretired,
    .cert_retire = sqlite_cert_retire,
    .cert_move = sqlite_cert_move,
    .run_newest = sqlite_run_newest,
    .run_reissued_proven = sqlite_run_reissued_proven,
    .run_insert = sqlite_run_insert,
    .run_finish = sqlite_run_finish,
    .audit_head = sqlite_audit_head,
    .audit_append = sqlite_audit_append,
    .claim_of = sqlite_claim_of,
    .claim_is_taken = sqlite_claim_is_taken,
    .claim_insert = sqlite_claim_insert,
    .row_lock = sqlite_row_lock,
    .schema_version = sqlite_schema_version,
    .superseded_in_request = journal_sqlite_superseded_in_request,
    .last_superseded = journal_sqlite_last_superseded,
    .unretired_keys = journal_sqlite_unretired_keys,
    .row_has_cert = journal_sqlite_row_has_cert,
    .counts = journal_sqlite_counts,
    .rows_of = journal_sqlite_rows_of,
    .audit_foreach = journal_sqlite_audit_foreach,
    .audit_rows = journal_sqlite_audit_rows,
    .foreach_lot = journal_sqlite_foreach_lot,
    .foreach_device = journal_sqlite_foreach_device,
    .foreach_key = journal_sqlite_foreach_key,
};
