/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The journal: the state machine and its refusals, the uniqueness that makes double issuance
 * impossible, --reissue bookkeeping, the hash-chained audit trail (and that deleting or
 * altering a record is detected), the writer lock, the test-only crash hook and the kept
 * prepared statements.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <sqlite3.h>

#include "error.h"
#include "batch.h"
#include "journal.h"
#include "journal_internal.h"
#include "journal_sqlite.h"
#include "test_pg.h"
#include "test_pki.h"

struct fixture {
    char dir[64];
    char path[512];
    struct prov_journal *j;
    long long lot;
    EVP_PKEY *keys[4];
};

static const unsigned char id1[16] = {1};
static const unsigned char id2[16] = {2};
static const unsigned char id3[16] = {3};

/* A self-signed certificate with the given serial number for key. */
static X509 *make_cert(long serial, EVP_PKEY *key)
{
    return test_pki_self_signed("dev", serial, key);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    snprintf(f->dir, sizeof(f->dir), "/tmp/test_journal.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/j.sqlite", f->dir);
    unsetenv("PROVISIONER_TEST_CRASH_AT");
    assert_int_equal(prov_journal_open(f->path, true, &f->j), 0);
    assert_int_equal(prov_journal_lot(f->j, "lot-a", "a.csv", &f->lot), 0);
    for (int i = 0; i < 4; i++) {
        f->keys[i] = test_pki_ec_key("P-256");
    }
    *state = f;
    return 0;
}

/*
 * Every fsync and fdatasync of this process, SQLite's too, counted: a definition in the
 * executable comes before libc's for every library's calls.
 */
static unsigned long n_syncs;

int fsync(int fd)
{
    n_syncs++;
    return (int)syscall(SYS_fsync, fd);
}

int fdatasync(int fd)
{
    n_syncs++;
    return (int)syscall(SYS_fdatasync, fd);
}

/*
 * The same tests on the ledger's store (doc/ledger.md): PROV_TEST_LEDGER_URI names a
 * PostgreSQL server (tests/integration/ledger/test_ledger_unit.sh starts one), each test gets
 * a database of its own, made and dropped here.
 */
static int setup_pg(void **state)
{
    static int n;
    struct fixture *f = calloc(1, sizeof(*f));
    char sql[96];

    snprintf(f->dir, sizeof(f->dir), "tj_%d_%d", (int)getpid(), ++n);
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", f->dir);
    test_pg_admin("PROV_TEST_LEDGER_URI", sql);
    test_pg_uri("PROV_TEST_LEDGER_URI", f->dir, f->path, sizeof(f->path));
    unsetenv("PROVISIONER_TEST_CRASH_AT");
    assert_int_equal(prov_journal_open_with(f->path, NULL, "unit", true, &f->j), 0);
    assert_int_equal(prov_journal_lot(f->j, "lot-a", "a.csv", &f->lot), 0);
    for (int i = 0; i < 4; i++) {
        f->keys[i] = test_pki_ec_key("P-256");
    }
    *state = f;
    return 0;
}

/* The journal closed and the keys freed; the caller removes where the journal was. */
static void fixture_close(struct fixture *f)
{
    prov_journal_close(f->j);
    for (int i = 0; i < 4; i++) {
        EVP_PKEY_free(f->keys[i]);
    }
}

