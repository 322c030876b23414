/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <dlfcn.h>

#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "backend.h"
#include "csr.h"
#include "device.h"
#include "error.h"
#include "pkcs11.h"
#include "signer.h"
#include "test_pki.h"
#include "tpm.h"

/*
 * One test list for every backend behind provisioner/device/backend.h, driven the way the
 * core drives a device: through the registry (prov_device_open), with the key template the
 * pipeline uses, and checked from outside where the backend's word is not enough (OpenSSL
 * verifies signatures; pkcs11-tool or tpm2_nvread reads back the stored certificate).
 *
 *   conformance pkcs11   under softhsm-env.sh, PROV_TEST_SHIM set (meson test conformance-pkcs11)
 *   conformance tpm2     under swtpm-env.sh                       (meson test conformance-tpm2)
 *
 * A backend that legitimately behaves otherwise says so in its struct backend_profile
 * capabilities below, and the test asserts that other behaviour: no test is skipped. The tests
 * run in order and share one key (made by test_generate_with_template, deleted by
 * test_delete); each closes its device before the next one opens it (swtpm serves one
 * connection at a time).
 */

struct backend_profile {
    const char *name;        /* the ops->name the registry must pick for device */
    char device[512];        /* where the keys are made */
    char pin_device[512];    /* a device the wrong-PIN test may spend for this process */
    char absent[512];        /* a well-formed string that names no device: PROV_ERR_NOT_FOUND */
    const char *bad[4];      /* strings validate and open refuse (PROV_ERR_USAGE); NULL ends */
    struct prov_device_params params;

    /* Capabilities: where the backends differ by design. */
    bool checks_pin;         /* false: keys have no PIN, login takes any PIN and sends none */
    bool lists_objects;      /* list_objects is there (a TPM cannot list its objects) */
    bool one_key_per_place;  /* a second key where one is refused until it is deleted or
                                replaced (a TPM's key handle); false: a token keeps any
                                number of keys, each under its own CKA_ID */

    /* How many PINs reached the device so far (NULL when none ever can). */
    unsigned long (*login_calls)(void);
    /*
     * The shell command with which the platform's own tool, the device closed, writes the
     * DER certificate stored for key id to path, failing when none is stored.
     */
    void (*read_certificate_cmd)(const unsigned char *id, size_t id_len, const char *path,
                                 char *cmd, size_t cmd_len);
};

static struct backend_profile prof;
static struct prov_secret *good_pin;
static struct prov_secret *bad_pin;
static const char *workdir;

/* The key the tests share, as generate_key returned it. */
static unsigned char key_id[16];
static EVP_PKEY *key_pub;
static char *key_uri;
static EVP_PKEY *ca_key;
static X509 *ca_cert;

/* ---- helpers ----------------------------------------------------------------------------- */

static void assert_message_has(const char *needle)
{
    const char *msg = prov_error_message();

    if (msg == NULL || strstr(msg, needle) == NULL) {
        fail_msg("error message \"%s\" lacks \"%s\"", msg ? msg : "(none)", needle);
    }
}

static struct prov_device *open_device(const char *uri)
{
    struct prov_device *dev = NULL;
    int r;

    prov_error_clear();
    r = prov_device_open(uri, &prof.params, &dev);
    if (r != 0) {
        fail_msg("open %s: %d %s", uri, r, prov_error_message());
    }
    assert_non_null(dev);
    assert_string_equal(dev->ops->name, prof.name);
    return dev;
}

static struct prov_device *open_login(void)
{
    struct prov_device *dev = open_device(prof.device);
    int r = dev->ops->login(dev, good_pin);

    if (r != 0) {
        fail_msg("login %s: %d %s", prof.device, r, prov_error_message());
    }
    return dev;
}

static struct prov_key *find_by_id(struct prov_device *dev)
{
    struct prov_key *key = NULL;
    int r;

    prov_error_clear();
    r = dev->ops->find_key_by_id(dev, key_id, sizeof(key_id), &key);
    if (r != 0) {
        fail_msg("find_key_by_id: %d %s", r, prov_error_message());
    }
    assert_non_null(key);
    return key;
}

/* The parameters the pipeline gives generate_key for a fresh device: EC P-256, the serial as
 * label, a random id recorded beforehand, the backend's default place. */
