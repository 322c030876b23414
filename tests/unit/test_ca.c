/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The CA's lifetime rules without an HSM: a chain that cannot issue now is refused by
 * prov_ca_open before the CA token is opened (no backend is registered here, so reaching the
 * token would fail differently), and the "lifetime" lint names each profile whose
 * certificates the intermediate's end would cap.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "ca.h"
#include "chain.h"
#include "config.h"
#include "issue.h"
#include "error.h"
#include "test_pki.h"

#define DAY 86400L

struct fixture {
    char dir[64];
    EVP_PKEY *root_key;
    EVP_PKEY *inter_key;
};

/* ca/chain.pem with an intermediate valid [now + nb, now + na]; a config for that dir. */
static struct prov_config *ca_dir_with(struct fixture *f, long nb, long na, const char *profiles)
{
    X509 *root = test_pki_ca_cert("Test Root", f->root_key, NULL, f->root_key, -DAY, 3650 * DAY);
    X509 *inter = test_pki_ca_cert("Test Intermediate", f->inter_key, root, f->root_key, nb, na);
    struct prov_config *cfg = NULL;
    char path[128];
    char text[1024];

    snprintf(path, sizeof(path), "%s/chain.pem", f->dir);
    test_pki_write_pem(path, inter, root);
    X509_free(inter);
    X509_free(root);
    snprintf(text, sizeof(text),
             "[ca]\ndir = %s\nintermediate_key = pkcs11:token=no-such-ca;object=intermediate\n%s",
             f->dir, profiles);
    assert_int_equal(prov_issue_parse_config(text, strlen(text), "t.cnf", f->dir, &cfg), 0);
    return cfg;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    snprintf(f->dir, sizeof(f->dir), "/tmp/test_ca.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    f->root_key = test_pki_ec_key("P-256");
    f->inter_key = test_pki_ec_key("P-256");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[160];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    EVP_PKEY_free(f->root_key);
    EVP_PKEY_free(f->inter_key);
    free(f);
    return 0;
}

static void expect_refused(struct fixture *f, long nb, long na, const char *needle)
{
    struct prov_config *cfg = ca_dir_with(f, nb, na, "");
    struct prov_ca *ca = (struct prov_ca *)1;

    prov_error_clear();
    assert_int_equal(prov_ca_open(cfg, true, &ca), PROV_ERR_POLICY);
    assert_null(ca);
    assert_non_null(strstr(prov_error_message(), "CN=Test Intermediate"));
    assert_non_null(strstr(prov_error_message(), needle));
    /* ca show opens it without the key: still readable, to report it */
    assert_int_equal(prov_ca_open(cfg, false, &ca), 0);
    prov_ca_close(ca);
    prov_config_free(cfg);
}

static void test_expired_refused_before_the_token(void **state)
{
    expect_refused(*state, -30 * DAY, -DAY, "expired at");
}

static void test_not_yet_valid_refused(void **state)
{
    expect_refused(*state, DAY, 30 * DAY, "is not valid before");
}

static void test_lifetime_lint(void **state)
{
    struct fixture *f = *state;
    const char *profiles = "[profile_long]\ndays = 90\n[profile_short]\ndays = 20\n";
    struct prov_config *cfg = ca_dir_with(f, -DAY, 30 * DAY - 3600, profiles);
    struct prov_chain_report rep = {0};
    struct prov_ca *ca = NULL;
    time_t now = time(NULL);

    assert_int_equal(prov_ca_open(cfg, false, &ca), 0);
    assert_int_equal(prov_ca_lint_lifetime(cfg, ca, now, &rep), 0);
    /* profile device (365 days, built in) and long (90) reach past 30 days; short does not */
    assert_int_equal(rep.n, 2);
    for (size_t i = 0; i < rep.n; i++) {
        assert_int_equal(rep.items[i].index, 0);
        assert_string_equal(rep.items[i].rule, "lifetime");
        assert_non_null(strstr(rep.items[i].detail, "29 days left"));
        assert_non_null(strstr(rep.items[i].detail, "capped"));
    }
    assert_true(strstr(rep.items[0].detail, "profile long") != NULL ||
                strstr(rep.items[1].detail, "profile long") != NULL);
    assert_true(strstr(rep.items[0].detail, "profile device") != NULL ||
                strstr(rep.items[1].detail, "profile device") != NULL);
    prov_chain_report_free(&rep);
    /* expired: no lifetime finding (the chain rules say "validity") */
    assert_int_equal(prov_ca_lint_lifetime(cfg, ca, now + 31 * DAY, &rep), 0);
    assert_int_equal(rep.n, 0);
    prov_ca_close(ca);
    prov_config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_expired_refused_before_the_token, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_yet_valid_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lifetime_lint, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
