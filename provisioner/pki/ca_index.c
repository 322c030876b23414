/* SPDX-License-Identifier: Apache-2.0 */
/* The CA's record of what it issued (ca_index.h). */
#include "ca_index.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <sqlite3.h>

#include "ca_index_handle.h"
#include "cert_der.h"
#include "config.h"
#include "error.h"
#include "hex.h"
#include "keytype.h"
#include "log.h"
#include "pg_conn.h"
#include "sqldb_pg.h"
#include "sqldb_sqlite.h"
#include "storage.h"
#include "timestamp.h"

#define BUSY_TIMEOUT_MS 10000

/*
 * On PostgreSQL (doc/revocation.md) the advisory locks, two int4 keys each (doc/ledger.md):
 * the writers' transaction lock is (LOCK_CLASS, 16) (sqldb_pg.h); a running enroll attempt
 * holds (LOCK_ATTEMPT_CLASS, its id) for its session, as it holds its byte of
 * index.sqlite.lock on SQLite.
 */
#define LOCK_WRITER_KEY 16
#define LOCK_ATTEMPT_CLASS "1886549881"

static const char *const stmt_sql[ST_COUNT] = {
    "SELECT cert_serial, issued_by, lot, issued_at, status, journal FROM certificate"
    " WHERE serial = ? AND status IN ('issued', 'delivered') ORDER BY id DESC LIMIT 1",
    "SELECT serial, cert_serial FROM certificate WHERE pubkey_sha256 = ?",
    "INSERT INTO certificate(cert_serial, pubkey_sha256, serial, issued_by, lot, device_uri,"
    " key_uri, profile, issuer_sha256, not_before, not_after, der, issued_at, status,"
    " attempt_id, journal) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'issued', ?, ?)",
    "UPDATE certificate SET status = 'superseded', superseded_by = ?"
    " WHERE serial = ? AND status IN ('issued', 'delivered') AND id <> ?",
    "UPDATE certificate SET status = 'delivered' WHERE cert_serial = ? AND status = 'issued'",
    "UPDATE lot SET devices = devices + 1 WHERE name = ?1 AND NOT EXISTS"
    " (SELECT 1 FROM certificate WHERE lot = ?1 AND serial = ?2)",
};

/* ---- helpers ------------------------------------------------------------------------------ */

int prov_ca_index_spki_sha256(EVP_PKEY *pub, char out[65])
{
    unsigned char md[32];
    int r = prov_key_type_spki_sha256(pub, md);

    if (r == 0) {
        prov_hex_encode(md, sizeof(md), out);
    }
    return r;
}

static const char *col_text(struct prov_sqldb_stmt *st, int i)
{
    const char *t = prov_sqldb_column_text(st, i);

    return t != NULL ? t : "";
}

static int exec(struct prov_ca_index *ix, const char *sql)
{
    return prov_sqldb_exec(ix->sql, sql) == 0 ? 0 : prov_ca_index_fail(ix, sql);
}

static int commit(struct prov_ca_index *ix)
{
    return prov_sqldb_commit(ix->sql) == 0 ? 0 : prov_ca_index_fail(ix, "cannot commit");
}

/* Test-only: PROVISIONER_TEST_CRASH_AT=ca-issued:N exits (137) right after the N-th commit. */
static void crash_point(struct prov_ca_index *ix)
{
    if (ix->crash_after > 0 && ++ix->crash_count == ix->crash_after) {
        _exit(137);
    }
}

static void crash_hook_init(struct prov_ca_index *ix)
{
    const char *env = getenv("PROVISIONER_TEST_CRASH_AT");
    long n = 0;

    if (env != NULL && sscanf(env, "ca-issued:%ld", &n) == 1 && n > 0) {
        ix->crash_after = n;
    }
}

/* ---- open: schema and import -------------------------------------------------------------- */

/* The index file and its lock file in ca_dir, opened through the seam (sqldb_sqlite.h). */
/* A reader's open of <ca dir>/index.sqlite: the file must be there; no lock file, no write. */
static int open_sqlite_read(struct prov_ca_index *ix, const char *ca_dir)
{
    if (asprintf(&ix->path, "%s/" PROV_CA_INDEX_FILE, ca_dir) < 0) {
        ix->path = NULL;
        return prov_fail(PROV_ERR_NOMEM, "CA index: out of memory");
    }
    if (sqlite3_open_v2(ix->path, &ix->db,
                        SQLITE_OPEN_READONLY | SQLITE_OPEN_FULLMUTEX | SQLITE_OPEN_NOFOLLOW,
                        NULL) != SQLITE_OK) {
        return prov_fail(PROV_ERR_JOURNAL, "CA index %s: cannot open to read: %s", ix->path,
                         ix->db ? sqlite3_errmsg(ix->db) : "out of memory");
    }
    ix->sql = prov_sqldb_sqlite_wrap(ix->db);
    if (ix->sql == NULL) {
        return prov_fail(PROV_ERR_JOURNAL, "CA index %s: out of memory", ix->path);
    }
    sqlite3_busy_timeout(ix->db, BUSY_TIMEOUT_MS);
    return 0;
}

