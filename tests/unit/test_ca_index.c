/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The CA index (provisioner/pki/ca_index.h) on a temp directory: the serial and key rules, the
 * same-lot exception (name and journal file), supersede links, a rolled-back issuance,
 * delivery, enroll attempts (claimed only when nobody holds them: two handles stand for two
 * processes), the import of issued-keys, the stats of `ca show`, an index from a newer
 * tool refused, one from version 1 brought up to date, and revocations (final, idempotent,
 * audited, a reissue's superseded certificate revoked when asked) with the CRL numbers, and
 * a lot's count of devices (its cap's measure) kept through issues, reissues, a lot registered
 * after its certificates, and an index of schema version 6 brought up to date.
 * One test list over both stores: SQLite, and PostgreSQL when PROV_TEST_PG_URI names a server
 * (tests/integration/test_ca_index_pg.sh; a database of each test's own).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/x509v3.h>
#include <sqlite3.h>

#include "ca_index.h"
#include "ca_registry.h"
#include "ca_replay.h"
#include "crl.h"
#include "error.h"
#include "hex.h"
#include "sqldb_pg.h"
#include "sqldb_sqlite.h"
#include "test_pg.h"
#include "test_pki.h"

struct fixture {
    char dir[64];
    char db_name[48]; /* PostgreSQL: the test's database, "" on SQLite */
    char uri[256];
    EVP_PKEY *ca_key;
    X509 *ca_cert;
    long next_serial;
};

static X509 *make_cert(struct fixture *f, EVP_PKEY *subject_key)
{
    return test_pki_cert(&(struct test_cert_spec){
        .cn = "device",
        .serial = ++f->next_serial,
        .key = subject_key,
        .issuer = f->ca_cert,
        .issuer_key = f->ca_key,
        .not_after = TEST_PKI_DAY,
    });
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    static int n;

    snprintf(f->dir, sizeof(f->dir), "/tmp/test_ca_index.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    if (getenv("PROV_TEST_PG_URI") != NULL) {
        char sql[96];

        snprintf(f->db_name, sizeof(f->db_name), "tci_%d_%d", (int)getpid(), ++n);
        snprintf(sql, sizeof(sql), "CREATE DATABASE %s", f->db_name);
        test_pg_admin("PROV_TEST_PG_URI", sql);
        test_pg_uri("PROV_TEST_PG_URI", f->db_name, f->uri, sizeof(f->uri));
    }
    f->ca_key = test_pki_ec_key("P-256");
    f->ca_cert = make_cert(f, f->ca_key);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[160];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    if (f->db_name[0] != '\0') {
        snprintf(cmd, sizeof(cmd), "DROP DATABASE %s WITH (FORCE)", f->db_name);
        test_pg_admin("PROV_TEST_PG_URI", cmd);
    }
    X509_free(f->ca_cert);
    EVP_PKEY_free(f->ca_key);
    free(f);
    return 0;
}

static struct prov_ca_index *open_index(struct fixture *f)
{
    struct prov_ca_index *ix = NULL;

    prov_error_clear();
    if (prov_ca_index_open_at(f->dir, f->uri[0] ? f->uri : NULL, NULL, &ix) != 0) {
        fail_msg("open: %s", prov_error_message());
    }
    return ix;
}

/* Issues a certificate for a fresh key under rec through begin/record; returns it or NULL. */
static X509 *issue(struct fixture *f, struct prov_ca_index *ix, const char *serial,
                   const struct prov_ca_record *rec, int want)
{
    EVP_PKEY *key = test_pki_ec_key("P-256");
    X509 *cert = NULL;
    int r;

    prov_error_clear();
    r = prov_ca_index_begin(ix, serial, rec, key);
    assert_int_equal(r, want);
    if (r == 0) {
        cert = make_cert(f, key);
        assert_int_equal(prov_ca_index_record(ix, serial, rec, "device", cert, f->ca_cert), 0);
    }
    EVP_PKEY_free(key);
    return cert;
}

static bool is_pg(struct fixture *f)
{
    return f->uri[0] != '\0';
}

/* A connection of the test's own to the index's store (the seam, sqldb.h). */
static struct prov_sqldb *store_open(struct fixture *f, sqlite3 **conn)
{
    struct prov_sqldb *db = NULL;
    char path[128];

    *conn = NULL;
    if (is_pg(f)) {
        assert_int_equal(prov_sqldb_pg_open(f->uri, NULL, 99, &db), 0);
        return db;
    }
    snprintf(path, sizeof(path), "%s/index.sqlite", f->dir);
    assert_int_equal(sqlite3_open(path, conn), SQLITE_OK);
    sqlite3_busy_timeout(*conn, 5000);
    db = prov_sqldb_sqlite_wrap(*conn);
    assert_non_null(db);
    return db;
}

static void store_close(struct prov_sqldb *db, sqlite3 *conn)
{
    prov_sqldb_close(db);
    sqlite3_close(conn);
}

/* Changes the index behind the tool's back (what another tool or an attacker did). */
static void store_exec(struct fixture *f, const char *sql)
{
    sqlite3 *conn = NULL;
    struct prov_sqldb *db = store_open(f, &conn);

    if (prov_sqldb_exec(db, sql) != 0) {
        fail_msg("%s: %s", sql, prov_sqldb_errmsg(db));
    }
    store_close(db, conn);
}

/* One value of a query on the index, as text ("" for none; rows joined by ","). */
static char *query(struct fixture *f, const char *sql)
{
    static char out[1024];
    sqlite3 *conn = NULL;
    struct prov_sqldb *db = store_open(f, &conn);
    struct prov_sqldb_stmt *st = NULL;

    if (prov_sqldb_prepare(db, sql, &st) != 0) {
        fail_msg("%s: %s", sql, prov_sqldb_errmsg(db));
    }
    out[0] = '\0';
    for (int rc = prov_sqldb_step(st); rc == PROV_SQLDB_ROW; rc = prov_sqldb_step(st)) {
        const char *t = prov_sqldb_column_text(st, 0);

        if (out[0] != '\0') {
            strncat(out, ",", sizeof(out) - strlen(out) - 1);
        }
        strncat(out, t ? t : "NULL", sizeof(out) - strlen(out) - 1);
    }
    prov_sqldb_finalize(st);
    store_close(db, conn);
    return out;
}

static void assert_message(const char *a, const char *b)
{
    const char *msg = prov_error_message();

    if (msg == NULL || strstr(msg, a) == NULL || (b != NULL && strstr(msg, b) == NULL)) {
        fail_msg("message \"%s\" lacks \"%s\" / \"%s\"", msg ? msg : "(none)", a, b ? b : "");
    }
}

static void test_created_private_with_schema(void **state)
{
    struct fixture *f = *state;
    struct prov_ca_index *ix = open_index(f);
    char path[128];
    struct stat st;

    assert_string_equal(query(f, "SELECT value FROM meta WHERE name = 'schema_version'"), "7");
    if (!is_pg(f)) {
        snprintf(path, sizeof(path), "%s/index.sqlite", f->dir);
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0600);
        assert_string_equal(query(f, "PRAGMA journal_mode"), "wal");
    }
    prov_ca_index_close(ix);
    /* a second open finds the schema and changes nothing */
    ix = open_index(f);
    assert_string_equal(query(f, "SELECT count(*) FROM meta"), "3"); /* version, CRL numbers */
    prov_ca_index_close(ix);
}