static int generate(struct prov_device *dev, const unsigned char *id, struct prov_key **out)
{
    struct prov_keygen_params kp = {
        .type = PROV_KEY_EC_P256,
        .label = "CONF-0001",
        .id = id,
        .id_len = sizeof(key_id),
    };

    prov_error_clear();
    *out = NULL;
    return dev->ops->generate_key(dev, &kp, out);
}

/* generate() that must succeed, with a fresh random id in id. */
static struct prov_key *generate_ok(struct prov_device *dev, unsigned char *id)
{
    struct prov_key *key = NULL;
    int r;

    assert_int_equal(RAND_bytes(id, sizeof(key_id)), 1);
    r = generate(dev, id, &key);
    if (r != 0) {
        fail_msg("generate_key on %s: %d %s", dev->name, r, prov_error_message());
    }
    assert_non_null(key);
    return key;
}

static X509 *certificate_for(EVP_PKEY *pub, long serial)
{
    return test_pki_cert(&(struct test_cert_spec){
        .cn = "CONF-0001",
        .serial = serial,
        .key = pub,
        .issuer = ca_cert,
        .issuer_key = ca_key,
        .not_before = -3600,
        .not_after = 30 * TEST_PKI_DAY,
        .exts = test_pki_leaf_exts,
    });
}