static int open_sqlite(struct prov_ca_index *ix, const char *ca_dir)
{
    char *lock_path = NULL;
    int fd;
    int r;

    if (asprintf(&ix->path, "%s/" PROV_CA_INDEX_FILE, ca_dir) < 0 ||
        asprintf(&lock_path, "%s.lock", ix->path) < 0) {
        return prov_fail(PROV_ERR_NOMEM, "CA index: out of memory");
    }
    /* 0600 whatever the umask: the index is the CA's bookkeeping, not for device users. */
    fd = open(ix->path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        r = prov_fail(PROV_ERR_JOURNAL, "CA index %s: %s", ix->path, strerror(errno));
        goto out;
    }
    close(fd);
    ix->lock_fd = open(lock_path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (ix->lock_fd < 0) {
        r = prov_fail(PROV_ERR_JOURNAL, "CA index %s: %s", lock_path, strerror(errno));
        goto out;
    }
    if (sqlite3_open_v2(ix->path, &ix->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX | SQLITE_OPEN_NOFOLLOW,
                        NULL) != SQLITE_OK) {
        r = prov_fail(PROV_ERR_JOURNAL, "CA index %s: cannot open: %s", ix->path,
                      ix->db ? sqlite3_errmsg(ix->db) : "out of memory");
        goto out;
    }
    ix->sql = prov_sqldb_sqlite_wrap(ix->db);
    if (ix->sql == NULL) {
        r = prov_fail(PROV_ERR_JOURNAL, "CA index %s: out of memory", ix->path);
        goto out;
    }
    sqlite3_busy_timeout(ix->db, BUSY_TIMEOUT_MS);
    r = exec(ix, "PRAGMA journal_mode=WAL");
    if (r == 0) {
        r = exec(ix, "PRAGMA synchronous=FULL");
    }
    if (r == 0) {
        r = exec(ix, "PRAGMA foreign_keys=ON");
    }
    if (r == 0) {
        r = exec(ix, PROV_SQLITE_CACHE_PRAGMA);
    }
out:
    free(lock_path);
    return r;
}

/* The index on PostgreSQL (doc/revocation.md): named by its URI with the password masked. */
static int open_pg(struct prov_ca_index *ix, const char *uri, const char *password_spec)
{
    char *password = NULL;
    int r;

    ix->path = prov_pg_mask_uri(uri);
    if (ix->path == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "CA index: out of memory");
    }
    r = prov_pg_password(password_spec, "CA index password", &password);
    if (r == 0) {
        r = prov_sqldb_pg_open(uri, password, LOCK_WRITER_KEY, &ix->sql);
    }
    if (password != NULL) {
        OPENSSL_cleanse(password, strlen(password));
    }
    free(password);
    return r;
}

/* A handle with nothing open yet (prov_ca_index_close frees it); NULL: out of memory, said. */
static struct prov_ca_index *handle_new(void)
{
    struct prov_ca_index *ix = calloc(1, sizeof(*ix));

    if (ix == NULL) {
        prov_fail(PROV_ERR_NOMEM, "CA index: out of memory");
        return NULL;
    }
    ix->lock_fd = -1;
    pthread_mutex_init(&ix->lock, NULL);
    return ix;
}

int prov_ca_index_open_at(const char *ca_dir, const char *uri, const char *password_spec,
                          struct prov_ca_index **out)
{
    struct prov_ca_index *ix = handle_new();
    int r;

    *out = NULL;
    if (ix == NULL) {
        return PROV_ERR_NOMEM;
    }
    r = uri != NULL ? open_pg(ix, uri, password_spec) : open_sqlite(ix, ca_dir);
    if (r == 0) {
        r = prov_ca_index_set_up_schema(ix, ca_dir);
    }
    for (int i = 0; r == 0 && i < ST_COUNT; i++) {
        if (prov_sqldb_prepare(ix->sql, stmt_sql[i], &ix->st[i]) != 0) {
            r = prov_ca_index_fail(ix, "cannot prepare");
        }
    }
    if (r < 0) {
        prov_ca_index_close(ix);
        return r;
    }
    crash_hook_init(ix);
    *out = ix;
    return 0;
}

int prov_ca_index_open_read(const struct prov_config *cfg, struct prov_ca_index **out)
{
    struct prov_ca_index *ix = handle_new();
    int r;

    *out = NULL;
    if (ix == NULL) {
        return PROV_ERR_NOMEM;
    }
    r = cfg->ca_index != NULL ? open_pg(ix, cfg->ca_index, cfg->ca_index_password)
                              : open_sqlite_read(ix, cfg->ca_dir);
    if (r == 0) {
        r = prov_ca_index_check_schema(ix);
    }
    if (r < 0) {
        prov_ca_index_close(ix);
        return r;
    }
    *out = ix;
    return 0;
}

int prov_ca_index_open(const char *ca_dir, struct prov_ca_index **out)
{
    return prov_ca_index_open_at(ca_dir, NULL, NULL, out);
}

int prov_ca_index_open_config(const struct prov_config *cfg, struct prov_ca_index **out)
{
    return prov_ca_index_open_at(cfg->ca_dir, cfg->ca_index, cfg->ca_index_password, out);
}

void prov_ca_index_close(struct prov_ca_index *ix)
{
    if (ix == NULL) {
        return;
    }
    if (ix->is_in_issue) {
        prov_ca_index_abort(ix);
    }
    for (int i = 0; i < ST_COUNT; i++) {
        prov_sqldb_finalize(ix->st[i]);
    }
    prov_sqldb_close(ix->sql);
    sqlite3_close(ix->db);
    if (ix->lock_fd >= 0) {
        close(ix->lock_fd); /* releases every attempt lock of this handle */
    }
    pthread_mutex_destroy(&ix->lock);
    free(ix->path);
    free(ix);
}