static void test_serial_rule_and_reissue(void **state)
{
    struct fixture *f = *state;
    struct prov_ca_index *ix = open_index(f);
    struct prov_ca_record enroll = {.issued_by = "enroll"};
    struct prov_ca_record again = {.issued_by = "enroll", .is_reissue = true};
    X509 *first = issue(f, ix, "SN-1", &enroll, 0);
    X509 *second;

    assert_non_null(first);
    assert_string_equal(query(f, "SELECT status FROM certificate"), "issued");
    assert_int_equal(prov_ca_index_delivered(ix, first), 0);
    assert_string_equal(query(f, "SELECT status FROM certificate"), "delivered");
    /* refused before anything is made, and at issuance, naming the earlier certificate */
    prov_error_clear();
    assert_int_equal(prov_ca_index_check(ix, "SN-1", &enroll, NULL), PROV_ERR_ALREADY_ISSUED);
    assert_message("SN-1", "issued by enroll");
    assert_null(issue(f, ix, "SN-1", &enroll, PROV_ERR_ALREADY_ISSUED));
    assert_int_equal(prov_ca_index_check(ix, "SN-2", &enroll, NULL), 0);
    /* a reissue supersedes it, and the link names the successor */
    second = issue(f, ix, "SN-1", &again, 0);
    assert_non_null(second);
    assert_string_equal(query(f, "SELECT status FROM certificate ORDER BY id"),
                        "superseded,issued");
    assert_string_equal(query(f, "SELECT CASE WHEN a.superseded_by = b.id THEN 1 ELSE 0 END"
                                 " FROM certificate a, certificate b"
                                 " WHERE a.id = 1 AND b.id = 2"),
                        "1");
    X509_free(first);
    X509_free(second);
    prov_ca_index_close(ix);
}