/* Runs cmd with sh; its exit code (-1 when it did not exit). */
static int run(const char *cmd)
{
    int status = system(cmd);

    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    unsigned char *data;
    long n;

    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    n = ftell(f);
    assert_true(n > 0);
    assert_int_equal(fseek(f, 0, SEEK_SET), 0);
    data = malloc((size_t)n);
    assert_non_null(data);
    assert_int_equal(fread(data, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return data;
}

/* The certificate stored for key id, read back from outside: 0 and the DER in *der (freed by
 * the caller), or 1 when none is stored. */
static int read_certificate(const unsigned char *id, size_t id_len, unsigned char **der,
                            size_t *len)
{
    char cmd[1024], path[600];

    snprintf(path, sizeof(path), "%s/read-back.der", workdir);
    remove(path);
    prof.read_certificate_cmd(id, id_len, path, cmd, sizeof(cmd));
    if (run(cmd) != 0) {
        return 1;
    }
    *der = slurp(path, len);
    return 0;
}

static void assert_certificate_stored(X509 *want)
{
    unsigned char *der = NULL, *want_der = NULL;
    size_t len = 0;
    int want_len = i2d_X509(want, &want_der);

    assert_true(want_len > 0);
    assert_int_equal(read_certificate(key_id, sizeof(key_id), &der, &len), 0);
    assert_int_equal(len, (size_t)want_len);
    assert_memory_equal(der, want_der, len);
    free(der);
    OPENSSL_free(want_der);
}

struct object_count {
    const char *kind;
    int n;
};

static int count_with_key_id(void *ctx, const struct prov_device_object *obj)
{
    struct object_count *c = ctx;

    if (strcmp(obj->kind, c->kind) == 0 && obj->id != NULL && obj->id_len == sizeof(key_id) &&
        memcmp(obj->id, key_id, sizeof(key_id)) == 0) {
        c->n++;
    }
    return 0;
}

/* How many objects of kind carry the shared key's id (lists_objects only). */
static int objects_with_key_id(struct prov_device *dev, const char *kind)
{
    struct object_count c = {.kind = kind};

    assert_int_equal(dev->ops->list_objects(dev, count_with_key_id, &c), 0);
    return c.n;
}

/* ---- PKCS#11: SoftHSM2 through the counting shim (pkcs11/shim_module.c) ------------------- */

static unsigned long *shim_login_calls;

static unsigned long pkcs11_login_calls(void)
{
    return *shim_login_calls;
}

static void hex(const unsigned char *b, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        sprintf(out + 2 * i, "%02x", b[i]);
    }
    out[2 * n] = '\0';
}

/* pkcs11-tool, in its own process on SoftHSM2 itself: the certificate object with that id. */
static void pkcs11_read_certificate_cmd(const unsigned char *id, size_t id_len, const char *path,
                                        char *cmd, size_t cmd_len)
{
    char idhex[2 * 64 + 1];

    hex(id, id_len, idhex);
    snprintf(cmd, cmd_len,
             "pkcs11-tool --module '%s' --token-label keys-0001 --read-object --type cert "
             "--id %s --output-file '%s' >/dev/null 2>&1",
             getenv("PROV_TEST_MODULE"), idhex, path);
}

static int pkcs11_profile(void)
{
    const char *module = getenv("PROV_TEST_MODULE");
    const char *shim = getenv("PROV_TEST_SHIM");
    void *dl;

    if (module == NULL || shim == NULL || getenv("SOFTHSM2_CONF") == NULL) {
        fprintf(stderr, "conformance pkcs11: run through softhsm-env.sh with PROV_TEST_SHIM\n");
        return -1;
    }
    /* The shim forwards every call to SoftHSM2 and counts C_Login. The backend loads it by
     * the same path, so this is the same copy and the same counter. */
    setenv("SHIM_TARGET", module, 1);
    dl = dlopen(shim, RTLD_NOW | RTLD_LOCAL);
    if (dl == NULL || (shim_login_calls = dlsym(dl, "shim_login_calls")) == NULL) {
        fprintf(stderr, "conformance pkcs11: %s\n", dlerror());
        return -1;
    }
    prov_backend_register(&prov_pkcs11_ops);
    prof = (struct backend_profile){
        .name = "pkcs11",
        .bad = {"pkcs11:token=keys-0001;bogus=1", "pkcs11:token=%zz",
                "pkcs11:token=keys-0001?pin-value=1234", NULL},
        .params = {.module_path = shim},
        .checks_pin = true,
        .lists_objects = true,
        .one_key_per_place = false,
        .login_calls = pkcs11_login_calls,
        .read_certificate_cmd = pkcs11_read_certificate_cmd,
    };
    snprintf(prof.device, sizeof(prof.device), "pkcs11:token=keys-0001");
    snprintf(prof.pin_device, sizeof(prof.pin_device), "pkcs11:token=pin-1");
    snprintf(prof.absent, sizeof(prof.absent), "pkcs11:token=no-such-token");
    return 0;
}

/* ---- TPM 2.0: swtpm ---------------------------------------------------------------------- */

/* tpm2_nvread, in its own process: the NV index the backend keeps the certificate in. */
static void tpm_read_certificate_cmd(const unsigned char *id, size_t id_len, const char *path,
                                     char *cmd, size_t cmd_len)
{
    const unsigned index = PROV_TPM_DEFAULT_NV_INDEX;

    (void)id;
    (void)id_len;
    snprintf(cmd, cmd_len, "tpm2_nvread 0x%08x -C 0x%08x -o '%s' >/dev/null 2>&1", index, index,
             path);
}

static int tpm_profile(void)
{
    const char *tcti = getenv("PROV_TEST_TCTI");
    const char *dead = getenv("PROV_TEST_DEAD_TCTI");

    if (tcti == NULL || dead == NULL || getenv("TPM2TOOLS_TCTI") == NULL) {
        fprintf(stderr, "conformance tpm2: run through swtpm-env.sh\n");
        return -1;
    }
    prov_backend_register(&prov_tpm_ops);
    prof = (struct backend_profile){
        .name = "tpm2",
        /* "tpm2:" names no particular TPM; a TCTI this system has no library for. */
        .bad = {"tpm2:", "tpm2:no-such-tcti-xyz:x", NULL},
        .checks_pin = false,
        .lists_objects = false,
        .one_key_per_place = true,
        .login_calls = NULL,
        .read_certificate_cmd = tpm_read_certificate_cmd,
    };
    snprintf(prof.device, sizeof(prof.device), "tpm2:%s", tcti);
    snprintf(prof.pin_device, sizeof(prof.pin_device), "tpm2:%s", tcti);
    snprintf(prof.absent, sizeof(prof.absent), "tpm2:%s", dead);
    return 0;
}

/* ---- the test list ----------------------------------------------------------------------- */

static void test_registry_picks_backend(void **state)
{
    const struct prov_backend_ops *ops = prov_backend_for(prof.device);

    (void)state;
    assert_non_null(ops);
    assert_string_equal(ops->name, prof.name);
    assert_true(ops->handles(prof.device));
    assert_false(ops->handles("nosuch:thing"));
    assert_false(ops->handles(NULL));
    prov_error_clear();
    assert_int_equal(prov_device_validate(prof.device), 0);
}

/* What an operator may mistype: refused by validate and by open, naming the string. */
static void test_bad_uri_refused(void **state)
{
    struct prov_device *dev = NULL;

    (void)state;
    prov_error_clear();
    assert_int_equal(prov_device_validate("nosuch:thing"), PROV_ERR_USAGE);
    assert_message_has("nosuch:thing");
    prov_error_clear();
    assert_int_equal(prov_device_open("nosuch:thing", &prof.params, &dev), PROV_ERR_USAGE);
    assert_null(dev);
    for (size_t i = 0; prof.bad[i] != NULL; i++) {
        prov_error_clear();
        if (prov_device_validate(prof.bad[i]) != PROV_ERR_USAGE) {
            fail_msg("validate accepted \"%s\": %s", prof.bad[i], prov_error_message());
        }
        assert_non_null(prov_error_message());
        assert_null(strstr(prov_error_message(), "1234"));
    }
    prov_error_clear();
}

static void test_absent_device_not_found(void **state)
{
    struct prov_device *dev = NULL;

    (void)state;
    prov_error_clear();
    assert_int_equal(prov_device_validate(prof.absent), 0);
    assert_int_equal(prov_device_open(prof.absent, &prof.params, &dev), PROV_ERR_NOT_FOUND);
    assert_null(dev);
    assert_non_null(prov_error_message());
    prov_error_clear();
}

/* Open by URI, a stable identity, login (twice is fine), and what login does without a PIN. */
static void test_open_login_identity(void **state)
{
    struct prov_device *dev = open_device(prof.device);
    char a[256], b[256];

    (void)state;
    assert_non_null(dev->name);
    assert_true(dev->name[0] != '\0');
    assert_int_equal(dev->ops->identity(dev, a, sizeof(a)), 0);
    assert_true(a[0] != '\0');
    prov_error_clear();
    assert_int_equal(dev->ops->login(dev, NULL), prof.checks_pin ? PROV_ERR_PIN_SOURCE : 0);
    prov_error_clear();
    assert_int_equal(dev->ops->login(dev, good_pin), 0);
    assert_int_equal(dev->ops->login(dev, good_pin), 0);
    prov_device_close(dev);

    dev = open_device(prof.device);
    assert_int_equal(dev->ops->identity(dev, b, sizeof(b)), 0);
    assert_string_equal(a, b);
    prov_device_close(dev);
}

/*
 * A wrong PIN is tried once: the device refuses it, and neither it nor the right one is sent
 * again in this process, through this object or a new one. Without PINs (checks_pin false)
 * login takes the wrong one and sends nothing, and the device works as before.
 */
static void test_wrong_pin_not_retried(void **state)
{
    struct prov_device *dev = open_device(prof.pin_device);
    unsigned long before = prof.login_calls ? prof.login_calls() : 0;
    char id[256];

    (void)state;
    prov_error_clear();
    if (!prof.checks_pin) {
        assert_int_equal(dev->ops->login(dev, bad_pin), 0);
        assert_int_equal(dev->ops->identity(dev, id, sizeof(id)), 0);
        prov_device_close(dev);
        return;
    }
    assert_int_equal(dev->ops->login(dev, bad_pin), PROV_ERR_PIN_INCORRECT);
    assert_message_has(dev->name);
    assert_null(strstr(prov_error_message(), "wrong-pin-777"));
    prov_error_clear();
    assert_int_equal(dev->ops->login(dev, bad_pin), PROV_ERR_PIN_INCORRECT);
    prov_error_clear();
    assert_int_equal(dev->ops->login(dev, good_pin), PROV_ERR_PIN_INCORRECT);
    prov_device_close(dev);
    dev = open_device(prof.pin_device);
    prov_error_clear();
    assert_int_equal(dev->ops->login(dev, good_pin), PROV_ERR_PIN_INCORRECT);
    prov_device_close(dev);
    assert_non_null(prof.login_calls);
    assert_int_equal(prof.login_calls(), before + 1);
    prov_error_clear();
}

static void test_generate_with_template(void **state)
{
    struct prov_device *dev = open_login();
    struct prov_key *key = generate_ok(dev, key_id);

    (void)state;
    assert_ptr_equal(key->dev, dev);
    assert_int_equal(key->type, PROV_KEY_EC_P256);
    assert_int_equal(key->id_len, sizeof(key_id));
    assert_memory_equal(key->id, key_id, sizeof(key_id));
    assert_non_null(key->pub);
    assert_int_equal(prov_key_type_of(key->pub), PROV_KEY_EC_P256);
    assert_non_null(key->uri);
    assert_ptr_equal(prov_backend_for(key->uri), dev->ops);
    assert_null(strstr(key->uri, "1234"));
    assert_true(EVP_PKEY_up_ref(key->pub) == 1);
    key_pub = key->pub;
    key_uri = strdup(key->uri);
    assert_non_null(key_uri);
    prov_key_free(key);
    prov_device_close(dev);
}

/* Private, sensitive, never extractable, made on the device, signing only: what the core
 * insists on (prov_check_key_protection) holds for the key as the device reports it. */
static void test_key_properties(void **state)
{
    struct prov_device *dev = open_login();
    struct prov_key *key = find_by_id(dev);
    struct prov_key_props pr;

    (void)state;
    memset(&pr, 0xff, sizeof(pr));
    assert_int_equal(dev->ops->key_props(dev, key, &pr), 0);
    assert_true(pr.is_private_token_object);
    assert_true(pr.is_sensitive);
    assert_false(pr.is_extractable);
    assert_true(pr.is_never_extractable);
    assert_true(pr.is_local);
    assert_true(pr.can_sign);
    assert_false(pr.can_decrypt);
    prov_error_clear();
    assert_int_equal(prov_check_key_protection(key, "conformance key"), 0);
    prov_key_free(key);
    prov_device_close(dev);
}

/* A SHA-256 digest signed on the device verifies with OpenSSL against the public key. */
static void test_sign_digest_verifies(void **state)
{
    struct prov_device *dev = open_login();
    struct prov_key *key = find_by_id(dev);
    unsigned char digest[32], sig[256];
    unsigned int dlen = 0;
    size_t sig_len = sizeof(sig);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(key_pub, NULL);

    (void)state;
    assert_int_equal(EVP_Digest("challenge", 9, digest, &dlen, EVP_sha256(), NULL), 1);
    prov_error_clear();
    assert_int_equal(dev->ops->sign(dev, key, PROV_SIG_ECDSA, digest, dlen, sig, &sig_len), 0);
    assert_true(sig_len > 0 && sig_len <= sizeof(sig));
    assert_non_null(ctx);
    assert_int_equal(EVP_PKEY_verify_init(ctx), 1);
    assert_int_equal(EVP_PKEY_verify(ctx, sig, sig_len, digest, dlen), 1);
    digest[0] ^= 1;
    assert_int_not_equal(EVP_PKEY_verify(ctx, sig, sig_len, digest, dlen), 1);
    EVP_PKEY_CTX_free(ctx);

    /* A buffer too small for the signature: refused, nothing written past it. */
    memset(sig, 0xa5, sizeof(sig));
    sig_len = 8;
    prov_error_clear();
    assert_true(dev->ops->sign(dev, key, PROV_SIG_ECDSA, digest, dlen, sig, &sig_len) < 0);
    for (size_t i = 8; i < sizeof(sig); i++) {
        assert_int_equal(sig[i], 0xa5);
    }
    prov_error_clear();
    prov_key_free(key);
    prov_device_close(dev);
}

/* The pipeline's next step on the device key: a CSR signed through the core's signer
 * (prov_signer_pkey) verifies and carries exactly this key. */
static void test_csr_signed_on_device(void **state)
{
    struct prov_device *dev = open_login();
    struct prov_key *key = find_by_id(dev);
    X509_NAME *subject = X509_NAME_new();
    EVP_PKEY *signer = NULL;
    EVP_PKEY *stranger = test_pki_ec_key("P-256");
    X509_REQ *req = NULL;

    (void)state;
    assert_non_null(subject);
    assert_int_equal(X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_UTF8,
                                                (const unsigned char *)"CONF-0001", -1, -1, 0),
                     1);
    prov_error_clear();
    assert_int_equal(prov_signer_pkey(key, &signer), 0);
    assert_int_equal(prov_csr_create(signer, subject, prov_key_type_digest(key->type), &req), 0);
    assert_int_equal(prov_csr_verify(req, key_pub), 0);
    assert_int_equal(prov_csr_verify(req, stranger), PROV_ERR_POLICY);
    prov_error_clear();
    X509_REQ_free(req);
    EVP_PKEY_free(signer);
    EVP_PKEY_free(stranger);
    X509_NAME_free(subject);
    prov_key_free(key);
    prov_device_close(dev);
}