/* Byte 0 of the lock file: attempts lock their ids, which start at 1. */
int prov_ca_index_token_lock(const char *ca_dir, int *fd)
{
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1};
    char *path = NULL;
    int r = 0;

    *fd = -1;
    if (asprintf(&path, "%s/" PROV_CA_INDEX_FILE ".lock", ca_dir) < 0) {
        return prov_fail(PROV_ERR_NOMEM, "CA index: out of memory");
    }
    *fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (*fd < 0) {
        /* Not the CA's host, or not its operator (a device-side csr reading the CA token's
         * identity): nobody here logs in to the CA token, so there is nothing to wait for. */
        prov_debug("ca", "%s: %s; the CA token is opened without the lock", path,
                   strerror(errno));
    }
    while (*fd >= 0 && fcntl(*fd, F_OFD_SETLKW, &fl) != 0) {
        if (errno != EINTR) {
            r = prov_fail(PROV_ERR_JOURNAL, "%s: cannot lock: %s", path, strerror(errno));
            close(*fd);
            *fd = -1;
        }
    }
    free(path);
    return r;
}

void prov_ca_index_token_unlock(int fd)
{
    if (fd >= 0) {
        close(fd); /* releases the lock */
    }
}

/* ---- the rules and issuance --------------------------------------------------------------- */

static struct prov_sqldb_stmt *stmt(struct prov_ca_index *ix, enum ca_index_stmt which)
{
    prov_sqldb_reset(ix->st[which]);
    return ix->st[which];
}

/* Where a certificate was issued, for messages: "enroll", "sign", "lot NAME". */
static void issued_where(const char *issued_by, const char *lot, char *out, size_t cap)
{
    if (lot != NULL && lot[0] != '\0') {
        snprintf(out, cap, "lot %s", lot);
    } else {
        snprintf(out, cap, "%s", issued_by);
    }
}

/* A lot's journal as recorded: its resolved path (the path as given when it cannot be). */
static char *journal_identity(const char *journal)
{
    char *real;

    if (journal == NULL) {
        return NULL;
    }
    real = realpath(journal, NULL);
    return real != NULL ? real : strdup(journal);
}

/*
 * A registered lot's cap and the asking station's rates (on the lot, and its own across all
 * its lots), again inside the issuing transaction: the CA service checks them before it signs
 * (ca_registry.c), in a transaction of its own, and two CA hosts sharing the index
 * (doc/revocation.md) could both pass that check for the last device (or the last
 * certificate of the minute). Here, under the
 * writers' lock, the count and the insert are one step. Only the service's requests
 * (issued_by "cmp:NAME" or "est:NAME") name a registered lot; a serial the lot already has a
 * certificate for is counted already.
 */
static int check_lot_terms(struct prov_ca_index *ix, const char *serial,
                           const struct prov_ca_record *rec)
{
    struct prov_sqldb_stmt *st = NULL;
    const char *station;
    char cmp_by[80];
    char est_by[80];
    char since[32];
    long long cap, n, mine, rate, recent, station_rate, station_recent;
    int rc;

    if (rec->lot == NULL || rec->issued_by == NULL ||
        (strncmp(rec->issued_by, "cmp:", 4) != 0 && strncmp(rec->issued_by, "est:", 4) != 0)) {
        return 0;
    }
    station = rec->issued_by + 4;
    snprintf(cmp_by, sizeof(cmp_by), "cmp:%s", station);
    snprintf(est_by, sizeof(est_by), "est:%s", station);
    prov_timestamp_ago(60, since, sizeof(since)); /* the rate's minute (ca_registry.c) */
    rc = prov_ca_index_run(
        ix,
        "SELECT l.cap, l.devices,"
        " (SELECT count(*) FROM certificate WHERE lot = l.name AND serial = ?2),"
        " coalesce((SELECT per_minute FROM lot_station WHERE lot = l.name"
        "  AND station = ?3), 0),"
        " (SELECT count(*) FROM certificate WHERE lot = l.name AND issued_by IN (?4, ?5)"
        "  AND issued_at > ?6),"
        " coalesce((SELECT per_minute FROM station WHERE name = ?3), 0),"
        " (SELECT count(*) FROM certificate WHERE issued_by IN (?4, ?5) AND issued_at > ?6)"
        " FROM lot l WHERE l.name = ?1",
        &st, "tttttt", rec->lot, serial, station, cmp_by, est_by, since);
    if (rc != PROV_SQLDB_ROW) {
        return rc == PROV_SQLDB_DONE ? 0 : PROV_ERR_JOURNAL;
    }
    cap = prov_sqldb_column_int(st, 0);
    n = prov_sqldb_column_int(st, 1);
    mine = prov_sqldb_column_int(st, 2);
    rate = prov_sqldb_column_int(st, 3);
    recent = prov_sqldb_column_int(st, 4);
    station_rate = prov_sqldb_column_int(st, 5);
    station_recent = prov_sqldb_column_int(st, 6);
    prov_sqldb_finalize(st);
    if (mine == 0 && n >= cap) {
        return prov_fail(PROV_ERR_POLICY, "lot %s: its cap (%lld) is reached", rec->lot, cap);
    }
    if (rate > 0 && recent >= rate) {
        return prov_fail(PROV_ERR_POLICY,
                         "station %s: its rate for lot %s (%lld per minute) is reached",
                         station, rec->lot, rate);
    }
    if (station_rate > 0 && station_recent >= station_rate) {
        return prov_fail(PROV_ERR_POLICY, "station %s: its rate (%lld per minute) is reached",
                         station, station_rate);
    }
    return 0;
}