static void test_key_never_twice(void **state)
{
    struct fixture *f = *state;
    struct prov_ca_index *ix = open_index(f);
    struct prov_ca_record sign = {.issued_by = "sign", .is_reissue = true};
    EVP_PKEY *key = test_pki_ec_key("P-256");
    X509 *cert;

    assert_int_equal(prov_ca_index_begin(ix, "SN-K", &sign, key), 0);
    cert = make_cert(f, key);
    assert_int_equal(prov_ca_index_record(ix, "SN-K", &sign, NULL, cert, f->ca_cert), 0);
    /* even as a reissue, even for another serial */
    prov_error_clear();
    assert_int_equal(prov_ca_index_check(ix, "SN-K", &sign, key), PROV_ERR_ALREADY_ISSUED);
    assert_message("already certified (for SN-K", NULL);
    prov_error_clear();
    assert_int_equal(prov_ca_index_begin(ix, "SN-OTHER", &sign, key), PROV_ERR_ALREADY_ISSUED);
    assert_string_equal(query(f, "SELECT count(*) FROM certificate"), "1");
    X509_free(cert);
    EVP_PKEY_free(key);
    prov_ca_index_close(ix);
}

/*
 * A caller that has hashed the key already (the CA service, for its retry look-up) passes the
 * hash on: the same rule, the same column as when the index hashes it.
 */
static void test_key_hash_passed_in(void **state)
{
    struct fixture *f = *state;
    struct prov_ca_index *ix = open_index(f);
    EVP_PKEY *key = test_pki_ec_key("P-256");
    char spki[65];
    struct prov_ca_record rec = {.issued_by = "cmp:ST-1", .pubkey_sha256 = spki};
    char sql[160];
    X509 *cert;

    assert_int_equal(prov_ca_index_spki_sha256(key, spki), 0);
    assert_int_equal(prov_ca_index_begin(ix, "SN-H", &rec, key), 0);
    cert = make_cert(f, key);
    assert_int_equal(prov_ca_index_record(ix, "SN-H", &rec, NULL, cert, f->ca_cert), 0);
    snprintf(sql, sizeof(sql), "SELECT serial FROM certificate WHERE pubkey_sha256 = '%s'", spki);
    assert_string_equal(query(f, sql), "SN-H");
    prov_error_clear();
    assert_int_equal(prov_ca_index_begin(ix, "SN-H2", &rec, key), PROV_ERR_ALREADY_ISSUED);
    assert_message("already certified (for SN-H", NULL);
    X509_free(cert);
    EVP_PKEY_free(key);
    prov_ca_index_close(ix);
}

/* Within one lot (same name, same journal) the journal decides; another journal is another lot. */
static void test_same_lot_exception(void **state)
{
    struct fixture *f = *state;
    struct prov_ca_index *ix = open_index(f);
    char journal[128], other[128];
    struct prov_ca_record lot = {.issued_by = "batch", .lot = "L1", .journal = journal};
    struct prov_ca_record same_name = {.issued_by = "batch", .lot = "L1", .journal = other};
    struct prov_ca_record enroll = {.issued_by = "enroll"};
    X509 *a;
    X509 *b;

    snprintf(journal, sizeof(journal), "%s/lot.journal.sqlite", f->dir);
    snprintf(other, sizeof(other), "%s/./other.journal.sqlite", f->dir);
    fclose(fopen(journal, "w"));
    fclose(fopen(other, "w"));
    a = issue(f, ix, "SN-L", &lot, 0);
    b = issue(f, ix, "SN-L", &lot, 0); /* a resumed row: supersedes the lot's own */
    assert_string_equal(query(f, "SELECT status FROM certificate ORDER BY id"),
                        "superseded,issued");
    prov_error_clear();
    assert_int_equal(prov_ca_index_check(ix, "SN-L", &same_name, NULL), PROV_ERR_ALREADY_ISSUED);
    assert_message("issued by lot L1", NULL);
    assert_int_equal(prov_ca_index_check(ix, "SN-L", &enroll, NULL), PROV_ERR_ALREADY_ISSUED);
    /* the journal is compared as a resolved path */
    snprintf(journal, sizeof(journal), "%s/./lot.journal.sqlite", f->dir);
    assert_int_equal(prov_ca_index_check(ix, "SN-L", &lot, NULL), 0);
    X509_free(a);
    X509_free(b);
    prov_ca_index_close(ix);
}

static void test_abort_records_nothing(void **state)
{
    struct fixture *f = *state;
    struct prov_ca_index *ix = open_index(f);
    struct prov_ca_record enroll = {.issued_by = "enroll"};
    struct prov_ca_record again = {.issued_by = "enroll", .is_reissue = true};
    EVP_PKEY *key = test_pki_ec_key("P-256");
    X509 *first = issue(f, ix, "SN-A", &enroll, 0);

    assert_int_equal(prov_ca_index_begin(ix, "SN-A", &again, key), 0);
    prov_ca_index_abort(ix); /* the signing failed */
    assert_string_equal(query(f, "SELECT status FROM certificate"), "issued");
    /* the lock is free again */
    assert_int_equal(prov_ca_index_check(ix, "SN-B", &enroll, NULL), 0);
    X509_free(first);
    EVP_PKEY_free(key);
    prov_ca_index_close(ix);
}

