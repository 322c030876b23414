/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The work floor (bench_work.h): per device, beside the device floor's token work and the
 * line floor's CA signature, the rest of what the batch must do, each part once and the
 * leanest way: a lower bound of the same work, not a model of the tool.
 *
 *   intents' thread  the journal's intent (one transaction) of each device before its key,
 *                    at most two devices ahead of the token's thread
 *   token's thread   the device floor's work; device i's certificate object once i is issued,
 *                    after device i + 1's signatures
 *   CA thread        after the CA's signature: the CSR's signature verified with the key's
 *                    public point, the CA index's record and the journal's issued (one
 *                    transaction each, the certificate's bytes in both), the proof's
 *                    signature verified
 *   storage thread   once the device's certificate object is stored: the device's directory
 *                    and its seven files (client.crt, client.der, chain.pem, fullchain.pem,
 *                    server-ca.pem, key.uri, identity.json; each written to a temporary name,
 *                    synced, renamed; the directory and its parent synced), the certificate verified with the intermediate's key
 *                    (the intermediate with the root's once, before the clock), the CA
 *                    index's delivered and the journal's stored (one transaction each)
 *
 * Both SQLite databases are in WAL mode with synchronous=FULL, as the tool's journal and CA
 * index are (factory/journal_sqlite.c, provisioner/pki/ca_index.c), and the journal's stored
 * record commits at NORMAL, as the tool's does: one connection each, its statements prepared
 * once, one transaction at a time under a mutex (statements bound under it too). The threads
 * hand devices on by counters (issued, certified, begun, intended) under one mutex: wait_for,
 * advance.
 */
/* The legacy EC_KEY and ECDSA_do_verify: the leanest way to check a raw signature with a
   point in OpenSSL 3.0 (the tool's signer uses them too: provisioner/device/signer.c). */
#define OPENSSL_SUPPRESS_DEPRECATED

#include "bench_work.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sqlite3.h>

/* One database: one connection, its transactions one at a time (mx), as the tool's. */
struct db {
    sqlite3 *db;
    sqlite3_stmt *begin, *commit;
    pthread_mutex_t mx;
};

struct dev {
    unsigned char point[80], csr[72], proof[72];
    size_t point_len, csr_len, proof_len;
};

static struct {
    char *dir;
    unsigned long n;
    struct dev *devs;
    X509 *inter, *root, *cert;
    /* the files' bytes: client.crt, chain.pem, fullchain.pem, client.der */
    unsigned char *pem, *chain, *full, *der;
    size_t pem_len, chain_len, full_len, der_len;
    struct db journal, index;
    sqlite3_stmt *intent, *issued_st, *stored, *record, *delivered;
    void (*id_of)(unsigned long i, unsigned char id[16]);
    pthread_t storage, intents;
    pthread_mutex_t mx;
    pthread_cond_t cv;
    unsigned long issued;    /* devices issued: the token's thread waits for them */
    unsigned long certified; /* certificate objects stored: the storage thread waits for them */
    unsigned long begun;     /* the device the token's thread is at */
    unsigned long intended;  /* intents recorded: the token's thread waits for them */
    int r;
} w = {.mx = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static int fail(const char *what, const char *detail)
{
    fprintf(stderr, "bench_p11: work floor: %s: %s\n", what, detail);
    return -1;
}

/* Waits until *count >= need or a thread failed; w.r (0 when none did). */
static int wait_for(const unsigned long *count, unsigned long need)
{
    int r;

    pthread_mutex_lock(&w.mx);
    while (*count < need && w.r == 0) {
        pthread_cond_wait(&w.cv, &w.mx);
    }
    r = w.r;
    pthread_mutex_unlock(&w.mx);
    return r;
}

/* *count = value, and every waiting thread told. */
static void advance(unsigned long *count, unsigned long value)
{
    pthread_mutex_lock(&w.mx);
    *count = value;
    pthread_cond_broadcast(&w.cv);
    pthread_mutex_unlock(&w.mx);
}

static int db_open(struct db *d, const char *file, const char *schema)
{
    char path[4096];

    snprintf(path, sizeof(path), "%s/%s", w.dir, file);
    pthread_mutex_init(&d->mx, NULL);
    if (sqlite3_open_v2(path, &d->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                                          SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK ||
        sqlite3_exec(d->db, "PRAGMA journal_mode=WAL", NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_exec(d->db, "PRAGMA synchronous=FULL", NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_exec(d->db, schema, NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_prepare_v3(d->db, "BEGIN IMMEDIATE", -1, SQLITE_PREPARE_PERSISTENT, &d->begin,
                           NULL) != SQLITE_OK ||
        sqlite3_prepare_v3(d->db, "COMMIT", -1, SQLITE_PREPARE_PERSISTENT, &d->commit, NULL) !=
            SQLITE_OK) {
        return fail(path, d->db != NULL ? sqlite3_errmsg(d->db) : "cannot open");
    }
    return 0;
}

static int prepare(struct db *d, const char *sql, sqlite3_stmt **st)
{
    return sqlite3_prepare_v3(d->db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL) == SQLITE_OK
               ? 0
               : fail(sql, sqlite3_errmsg(d->db));
}

/* d's connection taken: its statements may be bound, then db_run lets it go. */
static void db_take(struct db *d)
{
    pthread_mutex_lock(&d->mx);
}

/*
 * One transaction of st (bound by the caller since db_take) in d; d let go. is_deferred: at
 * synchronous=NORMAL (a WAL commit without its sync), as the tool's journal commits the
 * stored record it may lose to a power cut (factory/journal.c, stored_proven;
 * factory/journal_sqlite.c, sqlite_begin_deferred), FULL again after it.
 */
static int db_run(struct db *d, sqlite3_stmt *st, bool is_deferred)
{
    int rc = SQLITE_DONE;

    if (is_deferred && sqlite3_exec(d->db, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL) !=
                           SQLITE_OK) {
        rc = SQLITE_ERROR;
    }
    if (rc == SQLITE_DONE) {
        rc = sqlite3_step(d->begin);
        sqlite3_reset(d->begin);
    }
    rc = rc == SQLITE_DONE ? sqlite3_step(st) : rc;
    sqlite3_reset(st);
    rc = rc == SQLITE_DONE ? sqlite3_step(d->commit) : rc;
    sqlite3_reset(d->commit);
    if (rc != SQLITE_DONE) {
        fail("transaction", sqlite3_errmsg(d->db));
    }
    if (is_deferred && sqlite3_exec(d->db, "PRAGMA synchronous=FULL", NULL, NULL, NULL) !=
                           SQLITE_OK) {
        rc = fail("transaction", "cannot set synchronous=FULL again");
    }
    sqlite3_clear_bindings(st);
    pthread_mutex_unlock(&d->mx);
    return rc == SQLITE_DONE ? 0 : -1;
}

static void db_close(struct db *d)
{
    sqlite3_finalize(d->begin);
    sqlite3_finalize(d->commit);
    sqlite3_close(d->db);
    pthread_mutex_destroy(&d->mx);
}

static char *serial_of(unsigned long i, char *buf, size_t size)
{
    snprintf(buf, size, "FLOOR-%06lu", i);
    return buf;
}

/* Device i's public point (CKA_EC_POINT: the point in a DER OCTET STRING) as a P-256 key. */
static EC_KEY *key_of(const struct dev *d)
{
    const unsigned char *pt = d->point;
    long pt_len = (long)d->point_len;
    EC_KEY *ec = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);

    if (pt_len > 2 && pt[0] == 0x04 && pt[1] == pt_len - 2) { /* short form: 65 bytes */
        pt += 2;
        pt_len -= 2;
    }
    if (ec != NULL && o2i_ECPublicKey(&ec, &pt, pt_len) == NULL) {
        EC_KEY_free(ec);
        return NULL;
    }
    return ec;
}

/* The raw signature (r || s) over bench_p11's digest {2, k} verified with ec. */
static int verify_raw(EC_KEY *ec, const unsigned char *raw, size_t raw_len, int k)
{
    unsigned char digest[32] = {2};
    ECDSA_SIG *sig = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(raw, (int)raw_len / 2, NULL);
    BIGNUM *s = BN_bin2bn(raw + raw_len / 2, (int)raw_len / 2, NULL);
    int ok = 0;

    digest[1] = (unsigned char)k;
    if (sig != NULL && r != NULL && s != NULL && ECDSA_SIG_set0(sig, r, s) == 1) {
        r = s = NULL; /* the signature's now */
        ok = ECDSA_do_verify(digest, sizeof(digest), sig, ec) == 1;
    }
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(sig);
    return ok ? 0 : fail(k == 0 ? "the CSR's signature" : "the proof's signature",
                         "does not verify");
}

/* bytes to dir/name through a synced temporary file, renamed. */
static int put_file(const char *dir, const char *name, const void *bytes, size_t len)
{
    char tmp[4200], path[4200];
    int fd;

    snprintf(tmp, sizeof(tmp), "%s/%s.tmp", dir, name);
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        return fail(tmp, strerror(errno));
    }
    if (write(fd, bytes, len) != (ssize_t)len || fsync(fd) != 0) {
        int e = errno;

        close(fd);
        return fail(tmp, strerror(e));
    }
    if (close(fd) != 0 || rename(tmp, path) != 0) {
        return fail(path, strerror(errno));
    }
    return 0;
}

static int sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

    if (fd < 0 || fsync(fd) != 0) {
        if (fd >= 0) {
            close(fd);
        }
        return fail(dir, strerror(errno));
    }
    return close(fd);
}

/* Device i's storage, its chain checked, then delivered and stored recorded. */
static int store_device(unsigned long i)
{
    char root[4096], dir[4200], serial[32], uri[96], ident[256];
    int r;

    serial_of(i, serial, sizeof(serial));
    snprintf(root, sizeof(root), "%s/devices", w.dir);
    snprintf(dir, sizeof(dir), "%s/%s", root, serial);
    snprintf(uri, sizeof(uri), "pkcs11:token=floor;object=%s;type=private\n", serial);
    snprintf(ident, sizeof(ident), "{\"serial\": \"%s\", \"backend\": \"pkcs11\", \"key_uri\": "
                                   "\"pkcs11:token=floor;object=%s\"}\n", serial, serial);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        return fail(dir, strerror(errno));
    }
    r = sync_dir(root);
    r = r ? r : put_file(dir, "client.crt", w.pem, w.pem_len);
    r = r ? r : put_file(dir, "client.der", w.der, w.der_len);
    r = r ? r : put_file(dir, "chain.pem", w.chain, w.chain_len);
    r = r ? r : put_file(dir, "fullchain.pem", w.full, w.full_len);
    r = r ? r : put_file(dir, "server-ca.pem", w.chain, w.chain_len);
    r = r ? r : put_file(dir, "key.uri", uri, strlen(uri));
    r = r ? r : put_file(dir, "identity.json", ident, strlen(ident));
    r = r ? r : sync_dir(dir);
    if (r == 0 && X509_verify(w.cert, X509_get0_pubkey(w.inter)) != 1) {
        r = fail(serial, "the certificate does not verify with the intermediate");
    }
    if (r == 0) {
        db_take(&w.index);
        sqlite3_bind_text(w.delivered, 1, serial, -1, SQLITE_STATIC);
        r = db_run(&w.index, w.delivered, false);
    }
    if (r == 0) {
        db_take(&w.journal);
        sqlite3_bind_text(w.stored, 1, serial, -1, SQLITE_STATIC);
        r = db_run(&w.journal, w.stored, true);
    }
    return r;
}

static void *storage_main(void *arg)
{
    (void)arg;
    for (unsigned long i = 0; i < w.n; i++) {
        if (wait_for(&w.certified, i + 1) != 0 || store_device(i) < 0) {
            work_fail();
            break;
        }
    }
    return NULL;
}

static int read_all(const char *path, unsigned char **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    long size;

    *out = NULL;
    if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) <= 0 ||
        fseek(f, 0, SEEK_SET) != 0 || (*out = malloc((size_t)size)) == NULL ||
        fread(*out, 1, (size_t)size, f) != (size_t)size) {
        if (f != NULL) {
            fclose(f);
        }
        free(*out);
        *out = NULL;
        return fail(path, "cannot read");
    }
    fclose(f);
    *len = (size_t)size;
    return 0;
}

void work_fail(void)
{
    pthread_mutex_lock(&w.mx);
    w.r = -1;
    pthread_cond_broadcast(&w.cv);
    pthread_mutex_unlock(&w.mx);
}

/*
 * The intents, at most two devices ahead of the token's thread: in the batch each of the two
 * workers records its next row's intent while the other holds the token (factory/batch_row.c,
 * enroll_fresh), so the intent's commit is not on the token's path there either.
 */
static void *intents_main(void *arg)
{
    (void)arg;
    for (unsigned long i = 0; i < w.n; i++) {
        unsigned char id[16];
        char serial[32];

        /* device i's intent once the token's thread is at device i - 1 */
        if (wait_for(&w.begun, i > 0 ? i - 1 : 0) != 0) {
            break;
        }
        w.id_of(i, id);
        db_take(&w.journal);
        sqlite3_bind_text(w.intent, 1, serial_of(i, serial, sizeof(serial)), -1, SQLITE_STATIC);
        sqlite3_bind_blob(w.intent, 2, id, sizeof(id), SQLITE_STATIC);
        if (db_run(&w.journal, w.intent, false) < 0) {
            work_fail();
            break;
        }
        advance(&w.intended, i + 1);
    }
    return NULL;
}

int work_open(const char *dir, const char *chain_pem, const unsigned char *cert_der,
              size_t cert_len, unsigned long n, void (*id_of)(unsigned long i, unsigned char id[16]))
{
    const unsigned char *p = cert_der;
    char devices[4096];
    BIO *bio;
    BUF_MEM *mem;

    w.dir = strdup(dir);
    w.n = n;
    w.id_of = id_of;
    w.devs = calloc(n, sizeof(*w.devs));
    snprintf(devices, sizeof(devices), "%s/devices", dir);
    if (w.dir == NULL || w.devs == NULL || (mkdir(dir, 0755) != 0 && errno != EEXIST) ||
        (mkdir(devices, 0755) != 0 && errno != EEXIST)) {
        return fail(dir, "cannot make it");
    }
    if (read_all(chain_pem, &w.chain, &w.chain_len) < 0) {
        return -1;
    }
    bio = BIO_new_mem_buf(w.chain, (int)w.chain_len);
    w.inter = bio != NULL ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    w.root = bio != NULL ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    w.cert = d2i_X509(NULL, &p, (long)cert_len);
    if (w.inter == NULL || w.root == NULL || w.cert == NULL) {
        return fail(chain_pem, "not an intermediate then a root in PEM, or no certificate");
    }
    /* the same for every device: once, before the clock */
    if (X509_verify(w.inter, X509_get0_pubkey(w.root)) != 1) {
        return fail(chain_pem, "the intermediate does not verify with the root");
    }
    w.der_len = cert_len;
    w.der = malloc(cert_len);
    bio = BIO_new(BIO_s_mem());
    if (w.der == NULL || bio == NULL || PEM_write_bio_X509(bio, w.cert) != 1) {
        BIO_free(bio);
        return fail("the device certificate", "cannot encode it");
    }
    memcpy(w.der, cert_der, cert_len);
    BIO_get_mem_ptr(bio, &mem);
    w.pem_len = mem->length;
    w.pem = malloc(mem->length);
    if (w.pem == NULL) {
        BIO_free(bio);
        return fail("the device certificate", "out of memory");
    }
    memcpy(w.pem, mem->data, mem->length);
    BIO_free(bio);
    w.full_len = w.pem_len + w.chain_len;
    if ((w.full = malloc(w.full_len)) == NULL) {
        return fail("the full chain", "out of memory");
    }
    memcpy(w.full, w.pem, w.pem_len);
    memcpy(w.full + w.pem_len, w.chain, w.chain_len);
    {
        static const char journal[] =
            "CREATE TABLE IF NOT EXISTS device(id INTEGER PRIMARY KEY, serial TEXT UNIQUE, "
            "key_id BLOB, state TEXT NOT NULL, cert BLOB)";
        static const char index[] =
            "CREATE TABLE IF NOT EXISTS cert(id INTEGER PRIMARY KEY, serial TEXT UNIQUE, "
            "der BLOB NOT NULL, delivered INTEGER NOT NULL DEFAULT 0)";

        if (db_open(&w.journal, "journal.sqlite", journal) < 0 ||
            db_open(&w.index, "index.sqlite", index) < 0 ||
            prepare(&w.journal, "INSERT INTO device(serial, key_id, state) VALUES (?, ?, 'intent')",
                    &w.intent) < 0 ||
            prepare(&w.journal, "UPDATE device SET state = 'issued', cert = ? WHERE serial = ?",
                    &w.issued_st) < 0 ||
            prepare(&w.journal, "UPDATE device SET state = 'stored' WHERE serial = ?",
                    &w.stored) < 0 ||
            prepare(&w.index, "INSERT INTO cert(serial, der) VALUES (?, ?)", &w.record) < 0 ||
            prepare(&w.index, "UPDATE cert SET delivered = 1 WHERE serial = ?", &w.delivered) < 0) {
            return -1;
        }
    }
    if (pthread_create(&w.storage, NULL, storage_main, NULL) != 0) {
        return fail("the storage thread", "cannot start it");
    }
    if (pthread_create(&w.intents, NULL, intents_main, NULL) != 0) {
        work_fail();
        pthread_join(w.storage, NULL);
        return fail("the intents' thread", "cannot start it");
    }
    return 0;
}

int work_wait_intent(unsigned long i)
{
    advance(&w.begun, i);
    return wait_for(&w.intended, i + 1);
}

int work_signed(unsigned long i, const unsigned char *point, size_t point_len,
                const unsigned char *sig_csr, size_t csr_len, const unsigned char *sig_proof,
                size_t proof_len)
{
    struct dev *d = &w.devs[i];

    if (point_len > sizeof(d->point) || csr_len > sizeof(d->csr) ||
        proof_len > sizeof(d->proof)) {
        return fail("a device's point or signature", "longer than P-256's");
    }
    memcpy(d->point, point, point_len);
    memcpy(d->csr, sig_csr, csr_len);
    memcpy(d->proof, sig_proof, proof_len);
    d->point_len = point_len;
    d->csr_len = csr_len;
    d->proof_len = proof_len;
    return 0;
}

int work_issue(unsigned long i)
{
    struct dev *d = &w.devs[i];
    char serial[32];
    EC_KEY *ec = key_of(d);
    int r = ec != NULL ? verify_raw(ec, d->csr, d->csr_len, 0)
                       : fail("a device's point", "not a P-256 point");

    serial_of(i, serial, sizeof(serial));
    if (r == 0) {
        db_take(&w.index);
        sqlite3_bind_text(w.record, 1, serial, -1, SQLITE_STATIC);
        sqlite3_bind_blob(w.record, 2, w.der, (int)w.der_len, SQLITE_STATIC);
        r = db_run(&w.index, w.record, false);
    }
    if (r == 0) {
        db_take(&w.journal);
        sqlite3_bind_blob(w.issued_st, 1, w.der, (int)w.der_len, SQLITE_STATIC);
        sqlite3_bind_text(w.issued_st, 2, serial, -1, SQLITE_STATIC);
        r = db_run(&w.journal, w.issued_st, false);
    }
    r = r ? r : verify_raw(ec, d->proof, d->proof_len, 1);
    EC_KEY_free(ec);
    if (r == 0) {
        advance(&w.issued, i + 1);
    } else {
        work_fail();
    }
    return r;
}

int work_wait_issued(unsigned long i)
{
    return wait_for(&w.issued, i + 1);
}

int work_certified(unsigned long i)
{
    advance(&w.certified, i + 1);
    return 0;
}

int work_wait_done(void)
{
    int r = pthread_join(w.storage, NULL) != 0 ? -1 : 0;

    if (r < 0) {
        work_fail(); /* the intents' thread may wait for a device that will not come */
    }
    r = pthread_join(w.intents, NULL) != 0 ? -1 : r;
    return r < 0 ? -1 : w.r;
}

void work_close(void)
{
    sqlite3_finalize(w.intent);
    sqlite3_finalize(w.issued_st);
    sqlite3_finalize(w.stored);
    sqlite3_finalize(w.record);
    sqlite3_finalize(w.delivered);
    db_close(&w.journal);
    db_close(&w.index);
    X509_free(w.inter);
    X509_free(w.root);
    X509_free(w.cert);
    free(w.pem);
    free(w.chain);
    free(w.full);
    free(w.der);
    free(w.devs);
    free(w.dir);
}