/* The serial rule and the key rule of ca_index.h; the caller holds ix->lock. */
static int check_rules(struct prov_ca_index *ix, const char *serial,
                       const struct prov_ca_record *rec, EVP_PKEY *pub)
{
    struct prov_sqldb_stmt *st = stmt(ix, ST_CURRENT);
    char hash[65];
    int rc;
    int r;

    r = check_lot_terms(ix, serial, rec);
    if (r < 0) {
        return r;
    }

    prov_sqldb_bind_text(st, 1, serial);
    rc = prov_sqldb_step(st);
    if (rc == PROV_SQLDB_ROW) {
        const char *lot = prov_sqldb_column_text(st, 2);
        const char *journal = prov_sqldb_column_text(st, 5);
        char *mine = journal_identity(rec->journal);
        bool is_same_lot = lot != NULL && rec->lot != NULL && strcmp(lot, rec->lot) == 0 &&
                           journal != NULL && mine != NULL && strcmp(journal, mine) == 0;

        free(mine);

        if (!rec->is_reissue && !is_same_lot) {
            char where[128];

            issued_where(col_text(st, 1), lot, where, sizeof(where));
            r = prov_fail(PROV_ERR_ALREADY_ISSUED,
                          "serial %s: already certified: certificate %s, issued by %s at %s%s "
                          "(--reissue certifies it again)",
                          serial, col_text(st, 0), where, col_text(st, 3),
                          strcmp(col_text(st, 4), "issued") == 0 ? ", not delivered" : "");
            prov_sqldb_reset(st);
            return r;
        }
    } else if (rc != PROV_SQLDB_DONE) {
        prov_sqldb_reset(st);
        return prov_ca_index_fail(ix, "reading the serial's certificate");
    }
    prov_sqldb_reset(st);
    if (pub == NULL) {
        return 0;
    }
    if (rec->pubkey_sha256 != NULL) {
        snprintf(hash, sizeof(hash), "%s", rec->pubkey_sha256);
    } else {
        r = prov_ca_index_spki_sha256(pub, hash);
        if (r < 0) {
            return r;
        }
    }
    st = stmt(ix, ST_BY_PUBKEY);
    prov_sqldb_bind_text(st, 1, hash);
    rc = prov_sqldb_step(st);
    if (rc == PROV_SQLDB_ROW) {
        r = prov_fail(PROV_ERR_ALREADY_ISSUED,
                      "serial %s: the public key was already certified (for %s, certificate %s; "
                      "%s): a key is never certified twice",
                      serial, col_text(st, 0), col_text(st, 1), ix->path);
    } else if (rc != PROV_SQLDB_DONE) {
        r = prov_ca_index_fail(ix, "reading the key's certificate");
    }
    prov_sqldb_reset(st);
    return r;
}

int prov_ca_index_check(struct prov_ca_index *ix, const char *serial,
                        const struct prov_ca_record *rec, EVP_PKEY *pub)
{
    int r;

    pthread_mutex_lock(&ix->lock);
    r = check_rules(ix, serial, rec, pub);
    pthread_mutex_unlock(&ix->lock);
    return r;
}

int prov_ca_index_begin(struct prov_ca_index *ix, const char *serial,
                        const struct prov_ca_record *rec, EVP_PKEY *pub)
{
    int r;

    pthread_mutex_lock(&ix->lock);
    r = prov_ca_index_begin_write(ix);
    if (r == 0) {
        r = check_rules(ix, serial, rec, pub);
        if (r < 0) {
            prov_sqldb_rollback(ix->sql);
        }
    }
    if (r < 0) {
        pthread_mutex_unlock(&ix->lock);
        return r;
    }
    ix->is_in_issue = true;
    return 0;
}

void prov_ca_index_abort(struct prov_ca_index *ix)
{
    if (!ix->is_in_issue) {
        return;
    }
    prov_sqldb_rollback(ix->sql);
    ix->is_in_issue = false;
    pthread_mutex_unlock(&ix->lock);
}

int prov_ca_index_discarded(struct prov_ca_index *ix, const char *serial, X509 *cert,
                            const char *why)
{
    const ASN1_INTEGER *sn = X509_get0_serialNumber(cert);
    size_t n = sn != NULL ? (size_t)ASN1_STRING_length(sn) : 0;
    char hex[2 * 64 + 1] = "";
    char now[40];
    int r;

    if (n > 0 && n <= 64) {
        prov_hex_encode(ASN1_STRING_get0_data(sn), n, hex);
    }
    prov_ca_index_now_text(now, sizeof(now));
    pthread_mutex_lock(&ix->lock);
    r = prov_ca_index_begin_write(ix);
    if (r == 0) {
        r = prov_ca_index_end_write(
            ix, prov_ca_index_audit_append(ix, now, "discard", serial, hex, why),
            "cannot commit");
    }
    pthread_mutex_unlock(&ix->lock);
    return r;
}

