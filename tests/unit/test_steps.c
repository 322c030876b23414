/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The identity pipeline's steps (provisioner/pipeline/steps.h) through their two ops tables:
 * a mock issuer (issuer.h) that logs every call and signs with a CA in memory, and a mock
 * device (tests/common/test_mock_device.h) that logs every backend call. The tests drive the
 * steps in order, as enroll, batch and station do, and through their failure paths: nothing
 * touched before the plan passes, the issuer's own device refused, a key that did not become
 * an identity leaves the device, and storage is written last, all or nothing.
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
#include <openssl/x509.h>

#include "enroll.h"
#include "error.h"
#include "issuer.h"
#include "steps.h"
#include "test_mock_device.h"
#include "test_pki.h"

/* ---- the mock issuer -------------------------------------------------------------------- */

struct mock_issuer {
    struct prov_issuer base;
    struct prov_issuer *signer; /* the local issuer over the CA in memory: signs for it */
    int refuse_device_uri;      /* check_device by URI returns this */
    int refuse_device;          /* check_device by identity returns this */
    int refuse_check;           /* the record's rules return this */
    int refuse_issue;           /* issue returns this (after its rules passed) */
    int n_issued;
    int n_delivered;
    char log[256];
};

static void note(struct mock_issuer *m, const char *what)
{
    size_t n = strlen(m->log);

    snprintf(m->log + n, sizeof(m->log) - n, "%s%s", n > 0 ? " " : "", what);
}

static struct mock_issuer *mock_of(struct prov_issuer *is)
{
    return (struct mock_issuer *)is;
}

static int refuse(int r, const char *what)
{
    return r != 0 ? prov_fail(r, "mock issuer: %s refused", what) : 0;
}

static int mi_check_device(struct prov_issuer *is, const char *uri, struct prov_device *dev)
{
    struct mock_issuer *m = mock_of(is);

    assert_non_null(uri);
    note(m, dev == NULL ? "device-uri" : "device");
    return refuse(dev == NULL ? m->refuse_device_uri : m->refuse_device, "device");
}

static int mi_check(struct prov_issuer *is, const struct prov_request *rq, X509_REQ *req)
{
    note(mock_of(is), "check");
    return refuse(mock_of(is)->refuse_check, "record");
}

static int mi_issue(struct prov_issuer *is, X509_REQ *req, const struct prov_request *rq,
                    X509 **out)
{
    struct mock_issuer *m = mock_of(is);
    int r;

    *out = NULL;
    note(m, "issue");
    r = refuse(m->refuse_issue, "issue");
    if (r == 0) {
        r = m->signer->ops->issue(m->signer, req, rq, out);
    }
    m->n_issued += r == 0;
    return r;
}

static STACK_OF(X509) *mi_chain(struct prov_issuer *is)
{
    return mock_of(is)->signer->ops->chain(mock_of(is)->signer);
}

static int mi_delivered(struct prov_issuer *is, X509 *cert)
{
    note(mock_of(is), "delivered");
    mock_of(is)->n_delivered++;
    return 0;
}

static struct prov_ca_index *mi_record(struct prov_issuer *is)
{
    return NULL;
}

static void mi_close(struct prov_issuer *is)
{
}

static const struct prov_issuer_ops mock_issuer_ops = {
    .name = "mock",
    .check_device = mi_check_device,
    .check = mi_check,
    .issue = mi_issue,
    .chain = mi_chain,
    .delivered = mi_delivered,
    .record = mi_record,
    .close = mi_close,
};

/* ---- fixture ---------------------------------------------------------------------------- */

struct fixture {
    char dir[64];
    char cfg_text[1024];
    struct prov_config *cfg;
    struct prov_ca ca;
    struct mock_issuer is;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    char path[128];