static void test_attempts(void **state)
{
    struct fixture *f = *state;
    struct prov_ca_index *mine = open_index(f);
    struct prov_ca_index *other = open_index(f); /* another process, as the locks see it */
    struct prov_ca_attempt a = {.serial = "SN-T", .device_uri = "pkcs11:token=t",
                                .storage = "/nowhere", .key_id = {1, 2, 3}, .key_id_len = 3};
    struct prov_ca_record rec = {.issued_by = "enroll"};
    struct prov_ca_attempt *list = NULL;
    size_t n = 0;
    size_t busy = 0;
    X509 *cert;
    X509 *back = NULL;

    assert_int_equal(prov_ca_index_attempt_begin(mine, &a), 0);
    assert_true(a.id > 0);
    rec.attempt_id = a.id;
    cert = issue(f, mine, "SN-T", &rec, 0);
    /* running: not interrupted, and busy for its serial */
    assert_int_equal(prov_ca_index_interrupted(other, "SN-T", "pkcs11:token=x", &list, &n, &busy),
                     0);
    assert_int_equal(n, 0);
    assert_int_equal(busy, 1);
    /* its holder gone (the lock released), the other claims it, by serial or by device */
    prov_ca_index_attempt_release(mine, a.id);
    assert_int_equal(prov_ca_index_interrupted(other, "SN-X", "pkcs11:token=t", &list, &n, &busy),
                     0);
    assert_int_equal(n, 1);
    assert_int_equal(busy, 0);
    assert_string_equal(list[0].serial, "SN-T");
    assert_int_equal(list[0].key_id_len, 3);
    assert_memory_equal(list[0].key_id, a.key_id, 3);
    /* claimed by the other handle: busy for a third one */
    {
        struct prov_ca_index *third = open_index(f);
        struct prov_ca_attempt *none = NULL;
        size_t n3 = 0;
        size_t busy3 = 0;

        assert_int_equal(prov_ca_index_interrupted(third, "SN-T", "-", &none, &n3, &busy3), 0);
        assert_int_equal(n3, 0);
        assert_int_equal(busy3, 1);
        free(none);
        prov_ca_index_close(third);
    }
    assert_int_equal(prov_ca_index_attempt_certificate(other, a.id, &back), 0);
    assert_non_null(back);
    assert_int_equal(X509_cmp(back, cert), 0);
    X509_free(back);
    assert_int_equal(prov_ca_index_attempt_finish(other, a.id, false, "cleaned"), 0);
    assert_string_equal(query(f, "SELECT status FROM certificate"), "abandoned");
    assert_string_equal(query(f, "SELECT outcome FROM attempt"), "cleaned");
    prov_ca_attempt_clear(&list[0]);
    free(list);
    X509_free(cert);
    prov_ca_index_close(other);
    prov_ca_index_close(mine);
}

/* An older CA's issued-keys: imported once, with the bad and repeated lines left out. */
static void test_import_issued_keys(void **state)
{
    struct fixture *f = *state;
    struct prov_ca_record sign = {.issued_by = "sign"};
    EVP_PKEY *key = test_pki_ec_key("P-256");
    struct prov_ca_index *ix;
    char hash[65];
    char path[128];
    FILE *fp;

    assert_int_equal(prov_ca_index_spki_sha256(key, hash), 0);
    snprintf(path, sizeof(path), "%s/issued-keys", f->dir);
    fp = fopen(path, "w");
    fprintf(fp, "%s 0a0b SN-OLD-1\n", hash);
    fprintf(fp, "%s 0c0d SN-OLD-2\n", "1111111111111111111111111111111111111111111111111111111111111111");
    fprintf(fp, "%s 0e0f SN-OLD-3\n", hash); /* the same key again */
    fprintf(fp, "short 0a SN-BAD\n");
    fclose(fp);
    ix = open_index(f);
    assert_string_equal(query(f, "SELECT serial || ' ' || cert_serial || ' ' || status FROM "
                                 "certificate ORDER BY id"),
                        "SN-OLD-1 0a0b delivered,SN-OLD-2 0c0d delivered");
    assert_string_equal(query(f, "SELECT value FROM meta WHERE name = 'issued_keys_imported'"),
                        "2");
    prov_error_clear();
    assert_int_equal(prov_ca_index_check(ix, "SN-NEW", &sign, key), PROV_ERR_ALREADY_ISSUED);
    assert_message("for SN-OLD-1", NULL);
    assert_int_equal(prov_ca_index_check(ix, "SN-OLD-2", &sign, NULL), PROV_ERR_ALREADY_ISSUED);
    prov_ca_index_close(ix);
    /* not imported twice; the file stays */
    ix = open_index(f);
    assert_string_equal(query(f, "SELECT count(*) FROM certificate"), "2");
    fp = fopen(path, "r");
    assert_non_null(fp);
    fclose(fp);
    prov_ca_index_close(ix);
    EVP_PKEY_free(key);
}