/* RFC 3339 times and the hex fingerprint of what is recorded with a certificate. */
struct cert_columns {
    struct prov_cert_facts facts;
    char pubkey[65];
    char issuer[65];
    unsigned char *der;
    size_t der_len;
};

/* The columns of cert; pubkey_sha256: its key's hash when the caller has it (NULL: hashed). */
static int cert_columns(X509 *cert, X509 *issuer, const char *pubkey_sha256,
                        struct cert_columns *c)
{
    unsigned char md[32];
    int r;

    memset(c, 0, sizeof(*c));
    c->issuer[0] = '\0';
    r = prov_cert_facts(cert, &c->facts);
    if (r == 0 && pubkey_sha256 != NULL) {
        snprintf(c->pubkey, sizeof(c->pubkey), "%s", pubkey_sha256);
    } else if (r == 0) {
        r = prov_ca_index_spki_sha256(X509_get0_pubkey(cert), c->pubkey);
    }
    /* the issuer's hash and the certificate's DER are kept with the objects (cert_der.h) */
    if (r == 0 && issuer != NULL) {
        r = prov_cert_sha256(issuer, md);
        if (r == 0) {
            prov_hex_encode(md, sizeof(md), c->issuer);
        }
    }
    if (r == 0) {
        r = prov_cert_der(cert, &c->der, &c->der_len);
    }
    return r;
}

int prov_ca_index_record(struct prov_ca_index *ix, const char *serial,
                         const struct prov_ca_record *rec, const char *profile, X509 *cert,
                         X509 *issuer)
{
    struct cert_columns c;
    struct prov_sqldb_stmt *st;
    char *journal = NULL;
    char at[32];
    long long id;
    int r;

    if (!ix->is_in_issue) {
        return prov_fail(PROV_ERR_INTERNAL, "CA index: record without begin");
    }
    prov_ca_index_now_text(at, sizeof(at));
    journal = journal_identity(rec->journal);
    r = cert_columns(cert, issuer, rec->pubkey_sha256, &c);
    if (r < 0) {
        goto out;
    }
    /* a serial new to its lot counts once towards the cap (schema step 7) */
    if (rec->lot != NULL) {
        st = stmt(ix, ST_LOT_COUNT);
        prov_sqldb_bind_text(st, 1, rec->lot);
        prov_sqldb_bind_text(st, 2, serial);
        r = prov_sqldb_step(st) == PROV_SQLDB_DONE ? 0 : prov_ca_index_fail(ix, "counting the lot");
        prov_sqldb_reset(st);
        if (r < 0) {
            goto out;
        }
    }
    st = stmt(ix, ST_INSERT);
    prov_sqldb_bind_text(st, 1, c.facts.serial_hex);
    prov_sqldb_bind_text(st, 2, c.pubkey);
    prov_sqldb_bind_text(st, 3, serial);
    prov_sqldb_bind_text(st, 4, rec->issued_by ? rec->issued_by : "enroll");
    prov_sqldb_bind_text(st, 5, rec->lot);
    prov_sqldb_bind_text(st, 6, rec->device_uri);
    prov_sqldb_bind_text(st, 7, rec->key_uri);
    prov_sqldb_bind_text(st, 8, profile);
    prov_sqldb_bind_text(st, 9, c.issuer[0] ? c.issuer : NULL);
    prov_sqldb_bind_text(st, 10, c.facts.not_before);
    prov_sqldb_bind_text(st, 11, c.facts.not_after);
    prov_sqldb_bind_blob(st, 12, c.der, c.der_len);
    prov_sqldb_bind_text(st, 13, at);
    if (rec->attempt_id > 0) {
        prov_sqldb_bind_int(st, 14, rec->attempt_id);
    }
    prov_sqldb_bind_text(st, 15, journal);
    if (prov_sqldb_step(st) != PROV_SQLDB_DONE) {
        r = prov_ca_index_fail(ix, "cannot record the certificate");
        prov_sqldb_reset(st);
        goto out;
    }
    prov_sqldb_reset(st);
    id = prov_sqldb_last_id(ix->sql);
    /* What begin let through: a reissue, or the same lot again. */
    st = stmt(ix, ST_SUPERSEDE);
    prov_sqldb_bind_int(st, 1, id);
    prov_sqldb_bind_text(st, 2, serial);
    prov_sqldb_bind_int(st, 3, id);
    if (prov_sqldb_step(st) != PROV_SQLDB_DONE) {
        r = prov_ca_index_fail(ix, "cannot supersede the earlier certificate");
        prov_sqldb_reset(st);
        goto out;
    }
    prov_sqldb_reset(st);
    if (rec->is_revoke_superseded) {
        r = prov_ca_index_revoke_superseded(ix, id, serial);
        if (r < 0) {
            goto out;
        }
    }
    if (rec->also != NULL) {
        r = rec->also(ix, rec->also_arg);
        if (r < 0) {
            goto out;
        }
    }
    r = commit(ix);
out:
    OPENSSL_free(c.der);
    free(journal);
    if (r < 0) {
        prov_sqldb_rollback(ix->sql);
    }
    ix->is_in_issue = false;
    pthread_mutex_unlock(&ix->lock);
    if (r == 0) {
        crash_point(ix);
    }
    return r;
}

