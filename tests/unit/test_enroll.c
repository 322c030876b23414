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
#include "test_pki.h"

/* What the mock does, and what it saw. */
static struct {
    bool is_extractable;     /* report the generated key as extractable */
    bool is_not_local;
    bool was_extractable;    /* not extractable now, but CKA_NEVER_EXTRACTABLE false */
    bool can_decrypt;        /* the backend reports decrypt, unwrap or derive allowed */
    int fail_store_cert;     /* error returned by store_certificate, 0 = ok */
    int fail_login;
    bool sign_with_other_key;/* the device signs with a different key than it reports */
    int n_generated;
    int n_deleted;
    int n_stored;
    int n_logins;
} mock;

struct mock_key {
    EVP_PKEY *priv;
    EVP_PKEY *other;
};

static bool mock_handles(const char *uri)
{
    return strncmp(uri, "mock:", 5) == 0;
}

static int mock_open(const char *uri, const struct prov_device_params *params,
                     struct prov_device **out)
{
    extern const struct prov_backend_ops mock_ops;
    struct prov_device *d = calloc(1, sizeof(*d));

    d->ops = &mock_ops;
    d->name = strdup(uri);
    *out = d;
    return 0;
}

static void mock_close(struct prov_device *d)
{
    free(d->name);
    free(d);
}

static int mock_login(struct prov_device *d, const struct prov_secret *pin)
{
    mock.n_logins++;
    return mock.fail_login ? prov_fail(mock.fail_login, "mock login") : 0;
}

static int mock_identity(struct prov_device *d, char *buf, size_t len)
{
    snprintf(buf, len, "mock");
    return 0;
}

static struct prov_key *wrap_key(struct prov_device *d, EVP_PKEY *priv, const unsigned char *id,
                                 size_t id_len)
{
    struct prov_key *k = calloc(1, sizeof(*k));
    struct mock_key *mk = calloc(1, sizeof(*mk));
    unsigned char *der = NULL;
    const unsigned char *p;
    int len;

    k->dev = d;
    k->type = prov_key_type_of(priv);
    memcpy(k->id, id, id_len);
    k->id_len = id_len;
    len = i2d_PUBKEY(priv, &der);
    p = der;
    k->pub = d2i_PUBKEY(NULL, &p, len);
    OPENSSL_free(der);
    k->uri = strdup("mock:key");
    mk->priv = priv;
    if (mock.sign_with_other_key) {
        mk->other = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    }
    k->priv = mk;
    return k;
}

static int mock_generate(struct prov_device *d, const struct prov_keygen_params *kp,
                         struct prov_key **out)
{
    EVP_PKEY *priv = EVP_PKEY_Q_keygen(NULL, NULL, "EC",
                                       kp->type == PROV_KEY_EC_P384 ? "P-384" : "P-256");

    assert_non_null(priv);
    assert_non_null(kp->id);
    assert_true(kp->id_len > 0);
    mock.n_generated++;
    *out = wrap_key(d, priv, kp->id, kp->id_len);
    return 0;
}

static int mock_find(struct prov_device *d, const char *uri, struct prov_key **out)
{
    return prov_fail(PROV_ERR_NOT_FOUND, "mock: no key %s", uri);
}

static int mock_find_id(struct prov_device *d, const unsigned char *id, size_t len,
                        struct prov_key **out)
{
    return prov_fail(PROV_ERR_NOT_FOUND, "mock: no key");
}

static int mock_find_pub(struct prov_device *d, EVP_PKEY *pub, struct prov_key **out)
{
    return prov_fail(PROV_ERR_NOT_FOUND, "mock: no key");
}

static int mock_props(struct prov_device *d, struct prov_key *k, struct prov_key_props *pr)
{
    *pr = (struct prov_key_props){
        .is_private_token_object = true,
        .is_sensitive = true,
        .is_extractable = mock.is_extractable,
        .is_never_extractable = !mock.is_extractable && !mock.was_extractable,
        .is_local = !mock.is_not_local,
        .can_sign = true,
        .can_decrypt = mock.can_decrypt,
    };
    return 0;
}

static int mock_sign(struct prov_device *d, struct prov_key *k, enum prov_sig_mech mech,
                     const unsigned char *in, size_t in_len, unsigned char *sig, size_t *sig_len)
{
    struct mock_key *mk = k->priv;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(mk->other ? mk->other : mk->priv, NULL);
    int ok;

    assert_int_equal(mech, PROV_SIG_ECDSA);
    ok = ctx && EVP_PKEY_sign_init(ctx) == 1 && EVP_PKEY_sign(ctx, sig, sig_len, in, in_len) == 1;
    EVP_PKEY_CTX_free(ctx);
    return ok ? 0 : PROV_ERR_DEVICE;
}

static int mock_store(struct prov_device *d, struct prov_key *k, X509 *cert)
{
    if (mock.fail_store_cert) {
        return prov_fail(mock.fail_store_cert, "mock: store_certificate failed");
    }
    mock.n_stored++;
    return 0;
}

static int mock_delete(struct prov_device *d, struct prov_key *k)
{
    mock.n_deleted++;
    return 0;
}