static void test_stats(void **state)
{
    struct fixture *f = *state;
    struct prov_ca_index *ix = open_index(f);
    struct prov_ca_record enroll = {.issued_by = "enroll"};
    struct prov_ca_record again = {.issued_by = "enroll", .is_reissue = true};
    struct prov_ca_record lot = {.issued_by = "batch", .lot = "L9"};
    struct prov_ca_attempt a = {.serial = "SN-S3", .device_uri = "pkcs11:token=s",
                                .storage = "/nowhere", .key_id = {9}, .key_id_len = 1};
    struct prov_ca_index_stats st;
    X509 *c[4];

    c[0] = issue(f, ix, "SN-S1", &enroll, 0);
    c[1] = issue(f, ix, "SN-S1", &again, 0); /* supersedes c[0] */
    prov_ca_index_delivered(ix, c[1]);
    c[2] = issue(f, ix, "SN-S2", &lot, 0);   /* not delivered */
    assert_int_equal(prov_ca_index_attempt_begin(ix, &a), 0);
    enroll.attempt_id = a.id;
    c[3] = issue(f, ix, "SN-S3", &enroll, 0);
    assert_int_equal(prov_ca_index_attempt_finish(ix, a.id, false, "failed"), 0);
    assert_int_equal(prov_ca_index_stats(ix, &st), 0);
    assert_int_equal(st.delivered, 1);
    assert_int_equal(st.issued, 1);
    assert_int_equal(st.superseded, 1);
    assert_int_equal(st.abandoned, 1);
    assert_int_equal(st.attempts_open, 0);
    assert_int_equal(st.n_undelivered, 2);
    assert_string_equal(st.undelivered[0].serial, "SN-S2");
    assert_string_equal(st.undelivered[0].status, "issued");
    assert_string_equal(st.undelivered[0].issued_by, "lot L9");
    assert_string_equal(st.undelivered[1].serial, "SN-S3");
    assert_string_equal(st.undelivered[1].status, "abandoned");
    assert_string_equal(st.undelivered[1].issued_by, "enroll");
    prov_ca_index_stats_clear(&st);
    for (int i = 0; i < 4; i++) {
        X509_free(c[i]);
    }
    prov_ca_index_close(ix);
}

/* An index written by a newer tool (a higher schema version) is not used. */
static void test_newer_schema_refused(void **state)
{
    struct fixture *f = *state;
    struct prov_ca_index *ix = open_index(f);

    prov_ca_index_close(ix);
    store_exec(f, "UPDATE meta SET value = '8' WHERE name = 'schema_version'");
    ix = (struct prov_ca_index *)1;
    prov_error_clear();
    assert_int_equal(prov_ca_index_open_at(f->dir, is_pg(f) ? f->uri : NULL, NULL, &ix),
                     PROV_ERR_JOURNAL);
    assert_null(ix);
    assert_message("schema version 8", is_pg(f) ? f->db_name : "index.sqlite");
}

static int count_rows(struct fixture *f, const char *table)
{
    char sql[96];

    snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s", table);
    return atoi(query(f, sql));
}