int prov_ca_index_delivered(struct prov_ca_index *ix, X509 *cert)
{
    struct prov_cert_facts f;
    struct prov_sqldb_stmt *st;
    int r;

    if (ix == NULL) {
        return 0; /* a CA opened without its index records nothing (unit tests) */
    }
    r = prov_cert_facts(cert, &f);
    if (r < 0) {
        return r;
    }
    pthread_mutex_lock(&ix->lock);
    st = stmt(ix, ST_DELIVERED);
    prov_sqldb_bind_text(st, 1, f.serial_hex);
    if (prov_sqldb_step(st) != PROV_SQLDB_DONE) {
        r = prov_ca_index_fail(ix, "cannot record the delivery");
    }
    prov_sqldb_reset(st);
    pthread_mutex_unlock(&ix->lock);
    return r;
}

/* ---- enroll attempts ---------------------------------------------------------------------- */

/*
 * On PostgreSQL an attempt's lock is a session-level advisory lock: held by this handle's
 * connection, released when it is closed or the process dies (the server ends the session),
 * whichever CA host runs the attempt. PostgreSQL counts a session's locks of one key and
 * OFD locks do not: one unlock releases them all here, as on SQLite.
 */
static bool attempt_lock_pg(struct prov_ca_index *ix, long long id, short type)
{
    struct prov_sqldb_stmt *st = NULL;
    bool is_done = false;

    for (int i = 0; i < 16; i++) {
        is_done = prov_ca_index_run(ix,
                                    type == F_WRLCK
                                        ? "SELECT pg_try_advisory_lock(" LOCK_ATTEMPT_CLASS ", ?)"
                                        : "SELECT pg_advisory_unlock(" LOCK_ATTEMPT_CLASS ", ?)",
                                    &st, "i", id) == PROV_SQLDB_ROW &&
                  prov_sqldb_column_int(st, 0) == 1;
        prov_sqldb_finalize(st);
        st = NULL;
        if (type == F_WRLCK || !is_done) {
            break;
        }
    }
    return type == F_WRLCK ? is_done : true;
}

/* Locks (F_WRLCK) or unlocks (F_UNLCK) the attempt's byte; false when another holds it. */
static bool attempt_lock(struct prov_ca_index *ix, long long id, short type)
{
    struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = id, .l_len = 1};

    if (prov_sqldb_dialect(ix->sql) == PROV_SQLDB_POSTGRESQL) {
        return attempt_lock_pg(ix, id, type);
    }
    /* Open file description locks: held by this handle, released when it is closed or the
     * process dies (kill -9 included), and not shared with another handle of this process. */
    return fcntl(ix->lock_fd, F_OFD_SETLK, &fl) == 0;
}

void prov_ca_attempt_clear(struct prov_ca_attempt *a)
{
    if (a == NULL) {
        return;
    }
    free(a->serial);
    free(a->device_uri);
    free(a->storage);
    free(a->old_key_uri);
    free(a->pin_source);
    memset(a, 0, sizeof(*a));
}

int prov_ca_index_attempt_begin(struct prov_ca_index *ix, struct prov_ca_attempt *a)
{
    struct prov_sqldb_stmt *st = NULL;
    char at[32];
    int r;

    prov_ca_index_now_text(at, sizeof(at));
    pthread_mutex_lock(&ix->lock);
    r = prov_ca_index_begin_write(ix);
    if (r < 0) {
        goto out;
    }
    if (prov_ca_index_run(
            ix,
            "INSERT INTO attempt(serial, device_uri, key_id, storage, old_key_uri, pin_source,"
            " started_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            &st, "ttbtttt", a->serial, a->device_uri, a->key_id, a->key_id_len, a->storage,
            a->old_key_uri, a->pin_source, at) != PROV_SQLDB_DONE) {
        prov_sqldb_finalize(st);
        r = PROV_ERR_JOURNAL;
        goto out;
    }
    a->id = prov_sqldb_last_id(ix->sql);
    /* Locked before the commit makes the row visible: nobody takes it for interrupted. */
    if (!attempt_lock(ix, a->id, F_WRLCK)) {
        r = prov_fail(PROV_ERR_JOURNAL, "CA index %s.lock: cannot lock attempt %lld: %s",
                      ix->path, a->id, strerror(errno));
        goto out;
    }
    r = commit(ix);
    if (r < 0) {
        attempt_lock(ix, a->id, F_UNLCK);
    }
out:
    if (r < 0) {
        prov_sqldb_rollback(ix->sql);
    }
    pthread_mutex_unlock(&ix->lock);
    return r;
}

int prov_ca_index_attempt_finish(struct prov_ca_index *ix, long long id, bool is_delivered,
                                 const char *outcome)
{
    struct prov_sqldb_stmt *st = NULL;
    char at[32];
    int r;

    prov_ca_index_now_text(at, sizeof(at));
    pthread_mutex_lock(&ix->lock);
    r = prov_ca_index_begin_write(ix);
    if (r == 0 && prov_ca_index_run(ix,
                                    is_delivered ? "UPDATE certificate SET status = 'delivered'"
                                                   " WHERE attempt_id = ? AND status = 'issued'"
                                                 : "UPDATE certificate SET status = 'abandoned'"
                                                   " WHERE attempt_id = ? AND status = 'issued'",
                                    &st, "i", id) != PROV_SQLDB_DONE) {
        r = PROV_ERR_JOURNAL;
    }
    if (r == 0 &&
        prov_ca_index_run(ix, "UPDATE attempt SET finished_at = ?, outcome = ? WHERE id = ?", &st,
                          "tti", at, outcome, id) != PROV_SQLDB_DONE) {
        r = PROV_ERR_JOURNAL;
    }
    prov_sqldb_finalize(st);
    r = r == 0 ? commit(ix) : r;
    if (r < 0) {
        prov_sqldb_rollback(ix->sql);
    } else {
        attempt_lock(ix, id, F_UNLCK);
    }
    pthread_mutex_unlock(&ix->lock);
    return r;
}