/* The key comes back by id, by its key.uri and by its public key; strangers are not found. */
static void test_find(void **state)
{
    struct prov_device *dev = open_login();
    struct prov_key *key = find_by_id(dev);
    struct prov_key *other = NULL;
    EVP_PKEY *stranger = test_pki_ec_key("P-256");
    unsigned char no_id[sizeof(key_id)];

    (void)state;
    assert_int_equal(EVP_PKEY_eq(key->pub, key_pub), 1);
    assert_string_equal(key->uri, key_uri);
    prov_key_free(key);

    prov_error_clear();
    assert_int_equal(dev->ops->find_key(dev, key_uri, &other), 0);
    assert_int_equal(EVP_PKEY_eq(other->pub, key_pub), 1);
    assert_memory_equal(other->id, key_id, sizeof(key_id));
    prov_key_free(other);
    other = NULL;
    assert_int_equal(dev->ops->find_key_by_public(dev, key_pub, &other), 0);
    assert_memory_equal(other->id, key_id, sizeof(key_id));
    assert_string_equal(other->uri, key_uri);
    prov_key_free(other);
    other = NULL;

    prov_error_clear();
    assert_int_equal(dev->ops->find_key_by_public(dev, stranger, &other), PROV_ERR_NOT_FOUND);
    assert_null(other);
    memcpy(no_id, key_id, sizeof(no_id));
    no_id[0] ^= 0xff;
    prov_error_clear();
    assert_int_equal(dev->ops->find_key_by_id(dev, no_id, sizeof(no_id), &other),
                     PROV_ERR_NOT_FOUND);
    assert_null(other);
    prov_error_clear();
    EVP_PKEY_free(stranger);
    prov_device_close(dev);
}

