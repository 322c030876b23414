/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The local issuer (provisioner/pki/issuer.c) through its ops table: the CSR policy before
 * anything is signed, a certificate under the CA in memory with its chain, and an issuer
 * opened by prov_issuer_open for the split flow's device halves, which opens nothing; the
 * registry of remote issuer kinds, picked by the scheme of [ca] url.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "backend.h"
#include "error.h"
#include "issuer.h"
#include "pkcs11.h"
#include "test_pki.h"

struct fixture {
    char cfg_text[256];
    struct prov_config *cfg;
    struct prov_ca ca;
    struct prov_issuer *is;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    test_pki_small_ca(&f->ca);
    snprintf(f->cfg_text, sizeof(f->cfg_text), "[provisioner]\noutput_dir = /nonexistent\n");
    assert_int_equal(prov_issue_parse_config(f->cfg_text, strlen(f->cfg_text), "test.cnf", "/",
                                             &f->cfg),
                     0);
    assert_int_equal(prov_issuer_local_over(f->cfg, &f->ca, &f->is), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    prov_issuer_close(f->is);
    test_pki_small_ca_free(&f->ca);
    prov_config_free(f->cfg);
    free(f);
    return 0;
}

static void request_for(struct fixture *f, struct prov_request *rq, const char *serial)
{
    memset(rq, 0, sizeof(*rq));
    rq->serial = serial;
    rq->profile = prov_config_profile(f->cfg, "device");
    assert_non_null(rq->profile);
}

/* A certificate for the CSR's key, signed by the intermediate; the chain is the CA's. */
static void test_local_issues_under_the_ca(void **state)
{
    struct fixture *f = *state;
    struct prov_request rq;
    EVP_PKEY *key = test_pki_ec_key("P-256");
    X509_REQ *req = test_pki_csr(key, "SN-1", NULL);
    X509 *cert = NULL;

    request_for(f, &rq, "SN-1");
    assert_string_equal(f->is->ops->name, "local-hsm");
    prov_error_clear();
    assert_int_equal(f->is->ops->check(f->is, &rq, req), 0);
    assert_int_equal(f->is->ops->issue(f->is, req, &rq, &cert), 0);
    assert_non_null(cert);
    assert_int_equal(EVP_PKEY_eq(X509_get0_pubkey(cert), key), 1);
    assert_int_equal(X509_verify(cert, X509_get0_pubkey(f->ca.cert)), 1);
    assert_ptr_equal(f->is->ops->chain(f->is), f->ca.chain);
    /* this CA keeps no index: nothing to record, delivery is a no-op */
    assert_null(f->is->ops->record(f->is));
    assert_int_equal(f->is->ops->delivered(f->is, cert), 0);
    X509_free(cert);
    X509_REQ_free(req);
    EVP_PKEY_free(key);
}

/* The CSR policy refuses a key type the profile does not allow, in check and in issue. */
static void test_local_policy_before_signing(void **state)
{
    struct fixture *f = *state;
    struct prov_request rq;
    struct prov_profile prof;
    EVP_PKEY *key = test_pki_ec_key("P-256");
    X509_REQ *req = test_pki_csr(key, "SN-2", NULL);
    X509 *cert = NULL;

    request_for(f, &rq, "SN-2");
    prof = *rq.profile;
    prof.allowed_keys = PROV_KEY_BIT(PROV_KEY_EC_P384);
    rq.profile = &prof;
    prov_error_clear();
    assert_int_equal(f->is->ops->check(f->is, &rq, req), PROV_ERR_POLICY);
    prov_error_clear();
    assert_int_equal(f->is->ops->issue(f->is, req, &rq, &cert), PROV_ERR_POLICY);
    assert_null(cert);
    X509_REQ_free(req);
    EVP_PKEY_free(key);
}

/* A deferred issuer opens nothing: no chain, no record; a config without [ca] names no
 * device as the CA's. */
static void test_open_deferred_opens_nothing(void **state)
{
    struct fixture *f = *state;
    struct prov_issuer_opts opts = {.is_deferred = true};
    struct prov_issuer *is = NULL;

    assert_int_equal(prov_issuer_open(f->cfg, &opts, &is), 0);
    assert_non_null(is);
    assert_ptr_equal(is->cfg, f->cfg);
    assert_null(is->ops->chain(is));
    assert_null(is->ops->record(is));
    assert_int_equal(is->ops->check_device(is, "pkcs11:token=dev", NULL), 0);
    prov_issuer_close(is);
}

/* The CA's token is refused as a device by the config alone, before any issuer is open. */
static void test_check_device_for_names_the_ca_token(void **state)
{
    static const char text[] = "[ca]\nintermediate_key = pkcs11:token=ca;object=intermediate\n";
    struct prov_config *cfg = NULL;

    prov_backend_register(&prov_pkcs11_ops);
    assert_int_equal(prov_issue_parse_config(text, strlen(text), "ca.cnf", "/", &cfg), 0);
    prov_error_clear();
    assert_int_equal(prov_issuer_check_device_for(cfg, "pkcs11:token=ca", NULL), PROV_ERR_USAGE);
    assert_non_null(strstr(prov_error_message(), "CA's token"));
    prov_error_clear();
    assert_int_equal(prov_issuer_check_device_for(cfg, "pkcs11:token=dev-1", NULL), 0);
    /* a config without [ca] names no token */
    assert_int_equal(prov_issuer_check_device_for(((struct fixture *)*state)->cfg,
                                                  "pkcs11:token=ca", NULL),
                     0);
    prov_config_free(cfg);
}

/* Not deferred, the CA is opened at once: a config without [ca] fails there. */
static void test_open_without_ca_fails(void **state)
{
    struct fixture *f = *state;
    struct prov_issuer *is = (struct prov_issuer *)f; /* must be reset on failure */

    prov_error_clear();
    assert_true(prov_issuer_open(f->cfg, NULL, &is) < 0);
    assert_null(is);
    assert_non_null(prov_error_message());
}

/* A remote kind for the tests: records what it was asked to open and opens nothing. */
static int kind_opened;
static bool kind_deferred;

static int kind_open(const struct prov_config *cfg, bool is_deferred, struct prov_issuer **out)
{
    kind_opened++;
    kind_deferred = is_deferred;
    *out = NULL;
    return prov_fail(PROV_ERR_NOT_FOUND, "test kind: %s", cfg->ca_url);
}

/*
 * [ca] url picks the issuer kind registered for its scheme (the core names none); a scheme
 * no kind claims is a config error, with nothing opened.
 */
static void test_open_picks_the_kind_by_scheme(void **state)
{
    static const char text[] = "[ca]\nurl = est://127.0.0.1:1\nstation_cert = /s.pem\n"
                               "station_key = pkcs11:token=st;object=id\nroot_cert = /r.pem\n";
    static const struct prov_issuer_kind kind = {.scheme = "est://", .open = kind_open};
    struct prov_issuer_opts opts = {.is_deferred = true};
    struct prov_config *cfg = NULL;
    struct prov_issuer *is = (struct prov_issuer *)*state; /* must be reset */

    assert_int_equal(prov_issue_parse_config(text, strlen(text), "st.cnf", "/", &cfg), 0);
    prov_error_clear();
    assert_int_equal(prov_issuer_open(cfg, &opts, &is), PROV_ERR_CONFIG);
    assert_null(is);
    assert_non_null(strstr(prov_error_message(), "est://127.0.0.1:1"));
    assert_int_equal(kind_opened, 0);

    prov_issuer_register(&kind);
    prov_error_clear();
    assert_int_equal(prov_issuer_open(cfg, &opts, &is), PROV_ERR_NOT_FOUND);
    assert_int_equal(kind_opened, 1);
    assert_true(kind_deferred);
    assert_non_null(strstr(prov_error_message(), "test kind: est://127.0.0.1:1"));
    prov_config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_local_issues_under_the_ca, setup, teardown),
        cmocka_unit_test_setup_teardown(test_local_policy_before_signing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_deferred_opens_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_device_for_names_the_ca_token, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_without_ca_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_picks_the_kind_by_scheme, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