void prov_ca_index_attempt_release(struct prov_ca_index *ix, long long id)
{
    pthread_mutex_lock(&ix->lock); /* on PostgreSQL the unlock is a statement */
    attempt_lock(ix, id, F_UNLCK);
    pthread_mutex_unlock(&ix->lock);
}

static char *dup_col(struct prov_sqldb_stmt *st, int i)
{
    const char *t = prov_sqldb_column_text(st, i);

    return t != NULL ? strdup(t) : NULL;
}

/* Reads the attempt row st is on. */
static int attempt_from_row(struct prov_sqldb_stmt *st, struct prov_ca_attempt *a)
{
    size_t id_len = 0;
    const void *id = prov_sqldb_column_blob(st, 3, &id_len);

    memset(a, 0, sizeof(*a));
    a->id = prov_sqldb_column_int(st, 0);
    a->serial = dup_col(st, 1);
    a->device_uri = dup_col(st, 2);
    a->storage = dup_col(st, 4);
    a->old_key_uri = dup_col(st, 5);
    a->pin_source = dup_col(st, 6);
    if (id != NULL && id_len > 0 && id_len <= PROV_CA_INDEX_KEY_ID_MAX) {
        memcpy(a->key_id, id, id_len);
        a->key_id_len = id_len;
    }
    if (a->serial == NULL || a->device_uri == NULL || a->storage == NULL) {
        prov_ca_attempt_clear(a);
        return prov_fail(PROV_ERR_NOMEM, "CA index: out of memory");
    }
    return 0;
}

/* Whether attempt id is still unfinished (read again once it is claimed). */
static bool is_unfinished(struct prov_ca_index *ix, long long id)
{
    struct prov_sqldb_stmt *st = NULL;
    bool yes = prov_ca_index_run(ix, "SELECT 1 FROM attempt WHERE id = ? AND finished_at IS NULL",
                                 &st, "i", id) == PROV_SQLDB_ROW;

    prov_sqldb_finalize(st);
    return yes;
}

int prov_ca_index_interrupted(struct prov_ca_index *ix, const char *serial,
                              const char *device_uri, struct prov_ca_attempt **out, size_t *n,
                              size_t *n_busy)
{
    struct prov_ca_attempt *list = NULL;
    size_t count = 0;
    struct prov_sqldb_stmt *st = NULL;
    int rc;
    int r = 0;

    *out = NULL;
    *n = 0;
    *n_busy = 0;
    pthread_mutex_lock(&ix->lock);
    rc = prov_ca_index_run(
        ix,
        "SELECT id, serial, device_uri, key_id, storage, old_key_uri, pin_source"
        " FROM attempt WHERE finished_at IS NULL AND (serial = ? OR device_uri = ?)"
        " ORDER BY id",
        &st, "tt", serial, device_uri);
    for (; rc == PROV_SQLDB_ROW && r == 0; rc = prov_sqldb_step(st)) {
        long long id = prov_sqldb_column_int(st, 0);
        struct prov_ca_attempt *grown;

        if (!attempt_lock(ix, id, F_WRLCK)) {
            /* A live enroll holds it (or cleans it up): not interrupted. */
            *n_busy += strcmp(col_text(st, 1), serial) == 0;
            continue;
        }
        grown = realloc(list, (count + 1) * sizeof(*list));
        if (grown == NULL) {
            attempt_lock(ix, id, F_UNLCK);
            r = prov_fail(PROV_ERR_NOMEM, "CA index: out of memory");
            break;
        }
        list = grown;
        r = attempt_from_row(st, &list[count]);
        if (r < 0) {
            attempt_lock(ix, id, F_UNLCK);
            break;
        }
        count++;
    }
    if (r == 0 && rc != PROV_SQLDB_DONE && rc != PROV_SQLDB_ROW) {
        r = prov_ca_index_fail(ix, "reading attempts");
    }
    prov_sqldb_finalize(st);
    /* One that finished between the read and the claim is not interrupted. */
    for (size_t i = 0; r == 0 && i < count;) {
        if (is_unfinished(ix, list[i].id)) {
            i++;
            continue;
        }
        attempt_lock(ix, list[i].id, F_UNLCK);
        prov_ca_attempt_clear(&list[i]);
        memmove(&list[i], &list[i + 1], (count - i - 1) * sizeof(*list));
        count--;
    }
    pthread_mutex_unlock(&ix->lock);
    if (r < 0) {
        for (size_t i = 0; i < count; i++) {
            attempt_lock(ix, list[i].id, F_UNLCK);
            prov_ca_attempt_clear(&list[i]);
        }
        free(list);
        return r;
    }
    *out = list;
    *n = count;
    return 0;
}