/* A second key for another identity: beside the first on a token, refused at a TPM's one
 * key handle (one_key_per_place). Either way the first key stays as it was. */
static void test_second_key(void **state)
{
    struct prov_device *dev = open_login();
    struct prov_key *second = NULL;
    struct prov_key *first;
    unsigned char other_id[sizeof(key_id)];
    int r;

    (void)state;
    assert_int_equal(RAND_bytes(other_id, sizeof(other_id)), 1);
    r = generate(dev, other_id, &second);
    if (prof.one_key_per_place) {
        assert_int_equal(r, PROV_ERR_ALREADY_ISSUED);
        assert_null(second);
    } else {
        if (r != 0) {
            fail_msg("a second generate_key: %d %s", r, prov_error_message());
        }
        assert_memory_equal(second->id, other_id, sizeof(other_id));
        assert_int_not_equal(EVP_PKEY_eq(second->pub, key_pub), 1);
        assert_int_equal(dev->ops->delete_key(dev, second), 0);
        prov_key_free(second);
    }
    prov_error_clear();
    first = find_by_id(dev);
    assert_int_equal(EVP_PKEY_eq(first->pub, key_pub), 1);
    prov_key_free(first);
    prov_device_close(dev);
}

/*
 * The certificate stored next to the key reads back byte for byte with the platform's tool,
 * a renewal replaces it, and the key proves possession against it. A certificate of another
 * key is refused (PROV_ERR_INPUT) and the one stored stays.
 */
