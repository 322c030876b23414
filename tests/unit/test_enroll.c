/* SPDX-License-Identifier: Apache-2.0 */
/*
 * prov_enroll against a mock backend (ops table) whose keys are OpenSSL keys in memory: the
 * order of the steps, and that every failure after key generation deletes the key (no orphan)
 * and leaves no storage behind.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "backend.h"
#include "enroll.h"
#include "error.h"
#include "issue.h"
#include "storage.h"
#include "test_mock_device.h"
#include "test_pki.h"

/* A self-contained CA in memory: root and intermediate, software keys. */
struct fixture {
    char dir[64];
    char cfg_text[1024];
    struct prov_config *cfg;
    struct prov_ca ca;
    struct prov_issuer *is; /* the local issuer over ca */
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    char path[128];

    test_mock_device_reset();
    snprintf(f->dir, sizeof(f->dir), "/tmp/test_enroll.XXXXXX");
    assert_non_null(mkdtemp(f->dir));

    test_pki_small_ca(&f->ca);

    snprintf(path, sizeof(path), "%s/server-ca.pem", f->dir);
    test_pki_write_pem(path, f->ca.root, NULL);
    snprintf(f->cfg_text, sizeof(f->cfg_text),
             "[provisioner]\noutput_dir = %s/devices\nserver_ca = %s\n", f->dir, path);
    assert_int_equal(prov_issue_parse_config(f->cfg_text, strlen(f->cfg_text), "test.cnf", f->dir,
                                       &f->cfg),
                     0);
    assert_int_equal(prov_issuer_local_over(f->cfg, &f->ca, &f->is), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[160];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    prov_issuer_close(f->is);
    test_mock_device_reset(); /* frees the mock's last key */
    test_pki_small_ca_free(&f->ca);
    prov_config_free(f->cfg);
    free(f);
    return 0;
}

static void params_for(struct fixture *f, struct prov_enroll_params *p, const char *serial)
{
    memset(p, 0, sizeof(*p));
    p->device_uri = "mock:dev";
    p->req.serial = serial;
    p->req.profile = prov_config_profile(f->cfg, "device");
    assert_non_null(p->req.profile);
}

static bool exists(const char *dir, const char *file)
{
    char path[256];
    struct stat st;

    snprintf(path, sizeof(path), "%s/%s", dir, file);
    return stat(path, &st) == 0;
}

static void test_enroll_ok(void **state)
{
    struct fixture *f = *state;
    struct prov_enroll_params p;
    struct prov_enroll_result res;
    char dir[128];

    params_for(f, &p, "SN-1");
    prov_error_clear();
    assert_int_equal(prov_enroll(f->cfg, f->is, &p, &res), 0);
    assert_int_equal(test_mock.n_generated, 1);
    assert_int_equal(test_mock.n_stored, 1);
    assert_int_equal(test_mock.n_deleted, 0);
    snprintf(dir, sizeof(dir), "%s/devices/SN-1", f->dir);
    assert_string_equal(res.storage_dir, dir);
    assert_true(exists(dir, "client.crt"));
    assert_true(exists(dir, "identity.json"));
    assert_true(exists(dir, "key.uri"));
    /* The certificate is for the device key and is signed by the intermediate. */
    assert_int_equal(X509_verify(res.cert, X509_get0_pubkey(f->ca.cert)), 1);
    prov_enroll_result_clear(&res);

    /* Again without --reissue: refused before a key is made. */
    prov_error_clear();
    assert_int_equal(prov_enroll(f->cfg, f->is, &p, &res), PROV_ERR_ALREADY_ISSUED);
    assert_int_equal(test_mock.n_generated, 1);
    assert_non_null(strstr(prov_error_message(), "SN-1"));

    p.reissue = true;
    prov_error_clear();
    assert_int_equal(prov_enroll(f->cfg, f->is, &p, &res), 0);
    assert_int_equal(test_mock.n_generated, 2);
    prov_enroll_result_clear(&res);
}

/* Each failure after key generation must delete that key and write no storage. */
static void expect_cleanup(struct fixture *f, const char *serial, int want)
{
    struct prov_enroll_params p;
    struct prov_enroll_result res;
    char dir[128];
    struct stat st;

    params_for(f, &p, serial);
    prov_error_clear();
    assert_int_equal(prov_enroll(f->cfg, f->is, &p, &res), want);
    assert_non_null(prov_error_message());
    assert_int_equal(test_mock.n_generated, 1);
    assert_int_equal(test_mock.n_deleted, 1);
    snprintf(dir, sizeof(dir), "%s/devices/%s", f->dir, serial);
    assert_true(stat(dir, &st) < 0); /* not even an empty directory is left */
}

static void test_extractable_key_refused(void **state)
{
    test_mock.is_extractable = true;
    expect_cleanup(*state, "SN-X", PROV_ERR_POLICY);
    assert_non_null(strstr(prov_error_message(), "extractable"));
}

static void test_not_local_key_refused(void **state)
{
    test_mock.is_not_local = true;
    expect_cleanup(*state, "SN-L", PROV_ERR_POLICY);
    assert_non_null(strstr(prov_error_message(), "CKA_LOCAL"));
}

/*
 * Generated on the device (local) and not extractable now, but extractable once: it may have
 * been copied out then. Only CKA_NEVER_EXTRACTABLE says so.
 */
static void test_once_extractable_key_refused(void **state)
{
    test_mock.was_extractable = true;
    expect_cleanup(*state, "SN-E", PROV_ERR_POLICY);
    assert_non_null(strstr(prov_error_message(), "CKA_NEVER_EXTRACTABLE"));
}

static void test_decrypting_key_refused(void **state)
{
    test_mock.can_decrypt = true;
    expect_cleanup(*state, "SN-D", PROV_ERR_POLICY);
    assert_non_null(strstr(prov_error_message(), "decrypt, unwrap or derive"));
}

static void test_wrong_key_signature_refused(void **state)
{
    /* The device reports one public key but signs with another (doc/platform.md). */
    test_mock.sign_with_other_key = true;
    expect_cleanup(*state, "SN-W", PROV_ERR_POLICY);
}

static void test_store_failure_cleans_up(void **state)
{
    test_mock.fail_store_cert = PROV_ERR_DEVICE_REMOVED;
    expect_cleanup(*state, "SN-R", PROV_ERR_DEVICE_REMOVED);
}

static void test_login_failure_generates_nothing(void **state)
{
    struct fixture *f = *state;
    struct prov_enroll_params p;
    struct prov_enroll_result res;

    test_mock.fail_login = PROV_ERR_PIN_INCORRECT;
    params_for(f, &p, "SN-P");
    prov_error_clear();
    assert_int_equal(prov_enroll(f->cfg, f->is, &p, &res), PROV_ERR_PIN_INCORRECT);
    assert_int_equal(test_mock.n_logins, 1);
    assert_int_equal(test_mock.n_generated, 0);
    assert_int_equal(prov_exit_code(PROV_ERR_PIN_INCORRECT), 3);
}

static void test_bad_serial_refused(void **state)
{
    struct fixture *f = *state;
    struct prov_enroll_params p;
    struct prov_enroll_result res;

    params_for(f, &p, "../evil");
    prov_error_clear();
    assert_int_equal(prov_enroll(f->cfg, f->is, &p, &res), PROV_ERR_USAGE);
    assert_int_equal(test_mock.n_logins, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_enroll_ok, setup, teardown),
        cmocka_unit_test_setup_teardown(test_extractable_key_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_local_key_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_once_extractable_key_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_decrypting_key_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_key_signature_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_failure_cleans_up, setup, teardown),
        cmocka_unit_test_setup_teardown(test_login_failure_generates_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_serial_refused, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