static void mock_free_key(struct prov_device *d, struct prov_key *k)
{
    struct mock_key *mk = k->priv;

    EVP_PKEY_free(mk->priv);
    EVP_PKEY_free(mk->other);
    free(mk);
    EVP_PKEY_free(k->pub);
    free(k->uri);
    free(k->label);
    free(k);
}

const struct prov_backend_ops mock_ops = {
    .name = "mock",
    .handles = mock_handles,
    .open = mock_open,
    .close = mock_close,
    .login = mock_login,
    .identity = mock_identity,
    .generate_key = mock_generate,
    .find_key = mock_find,
    .find_key_by_id = mock_find_id,
    .find_key_by_public = mock_find_pub,
    .key_props = mock_props,
    .sign = mock_sign,
    .store_certificate = mock_store,
    .delete_key = mock_delete,
    .free_key = mock_free_key,
};

/* A self-contained CA in memory: root and intermediate, software keys. */
struct fixture {
    char dir[64];
    char cfg_text[1024];
    struct prov_config *cfg;
    struct prov_ca ca;
    struct prov_issuer *is; /* the local issuer over ca */
    EVP_PKEY *root_key;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    char path[128];
    X509 *root;
    X509 *inter;
    EVP_PKEY *inter_key;

    memset(&mock, 0, sizeof(mock));
    prov_backend_register(&mock_ops);
    snprintf(f->dir, sizeof(f->dir), "/tmp/test_enroll.XXXXXX");
    assert_non_null(mkdtemp(f->dir));

    f->root_key = test_pki_ec_key("P-256");
    inter_key = test_pki_ec_key("P-256");
    root = test_pki_ca_cert("Test Root", f->root_key, NULL, f->root_key, -3600, 30 * TEST_PKI_DAY);
    inter = test_pki_ca_cert("Test Intermediate", inter_key, root, f->root_key, -3600,
                             30 * TEST_PKI_DAY);
    test_pki_prov_ca(&f->ca, inter, root, inter_key);

    snprintf(path, sizeof(path), "%s/server-ca.pem", f->dir);
    test_pki_write_pem(path, root, NULL);
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
    EVP_PKEY_free(f->ca.key);
    test_pki_prov_ca_clear(&f->ca);
    EVP_PKEY_free(f->root_key);
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
    assert_int_equal(mock.n_generated, 1);
    assert_int_equal(mock.n_stored, 1);
    assert_int_equal(mock.n_deleted, 0);
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
    assert_int_equal(mock.n_generated, 1);
    assert_non_null(strstr(prov_error_message(), "SN-1"));

    p.reissue = true;
    prov_error_clear();
    assert_int_equal(prov_enroll(f->cfg, f->is, &p, &res), 0);
    assert_int_equal(mock.n_generated, 2);
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
    assert_int_equal(mock.n_generated, 1);
    assert_int_equal(mock.n_deleted, 1);
    snprintf(dir, sizeof(dir), "%s/devices/%s", f->dir, serial);
    assert_true(stat(dir, &st) < 0); /* not even an empty directory is left */
}

static void test_extractable_key_refused(void **state)
{
    mock.is_extractable = true;
    expect_cleanup(*state, "SN-X", PROV_ERR_POLICY);
    assert_non_null(strstr(prov_error_message(), "extractable"));
}

static void test_not_local_key_refused(void **state)
{
    mock.is_not_local = true;
    expect_cleanup(*state, "SN-L", PROV_ERR_POLICY);
    assert_non_null(strstr(prov_error_message(), "CKA_LOCAL"));
}

/*
 * Generated on the device (local) and not extractable now, but extractable once: it may have
 * been copied out then. Only CKA_NEVER_EXTRACTABLE says so.
 */
static void test_once_extractable_key_refused(void **state)
{
    mock.was_extractable = true;
    expect_cleanup(*state, "SN-E", PROV_ERR_POLICY);
    assert_non_null(strstr(prov_error_message(), "CKA_NEVER_EXTRACTABLE"));
}

static void test_decrypting_key_refused(void **state)
{
    mock.can_decrypt = true;
    expect_cleanup(*state, "SN-D", PROV_ERR_POLICY);
    assert_non_null(strstr(prov_error_message(), "decrypt, unwrap or derive"));
}

static void test_wrong_key_signature_refused(void **state)
{
    /* The device reports one public key but signs with another (doc/platform.md). */
    mock.sign_with_other_key = true;
    expect_cleanup(*state, "SN-W", PROV_ERR_POLICY);
}

static void test_store_failure_cleans_up(void **state)
{
    mock.fail_store_cert = PROV_ERR_DEVICE_REMOVED;
    expect_cleanup(*state, "SN-R", PROV_ERR_DEVICE_REMOVED);
}

static void test_login_failure_generates_nothing(void **state)
{
    struct fixture *f = *state;
    struct prov_enroll_params p;
    struct prov_enroll_result res;

    mock.fail_login = PROV_ERR_PIN_INCORRECT;
    params_for(f, &p, "SN-P");
    prov_error_clear();
    assert_int_equal(prov_enroll(f->cfg, f->is, &p, &res), PROV_ERR_PIN_INCORRECT);
    assert_int_equal(mock.n_logins, 1);
    assert_int_equal(mock.n_generated, 0);
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
    assert_int_equal(mock.n_logins, 0);
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