static void test_store_certificate(void **state)
{
    struct prov_device *dev = open_login();
    struct prov_key *key = find_by_id(dev);
    X509 *first = certificate_for(key_pub, 1);
    X509 *renewed = certificate_for(key_pub, 2);
    EVP_PKEY *stranger = test_pki_ec_key("P-256");
    X509 *wrong = certificate_for(stranger, 3);

    (void)state;
    prov_error_clear();
    assert_int_equal(dev->ops->store_certificate(dev, key, first), 0);
    prov_key_free(key);
    prov_device_close(dev);
    assert_certificate_stored(first);

    dev = open_login();
    key = find_by_id(dev);
    assert_int_equal(dev->ops->store_certificate(dev, key, renewed), 0);
    prov_error_clear();
    assert_int_equal(dev->ops->store_certificate(dev, key, wrong), PROV_ERR_INPUT);
    assert_message_has(dev->name);
    prov_error_clear();
    assert_int_equal(prov_prove_key(key, renewed), 0);
    assert_int_equal(prov_prove_key(key, wrong), PROV_ERR_VERIFY);
    prov_error_clear();
    if (prof.lists_objects) {
        assert_int_equal(objects_with_key_id(dev, "certificate"), 1);
        assert_int_equal(objects_with_key_id(dev, "private-key"), 1);
    } else {
        assert_null(dev->ops->list_objects);
    }
    prov_key_free(key);
    prov_device_close(dev);
    assert_certificate_stored(renewed);
    X509_free(first);
    X509_free(renewed);
    X509_free(wrong);
    EVP_PKEY_free(stranger);
}

