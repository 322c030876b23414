/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The journal's first store (journal_store.h): one SQLite file in WAL mode with
 * synchronous=FULL, so that a transaction is on disk when its commit returns; BEGIN IMMEDIATE
 * and a busy timeout serialize writers across processes, and flock on files beside the
 * database says who may write at all (the writer lock) and which station works on a row (row
 * locks). The schema is made and upgraded here, step by step. One connection per journal;
 * the journal's mutex (journal.c) serializes the transactions on it.
 */
#include "journal_sqlite.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
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

#define BUSY_TIMEOUT_MS 10000

static struct journal_sqlite *sq(struct journal_store *s)
{
    return (struct journal_sqlite *)s;
}

/* Records "journal PATH: what: <sqlite message>" (PROV_ERR_JOURNAL). */
static int journal_db_fail(struct journal_sqlite *j, const char *what)
{
    return prov_fail(PROV_ERR_JOURNAL, "journal %s: %s: %s", j->base.name, what,
                     sqlite3_errmsg(j->db));
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
static int stmt_acquire(struct journal_sqlite *j, const char *sql, sqlite3_stmt **out)
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
    rc =
        sqlite3_prepare_v3(j->db, sql, -1, slot != NULL ? SQLITE_PREPARE_PERSISTENT : 0, out, NULL);
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

int journal_release(struct journal_sqlite *j, sqlite3_stmt *st)
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

static void journal_stmts_free(struct journal_sqlite *j)
{
    for (size_t i = 0; i < JOURNAL_STMT_CACHE; i++) {
        sqlite3_finalize(j->stmts[i].st);
        j->stmts[i].st = NULL;
        j->stmts[i].busy = false;
    }
}

/* A statement for sql with the arguments bound (*st may be set even when this fails). */
static int stmt_bound(struct journal_sqlite *j, sqlite3_stmt **st, const char *sql,
                      const char *types, va_list ap)
{
    int rc = stmt_acquire(j, sql, st);

    return rc == SQLITE_OK ? bind_args(*st, types, ap) : rc;
}

/* Prepares sql with its arguments bound; the caller steps and calls journal_release. */
int journal_query(struct journal_sqlite *j, sqlite3_stmt **st, const char *sql, const char *types,
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
int journal_exec(struct journal_sqlite *j, const char *sql, const char *types, ...)
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

static char *col_strdup(sqlite3_stmt *st, int i)
{
    const unsigned char *s = sqlite3_column_text(st, i);

    return s ? strdup((const char *)s) : NULL;
}

static void journal_col_copy(sqlite3_stmt *st, int i, char *out, size_t cap)
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

/* Transactions: BEGIN IMMEDIATE takes SQLite's write lock at once, so reads see the newest. */
static void sqlite_rollback(struct journal_sqlite *j)
{
    sqlite3_exec(j->db, "ROLLBACK", NULL, NULL, NULL);
}

static int sqlite_begin(struct journal_store *s)
{
    struct journal_sqlite *j = sq(s);

    if (journal_exec(j, "BEGIN IMMEDIATE", "") != SQLITE_DONE) {
        return journal_db_fail(j, "begin");
    }
    return 0;
}

static int sqlite_end(struct journal_store *s, int r)
{
    struct journal_sqlite *j = sq(s);

    if (r != 0) {
        sqlite_rollback(j);
        return r;
    }
    if (journal_exec(j, "COMMIT", "") != SQLITE_DONE) {
        r = journal_db_fail(j, "commit");
        sqlite_rollback(j);
        return r;
    }
    return 0;
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
    struct journal_sqlite *j = sq(s);

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
    int flags = writable ? SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE : SQLITE_OPEN_READONLY;
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
    r = writable ? schema_ensure(j, hook) : reader_schema(j, hook);
    if (r < 0) {
        goto out;
    }
    if (sqlite3_exec(j->db, "PRAGMA foreign_keys=ON", NULL, NULL, NULL) != SQLITE_OK) {
        r = journal_db_fail(j, "cannot set up");
        goto out;
    }
    *out = &j->base;
    j = NULL;
out:
    sqlite_close(j ? &j->base : NULL);
    return r;
}

/* The row (the journal holds its lock, or the caller is a reader). */
static int sqlite_row_get(struct journal_store *s, long long lot_id, const char *serial,
                          struct prov_journal_device *d, long long *dev_id, long long *cert_id)
{
    struct journal_sqlite *j = sq(s);
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

static int sqlite_row_put(struct journal_store *s, struct journal_row *w)
{
    struct journal_sqlite *j = sq(s);
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
    struct journal_sqlite *j = sq(s);
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
    struct journal_sqlite *j = sq(s);
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
    struct journal_sqlite *j = sq(s);

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
    struct journal_sqlite *j = sq(s);
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
    struct journal_sqlite *j = sq(s);

    if (journal_exec(j, "UPDATE certificate SET superseded = ?, superseded_run = ? WHERE id = ?",
                     "tii", now, run_id, cert_id) != SQLITE_DONE) {
        return journal_db_fail(j, "certificate");
    }
    return 0;
}

static int sqlite_cert_unretired(struct journal_store *s, long long dev_id, const char *cert_serial,
                                 char *key_hex, char *device, size_t cap, bool *found)
{
    struct journal_sqlite *j = sq(s);
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
    struct journal_sqlite *j = sq(s);

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
    struct journal_sqlite *j = sq(s);

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
    struct journal_sqlite *j = sq(s);
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
    struct journal_sqlite *j = sq(s);
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
    struct journal_sqlite *j = sq(s);

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
    struct journal_sqlite *j = sq(s);
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
    struct journal_sqlite *j = sq(s);
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
    struct journal_sqlite *j = sq(s);
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

static int sqlite_audit_foreach(struct journal_store *s,
                                int (*fn)(void *ctx, const struct journal_audit_record *rec),
                                void *ctx)
{
    struct journal_sqlite *j = sq(s);
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
static int sqlite_audit_rows(struct journal_store *s,
                             int (*fn)(void *ctx, const struct journal_row_audit *row), void *ctx)
{
    struct journal_sqlite *j = sq(s);
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

static int sqlite_claim_of(struct journal_store *s, long long lot_id, const char *identity,
                           char *out, size_t cap)
{
    struct journal_sqlite *j = sq(s);
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
    struct journal_sqlite *j = sq(s);
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
    struct journal_sqlite *j = sq(s);

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

static int sqlite_foreach_lot(struct journal_store *s,
                              int (*fn)(void *ctx, long long lot_id, const char *name,
                                        const char *manifest),
                              void *ctx)
{
    struct journal_sqlite *j = sq(s);
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

static int sqlite_superseded_in_request(struct journal_store *s, long long lot_id,
                                        const char *serial, long long request, long long *by_run)
{
    struct journal_sqlite *j = sq(s);
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

static int sqlite_last_superseded(struct journal_store *s, long long lot_id, const char *serial,
                                  unsigned char **der, size_t *len)
{
    struct journal_sqlite *j = sq(s);
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

static int sqlite_unretired_keys(struct journal_store *s, long long lot_id, const char *serial,
                                 struct prov_journal_old_key **keys, size_t *n)
{
    struct journal_sqlite *j = sq(s);
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

static int sqlite_row_has_cert(struct journal_store *s, long long lot_id, const char *serial,
                               const char *sha256, bool *out)
{
    struct journal_sqlite *j = sq(s);
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

static int sqlite_foreach_key(struct journal_store *s,
                              int (*fn)(void *ctx, const struct prov_journal_key_ref *k), void *ctx)
{
    struct journal_sqlite *j = sq(s);
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

static int sqlite_foreach_device(struct journal_store *s, long long lot_id,
                                 int (*fn)(void *ctx, const struct prov_journal_device *d),
                                 void *ctx)
{
    struct journal_sqlite *j = sq(s);
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

static int sqlite_counts(struct journal_store *s, long long lot_id,
                         long long counts[PROV_JOURNAL_STATE_COUNT], long long *n_superseded)
{
    struct journal_sqlite *j = sq(s);
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

static const struct journal_store_ops sqlite_ops = {
    .close = sqlite_close,
    .begin = sqlite_begin,
    .end = sqlite_end,
    .lot_name = sqlite_lot_name,
    .lot_find = sqlite_lot_find,
    .lot_insert = sqlite_lot_insert,
    .row_get = sqlite_row_get,
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
    .superseded_in_request = sqlite_superseded_in_request,
    .last_superseded = sqlite_last_superseded,
    .unretired_keys = sqlite_unretired_keys,
    .row_has_cert = sqlite_row_has_cert,
    .counts = sqlite_counts,
    .audit_foreach = sqlite_audit_foreach,
    .audit_rows = sqlite_audit_rows,
    .foreach_lot = sqlite_foreach_lot,
    .foreach_device = sqlite_foreach_device,
    .foreach_key = sqlite_foreach_key,
};