static void test_revoke(void **state)
{
    struct fixture *f = *state;
    struct prov_ca_index *ix = open_index(f);
    struct prov_ca_record enroll = {.issued_by = "enroll"};
    struct prov_ca_revocation rv;
    struct prov_ca_revocation *list = NULL;
    X509 *one = issue(f, ix, "SN-1", &enroll, 0);
    X509 *two = issue(f, ix, "SN-2", &enroll, 0);
    long long n = 0;
    long long bad = 0;
    bool is_new = false;
    bool is_intact = false;
    size_t n_list = 0;

    /* the serial's current certificate, with an invalidity date */
    assert_int_equal(prov_ca_index_revoke(ix, "SN-1", NULL, PROV_CRL_REASON_CESSATION_OF_OPERATION,
                                          "2026-01-02T03:04:05Z", "tester", &rv, &is_new),
                     0);
    assert_true(is_new);
    assert_string_equal(rv.cert_serial, "02");
    assert_string_equal(query(f, "SELECT cert_serial || ' ' || reason || ' ' || invalidity_date"
                                 " || ' ' || revoked_by FROM revocation"),
                        "02 5 2026-01-02T03:04:05Z tester");
    /* the same again is the same revocation */
    assert_int_equal(prov_ca_index_revoke(ix, "SN-1", "0:2", PROV_CRL_REASON_CESSATION_OF_OPERATION,
                                          NULL, "tester", &rv, &is_new),
                     0);
    assert_false(is_new);
    assert_int_equal(count_rows(f, "revocation"), 1);
    /* another reason is refused, naming what is recorded */
    prov_error_clear();
    assert_int_equal(prov_ca_index_revoke(ix, "SN-1", NULL, PROV_CRL_REASON_KEY_COMPROMISE, NULL,
                                          "tester", &rv, &is_new),
                     PROV_ERR_ALREADY_ISSUED);
    assert_message("cessationOfOperation", "final");
    /* unknown serial, another serial's certificate, a certificate nobody issued: nothing */
    prov_error_clear();
    assert_int_equal(prov_ca_index_revoke(ix, "SN-404", NULL, PROV_CRL_REASON_KEY_COMPROMISE,
                                          NULL, "tester", &rv, &is_new),
                     PROV_ERR_POLICY);
    assert_message("SN-404", "nothing revoked");
    assert_int_equal(prov_ca_index_revoke(ix, "SN-2", "02", PROV_CRL_REASON_KEY_COMPROMISE, NULL,
                                          "tester", &rv, &is_new),
                     PROV_ERR_POLICY);
    assert_int_equal(prov_ca_index_revoke(ix, "SN-2", "7777", PROV_CRL_REASON_KEY_COMPROMISE,
                                          NULL, "tester", &rv, &is_new),
                     PROV_ERR_POLICY);
    assert_int_equal(prov_ca_index_revoke(ix, "SN-2", "xyz", PROV_CRL_REASON_KEY_COMPROMISE, NULL,
                                          "tester", &rv, &is_new),
                     PROV_ERR_USAGE);
    assert_int_equal(count_rows(f, "revocation"), 1);
    assert_int_equal(count_rows(f, "audit"), 1);
    /* what the CRL lists */
    assert_int_equal(prov_ca_index_revocations(ix, f->ca_cert, &list, &n_list), 0);
    assert_int_equal(n_list, 1);
    assert_string_equal(list[0].serial, "SN-1");
    assert_int_equal(list[0].reason, PROV_CRL_REASON_CESSATION_OF_OPERATION);
    free(list);
    /* the audit trail verifies, and a changed record does not */
    assert_int_equal(prov_ca_index_revoke(ix, "SN-2", NULL, PROV_CRL_REASON_KEY_COMPROMISE, NULL,
                                          "tester", &rv, &is_new),
                     0);
    assert_int_equal(prov_ca_index_audit_verify(ix, &n, &is_intact, &bad), 0);
    assert_int_equal(n, 2);
    assert_true(is_intact);
    store_exec(f, "UPDATE audit SET detail = 'reason=superseded' WHERE seq = 1");
    assert_int_equal(prov_ca_index_audit_verify(ix, &n, &is_intact, &bad), 0);
    assert_false(is_intact);
    assert_int_equal(bad, 1);
    X509_free(one);
    X509_free(two);
    prov_ca_index_close(ix);
}

static void test_reissue_revokes_superseded(void **state)
{
    struct fixture *f = *state;
    struct prov_ca_index *ix = open_index(f);
    struct prov_ca_record enroll = {.issued_by = "enroll"};
    struct prov_ca_record plain = {.issued_by = "enroll", .is_reissue = true};
    struct prov_ca_record revoking = {.issued_by = "enroll", .is_reissue = true,
                                      .is_revoke_superseded = true};
    X509 *certs[3];

    certs[0] = issue(f, ix, "SN-R", &enroll, 0);
    certs[1] = issue(f, ix, "SN-R", &plain, 0);
    assert_int_equal(count_rows(f, "revocation"), 0);
    certs[2] = issue(f, ix, "SN-R", &revoking, 0);
    assert_string_equal(query(f, "SELECT cert_serial || ' ' || reason || ' ' || revoked_by"
                                 " FROM revocation"),
                        "03 4 reissue");
    assert_string_equal(query(f, "SELECT event || ' ' || serial FROM audit"), "revoke SN-R");
    for (int i = 0; i < 3; i++) {
        X509_free(certs[i]);
    }
    prov_ca_index_close(ix);
}

/*
 * An index of schema version 1 (before revocations and the CA service's stations and lots)
 * gets steps 2 and 3 on open, its rows kept.
 */
static void test_upgrade_from_v1(void **state)
{
    struct fixture *f = *state;
    struct prov_ca_index *ix = open_index(f);
    struct prov_ca_record enroll = {.issued_by = "enroll"};
    X509 *cert = issue(f, ix, "SN-U", &enroll, 0);
    long long number = 0;

    prov_ca_index_close(ix);
    store_exec(f, "DROP TABLE cmp_transaction;"
                  " DROP TABLE lot_profile; DROP TABLE lot_serial;"
                  " DROP TABLE lot_station; DROP TABLE lot; DROP TABLE station;"
                  " DROP INDEX certificate_by_lot_serial; DROP INDEX certificate_by_issuer_time;"
                  " DROP TABLE revocation; DROP TABLE audit;"
                  " DELETE FROM meta WHERE name LIKE '%crl_number';"
                  " UPDATE meta SET value = '1' WHERE name = 'schema_version'");
    ix = open_index(f);
    assert_string_equal(query(f, "SELECT value FROM meta WHERE name = 'schema_version'"), "7");
    assert_int_equal(count_rows(f, "certificate"), 1);
    assert_int_equal(count_rows(f, "revocation"), 0);
    assert_int_equal(prov_ca_index_next_crl_number(ix, "crl_number", &number), 0);
    assert_int_equal(number, 1);
    assert_int_equal(prov_ca_index_next_crl_number(ix, "crl_number", &number), 0);
    assert_int_equal(number, 2);
    assert_int_equal(prov_ca_index_next_crl_number(ix, "root_crl_number", &number), 0);
    assert_int_equal(number, 1);
    X509_free(cert);
    prov_ca_index_close(ix);
}