/* delete_key (retiring a key) takes the key and its certificate; nothing finds them after. */
static void test_delete(void **state)
{
    struct prov_device *dev = open_login();
    struct prov_key *key = find_by_id(dev);
    struct prov_key *gone = NULL;
    unsigned char *der = NULL;
    size_t len = 0;

    (void)state;
    prov_error_clear();
    assert_int_equal(dev->ops->delete_key(dev, key), 0);
    prov_key_free(key);
    assert_int_equal(dev->ops->find_key_by_id(dev, key_id, sizeof(key_id), &gone),
                     PROV_ERR_NOT_FOUND);
    prov_error_clear();
    assert_int_equal(dev->ops->find_key(dev, key_uri, &gone), PROV_ERR_NOT_FOUND);
    prov_error_clear();
    assert_int_equal(dev->ops->find_key_by_public(dev, key_pub, &gone), PROV_ERR_NOT_FOUND);
    assert_null(gone);
    prov_error_clear();
    if (prof.lists_objects) {
        assert_int_equal(objects_with_key_id(dev, "private-key"), 0);
        assert_int_equal(objects_with_key_id(dev, "public-key"), 0);
        assert_int_equal(objects_with_key_id(dev, "certificate"), 0);
    }
    prov_device_close(dev);
    assert_int_equal(read_certificate(key_id, sizeof(key_id), &der, &len), 1);
    assert_null(der);
}

/*
 * A reissue (generate_key with replace) names the identity whose key it renews: the public
 * key and subject of its certificate. Where a device keeps one key per place
 * (one_key_per_place) the renewed identity's key and certificate go, and the key of another
 * identity is refused (PROV_ERR_POLICY) and stays. A token keeps every key under its own id:
 * the new key is made beside the old one, which the caller retires with delete_key. Runs after
 * test_delete, so it also shows the place free again.
 */
static void test_reissue(void **state)
{
    struct prov_device *dev = open_login();
    unsigned char old_id[sizeof(key_id)], new_id[sizeof(key_id)];
    struct prov_key *old = generate_ok(dev, old_id);
    struct prov_key *fresh = NULL, *found = NULL;
    X509 *cert = certificate_for(old->pub, 4);
    EVP_PKEY *stranger = test_pki_ec_key("P-256");
    X509_NAME *other = X509_NAME_new();
    struct prov_keygen_params kp = {
        .type = PROV_KEY_EC_P256,
        .label = "CONF-0001",
        .id = new_id,
        .id_len = sizeof(new_id),
        .replace = true,
        .replaceable_pub = stranger,
    };
    unsigned char *der = NULL;
    size_t len = 0;
    int r;

    (void)state;
    assert_non_null(other);
    assert_int_equal(X509_NAME_add_entry_by_txt(other, "CN", MBSTRING_UTF8,
                                                (const unsigned char *)"CONF-0002", -1, -1, 0),
                     1);
    kp.replaceable_subject = other;
    assert_int_equal(dev->ops->store_certificate(dev, old, cert), 0);

    /* Another identity's reissue. */
    assert_int_equal(RAND_bytes(new_id, sizeof(new_id)), 1);
    prov_error_clear();
    r = dev->ops->generate_key(dev, &kp, &fresh);
    if (prof.one_key_per_place) {
        assert_int_equal(r, PROV_ERR_POLICY);
        assert_null(fresh);
    } else {
        assert_int_equal(r, 0);
        assert_int_equal(dev->ops->delete_key(dev, fresh), 0);
        prov_key_free(fresh);
        fresh = NULL;
    }
    prov_error_clear();
    assert_int_equal(dev->ops->find_key_by_id(dev, old_id, sizeof(old_id), &found), 0);
    assert_int_equal(EVP_PKEY_eq(found->pub, old->pub), 1);
    prov_key_free(found);
    found = NULL;

    /* This identity's reissue. */
    kp.replaceable_pub = old->pub;
    kp.replaceable_subject = X509_get_subject_name(cert);
    assert_int_equal(RAND_bytes(new_id, sizeof(new_id)), 1);
    r = dev->ops->generate_key(dev, &kp, &fresh);
    if (r != 0) {
        fail_msg("generate_key with replace: %d %s", r, prov_error_message());
    }
    assert_int_not_equal(EVP_PKEY_eq(fresh->pub, old->pub), 1);
    r = dev->ops->find_key_by_id(dev, old_id, sizeof(old_id), &found);
    if (prof.one_key_per_place) {
        assert_int_equal(r, PROV_ERR_NOT_FOUND);
    } else {
        assert_int_equal(r, 0);
        assert_int_equal(dev->ops->delete_key(dev, found), 0);
        prov_key_free(found);
    }
    found = NULL;
    prov_error_clear();
    assert_int_equal(dev->ops->find_key_by_id(dev, new_id, sizeof(new_id), &found), 0);
    assert_int_equal(EVP_PKEY_eq(found->pub, fresh->pub), 1);
    prov_key_free(found);
    prov_key_free(old);
    prov_key_free(fresh);
    prov_device_close(dev);
    /* The renewed identity's certificate went with its key. */
    assert_int_equal(read_certificate(old_id, sizeof(old_id), &der, &len), 1);

    dev = open_login();
    assert_int_equal(dev->ops->find_key_by_id(dev, new_id, sizeof(new_id), &fresh), 0);
    assert_int_equal(dev->ops->delete_key(dev, fresh), 0);
    prov_key_free(fresh);
    prov_device_close(dev);
    X509_NAME_free(other);
    X509_free(cert);
    EVP_PKEY_free(stranger);
}