    test_mock_device_reset();
    snprintf(f->dir, sizeof(f->dir), "/tmp/test_steps.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    test_pki_small_ca(&f->ca);
    snprintf(path, sizeof(path), "%s/server-ca.pem", f->dir);
    test_pki_write_pem(path, f->ca.root, NULL);
    snprintf(f->cfg_text, sizeof(f->cfg_text),
             "[provisioner]\noutput_dir = %s/devices\nserver_ca = %s\n", f->dir, path);
    assert_int_equal(prov_issue_parse_config(f->cfg_text, strlen(f->cfg_text), "test.cnf",
                                             f->dir, &f->cfg),
                     0);
    f->is.base.ops = &mock_issuer_ops;
    f->is.base.cfg = f->cfg;
    assert_int_equal(prov_issuer_local_over(f->cfg, &f->ca, &f->is.signer), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[160];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    prov_issuer_close(f->is.signer);
    test_mock_device_reset();
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

static bool exists(const struct fixture *f, const char *serial, const char *file)
{
    char path[256];
    struct stat st;

    snprintf(path, sizeof(path), "%s/devices/%s%s%s", f->dir, serial, file ? "/" : "",
             file ? file : "");
    return stat(path, &st) == 0;
}

/* ---- the steps in order ----------------------------------------------------------------- */

/* A caller that journals runs the steps one by one: each does its part, in this order. */
static void test_steps_in_order(void **state)
{
    struct fixture *f = *state;
    struct prov_enroll_params p;
    struct prov_enroll_plan plan;
    struct prov_device *dev = NULL;
    struct prov_key *key = NULL;
    const unsigned char id[] = {1, 2, 3, 4};
    X509_REQ *req = NULL;
    X509 *cert = NULL;

    params_for(f, &p, "SN-1");
    assert_int_equal(prov_step_plan(f->cfg, &f->is.base, &p, &plan), 0);
    /* the plan made the storage directory and probed it; nothing on the device yet */
    assert_true(plan.created_dir);
    assert_true(exists(f, "SN-1", NULL));
    assert_false(exists(f, "SN-1", "client.crt"));
    assert_int_equal(test_mock.n_opens, 0);
    assert_string_equal(f->is.log, "device-uri check");
    assert_int_equal(plan.type, PROV_KEY_EC_P256);
    assert_non_null(plan.subject);

    assert_int_equal(prov_step_open_device(f->cfg, &f->is.base, p.device_uri, NULL, false, &dev),
                     0);
    assert_string_equal(f->is.log, "device-uri check device");
    assert_string_equal(test_mock.log, "open login");

    assert_int_equal(prov_step_generate_key(dev, &plan, id, sizeof(id), &key), 0);
    assert_int_equal(key->id_len, sizeof(id));
    assert_memory_equal(key->id, id, sizeof(id));
    assert_string_equal(test_mock.log, "open login generate props");

    assert_int_equal(prov_step_make_csr(key, plan.subject, plan.type, &req), 0);
    assert_int_equal(EVP_PKEY_eq(X509_REQ_get0_pubkey(req), key->pub), 1);
    assert_string_equal(test_mock.log, "open login generate props sign");

    assert_int_equal(prov_step_issue(&f->is.base, req, &plan.rq, &cert), 0);
    assert_int_equal(f->is.n_issued, 1);
    assert_int_equal(EVP_PKEY_eq(X509_get0_pubkey(cert), key->pub), 1);
    assert_int_equal(X509_verify(cert, X509_get0_pubkey(f->ca.cert)), 1);

    {
        struct prov_identity ident = prov_identity_make(
            f->cfg, "SN-1", cert, f->is.base.ops->chain(&f->is.base), NULL, key->uri, plan.type,
            dev->ops->name, NULL, NULL);

        assert_int_equal(prov_step_install(dev, key, cert, plan.dir, &ident), 0);
    }
    /* the key proves it holds the certificate's key, then the certificate goes on the device */
    assert_string_equal(test_mock.log, "open login generate props sign sign store");
    assert_true(exists(f, "SN-1", "client.crt"));
    assert_true(exists(f, "SN-1", "key.uri"));
    assert_true(exists(f, "SN-1", "identity.json"));
    assert_int_equal(test_mock.n_deleted, 0);

    prov_enroll_plan_clear(&plan, false);
    assert_true(exists(f, "SN-1", NULL));
    X509_free(cert);
    X509_REQ_free(req);
    prov_key_free(key);
    prov_device_close(dev);
}

/* prov_enroll is the same steps: the issuer and the device see the same calls, in order. */
static void test_enroll_runs_the_steps(void **state)
{
    struct fixture *f = *state;
    struct prov_enroll_params p;
    struct prov_enroll_result res;

    params_for(f, &p, "SN-2");
    prov_error_clear();
    assert_int_equal(prov_enroll(f->cfg, &f->is.base, &p, &res), 0);
    assert_string_equal(f->is.log, "device-uri check device issue");
    assert_string_equal(test_mock.log, "open login generate props sign sign store");
    assert_non_null(res.cert);
    assert_int_equal(EVP_PKEY_eq(X509_get0_pubkey(res.cert), test_mock.last_key), 1);
    assert_true(exists(f, "SN-2", "client.crt"));
    prov_enroll_result_clear(&res);
}

/* ---- failure paths ---------------------------------------------------------------------- */

/* The issuer's record refuses the serial: refused in the plan, before a device is opened. */
static void test_record_refuses_before_device(void **state)
{
    struct fixture *f = *state;
    struct prov_enroll_params p;
    struct prov_enroll_result res;

    f->is.refuse_check = PROV_ERR_ALREADY_ISSUED;
    params_for(f, &p, "SN-3");
    prov_error_clear();
    assert_int_equal(prov_enroll(f->cfg, &f->is.base, &p, &res), PROV_ERR_ALREADY_ISSUED);
    assert_string_equal(f->is.log, "device-uri check");
    assert_int_equal(test_mock.n_opens, 0);
    assert_int_equal(test_mock.n_generated, 0);
    assert_false(exists(f, "SN-3", NULL));
}

/* The device URI names the issuer's own device: refused before anything is opened or made. */
static void test_issuer_device_refused_by_uri(void **state)
{
    struct fixture *f = *state;
    struct prov_enroll_params p;
    struct prov_enroll_plan plan;

    f->is.refuse_device_uri = PROV_ERR_USAGE;
    params_for(f, &p, "SN-4");
    prov_error_clear();
    assert_int_equal(prov_step_plan(f->cfg, &f->is.base, &p, &plan), PROV_ERR_USAGE);
    assert_string_equal(f->is.log, "device-uri");
    assert_int_equal(test_mock.n_opens, 0);
    assert_false(exists(f, "SN-4", NULL));
    assert_null(plan.dir);
}

/* ...and by identity once open: refused before the login, nothing generated, nothing left. */
static void test_issuer_device_refused_before_login(void **state)
{
    struct fixture *f = *state;
    struct prov_enroll_params p;
    struct prov_enroll_result res;

    f->is.refuse_device = PROV_ERR_POLICY;
    params_for(f, &p, "SN-5");
    prov_error_clear();
    assert_int_equal(prov_enroll(f->cfg, &f->is.base, &p, &res), PROV_ERR_POLICY);
    assert_string_equal(f->is.log, "device-uri check device");
    assert_int_equal(test_mock.n_opens, 1);
    assert_int_equal(test_mock.n_logins, 0);
    assert_int_equal(test_mock.n_generated, 0);
    assert_false(exists(f, "SN-5", NULL)); /* the directory the plan made is gone */
}

/* The issuer refuses the CSR: the key made for it leaves the device, no storage. */
static void test_issuer_refuses_key_discarded(void **state)
{
    struct fixture *f = *state;
    struct prov_enroll_params p;
    struct prov_enroll_result res;

    f->is.refuse_issue = PROV_ERR_POLICY;
    params_for(f, &p, "SN-6");
    prov_error_clear();
    assert_int_equal(prov_enroll(f->cfg, &f->is.base, &p, &res), PROV_ERR_POLICY);
    assert_non_null(strstr(prov_error_message(), "mock issuer"));
    assert_string_equal(test_mock.log, "open login generate props sign delete");
    assert_int_equal(test_mock.n_deleted, 1);
    assert_int_equal(test_mock.n_stored, 0);
    assert_false(res.has_orphan_key);
    assert_false(exists(f, "SN-6", NULL));
}

/* Installing on the device fails: the issued certificate is not stored, the key is discarded. */
static void test_install_fails_key_discarded(void **state)
{
    struct fixture *f = *state;
    struct prov_enroll_params p;
    struct prov_enroll_result res;

    test_mock.fail_store_cert = PROV_ERR_DEVICE_REMOVED;
    params_for(f, &p, "SN-7");
    prov_error_clear();
    assert_int_equal(prov_enroll(f->cfg, &f->is.base, &p, &res), PROV_ERR_DEVICE_REMOVED);
    assert_int_equal(f->is.n_issued, 1);
    assert_int_equal(f->is.n_delivered, 0);
    assert_string_equal(test_mock.log, "open login generate props sign sign store delete");
    assert_int_equal(test_mock.n_deleted, 1);
    assert_false(exists(f, "SN-7", NULL));
}

/* Install proves the key against the certificate first: a certificate for another key is
 * neither stored on the device nor written to storage. */
static void test_install_proves_before_storing(void **state)
{
    struct fixture *f = *state;
    struct prov_enroll_params p;
    struct prov_enroll_plan plan;
    struct prov_device *dev = NULL;
    struct prov_key *key = NULL;
    const unsigned char id[] = {9};
    EVP_PKEY *other = test_pki_ec_key("P-256");
    X509_REQ *req = test_pki_csr(other, "SN-8", NULL);
    X509 *cert = NULL;

    params_for(f, &p, "SN-8");
    assert_int_equal(prov_step_plan(f->cfg, &f->is.base, &p, &plan), 0);
    assert_int_equal(prov_step_open_device(f->cfg, &f->is.base, p.device_uri, NULL, false, &dev),
                     0);
    assert_int_equal(prov_step_generate_key(dev, &plan, id, sizeof(id), &key), 0);
    assert_int_equal(prov_step_issue(&f->is.base, req, &plan.rq, &cert), 0);
    {
        struct prov_identity ident = prov_identity_make(
            f->cfg, "SN-8", cert, f->is.base.ops->chain(&f->is.base), NULL, key->uri, plan.type,
            dev->ops->name, NULL, NULL);

        prov_error_clear();
        assert_int_equal(prov_step_install(dev, key, cert, plan.dir, &ident), PROV_ERR_VERIFY);
    }
    assert_int_equal(test_mock.n_stored, 0);
    assert_false(exists(f, "SN-8", "client.crt"));
    assert_true(prov_step_discard_key(dev, key, "SN-8"));
    assert_int_equal(test_mock.n_deleted, 1);
    prov_enroll_plan_clear(&plan, true);
    assert_false(exists(f, "SN-8", NULL));
    X509_free(cert);
    X509_REQ_free(req);
    EVP_PKEY_free(other);
    prov_key_free(key);
    prov_device_close(dev);
}

/* The proof's failure names the serial and says the identity is issued and stored. */
static void test_prove_failure_names_serial(void **state)
{
    struct fixture *f = *state;
    struct prov_enroll_params p;
    struct prov_enroll_result res;
    int r;

    params_for(f, &p, "SN-9");
    p.prove_url = "gopher://127.0.0.1:1/";
    prov_error_clear();
    r = prov_enroll(f->cfg, &f->is.base, &p, &res);
    assert_true(r < 0);
    assert_true(res.is_proof_run);
    assert_non_null(res.storage_dir);
    assert_non_null(strstr(prov_error_message(), "SN-9"));
    assert_non_null(strstr(prov_error_message(), "issued and stored"));
    /* the identity stays: the proof can be repeated without issuing again */
    assert_true(exists(f, "SN-9", "client.crt"));
    assert_int_equal(test_mock.n_deleted, 0);
    prov_enroll_result_clear(&res);
}

/* ---- the split flow --------------------------------------------------------------------- */

/* csr plans the request and the device only: the issuer's record is not asked, no storage. */
static void test_csr_plans_request_and_device(void **state)
{
    struct fixture *f = *state;
    struct prov_enroll_params p;
    X509_REQ *req = NULL;

    params_for(f, &p, "SN-10");
    prov_error_clear();
    assert_int_equal(prov_enroll_csr(f->cfg, &f->is.base, &p, &req), 0);
    assert_string_equal(f->is.log, "device-uri device");
    assert_string_equal(test_mock.log, "open login generate props sign");
    assert_int_equal(EVP_PKEY_eq(X509_REQ_get0_pubkey(req), test_mock.last_key), 1);
    assert_false(exists(f, "SN-10", NULL));
    X509_REQ_free(req);

    /* the issuer's own device: refused before the device is opened */
    f->is.refuse_device_uri = PROV_ERR_USAGE;
    prov_error_clear();
    assert_int_equal(prov_enroll_csr(f->cfg, &f->is.base, &p, &req), PROV_ERR_USAGE);
    assert_null(req);
    assert_int_equal(test_mock.n_opens, 1);
}

/* csr, then the issue step, then install: the key is found by the certificate, stored once. */
static void test_split_flow_install(void **state)
{
    struct fixture *f = *state;
    struct prov_enroll_params p;
    struct prov_enroll_result res;
    struct prov_install_params ip = {0};
    X509_REQ *req = NULL;
    X509 *cert = NULL;

    params_for(f, &p, "SN-11");
    assert_int_equal(prov_enroll_csr(f->cfg, &f->is.base, &p, &req), 0);
    assert_int_equal(prov_step_issue(&f->is.base, req, &p.req, &cert), 0);
    ip.device_uri = "mock:dev";
    ip.serial = "SN-11";
    ip.bundle = sk_X509_dup(f->is.base.ops->chain(&f->is.base));
    assert_non_null(ip.bundle);
    assert_true(sk_X509_unshift(ip.bundle, cert) > 0);
    f->is.log[0] = '\0';
    test_mock.log[0] = '\0';
    prov_error_clear();
    assert_int_equal(prov_install(f->cfg, &f->is.base, &ip, &res), 0);
    assert_string_equal(f->is.log, "device-uri device");
    assert_string_equal(test_mock.log, "open login find props sign store");
    assert_true(exists(f, "SN-11", "client.crt"));
    assert_int_equal(X509_cmp(res.cert, cert), 0);
    prov_enroll_result_clear(&res);

    /* again without --reissue: the storage holds an identity, nothing is opened */
    prov_error_clear();
    assert_int_equal(prov_install(f->cfg, &f->is.base, &ip, &res), PROV_ERR_ALREADY_ISSUED);
    assert_int_equal(test_mock.n_opens, 2);
    sk_X509_free(ip.bundle);
    X509_free(cert);
    X509_REQ_free(req);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_steps_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_enroll_runs_the_steps, setup, teardown),
        cmocka_unit_test_setup_teardown(test_record_refuses_before_device, setup, teardown),
        cmocka_unit_test_setup_teardown(test_issuer_device_refused_by_uri, setup, teardown),
        cmocka_unit_test_setup_teardown(test_issuer_device_refused_before_login, setup, teardown),
        cmocka_unit_test_setup_teardown(test_issuer_refuses_key_discarded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_install_fails_key_discarded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_install_proves_before_storing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prove_failure_names_serial, setup, teardown),
        cmocka_unit_test_setup_teardown(test_csr_plans_request_and_device, setup, teardown),
        cmocka_unit_test_setup_teardown(test_split_flow_install, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