int prov_ca_index_attempt_certificate(struct prov_ca_index *ix, long long id, X509 **out)
{
    struct prov_sqldb_stmt *st = NULL;
    const unsigned char *der;
    int rc;
    int r = 0;

    *out = NULL;
    pthread_mutex_lock(&ix->lock);
    rc = prov_ca_index_run(ix,
                           "SELECT der FROM certificate WHERE attempt_id = ? AND status = 'issued'"
                           " ORDER BY id DESC LIMIT 1",
                           &st, "i", id);
    if (rc == PROV_SQLDB_ROW) {
        size_t der_len = 0;

        der = prov_sqldb_column_blob(st, 0, &der_len);
        *out = der ? d2i_X509(NULL, &der, (long)der_len) : NULL;
        if (*out == NULL) {
            r = prov_fail_ossl(PROV_ERR_JOURNAL, "CA index %s: attempt %lld: the certificate "
                               "does not parse", ix->path, id);
        }
    } else if (rc != PROV_SQLDB_DONE) {
        r = PROV_ERR_JOURNAL;
    }
    prov_sqldb_finalize(st);
    pthread_mutex_unlock(&ix->lock);
    return r;
}

int prov_ca_index_attempt_restore(struct prov_ca_index *ix, long long id, X509 *stored,
                                  bool *restored)
{
    struct prov_cert_facts f;
    struct prov_sqldb_stmt *st = NULL;
    int rc;
    int r;

    *restored = false;
    r = prov_cert_facts(stored, &f);
    if (r < 0) {
        return r;
    }
    pthread_mutex_lock(&ix->lock);
    rc = prov_ca_index_run(ix,
                           "UPDATE certificate SET status = 'delivered', superseded_by = NULL"
                           " WHERE cert_serial = ? AND status = 'superseded' AND superseded_by IN"
                           " (SELECT id FROM certificate WHERE attempt_id = ?)",
                           &st, "ti", f.serial_hex, id);
    prov_sqldb_finalize(st);
    if (rc != PROV_SQLDB_DONE) {
        r = PROV_ERR_JOURNAL;
    } else {
        *restored = prov_sqldb_changes(ix->sql) > 0;
    }
    pthread_mutex_unlock(&ix->lock);
    return r;
}

/* ---- ca show ------------------------------------------------------------------------------ */

void prov_ca_index_stats_clear(struct prov_ca_index_stats *s)
{
    if (s != NULL) {
        free(s->undelivered);
        memset(s, 0, sizeof(*s));
    }
}

int prov_ca_index_stats(struct prov_ca_index *ix, struct prov_ca_index_stats *out)
{
    struct prov_sqldb_stmt *st = NULL;
    int rc;
    int r = 0;

    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&ix->lock);
    for (rc = prov_ca_index_run(ix, "SELECT status, count(*) FROM certificate GROUP BY status", &st,
                                "");
         rc == PROV_SQLDB_ROW; rc = prov_sqldb_step(st)) {
        const char *s = col_text(st, 0);
        long long n = prov_sqldb_column_int(st, 1);

        if (strcmp(s, "issued") == 0) {
            out->issued = n;
        } else if (strcmp(s, "delivered") == 0) {
            out->delivered = n;
        } else if (strcmp(s, "superseded") == 0) {
            out->superseded = n;
        } else if (strcmp(s, "abandoned") == 0) {
            out->abandoned = n;
        }
    }
    prov_sqldb_finalize(st);
    r = rc == PROV_SQLDB_DONE ? 0 : prov_ca_index_fail(ix, "counting certificates");
    for (rc = r == 0 ? prov_ca_index_run(
                           ix,
                           "SELECT serial, cert_serial, issued_at, issued_by, lot, status"
                           " FROM certificate WHERE status IN ('issued', 'abandoned')"
                           " ORDER BY id",
                           &st, "")
                     : PROV_SQLDB_DONE;
         rc == PROV_SQLDB_ROW && r == 0; rc = prov_sqldb_step(st)) {
        struct prov_ca_index_undelivered *grown =
            realloc(out->undelivered, (out->n_undelivered + 1) * sizeof(*grown));
        struct prov_ca_index_undelivered *u;

        if (grown == NULL) {
            r = prov_fail(PROV_ERR_NOMEM, "CA index: out of memory");
            break;
        }
        out->undelivered = grown;
        u = &grown[out->n_undelivered++];
        snprintf(u->serial, sizeof(u->serial), "%s", col_text(st, 0));
        snprintf(u->cert_serial, sizeof(u->cert_serial), "%s", col_text(st, 1));
        snprintf(u->issued_at, sizeof(u->issued_at), "%s", col_text(st, 2));
        snprintf(u->status, sizeof(u->status), "%s", col_text(st, 5));
        issued_where(col_text(st, 3), prov_sqldb_column_text(st, 4), u->issued_by,
                     sizeof(u->issued_by));
    }
    prov_sqldb_finalize(st);
    if (r == 0 && rc != PROV_SQLDB_DONE) {
        r = prov_ca_index_fail(ix, "listing undelivered certificates");
    }
    if (r == 0) {
        rc = prov_ca_index_run(ix, "SELECT count(*) FROM attempt WHERE finished_at IS NULL", &st,
                               "");
        if (rc == PROV_SQLDB_ROW) {
            out->attempts_open = prov_sqldb_column_int(st, 0);
        } else {
            r = PROV_ERR_JOURNAL;
        }
        prov_sqldb_finalize(st);
    }
    pthread_mutex_unlock(&ix->lock);
    if (r < 0) {
        prov_ca_index_stats_clear(out);
    }
    return r;
}