/*
 * An index of schema version 3 (stations and lots, before a lot's terms) gets step 4 on
 * open: its stations and lots kept, each lot with no reissue, no rate limit, any profile and
 * any serial.
 */
static void test_upgrade_from_v3(void **state)
{
    struct fixture *f = *state;
    struct prov_ca_index *ix = open_index(f);
    struct prov_ca_record rec = {.issued_by = "ca station"};
    X509 *cert = issue(f, ix, "STATION-U", &rec, 0);
    char sql[768];
    char hex[72];
    const ASN1_INTEGER *sn = X509_get0_serialNumber(cert);

    prov_ca_index_close(ix);
    prov_hex_encode(ASN1_STRING_get0_data(sn), (size_t)ASN1_STRING_length(sn), hex);
    /* what step 3 left: no lot_profile, lot_serial, reissue, per_minutes, cmp_transaction */
    snprintf(sql, sizeof(sql),
             "DROP TABLE cmp_transaction; ALTER TABLE station DROP COLUMN per_minute;"
             " DROP TABLE lot_profile; DROP TABLE lot_serial;"
             " ALTER TABLE lot DROP COLUMN reissue; ALTER TABLE lot_station DROP COLUMN per_minute;"
             " ALTER TABLE lot DROP COLUMN devices; DROP INDEX certificate_by_lot_serial;"
             " DROP INDEX certificate_by_issuer_time;"
             " CREATE INDEX certificate_by_lot ON certificate(lot) WHERE lot IS NOT NULL;"
             " INSERT INTO station VALUES ('STATION-U', '%s', 'x');"
             " INSERT INTO lot VALUES ('LOT-U', 7, 'x');"
             " INSERT INTO lot_station VALUES ('LOT-U', 'STATION-U');"
             " UPDATE meta SET value = '3' WHERE name = 'schema_version'",
             hex);
    store_exec(f, sql);
    ix = open_index(f);
    assert_string_equal(query(f, "SELECT value FROM meta WHERE name = 'schema_version'"), "7");
    assert_string_equal(query(f, "SELECT name || ' ' || cap || ' ' || reissue FROM lot"),
                        "LOT-U 7 0");
    assert_string_equal(query(f, "SELECT station || ' ' || per_minute FROM lot_station"),
                        "STATION-U 0");
    assert_int_equal(count_rows(f, "lot_profile"), 0);
    assert_int_equal(count_rows(f, "lot_serial"), 0);
    assert_int_equal(count_rows(f, "cmp_transaction"), 0); /* step 5 */
    assert_string_equal(query(f, "SELECT name || ' ' || per_minute FROM station"),
                        "STATION-U 0"); /* step 6 */
    X509_free(cert);
    prov_ca_index_close(ix);
}

/* The devices lot name counts (`ca lot list`), -1 when it is not registered. */
static int lot_devices_fn(void *arg, const struct prov_ca_lot_row *row)
{
    long long *out = arg;

    if (strcmp(row->name, "LOT-D") == 0) {
        *out = row->devices;
    }
    return 0;
}

static long long lot_devices(struct prov_ca_index *ix)
{
    long long n = -1;

    assert_int_equal(prov_ca_registry_lot_each(ix, lot_devices_fn, &n), 0);
    return n;
}

static void add_lot_d(struct prov_ca_index *ix, long long cap)
{
    prov_error_clear();
    if (prov_ca_registry_lot_add(ix, &(struct prov_ca_lot){.name = "LOT-D", .cap = cap}) != 0) {
        fail_msg("lot add: %s", prov_error_message());
    }
}

/*
 * A lot's cap counts devices, not certificates: a device's reissue is not counted again; a
 * lot registered after certificates were issued under its name counts them; registering it
 * again counts them again (a stale count repaired); an index of schema version 6 (which counted them on every request) gets
 * its counts with step 7.
 */