static int teardown_pg(void **state)
{
    struct fixture *f = *state;
    char sql[96];

    fixture_close(f);
    snprintf(sql, sizeof(sql), "DROP DATABASE %s", f->dir);
    test_pg_admin("PROV_TEST_LEDGER_URI", sql);
    free(f);
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[128];

    fixture_close(f);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

static enum prov_journal_state state_of(struct fixture *f, const char *serial)
{
    struct prov_journal_device d;
    enum prov_journal_state s;

    assert_int_equal(prov_journal_get(f->j, f->lot, serial, &d), 0);
    s = d.state;
    prov_journal_device_clear(&d);
    return s;
}

/* The same on device. */
static void walk_to_proven_on(struct fixture *f, const char *serial, const char *device,
                              const unsigned char *id, long cert_serial, EVP_PKEY *key)
{
    X509 *c = make_cert(cert_serial, key);

    assert_int_equal(prov_journal_record_intent(f->j, f->lot, serial, device, "d", id, 16), 0);
    assert_int_equal(prov_journal_record_issued(f->j, f->lot, serial, id, 16, c, "pkcs11:k"), 0);
    assert_int_equal(prov_journal_record_stored(f->j, f->lot, serial), 0);
    assert_int_equal(prov_journal_record_proven(f->j, f->lot, serial), 0);
    X509_free(c);
}

/* intent -> issued -> stored -> proven for serial with a certificate of (cert_serial, key). */
static void walk_to_proven(struct fixture *f, const char *serial, const unsigned char *id,
                           long cert_serial, EVP_PKEY *key)
{
    X509 *c = make_cert(cert_serial, key);

    assert_int_equal(
        prov_journal_record_intent(f->j, f->lot, serial, "pkcs11:token=t", "d", id, 16), 0);
    assert_int_equal(prov_journal_record_issued(f->j, f->lot, serial, id, 16, c, "pkcs11:k"), 0);
    assert_int_equal(prov_journal_record_stored(f->j, f->lot, serial), 0);
    assert_int_equal(prov_journal_record_proven(f->j, f->lot, serial), 0);
    X509_free(c);
}

static void test_state_machine(void **state)
{
    struct fixture *f = *state;
    struct prov_journal_device d;
    X509 *c = make_cert(100, f->keys[0]);
    long long counts[PROV_JOURNAL_STATE_COUNT];
    long long superseded;

    assert_int_equal(state_of(f, "A"), PROV_JOURNAL_NONE);
    /* Nothing but intent (or failed) can start a row. */
    prov_error_clear();
    assert_int_equal(prov_journal_record_issued(f->j, f->lot, "A", id1, 16, c, "k"),
                     PROV_ERR_JOURNAL);
    assert_non_null(strstr(prov_error_message(), "no transition from none to issued"));
    assert_int_equal(prov_journal_record_stored(f->j, f->lot, "A"), PROV_ERR_JOURNAL);

    assert_int_equal(
        prov_journal_record_intent(f->j, f->lot, "A", "pkcs11:token=t", "d/A", id1, 16), 0);
    assert_int_equal(prov_journal_get(f->j, f->lot, "A", &d), 0);
    assert_int_equal(d.state, PROV_JOURNAL_INTENT);
    assert_int_equal(d.key_id_len, 16);
    assert_memory_equal(d.key_id, id1, 16); /* the key id is on disk before any key exists */
    assert_int_equal(d.attempts, 1);
    prov_journal_device_clear(&d);

    assert_int_equal(prov_journal_record_proven(f->j, f->lot, "A"), PROV_ERR_JOURNAL);
    /* The certificate must be for the key the intent recorded. */
    assert_int_equal(prov_journal_record_issued(f->j, f->lot, "A", id2, 16, c, "k"),
                     PROV_ERR_JOURNAL);
    assert_int_equal(prov_journal_record_issued(f->j, f->lot, "A", id1, 16, c, "pkcs11:k"), 0);
    assert_int_equal(prov_journal_get(f->j, f->lot, "A", &d), 0);
    assert_int_equal(d.state, PROV_JOURNAL_ISSUED);
    assert_non_null(d.cert_der);
    assert_string_equal(d.cert_serial, "64");
    assert_string_equal(d.key_uri, "pkcs11:k");
    prov_journal_device_clear(&d);

    assert_int_equal(prov_journal_record_proven(f->j, f->lot, "A"), PROV_ERR_JOURNAL);
    assert_int_equal(
        prov_journal_record_intent(f->j, f->lot, "A", "pkcs11:token=t", "d/A", id2, 16),
        PROV_ERR_JOURNAL);
    assert_int_equal(prov_journal_record_stored(f->j, f->lot, "A"), 0);
    assert_int_equal(prov_journal_record_proven(f->j, f->lot, "A"), 0);
    /* Storage may be rewritten from the journal later: proven -> stored -> proven. */
    assert_int_equal(prov_journal_record_stored(f->j, f->lot, "A"), 0);
    assert_int_equal(prov_journal_record_proven(f->j, f->lot, "A"), 0);
    assert_int_equal(
        prov_journal_record_intent(f->j, f->lot, "A", "pkcs11:token=t", "d/A", id2, 16),
        PROV_ERR_JOURNAL);

    assert_int_equal(prov_journal_counts(f->j, f->lot, counts, &superseded), 0);
    assert_int_equal(counts[PROV_JOURNAL_PROVEN], 1);
    assert_int_equal(superseded, 0);
    X509_free(c);
}

/*
 * The storage stage's stored+proven commit is the one the SQLite store does not sync
 * (journal.c: lost to a power cut, it leaves the row issued, which resumes the same way); the
 * transitions after it are synced again, also after a deferred one that was refused.
 */
static void test_stored_proven_not_synced(void **state)
{
    struct fixture *f = *state;
    X509 *c = make_cert(111, f->keys[0]);
    unsigned long before;

    before = n_syncs;
    assert_int_equal(
        prov_journal_record_intent(f->j, f->lot, "NS", "pkcs11:token=t", "d/NS", id1, 16), 0);
    assert_true(n_syncs > before);
    before = n_syncs;
    assert_int_equal(prov_journal_record_issued(f->j, f->lot, "NS", id1, 16, c, "pkcs11:k"), 0);
    assert_true(n_syncs > before);
    before = n_syncs;
    assert_int_equal(prov_journal_record_stored_proven(f->j, f->lot, "NS"), 0);
    assert_int_equal(n_syncs, before);
    assert_int_equal(state_of(f, "NS"), PROV_JOURNAL_PROVEN);

    before = n_syncs;
    assert_int_equal(
        prov_journal_record_intent(f->j, f->lot, "NT", "pkcs11:token=t", "d/NT", id2, 16), 0);
    assert_true(n_syncs > before);
    prov_error_clear();
    assert_int_equal(prov_journal_record_stored_proven(f->j, f->lot, "NT"), PROV_ERR_JOURNAL);
    before = n_syncs;
    assert_int_equal(prov_journal_record_failed(f->j, f->lot, "NT", "pkcs11:token=t", "test"), 0);
    assert_true(n_syncs > before);
    X509_free(c);
}

/*
 * stored and proven in one transaction (the batch's storage stage): legal where stored is,
 * leaves the row proven with both audit records, stored first; refused as a whole (nothing
 * written, no audit record) where stored is not legal.
 */
static void test_stored_proven(void **state)
{
    struct fixture *f = *state;
    struct prov_journal_audit a;
    struct prov_journal_device d;
    X509 *c = make_cert(110, f->keys[0]);
    long long before;

    assert_int_equal(
        prov_journal_record_intent(f->j, f->lot, "SP", "pkcs11:token=t", "d/SP", id1, 16), 0);
    assert_int_equal(prov_journal_verify_audit(f->j, &a), 0);
    before = a.n_records;
    prov_error_clear();
    assert_int_equal(prov_journal_record_stored_proven(f->j, f->lot, "SP"), PROV_ERR_JOURNAL);
    assert_non_null(strstr(prov_error_message(), "no transition from intent to stored"));
    assert_int_equal(state_of(f, "SP"), PROV_JOURNAL_INTENT);
    assert_int_equal(prov_journal_verify_audit(f->j, &a), 0);
    assert_int_equal(a.n_records, before);

    assert_int_equal(prov_journal_record_issued(f->j, f->lot, "SP", id1, 16, c, "pkcs11:k"), 0);
    assert_int_equal(prov_journal_record_stored_proven(f->j, f->lot, "SP"), 0);
    assert_int_equal(prov_journal_get(f->j, f->lot, "SP", &d), 0);
    assert_int_equal(d.state, PROV_JOURNAL_PROVEN);
    assert_null(d.error);
    assert_string_equal(d.cert_serial, "6e");
    prov_journal_device_clear(&d);
    /* intent, issued, stored, proven: the chain and every row's newest records agree */
    assert_int_equal(prov_journal_verify_audit(f->j, &a), 0);
    assert_int_equal(a.n_records, before + 3);
    /* a proven row's storage may be rewritten and checked again the same way */
    assert_int_equal(prov_journal_record_stored_proven(f->j, f->lot, "SP"), 0);
    assert_int_equal(state_of(f, "SP"), PROV_JOURNAL_PROVEN);
    assert_int_equal(prov_journal_verify_audit(f->j, &a), 0);
    assert_int_equal(a.n_records, before + 5);
    X509_free(c);
}

static void test_failed_keeps_progress(void **state)
{
    struct fixture *f = *state;
    struct prov_journal_device d;
    X509 *c = make_cert(7, f->keys[1]);

    /* A failure before any record creates the row. */
    assert_int_equal(prov_journal_record_failed(f->j, f->lot, "B", "pkcs11:token=t", "no token"),
                     0);
    assert_int_equal(prov_journal_get(f->j, f->lot, "B", &d), 0);
    assert_int_equal(d.state, PROV_JOURNAL_FAILED);
    assert_string_equal(d.error, "no token");
    assert_int_equal(d.key_id_len, 0);
    prov_journal_device_clear(&d);

    /* failed without a certificate: a new intent is allowed. */
    assert_int_equal(
        prov_journal_record_intent(f->j, f->lot, "B", "pkcs11:token=t", "d/B", id1, 16), 0);
    assert_int_equal(prov_journal_record_failed(f->j, f->lot, "B", "pkcs11:token=t", "keygen"), 0);
    assert_int_equal(prov_journal_get(f->j, f->lot, "B", &d), 0);
    assert_memory_equal(d.key_id, id1, 16); /* kept: the key may exist and must be found */
    prov_journal_device_clear(&d);
    assert_int_equal(
        prov_journal_record_intent(f->j, f->lot, "B", "pkcs11:token=t", "d/B", id2, 16), 0);
    assert_int_equal(prov_journal_record_issued(f->j, f->lot, "B", id2, 16, c, "k"), 0);

    /* failed with a certificate: it is kept, no new intent, storage may still be written. */
    assert_int_equal(prov_journal_record_failed(f->j, f->lot, "B", "pkcs11:token=t", "disk"), 0);
    assert_int_equal(prov_journal_get(f->j, f->lot, "B", &d), 0);
    assert_non_null(d.cert_der);
    assert_int_equal(d.attempts, 2);
    prov_journal_device_clear(&d);
    assert_int_equal(
        prov_journal_record_intent(f->j, f->lot, "B", "pkcs11:token=t", "d/B", id3, 16),
        PROV_ERR_JOURNAL);
    assert_int_equal(prov_journal_record_stored(f->j, f->lot, "B"), 0);
    assert_int_equal(prov_journal_record_proven(f->j, f->lot, "B"), 0);
    X509_free(c);
}

static void test_unique_constraints(void **state)
{
    struct fixture *f = *state;
    X509 *same_serial = make_cert(100, f->keys[1]);
    X509 *same_key = make_cert(101, f->keys[0]);
    X509 *fresh = make_cert(102, f->keys[2]);
    long long lot_b;
    sqlite3 *db = NULL;
    char *err = NULL;

    walk_to_proven(f, "A", id1, 100, f->keys[0]);
    assert_int_equal(prov_journal_record_intent(f->j, f->lot, "B", "pkcs11:token=t", "d", id2, 16),
                     0);
    prov_error_clear();
    assert_int_equal(prov_journal_record_issued(f->j, f->lot, "B", id2, 16, same_serial, "k"),
                     PROV_ERR_ALREADY_ISSUED);
    assert_non_null(strstr(prov_error_message(), "certificate serial 64"));
    prov_error_clear();
    assert_int_equal(prov_journal_record_issued(f->j, f->lot, "B", id2, 16, same_key, "k"),
                     PROV_ERR_ALREADY_ISSUED);
    assert_non_null(strstr(prov_error_message(), "public key"));
    assert_int_equal(state_of(f, "B"), PROV_JOURNAL_INTENT); /* the refusal changed nothing */
    assert_int_equal(prov_journal_record_issued(f->j, f->lot, "B", id2, 16, fresh, "k"), 0);

    /* Across lots too: the certificate table is global. */
    assert_int_equal(prov_journal_lot(f->j, "lot-b", "b.csv", &lot_b), 0);
    assert_int_equal(prov_journal_record_intent(f->j, lot_b, "C", "pkcs11:token=u", "d", id3, 16),
                     0);
    assert_int_equal(prov_journal_record_issued(f->j, lot_b, "C", id3, 16, same_key, "k"),
                     PROV_ERR_ALREADY_ISSUED);

    /*
     * The schema itself refuses a second row for a serial of a lot (on the ledger,
     * tests/integration/ledger/test_ledger_store.sh shows its constraints with psql).
     */
    if (getenv("PROV_TEST_LEDGER_URI") == NULL) {
        assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
        sqlite3_busy_timeout(db, 5000);
        assert_int_not_equal(sqlite3_exec(db,
                                          "INSERT INTO device(lot_id, serial, device_uri, state, "
                                          "updated) SELECT lot_id, serial, device_uri, 'intent', "
                                          "'now' FROM device WHERE serial = 'A'",
                                          NULL, NULL, &err),
                             SQLITE_OK);
        assert_non_null(strstr(err, "UNIQUE"));
        sqlite3_free(err);
        sqlite3_close(db);
    }
    X509_free(same_serial);
    X509_free(same_key);
    X509_free(fresh);
}

static void test_supersede_and_runs(void **state)
{
    struct fixture *f = *state;
    struct prov_journal_old_key *keys = NULL;
    size_t n = 0;
    struct prov_journal_run run1;
    struct prov_journal_run run2;
    long long by_run;
    long long counts[PROV_JOURNAL_STATE_COUNT];
    long long superseded;

    assert_int_equal(prov_journal_run_begin(f->j, f->lot, "A", false, &run1), 0);
    assert_false(run1.is_resumed);
    assert_false(run1.is_continued);
    assert_int_equal(run1.request, run1.id);
    walk_to_proven(f, "A", id1, 200, f->keys[0]);
    assert_int_equal(prov_journal_superseded_in_request(f->j, f->lot, "A", run1.request, &by_run),
                     0);
    assert_int_equal(by_run, 0);
    assert_int_equal(prov_journal_supersede(f->j, f->lot, "A", run1.id), 0);
    assert_int_equal(state_of(f, "A"), PROV_JOURNAL_SUPERSEDED);
    assert_int_equal(prov_journal_superseded_in_request(f->j, f->lot, "A", run1.request, &by_run),
                     0);
    assert_int_equal(by_run, run1.id);
    /* Not twice: a superseded row has no current certificate. */
    assert_int_equal(prov_journal_supersede(f->j, f->lot, "A", run1.id), PROV_ERR_JOURNAL);
    assert_int_equal(prov_journal_unretired_keys(f->j, f->lot, "A", &keys, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(keys[0].key_id_len, 16);
    assert_memory_equal(keys[0].key_id, id1, 16);
    prov_journal_old_keys_free(keys, n);

    /* The new certificate needs a new key: the old one stays certified (superseded). */
    walk_to_proven(f, "A", id2, 201, f->keys[1]);
    assert_int_equal(prov_journal_counts(f->j, f->lot, counts, &superseded), 0);
    assert_int_equal(counts[PROV_JOURNAL_PROVEN], 1);
    assert_int_equal(superseded, 1);

    /* An unfinished run with the same --reissue list is resumed ... */
    assert_int_equal(prov_journal_run_begin(f->j, f->lot, "A", false, &run2), 0);
    assert_true(run2.is_resumed);
    assert_int_equal(run2.id, run1.id);
    /* ... and a finished one continued: a new run of the same request. */
    assert_int_equal(prov_journal_run_end(f->j, run1.id), 0);
    assert_int_equal(prov_journal_run_begin(f->j, f->lot, "A", false, &run2), 0);
    assert_false(run2.is_resumed);
    assert_true(run2.is_continued);
    assert_int_not_equal(run2.id, run1.id);
    assert_int_equal(run2.request, run1.request);
    assert_int_equal(prov_journal_superseded_in_request(f->j, f->lot, "A", run2.request, &by_run),
                     0);
    assert_int_equal(by_run, run1.id); /* the request did it already: not again */
    assert_int_equal(prov_journal_run_end(f->j, run2.id), 0);
    /* --again, once the request reissued and proved every serial: a new request */
    assert_int_equal(prov_journal_run_begin(f->j, f->lot, "A", true, &run2), 0);
    assert_false(run2.is_continued);
    assert_int_equal(run2.request, run2.id);
    assert_int_equal(prov_journal_superseded_in_request(f->j, f->lot, "A", run2.request, &by_run),
                     0);
    assert_int_equal(by_run, 0);
    assert_int_equal(prov_journal_supersede(f->j, f->lot, "A", run2.id), 0);
    /* --again again while that request has not proven its reissue: it is continued */
    assert_int_equal(prov_journal_run_end(f->j, run2.id), 0);
    assert_int_equal(prov_journal_run_begin(f->j, f->lot, "A", true, &run1), 0);
    assert_true(run1.is_continued);
    assert_int_equal(run1.request, run2.request);
    /* another list is another request */
    assert_int_equal(prov_journal_run_begin(f->j, f->lot, "", false, &run2), 0);
    assert_false(run2.is_resumed);
    assert_false(run2.is_continued);
    assert_int_not_equal(run2.request, run1.request);
}

/*
 * A reissue onto another device: each certificate keeps the device its key was generated on,
 * so the superseded key is looked for where it is (the old token), not on the row's new
 * device; it stays listed until recorded as retired, and retiring leaves the audit
 * verifiable.
 */
static void test_certificate_device(void **state)
{
    struct fixture *f = *state;
    struct prov_journal_old_key *keys = NULL;
    struct prov_journal_device d;
    struct prov_journal_audit audit;
    size_t n = 0;
    struct prov_journal_run run;

    assert_int_equal(prov_journal_schema_version(f->j), 5);
    walk_to_proven_on(f, "A", "pkcs11:token=old", id1, 400, f->keys[0]);
    walk_to_proven_on(f, "B", "pkcs11:token=old", id3, 402, f->keys[2]);
    assert_int_equal(prov_journal_run_begin(f->j, f->lot, "A", false, &run), 0);
    assert_int_equal(prov_journal_supersede(f->j, f->lot, "A", run.id), 0);
    walk_to_proven_on(f, "A", "pkcs11:token=new", id2, 401, f->keys[1]);

    assert_int_equal(prov_journal_get(f->j, f->lot, "A", &d), 0);
    assert_string_equal(d.device_uri, "pkcs11:token=new");
    assert_int_equal(d.n_superseded, 1);
    assert_int_equal(d.n_unretired, 1);
    prov_journal_device_clear(&d);
    assert_int_equal(prov_journal_unretired_keys(f->j, f->lot, "A", &keys, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(keys[0].device_uri, "pkcs11:token=old");
    assert_string_equal(keys[0].serial, "A");
    assert_string_equal(keys[0].lot, "lot-a");
    assert_memory_equal(keys[0].key_id, id1, 16);
    assert_string_equal(keys[0].cert_serial, "0190"); /* 400 */
    assert_int_equal(strlen(keys[0].pubkey_sha256), 64);
    assert_true(keys[0].superseded[0] != '\0');
    prov_journal_old_keys_free(keys, n);
    /* the whole lot: the same one key (B was never reissued) */
    assert_int_equal(prov_journal_unretired_keys(f->j, f->lot, NULL, &keys, &n), 0);
    assert_int_equal(n, 1);
    prov_journal_old_keys_free(keys, n);

    /* only a superseded certificate of that row can be retired, and only once */
    prov_error_clear();
    assert_int_equal(prov_journal_record_retired(f->j, f->lot, "A", "0191"), PROV_ERR_JOURNAL);
    assert_int_equal(prov_journal_record_retired(f->j, f->lot, "B", "0190"), PROV_ERR_JOURNAL);
    assert_int_equal(prov_journal_record_retired(f->j, f->lot, "A", "0190"), 0);
    assert_int_equal(prov_journal_record_retired(f->j, f->lot, "A", "0190"), PROV_ERR_JOURNAL);
    assert_int_equal(prov_journal_unretired_keys(f->j, f->lot, NULL, &keys, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(prov_journal_get(f->j, f->lot, "A", &d), 0);
    assert_int_equal(d.n_unretired, 0);
    assert_int_equal(d.state, PROV_JOURNAL_PROVEN);
    prov_journal_device_clear(&d);
    assert_int_equal(prov_journal_verify_audit(f->j, &audit), 0);
}

static sqlite3 *open_raw(const char *path)
{
    sqlite3 *db = NULL;

    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    return db;
}

static char *query_text(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    char *out = NULL;

    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0) != NULL) {
        out = strdup((const char *)sqlite3_column_text(st, 0));
    }
    sqlite3_finalize(st);
    return out;
}

static void assert_query(sqlite3 *db, const char *sql, const char *want)
{
    char *got = query_text(db, sql);

    if (got == NULL || strcmp(got, want) != 0) {
        fail_msg("%s: got %s, expected %s", sql, got ? got : "NULL", want);
    }
    free(got);
}

/*
 * A journal written by schema version 1 (tests/data/journals/v1-reissue-moved.sql, a real
 * one): a reader reads it unchanged (no device per certificate, nothing listed, the file
 * still version 1); a writer migrates it in one step to the newest version with every
 * certificate's device filled in from the rows and the intent audit records, and the one
 * superseded key that version 1 left on the old token (SN-A's, reissued onto dev-new) not
 * retired while SN-B's (reissued on its own token) is; the audit still verifies, with the
 * migration recorded.
 */
static void test_migrate_v1(void **state)
{
    struct fixture *f = *state;
    const char *root = getenv("PROV_SOURCE_ROOT");
    struct prov_journal *r = NULL;
    struct prov_journal *w = NULL;
    struct prov_journal_old_key *keys = NULL;
    struct prov_journal_device d;
    struct prov_journal_audit audit;
    char path[192];
    char old_path[128];
    char *sql = NULL;
    long long lot;
    size_t n = 0;
    size_t len = 0;
    FILE *in;
    sqlite3 *db;

    assert_non_null(root);
    snprintf(path, sizeof(path), "%s/tests/data/journals/v1-reissue-moved.sql", root);
    in = fopen(path, "r");
    assert_non_null(in);
    assert_true(getdelim(&sql, &len, '\0', in) > 0);
    fclose(in);
    snprintf(old_path, sizeof(old_path), "%s/v1.sqlite", f->dir);
    db = open_raw(old_path);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    free(sql);

    assert_int_equal(prov_journal_open(old_path, false, &r), 0);
    assert_int_equal(prov_journal_schema_version(r), 1);
    assert_int_equal(prov_journal_find_lot(r, "LOT-IT-1", &lot), 0);
    assert_int_equal(prov_journal_get(r, lot, "SN-A", &d), 0);
    assert_int_equal(d.state, PROV_JOURNAL_PROVEN);
    assert_int_equal(d.n_superseded, 1);
    assert_int_equal(d.n_unretired, 0);
    prov_journal_device_clear(&d);
    assert_int_equal(prov_journal_unretired_keys(r, lot, NULL, &keys, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(prov_journal_verify_audit(r, &audit), 0);
    prov_journal_close(r);
    db = open_raw(old_path);
    assert_query(db, "SELECT value FROM meta WHERE key = 'schema'", "1");
    assert_query(db,
                 "SELECT count(*) FROM sqlite_master WHERE type = 'index'"
                 " AND name = 'certificate_by_device'",
                 "0");
    sqlite3_close(db);

    assert_int_equal(prov_journal_open(old_path, true, &w), 0);
    assert_int_equal(prov_journal_schema_version(w), 5);
    assert_int_equal(prov_journal_unretired_keys(w, lot, NULL, &keys, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(keys[0].serial, "SN-A");
    assert_string_equal(keys[0].device_uri, "pkcs11:token=dev-old");
    assert_string_equal(keys[0].cert_serial, "14bd979ccb129538f1bfe16855b8e0bb79540567");
    prov_journal_old_keys_free(keys, n);
    assert_int_equal(prov_journal_verify_audit(w, &audit), 0);
    prov_journal_close(w);

    db = open_raw(old_path);
    assert_query(db, "SELECT value FROM meta WHERE key = 'schema'", "5");
    assert_query(db,
                 "SELECT count(*) FROM sqlite_master WHERE type = 'index'"
                 " AND name = 'certificate_by_device'",
                 "1");
    assert_query(db,
                 "SELECT group_concat(cert_serial || '=' || device_uri || ':' ||"
                 " (retired IS NOT NULL), ' ') FROM (SELECT * FROM certificate ORDER BY id)",
                 "6aaa66f7a1f04b4d874a2965710c9a7bb900b07f=pkcs11:token=dev-new:0 "
                 "14bd979ccb129538f1bfe16855b8e0bb79540567=pkcs11:token=dev-old:0 "
                 "051ee5e128aba1b2bcac82c5504da3939679cfe3=pkcs11:token=dev-old:1 "
                 "6169960eab33116575310220109703bcfda3aca1=pkcs11:token=dev-old:0 "
                 "289842c1dda32fdd4612cffd948356d00b82cb02=pkcs11:token=dev-new:0");
    assert_query(db, "SELECT detail FROM audit WHERE event = 'schema'", "1->5");
    sqlite3_close(db);

    /* once: a second writer finds it current and adds nothing */
    assert_int_equal(prov_journal_open(old_path, true, &w), 0);
    prov_journal_close(w);
    db = open_raw(old_path);
    assert_query(db, "SELECT count(*) FROM audit WHERE event = 'schema'", "1");
    sqlite3_close(db);
}

/*
 * An identity replaced outside the lot: the row keeps its state and certificate, the reason
 * is noted beside them (and cleared again), and the audit still verifies. Which certificates
 * are the row's own: its current and superseded ones, no other row's.
 */
static void test_outside_change(void **state)
{
    struct fixture *f = *state;
    struct prov_journal_device d;
    struct prov_journal_audit audit;
    char sha_a1[65];
    char sha_b[65];
    struct prov_journal_run run;
    bool is_known;

    walk_to_proven(f, "A", id1, 500, f->keys[0]);
    walk_to_proven(f, "B", id3, 502, f->keys[2]);
    assert_int_equal(prov_journal_get(f->j, f->lot, "A", &d), 0);
    memcpy(sha_a1, d.sha256, sizeof(sha_a1));
    prov_journal_device_clear(&d);
    assert_int_equal(prov_journal_get(f->j, f->lot, "B", &d), 0);
    memcpy(sha_b, d.sha256, sizeof(sha_b));
    prov_journal_device_clear(&d);
    assert_int_equal(prov_journal_run_begin(f->j, f->lot, "A", false, &run), 0);
    assert_int_equal(prov_journal_supersede(f->j, f->lot, "A", run.id), 0);
    walk_to_proven(f, "A", id2, 501, f->keys[1]);

    assert_int_equal(prov_journal_row_has_cert(f->j, f->lot, "A", sha_a1, &is_known), 0);
    assert_true(is_known); /* superseded, still the row's */
    assert_int_equal(prov_journal_row_has_cert(f->j, f->lot, "A", sha_b, &is_known), 0);
    assert_false(is_known); /* another row's */
    assert_int_equal(prov_journal_row_has_cert(f->j, f->lot, "B", sha_b, &is_known), 0);
    assert_true(is_known);

    assert_int_equal(prov_journal_record_outside_change(f->j, f->lot, "A", "replaced"), 0);
    assert_int_equal(prov_journal_get(f->j, f->lot, "A", &d), 0);
    assert_int_equal(d.state, PROV_JOURNAL_PROVEN);
    assert_string_equal(d.cert_serial, "01f5"); /* 501 */
    assert_string_equal(d.error, "replaced");
    prov_journal_device_clear(&d);
    assert_int_equal(prov_journal_verify_audit(f->j, &audit), 0);
    assert_int_equal(prov_journal_record_outside_change(f->j, f->lot, "A", NULL), 0);
    assert_int_equal(prov_journal_get(f->j, f->lot, "A", &d), 0);
    assert_null(d.error);
    prov_journal_device_clear(&d);
    /* a row without a certificate has nothing to compare with */
    assert_int_equal(prov_journal_record_failed(f->j, f->lot, "C", "pkcs11:token=t", "x"), 0);
    assert_int_equal(prov_journal_record_outside_change(f->j, f->lot, "C", "replaced"),
                     PROV_ERR_JOURNAL);
    assert_int_equal(prov_journal_verify_audit(f->j, &audit), 0);
}

/* A journal from a newer provisioner is not written by this one. */
static void test_newer_schema_refused(void **state)
{
    struct fixture *f = *state;
    struct prov_journal *w = NULL;
    sqlite3 *db;

    prov_journal_close(f->j);
    f->j = NULL;
    db = open_raw(f->path);
    assert_int_equal(
        sqlite3_exec(db, "UPDATE meta SET value = '99' WHERE key = 'schema'", NULL, NULL, NULL),
        SQLITE_OK);
    sqlite3_close(db);
    prov_error_clear();
    assert_int_equal(prov_journal_open(f->path, true, &w), PROV_ERR_JOURNAL);
    assert_non_null(strstr(prov_error_message(), "schema version 99 is newer"));
    assert_int_equal(prov_journal_open(f->path, true, &f->j), PROV_ERR_JOURNAL);
    f->j = NULL;
}

/* Runs SQL on the journal file behind the API's back, as a tamperer would. */
static void tamper(struct fixture *f, const char *sql)
{
    sqlite3 *db = NULL;
    char *err = NULL;

    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
        fail_msg("%s: %s", sql, err);
    }
    sqlite3_close(db);
}

static void fill(struct fixture *f)
{
    walk_to_proven(f, "A", id1, 300, f->keys[0]);
    walk_to_proven(f, "B", id2, 301, f->keys[1]);
    assert_int_equal(prov_journal_record_failed(f->j, f->lot, "C", "pkcs11:token=t", "x"), 0);
}

static void test_audit_verifies(void **state)
{
    struct fixture *f = *state;
    struct prov_journal_audit a;
    sqlite3 *db = NULL;

    fill(f);
    assert_int_equal(prov_journal_verify_audit(f->j, &a), 0);
    assert_int_equal(a.n_records, 10); /* lot + 4 + 4 + 1 */
    assert_int_equal(strlen(a.head_hash), 64);
    /* Append-only even for a plain SQL client. */
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_not_equal(sqlite3_exec(db, "UPDATE audit SET detail = 'x'", NULL, NULL, NULL),
                         SQLITE_OK);
    assert_int_not_equal(sqlite3_exec(db, "DELETE FROM audit", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

static void test_audit_detects_altered(void **state)
{
    struct fixture *f = *state;
    struct prov_journal_audit a;

    fill(f);
    tamper(f, "DROP TRIGGER audit_no_update; UPDATE audit SET detail = 'cert_serial=1' "
              "WHERE seq = 3");
    prov_error_clear();
    assert_int_equal(prov_journal_verify_audit(f->j, &a), PROV_ERR_VERIFY);
    assert_int_equal(a.bad_seq, 3);
    assert_non_null(strstr(a.reason, "altered"));
}

static void test_audit_detects_deleted(void **state)
{
    struct fixture *f = *state;
    struct prov_journal_audit a;

    fill(f);
    tamper(f, "DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq = 4");
    prov_error_clear();
    assert_int_equal(prov_journal_verify_audit(f->j, &a), PROV_ERR_VERIFY);
    assert_int_equal(a.bad_seq, 4);
    assert_non_null(strstr(a.reason, "missing"));
}

static void test_audit_detects_truncated(void **state)
{
    struct fixture *f = *state;
    struct prov_journal_audit a;

    fill(f);
    tamper(f, "DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq = 10");
    prov_error_clear();
    assert_int_equal(prov_journal_verify_audit(f->j, &a), PROV_ERR_VERIFY);
    assert_non_null(strstr(a.reason, "removed from the end"));
}

static void test_audit_detects_row_edit(void **state)
{
    struct fixture *f = *state;
    struct prov_journal_audit a;

    fill(f);
    tamper(f, "UPDATE device SET state = 'proven' WHERE serial = 'C'");
    prov_error_clear();
    assert_int_equal(prov_journal_verify_audit(f->j, &a), PROV_ERR_VERIFY);
    assert_non_null(strstr(a.reason, "serial C"));
}

/* Whether path + suffix exists. */
static bool exists_with(const char *path, const char *suffix)
{
    char p[192];
    struct stat st;

    snprintf(p, sizeof(p), "%s%s", path, suffix);
    return stat(p, &st) == 0;
}

/*
 * A reader (batch status, batch report, lot export) leaves nothing beside a journal it only
 * read: no -wal, no -shm (factory/journal_sqlite.c opens it read-write with query_only, so
 * the last connection to close removes them), and it cannot change the journal.
 */
static void test_reader_leaves_no_files(void **state)
{
    struct fixture *f = *state;
    struct prov_journal *r = NULL;
    long long lot = 0;

    prov_journal_close(f->j); /* the writer, the last connection: its -wal and -shm go */
    f->j = NULL;
    assert_false(exists_with(f->path, "-wal"));
    assert_false(exists_with(f->path, "-shm"));
    assert_int_equal(prov_journal_open(f->path, false, &r), 0);
    assert_int_equal(prov_journal_find_lot(r, "lot-a", &lot), 0);
    assert_int_equal(lot, f->lot);
    prov_error_clear();
    assert_true(prov_journal_lot(r, "lot-b", "b.csv", &lot) < 0);
    prov_error_clear();
    prov_journal_close(r);
    assert_false(exists_with(f->path, "-wal"));
    assert_false(exists_with(f->path, "-shm"));
}

static void test_writer_lock(void **state)
{
    struct fixture *f = *state;
    struct prov_journal *other = NULL;

    prov_error_clear();
    assert_int_equal(prov_journal_open(f->path, true, &other), PROV_ERR_JOURNAL);
    assert_non_null(strstr(prov_error_message(), "in use by another batch run"));
    assert_null(other);
    assert_int_equal(prov_journal_open(f->path, false, &other), 0);
    prov_journal_close(other);
}

/* The value of "SELECT ?" (NULL: -1) on a statement of journal_query. */
static long long selected(sqlite3_stmt *st)
{
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    return sqlite3_column_type(st, 0) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, 0);
}

/*
 * Statements are kept and reused, but never shared: the same text asked for twice while the
 * first is in use gives a second statement; a reused one starts with no bindings; a failed
 * step of a kept statement still explains itself; more statements than are kept still work
 * and are finalized (the ASan run's leak check would see one that is not).
 */
static void test_kept_statements(void **state)
{
    struct fixture *f = *state;
    struct journal_sqlite *j = (struct journal_sqlite *)f->j->store; /* the SQLite store */
    sqlite3_stmt *a = NULL;
    sqlite3_stmt *b = NULL;
    sqlite3_stmt *again = NULL;
    sqlite3_stmt *many[JOURNAL_STMT_CACHE + 8] = {NULL};
    char sql[64];

    assert_int_equal(journal_query(j, &a, "SELECT ?", "i", 7LL), 0);
    assert_int_equal(journal_query(j, &b, "SELECT ?", "i", 8LL), 0);
    assert_ptr_not_equal(a, b);
    assert_int_equal(selected(a), 7);
    assert_int_equal(selected(b), 8);
    journal_release(j, a);
    assert_int_equal(journal_query(j, &again, "SELECT ?", ""), 0);
    assert_true(again == a || again == b);
    assert_int_equal(selected(again), -1); /* the earlier binding is gone */
    journal_release(j, again);
    journal_release(j, b);

    for (int i = 0; i < 2; i++) {
        assert_int_equal(journal_exec(j, "INSERT INTO lot(name, manifest) VALUES (?, 'm')", "t",
                                      "lot-b"),
                         SQLITE_CONSTRAINT);
        assert_string_equal(sqlite3_errmsg(j->db), "NOT NULL constraint failed: lot.created");
    }

    for (size_t i = 0; i < sizeof(many) / sizeof(many[0]); i++) {
        snprintf(sql, sizeof(sql), "SELECT %zu + ?", i);
        assert_int_equal(journal_query(j, &many[i], sql, "i", 1LL), 0);
    }
    for (size_t i = 0; i < sizeof(many) / sizeof(many[0]); i++) {
        assert_int_equal(selected(many[i]), (long long)i + 1);
        journal_release(j, many[i]);
    }
    assert_int_equal(state_of(f, "nobody"), PROV_JOURNAL_NONE);
}

/*
 * Runs child(j, f) in a forked process on the journal reopened with the crash hook set to
 * hook; it must stop with the hook's exit code (137). The journal is reopened here after.
 */
static void expect_crash(struct fixture *f, const char *hook,
                         int (*child)(struct prov_journal *j, struct fixture *f))
{
    int status = 0;
    pid_t pid;

    prov_journal_close(f->j);
    f->j = NULL;
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct prov_journal *j = NULL;

        setenv("PROVISIONER_TEST_CRASH_AT", hook, 1);
        if (prov_journal_open(f->path, true, &j) < 0) {
            _exit(1);
        }
        _exit(child(j, f) < 0 ? 2 : 0);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 137);
    assert_int_equal(prov_journal_open(f->path, true, &f->j), 0);
}

/* intent, issued for serial (key i of the fixture), then record(serial). */
static int to_issued_then(struct prov_journal *j, struct fixture *f, const char *serial, int i,
                          int (*record)(struct prov_journal *j, long long lot_id,
                                        const char *serial))
{
    unsigned char id[16] = {(unsigned char)(0x10 + i)};
    X509 *c = make_cert(400 + i, f->keys[i]);
    int r;

    r = prov_journal_record_intent(j, f->lot, serial, "pkcs11:token=t", "d", id, 16);
    r = r ? r : prov_journal_record_issued(j, f->lot, serial, id, 16, c, "k");
    r = r ? r : record(j, f->lot, serial);
    X509_free(c);
    return r;
}

static int three_stored(struct prov_journal *j, struct fixture *f)
{
    static const char *const serials[] = {"S1", "S2", "S3"};
    int r = 0;

    for (int i = 0; i < 3 && r == 0; i++) {
        r = to_issued_then(j, f, serials[i], i, prov_journal_record_stored);
    }
    return r;
}

/* The crash hook stops the process right after the n-th committed transition to a state. */
static void test_crash_hook(void **state)
{
    struct fixture *f = *state;

    expect_crash(f, "stored:2", three_stored);
    assert_int_equal(state_of(f, "S1"), PROV_JOURNAL_STORED);
    assert_int_equal(state_of(f, "S2"), PROV_JOURNAL_STORED); /* committed before the exit */
    assert_int_equal(state_of(f, "S3"), PROV_JOURNAL_NONE);
}

static int sp1_stored_proven(struct prov_journal *j, struct fixture *f)
{
    return to_issued_then(j, f, "SP1", 0, prov_journal_record_stored_proven);
}

static int sp2_stored_proven(struct prov_journal *j, struct fixture *f)
{
    return to_issued_then(j, f, "SP2", 1, prov_journal_record_stored_proven);
}

/*
 * stored and proven in one transaction: a crash hook at either state fires after the one
 * commit, so the row is proven on disk when the process stops.
 */
static void test_crash_hook_stored_proven(void **state)
{
    struct fixture *f = *state;

    expect_crash(f, "stored:1", sp1_stored_proven);
    assert_int_equal(state_of(f, "SP1"), PROV_JOURNAL_PROVEN);
    expect_crash(f, "proven:1", sp2_stored_proven);
    assert_int_equal(state_of(f, "SP2"), PROV_JOURNAL_PROVEN);
}

/* The tables the first provisioner release created, one autocommitted statement each. */
static const char *const v1_tables =
    "PRAGMA journal_mode=WAL;"
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE lot(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, manifest TEXT,"
    " created TEXT NOT NULL);"
    "CREATE TABLE run(id INTEGER PRIMARY KEY, lot_id INTEGER NOT NULL REFERENCES lot(id),"
    " reissue TEXT NOT NULL, started TEXT NOT NULL, finished TEXT);"
    "CREATE TABLE device(id INTEGER PRIMARY KEY, lot_id INTEGER NOT NULL REFERENCES lot(id),"
    " serial TEXT NOT NULL, device_uri TEXT NOT NULL, state TEXT NOT NULL CHECK (state IN"
    "  ('intent','issued','stored','proven','failed','superseded')),"
    " key_id BLOB, key_uri TEXT, storage TEXT, cert_id INTEGER REFERENCES certificate(id),"
    " error TEXT, attempts INTEGER NOT NULL DEFAULT 0, updated TEXT NOT NULL,"
    " UNIQUE (lot_id, serial));"
    "CREATE TABLE certificate(id INTEGER PRIMARY KEY,"
    " device_id INTEGER NOT NULL REFERENCES device(id),"
    " cert_serial TEXT NOT NULL UNIQUE, pubkey_sha256 TEXT NOT NULL UNIQUE,"
    " sha256 TEXT NOT NULL, not_after TEXT NOT NULL, key_id BLOB NOT NULL,"
    " der BLOB NOT NULL, issued TEXT NOT NULL, superseded TEXT,"
    " superseded_run INTEGER REFERENCES run(id));";

/* Makes path an SQLite file holding sql (statements autocommitted one by one). */
static void make_db(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    char *err = NULL;

    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
        fail_msg("%s: %s", sql, err);
    }
    sqlite3_close(db);
}

/* Whether the SQLite file at path has a table called name. */
static bool has_table(const char *path, const char *name)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    bool found;

    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND"
                                        " name = ?",
                                        -1, &st, NULL),
                     SQLITE_OK);
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    found = sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
    sqlite3_close(db);
    return found;
}

/* What prov_batch_status prints (text), malloc'd. */
static char *status_text(struct prov_journal *j)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);

    assert_non_null(f);
    assert_int_equal(prov_batch_status(j, false, NULL, f), 0);
    fclose(f);
    return buf;
}

/*
 * A journal whose creation was killed half way (an older provisioner created its tables one
 * statement at a time: here every table but the audit trail): readers recognise it and
 * complete it instead of failing on the missing table or reporting it as empty, and a writer
 * carries on with it.
 */
static void test_half_made_journal(void **state)
{
    struct fixture *f = *state;
    struct prov_journal_audit a;
    struct prov_journal *j = NULL;
    char path[160];
    char *text;

    snprintf(path, sizeof(path), "%s/half.sqlite", f->dir);
    make_db(path, v1_tables);
    prov_error_clear();
    assert_int_equal(prov_journal_open(path, false, &j), 0);
    assert_int_equal(prov_journal_verify_audit(j, &a), 0);
    assert_int_equal(a.n_records, 0);
    text = status_text(j);
    assert_non_null(strstr(text, "no lot"));
    free(text);
    prov_journal_close(j);
    assert_true(has_table(path, "audit"));

    assert_int_equal(prov_journal_open(path, true, &j), 0);
    prov_journal_close(f->j);
    f->j = j;
    assert_int_equal(prov_journal_lot(f->j, "lot-h", "h.csv", &f->lot), 0);
    walk_to_proven(f, "H", id1, 700, f->keys[0]);
    assert_int_equal(prov_journal_verify_audit(f->j, &a), 0);
    assert_int_equal(a.n_records, 5);
}

/*
 * The schema is made in one transaction: when any part of it cannot be made (here an "audit"
 * table of another shape is in the way), nothing of it is left behind.
 */
static void test_schema_all_or_nothing(void **state)
{
    struct fixture *f = *state;
    struct prov_journal *j = NULL;
    char path[160];

    snprintf(path, sizeof(path), "%s/clash.sqlite", f->dir);
    make_db(path, "CREATE TABLE audit(x);");
    prov_error_clear();
    assert_int_equal(prov_journal_open(path, true, &j), PROV_ERR_JOURNAL);
    assert_null(j);
    assert_non_null(strstr(prov_error_message(), path));
    assert_false(has_table(path, "lot"));
    assert_false(has_table(path, "meta"));
}

/* What test_rows_of's callback saw: the places, each with its row's serial and state. */
struct rows_seen {
    size_t n;
    size_t at[8];
    char serial[8][16];
    enum prov_journal_state state[8];
    bool has_cert[8];
};

static int note_row(void *ctx, size_t i, const struct prov_journal_device *d)
{
    struct rows_seen *seen = ctx;

    assert_true(seen->n < 8);
    seen->at[seen->n] = i;
    snprintf(seen->serial[seen->n], sizeof(seen->serial[0]), "%s", d->serial);
    seen->state[seen->n] = d->state;
    seen->has_cert[seen->n] = d->cert_der != NULL;
    seen->n++;
    return 0;
}

/*
 * The rows of a page of serials (the batch's results): each row there is comes with its place
 * in the list, whatever order the list is in; a serial with no row, or a row of another lot, is
 * not reported; an empty page asks nothing.
 */
static void test_rows_of(void **state)
{
    struct fixture *f = *state;
    const char *const page[] = {"Z", "missing", "A", "B"};
    struct rows_seen seen = {0};
    long long other = 0;

    walk_to_proven(f, "A", id1, 11, f->keys[0]);
    assert_int_equal(prov_journal_record_failed(f->j, f->lot, "B", "pkcs11:token=t", "no token"),
                     0);
    assert_int_equal(
        prov_journal_record_intent(f->j, f->lot, "Z", "pkcs11:token=t", "d/Z", id2, 16), 0);
    assert_int_equal(prov_journal_lot(f->j, "LOT-OTHER", "other.csv", &other), 0);
    assert_int_equal(
        prov_journal_record_intent(f->j, other, "missing", "pkcs11:token=t", "d/m", id3, 16), 0);

    assert_int_equal(prov_journal_rows_of(f->j, f->lot, page, 4, note_row, &seen), 0);
    assert_int_equal(seen.n, 3);
    for (size_t k = 0; k < seen.n; k++) {
        assert_string_equal(seen.serial[k], page[seen.at[k]]);
        assert_int_equal(seen.state[k], seen.at[k] == 2   ? PROV_JOURNAL_PROVEN
                                        : seen.at[k] == 3 ? PROV_JOURNAL_FAILED
                                                          : PROV_JOURNAL_INTENT);
        assert_int_equal(seen.has_cert[k], seen.at[k] == 2);
        assert_int_not_equal(seen.at[k], 1);
    }
    seen.n = 0;
    assert_int_equal(prov_journal_rows_of(f->j, f->lot, page, 0, note_row, &seen), 0);
    assert_int_equal(seen.n, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_state_machine, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stored_proven, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stored_proven_not_synced, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_keeps_progress, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unique_constraints, setup, teardown),
        cmocka_unit_test_setup_teardown(test_supersede_and_runs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_certificate_device, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migrate_v1, setup, teardown),
        cmocka_unit_test_setup_teardown(test_newer_schema_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_outside_change, setup, teardown),
        cmocka_unit_test_setup_teardown(test_audit_verifies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_audit_detects_altered, setup, teardown),
        cmocka_unit_test_setup_teardown(test_audit_detects_deleted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_audit_detects_truncated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_audit_detects_row_edit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_writer_lock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reader_leaves_no_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash_hook, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash_hook_stored_proven, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kept_statements, setup, teardown),
        cmocka_unit_test_setup_teardown(test_half_made_journal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_schema_all_or_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rows_of, setup, teardown),
    };

    /* the tests of the journal's rules, not of SQLite's file, over the ledger's store */
    const struct CMUnitTest on_ledger[] = {
        cmocka_unit_test_setup_teardown(test_state_machine, setup_pg, teardown_pg),
        cmocka_unit_test_setup_teardown(test_stored_proven, setup_pg, teardown_pg),
        cmocka_unit_test_setup_teardown(test_failed_keeps_progress, setup_pg, teardown_pg),
        cmocka_unit_test_setup_teardown(test_unique_constraints, setup_pg, teardown_pg),
        cmocka_unit_test_setup_teardown(test_supersede_and_runs, setup_pg, teardown_pg),
        cmocka_unit_test_setup_teardown(test_outside_change, setup_pg, teardown_pg),
        cmocka_unit_test_setup_teardown(test_rows_of, setup_pg, teardown_pg),
    };

    if (getenv("PROV_TEST_LEDGER_URI") != NULL) {
        return cmocka_run_group_tests_name("journal on the ledger", on_ledger, NULL, NULL);
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
