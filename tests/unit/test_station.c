/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the station adds below the CLI, without devices: the journal shared by several
 * station processes (shared lock against batch's exclusive one, per-row locks), claims
 * (next-free order, a device keeps its row, a row belongs to one device, a full lot) and
 * that claims leave the audit trail verifiable; instance names and the device table; which
 * manifest rows name a device.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "backend.h"
#include "config.h"
#include "issue.h"
#include "error.h"
#include "journal.h"
#include "pkcs11.h"
#include "station.h"
#include "test_pki.h"
#include "tpm.h"

struct fixture {
    char dir[64];
    char path[128];
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    snprintf(f->dir, sizeof(f->dir), "/tmp/test_station.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/j.sqlite", f->dir);
    unsetenv("PROVISIONER_TEST_CRASH_AT");
    unsetenv("PROVISIONER_TEST_PAUSE_AT");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[128];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

/* Stations share the journal; a batch run and stations exclude each other. */
static void test_shared_lock(void **state)
{
    struct fixture *f = *state;
    struct prov_journal *a = NULL;
    struct prov_journal *b = NULL;
    struct prov_journal *x = NULL;

    assert_int_equal(prov_journal_open_shared(f->path, &a), 0);
    assert_int_equal(prov_journal_open_shared(f->path, &b), 0);
    prov_error_clear();
    assert_int_equal(prov_journal_open(f->path, true, &x), PROV_ERR_JOURNAL);
    assert_non_null(strstr(prov_error_message(), "in use by another batch run or station"));
    prov_journal_close(a);
    prov_journal_close(b);
    assert_int_equal(prov_journal_open(f->path, true, &x), 0);
    prov_error_clear();
    assert_int_equal(prov_journal_open_shared(f->path, &a), PROV_ERR_JOURNAL);
    assert_non_null(strstr(prov_error_message(), "in use by a batch run"));
    prov_journal_close(x);
}

/* The fixture's journal, opened as a station opens it, with the lot "lot". */
static struct prov_journal *open_lot(struct fixture *f, long long *lot)
{
    struct prov_journal *j = NULL;

    assert_int_equal(prov_journal_open_shared(f->path, &j), 0);
    assert_int_equal(prov_journal_lot(j, "lot", "lot.csv", lot), 0);
    return j;
}

static void test_claims(void **state)
{
    static const char *const serials[] = {"A", "B", "C"};
    long long lot = 0;
    struct prov_journal *j = open_lot(*state, &lot);
    struct prov_journal_audit audit;
    unsigned char id[16] = {7};
    size_t i = 99;

    /* a row a batch run already started is not free */
    assert_int_equal(
        prov_journal_record_intent(j, lot, "B", "pkcs11:token=t", "devices/B", id, sizeof(id)), 0);
    assert_int_equal(prov_journal_station_claim(j, lot, "pkcs11:1", "i1", serials, 3, true, &i),
                     0);
    assert_int_equal(i, 0);
    assert_int_equal(prov_journal_station_claim(j, lot, "pkcs11:2", "i2", serials, 3, true, &i),
                     0);
    assert_int_equal(i, 2);
    /* a device that comes back keeps its row */
    assert_int_equal(prov_journal_station_claim(j, lot, "pkcs11:1", "i3", serials, 3, true, &i),
                     0);
    assert_int_equal(i, 0);
    prov_error_clear();
    assert_int_equal(prov_journal_station_claim(j, lot, "pkcs11:3", "i4", serials, 3, true, &i),
                     PROV_ERR_POLICY);
    assert_non_null(strstr(prov_error_message(), "no free row left"));
    /* row-by-identity: a row claimed by another device is refused */
    prov_error_clear();
    assert_int_equal(
        prov_journal_station_claim(j, lot, "pkcs11:4", "i5", &serials[2], 1, false, &i),
        PROV_ERR_ALREADY_ISSUED);
    /* a bound device whose row the manifest names differently is refused */
    prov_error_clear();
    assert_int_equal(
        prov_journal_station_claim(j, lot, "pkcs11:1", "i6", &serials[1], 1, false, &i),
        PROV_ERR_ALREADY_ISSUED);
    assert_non_null(strstr(prov_error_message(), "binds it to serial A"));
    /* claims are in the audit chain, which still verifies with the device rows */
    assert_int_equal(prov_journal_verify_audit(j, &audit), 0);
    assert_true(audit.n_records >= 4);
    prov_journal_close(j);
}

/* A self-signed certificate for a fresh P-256 key. */
static X509 *fresh_cert(long serial)
{
    EVP_PKEY *key = test_pki_ec_key("P-256");
    X509 *c = test_pki_self_signed(NULL, serial, key);

    EVP_PKEY_free(key);
    return c;
}

static int key_device(void *ctx, const struct prov_journal_key_ref *k)
{
    snprintf(ctx, 64, "%s %s", k->role, k->device_uri);
    return 0;
}

/* A claimed device found under a new URI takes its row with it; nobody else's row moves. */
static void test_follow(void **state)
{
    static const char *const serials[] = {"A", "B"};
    long long lot = 0;
    struct prov_journal *j = open_lot(*state, &lot);
    struct prov_journal_device d = {0};
    struct prov_journal_audit audit;
    unsigned char id[16] = {7};
    char where[64] = "";
    struct prov_journal_old_key *old = NULL;
    size_t n_old = 0;
    struct prov_journal_run run;
    X509 *cert;
    size_t i = 99;

    assert_int_equal(prov_journal_station_claim(j, lot, "tpm2:ek", "tpmrm0", serials, 1, true, &i),
                     0);
    /* no row yet: nothing to move */
    assert_int_equal(prov_journal_station_follow(j, lot, "A", "tpm2:ek", "tpm2:device:/dev/tpmrm0"),
                     0);
    assert_int_equal(prov_journal_record_intent(j, lot, "A", "tpm2:device:/dev/tpmrm0",
                                                "devices/A", id, sizeof(id)),
                     0);
    assert_int_equal(prov_journal_station_follow(j, lot, "A", "tpm2:ek", "tpm2:device:/dev/tpmrm1"),
                     0);
    assert_int_equal(prov_journal_get(j, lot, "A", &d), 0);
    assert_string_equal(d.device_uri, "tpm2:device:/dev/tpmrm1");
    prov_journal_device_clear(&d);
    /* the same name again: no second move */
    assert_int_equal(prov_journal_station_follow(j, lot, "A", "tpm2:ek", "tpm2:device:/dev/tpmrm1"),
                     0);
    /* a device that does not hold the claim moves nothing */
    prov_error_clear();
    assert_int_equal(prov_journal_station_follow(j, lot, "A", "tpm2:other", "tpm2:device:/dev/x"),
                     PROV_ERR_ALREADY_ISSUED);
    assert_int_equal(prov_journal_get(j, lot, "A", &d), 0);
    assert_string_equal(d.device_uri, "tpm2:device:/dev/tpmrm1");
    prov_journal_device_clear(&d);
    /*
     * The certificates made on the device move with it: a superseded key is looked for on
     * the device its certificate records, under the name the device has now.
     */
    cert = fresh_cert(77);
    assert_int_equal(prov_journal_record_issued(j, lot, "A", id, sizeof(id), cert,
                                                "tpm2:device:/dev/tpmrm1;handle=0x81000101"),
                     0);
    X509_free(cert);
    assert_int_equal(prov_journal_record_stored(j, lot, "A"), 0);
    assert_int_equal(prov_journal_record_proven(j, lot, "A"), 0);
    assert_int_equal(prov_journal_run_begin(j, lot, "A", false, &run), 0);
    assert_int_equal(prov_journal_supersede(j, lot, "A", run.id), 0);
    assert_int_equal(prov_journal_station_follow(j, lot, "A", "tpm2:ek", "tpm2:device:/dev/tpmrm2"),
                     0);
    assert_int_equal(prov_journal_unretired_keys(j, lot, "A", &old, &n_old), 0);
    assert_int_equal(n_old, 1);
    assert_string_equal(old[0].device_uri, "tpm2:device:/dev/tpmrm2");
    prov_journal_old_keys_free(old, n_old);
    assert_int_equal(prov_journal_foreach_key(j, key_device, where), 0);
    assert_string_equal(where, "superseded tpm2:device:/dev/tpmrm2");
    assert_int_equal(prov_journal_verify_audit(j, &audit), 0);
    prov_journal_close(j);
}

static void test_row_lock(void **state)
{
    struct fixture *f = *state;
    struct prov_journal *j = NULL;
    struct prov_journal_row_lock *a = NULL;
    struct prov_journal_row_lock *b = NULL;
    struct prov_journal_row_lock *c = NULL;

    assert_int_equal(prov_journal_open_shared(f->path, &j), 0);
    assert_int_equal(prov_journal_row_lock(j, 1, "SN-1", &a), 0);
    prov_error_clear();
    assert_int_equal(prov_journal_row_lock(j, 1, "SN-1", &b), PROV_ERR_JOURNAL);
    assert_non_null(strstr(prov_error_message(), "another station is working on this row"));
    assert_null(b);
    assert_int_equal(prov_journal_row_lock(j, 1, "SN-2", &c), 0);
    prov_journal_row_unlock(a);
    assert_int_equal(prov_journal_row_lock(j, 1, "SN-1", &b), 0);
    prov_journal_row_unlock(b);
    prov_journal_close(j);
    prov_journal_row_unlock(c); /* after the close, as a station does */
}

static struct prov_config *config_with(const char *dir, const char *station)
{
    char text[1024];
    struct prov_config *cfg = NULL;

    snprintf(text, sizeof(text), "[provisioner]\noutput_dir = devices\n\n[station]\n%s", station);
    assert_int_equal(prov_issue_parse_config(text, strlen(text), "t.cnf", dir, &cfg), 0);
    return cfg;
}

static void test_instances(void **state)
{
    struct fixture *f = *state;
    struct prov_station_config sc;
    struct prov_config *cfg;
    char table[160];
    char line[256];
    char *uri = NULL;
    bool is_any = false;
    FILE *t;

    snprintf(table, sizeof(table), "%s/tokens.table", f->dir);
    t = fopen(table, "w");
    assert_non_null(t);
    fputs("# comment\n\n1209:0001 /m/one.so usb-serial Name with spaces\n"
          "20A0:4108 /m/two.so only-token\n",
          t);
    fclose(t);
    snprintf(line, sizeof(line), "device_table = tokens.table\ntpm_tcti = swtpm:port=%%i\n");
    cfg = config_with(f->dir, line);
    assert_int_equal(prov_station_config_load(cfg, &sc), 0);

    assert_int_equal(prov_station_device_for(cfg, &sc, "tpmrm3", &uri, &is_any), 0);
    assert_string_equal(uri, "tpm2:swtpm:port=tpmrm3");
    free(uri);
    assert_int_equal(prov_station_device_for(cfg, &sc, "usb-1209:0001-AB12", &uri, &is_any), 0);
    assert_string_equal(uri, "pkcs11:serial=AB12?module-path=/m/one.so");
    assert_false(is_any);
    free(uri);
    assert_int_equal(prov_station_device_for(cfg, &sc, "usb-20a0:4108-X", &uri, &is_any), 0);
    assert_string_equal(uri, "pkcs11:?module-path=/m/two.so");
    assert_true(is_any);
    free(uri);
    assert_int_equal(prov_station_device_for(cfg, &sc, "usb-1209:0002-AB12", &uri, &is_any),
                     PROV_ERR_CONFIG);
    assert_null(uri);
    prov_error_clear();
    assert_int_equal(prov_station_device_for(cfg, &sc, "usb-1209:0001-A;B", &uri, &is_any),
                     PROV_ERR_USAGE);
    prov_error_clear();
    assert_int_equal(prov_station_device_for(cfg, &sc, "tpm0", &uri, &is_any), PROV_ERR_USAGE);
    prov_error_clear();
    assert_int_equal(prov_station_device_for(cfg, &sc, "tpmrm", &uri, &is_any), PROV_ERR_USAGE);
    prov_error_clear();
    prov_station_config_clear(&sc);
    prov_config_free(cfg);

    /* the default TCTI, and an unknown key */
    cfg = config_with(f->dir, "mode = next-free\n");
    assert_int_equal(prov_station_config_load(cfg, &sc), 0);
    assert_int_equal(prov_station_device_for(cfg, &sc, "tpmrm0", &uri, &is_any), 0);
    assert_string_equal(uri, "tpm2:device:/dev/tpmrm0");
    free(uri);
    prov_station_config_clear(&sc);
    prov_config_free(cfg);
    cfg = config_with(f->dir, "manifset = x.csv\n");
    assert_int_equal(prov_station_config_load(cfg, &sc), PROV_ERR_CONFIG);
    assert_non_null(strstr(prov_error_message(), "[station] key \"manifset\": unknown key"));
    prov_error_clear();
    prov_config_free(cfg);
}

/*
 * [station] exclude (identities never served, such as the station PC's own TPM) and
 * device_wait (seconds to wait for a device not attached yet; bounded; 0 does not wait).
 */
static void test_exclude_and_wait(void **state)
{
    struct fixture *f = *state;
    struct prov_station_config sc;
    struct prov_config *cfg;

    cfg = config_with(f->dir, "exclude = tpm2:ea06, pkcs11:0c4d2b11\tpkcs11:AB\n");
    assert_int_equal(prov_station_config_load(cfg, &sc), 0);
    assert_int_equal(sc.device_wait, PROV_STATION_DEVICE_WAIT);
    assert_true(prov_station_is_excluded(&sc, "tpm2:ea06"));
    assert_true(prov_station_is_excluded(&sc, "pkcs11:0c4d2b11"));
    assert_true(prov_station_is_excluded(&sc, "pkcs11:AB"));
    assert_false(prov_station_is_excluded(&sc, "tpm2:ea0"));   /* whole entries only */
    assert_false(prov_station_is_excluded(&sc, "tpm2:ea06a")); /* ... both ways */
    assert_false(prov_station_is_excluded(&sc, "pkcs11:A"));
    assert_false(prov_station_is_excluded(&sc, NULL));
    prov_station_config_clear(&sc);
    prov_config_free(cfg);

    cfg = config_with(f->dir, "device_wait = 0\n");
    assert_int_equal(prov_station_config_load(cfg, &sc), 0);
    assert_int_equal(sc.device_wait, 0);
    assert_false(prov_station_is_excluded(&sc, "tpm2:ea06")); /* no list: nothing excluded */
    prov_station_config_clear(&sc);
    prov_config_free(cfg);
    cfg = config_with(f->dir, "device_wait = 600\n");
    assert_int_equal(prov_station_config_load(cfg, &sc), 0);
    assert_int_equal(sc.device_wait, 600);
    prov_station_config_clear(&sc);
    prov_config_free(cfg);
    for (int i = 0; i < 4; i++) {
        static const char *const bad[] = {"601", "-1", "5s", "x"};
        char line[64];

        snprintf(line, sizeof(line), "device_wait = %s\n", bad[i]);
        cfg = config_with(f->dir, line);
        prov_error_clear();
        assert_int_equal(prov_station_config_load(cfg, &sc), PROV_ERR_CONFIG);
        assert_non_null(strstr(prov_error_message(), "device_wait"));
        prov_config_free(cfg);
    }
}

static void test_row_names(void **state)
{
    (void)state;
    assert_true(prov_station_row_names("pkcs11:serial=AB12", "pkcs11", "AB12"));
    assert_true(prov_station_row_names("pkcs11:token=x;serial=AB12?module-path=/m", "pkcs11",
                                       "AB12"));
    assert_false(prov_station_row_names("pkcs11:serial=AB123", "pkcs11", "AB12"));
    assert_false(prov_station_row_names("pkcs11:token=AB12", "pkcs11", "AB12"));
    assert_false(prov_station_row_names("pkcs11:serial=AB12", "tpm2", "AB12"));
    assert_true(prov_station_row_names("tpm2:ek-sha256=ABCDEF", "tpm2", "abcdef"));
    assert_false(prov_station_row_names("tpm2:device:/dev/tpmrm0", "tpm2", "abcdef"));
}

/* The device schemes and device strings come from the registered backends, as in the binary. */
static int register_backends(void **state)
{
    prov_backend_register(&prov_pkcs11_ops);
    prov_backend_register(&prov_tpm_ops);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_shared_lock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_claims, setup, teardown),
        cmocka_unit_test_setup_teardown(test_follow, setup, teardown),
        cmocka_unit_test_setup_teardown(test_row_lock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_instances, setup, teardown),
        cmocka_unit_test_setup_teardown(test_row_names, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exclude_and_wait, setup, teardown),
    };

    return cmocka_run_group_tests(tests, register_backends, NULL);
}