static void test_lot_devices_counted(void **state)
{
    struct fixture *f = *state;
    struct prov_ca_index *ix = open_index(f);
    struct prov_ca_record batch = {.issued_by = "batch", .lot = "LOT-D"};
    struct prov_ca_record cmp = {.issued_by = "cmp:ST-1", .lot = "LOT-D"};
    struct prov_ca_record again = {.issued_by = "cmp:ST-1", .lot = "LOT-D", .is_reissue = true};
    X509 *certs[6] = {0};

    certs[0] = issue(f, ix, "D-1", &batch, 0); /* before the lot is registered */
    add_lot_d(ix, 3);
    assert_int_equal(lot_devices(ix), 1);
    certs[1] = issue(f, ix, "D-2", &cmp, 0);
    certs[2] = issue(f, ix, "D-2", &again, 0);
    assert_int_equal(lot_devices(ix), 2);
    add_lot_d(ix, 3); /* registered again: the count stays */
    assert_int_equal(lot_devices(ix), 2);
    /* a count gone stale (a service of schema 6 still issuing after another host upgraded
       the index) is counted again when the lot is registered again */
    store_exec(f, "UPDATE lot SET devices = 0 WHERE name = 'LOT-D'");
    add_lot_d(ix, 3);
    assert_int_equal(lot_devices(ix), 2);
    certs[3] = issue(f, ix, "D-3", &cmp, 0);
    assert_int_equal(lot_devices(ix), 3);
    assert_null(issue(f, ix, "D-4", &cmp, PROV_ERR_POLICY));
    assert_message("lot LOT-D: its cap (3) is reached", NULL);
    certs[4] = issue(f, ix, "D-3", &again, 0); /* a device it has: not a fourth */
    assert_int_equal(lot_devices(ix), 3);
    prov_ca_index_close(ix);

    store_exec(f, "ALTER TABLE lot DROP COLUMN devices;"
                  " DROP INDEX certificate_by_lot_serial; DROP INDEX certificate_by_issuer_time;"
                  " CREATE INDEX certificate_by_lot ON certificate(lot) WHERE lot IS NOT NULL;"
                  " UPDATE meta SET value = '6' WHERE name = 'schema_version'");
    ix = open_index(f);
    assert_string_equal(query(f, "SELECT value FROM meta WHERE name = 'schema_version'"), "7");
    assert_int_equal(lot_devices(ix), 3);
    assert_null(issue(f, ix, "D-5", &cmp, PROV_ERR_POLICY));
    add_lot_d(ix, 4);
    certs[5] = issue(f, ix, "D-5", &cmp, 0);
    assert_int_equal(lot_devices(ix), 4);
    for (size_t i = 0; i < sizeof(certs) / sizeof(certs[0]); i++) {
        X509_free(certs[i]);
    }
    prov_ca_index_close(ix);
}

/*
 * The CMP transactions the CA service remembers (ca_replay.h): known until their expiry, once
 * only, and a row whose time is over is dropped by the next one remembered.
 */
static void test_replay_remembered_until_expiry(void **state)
{
    struct fixture *f = *state;
    struct prov_ca_index *ix = open_index(f);
    const unsigned char a[16] = {1, 2, 3};
    const unsigned char b[16] = {4, 5, 6};
    unsigned char too_long[PROV_CA_REPLAY_TID_MAX + 1] = {0};
    bool is_known = true;

    assert_int_equal(prov_ca_replay_is_known(ix, a, sizeof(a), 1000, &is_known), 0);
    assert_false(is_known);
    assert_int_equal(prov_ca_replay_remember(ix, a, sizeof(a), 1000, 2000), 0);
    assert_int_equal(prov_ca_replay_remember(ix, a, sizeof(a), 1001, 9000), 0); /* kept once */
    assert_int_equal(prov_ca_replay_is_known(ix, a, sizeof(a), 1999, &is_known), 0);
    assert_true(is_known);
    assert_int_equal(prov_ca_replay_is_known(ix, a, sizeof(a), 2000, &is_known), 0);
    assert_false(is_known); /* its signer has expired: a replay fails verification anyway */
    assert_int_equal(prov_ca_replay_is_known(ix, b, sizeof(b), 1500, &is_known), 0);
    assert_false(is_known);
    assert_int_equal(count_rows(f, "cmp_transaction"), 1);
    assert_int_equal(prov_ca_replay_remember(ix, b, sizeof(b), 2500, 3000), 0);
    assert_int_equal(count_rows(f, "cmp_transaction"), 1); /* a's row pruned */
    assert_int_equal(prov_ca_replay_is_known(ix, b, sizeof(b), 2600, &is_known), 0);
    assert_true(is_known);
    prov_error_clear();
    assert_int_equal(prov_ca_replay_remember(ix, too_long, sizeof(too_long), 2600, 3000),
                     PROV_ERR_INPUT);
    prov_ca_index_close(ix);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_created_private_with_schema, setup, teardown),
        cmocka_unit_test_setup_teardown(test_serial_rule_and_reissue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_never_twice, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_hash_passed_in, setup, teardown),
        cmocka_unit_test_setup_teardown(test_same_lot_exception, setup, teardown),
        cmocka_unit_test_setup_teardown(test_abort_records_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_attempts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_import_issued_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stats, setup, teardown),
        cmocka_unit_test_setup_teardown(test_newer_schema_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_revoke, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reissue_revokes_superseded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replay_remembered_until_expiry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upgrade_from_v1, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upgrade_from_v3, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lot_devices_counted, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