static int group_setup(void **state)
{
    (void)state;
    workdir = getenv("PROV_TEST_WORKDIR");
    if (workdir == NULL || getenv("PROV_TEST_PIN") == NULL) {
        fprintf(stderr, "conformance: PROV_TEST_WORKDIR and PROV_TEST_PIN are not set\n");
        return -1;
    }
    if (prov_secret_from_buf(getenv("PROV_TEST_PIN"), strlen(getenv("PROV_TEST_PIN")),
                             &good_pin) < 0 ||
        prov_secret_from_buf("wrong-pin-777", 13, &bad_pin) < 0) {
        return -1;
    }
    ca_key = test_pki_ec_key("P-256");
    ca_cert = test_pki_ca_cert("Conformance CA", ca_key, NULL, NULL, -TEST_PKI_DAY,
                               365 * TEST_PKI_DAY);
    printf("# %s: checks_pin=%d lists_objects=%d one_key_per_place=%d\n", prof.name,
           prof.checks_pin, prof.lists_objects, prof.one_key_per_place);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    prov_secret_free(good_pin);
    prov_secret_free(bad_pin);
    EVP_PKEY_free(key_pub);
    free(key_uri);
    X509_free(ca_cert);
    EVP_PKEY_free(ca_key);
    prov_pkcs11_unload_all();
    return 0;
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_registry_picks_backend),
        cmocka_unit_test(test_bad_uri_refused),
        cmocka_unit_test(test_absent_device_not_found),
        cmocka_unit_test(test_open_login_identity),
        cmocka_unit_test(test_wrong_pin_not_retried),
        cmocka_unit_test(test_generate_with_template),
        cmocka_unit_test(test_key_properties),
        cmocka_unit_test(test_sign_digest_verifies),
        cmocka_unit_test(test_csr_signed_on_device),
        cmocka_unit_test(test_find),
        cmocka_unit_test(test_second_key),
        cmocka_unit_test(test_store_certificate),
        cmocka_unit_test(test_delete),
        cmocka_unit_test(test_reissue),
    };
    int r;

    if (argc != 2) {
        fprintf(stderr, "usage: conformance pkcs11|tpm2\n");
        return 2;
    }
    if (strcmp(argv[1], "pkcs11") == 0) {
        r = pkcs11_profile();
    } else if (strcmp(argv[1], "tpm2") == 0) {
        r = tpm_profile();
    } else {
        fprintf(stderr, "conformance: unknown backend \"%s\"\n", argv[1]);
        return 2;
    }
    if (r < 0) {
        return 1;
    }
    return cmocka_run_group_tests_name(prof.name, tests, group_setup, group_teardown);
}
