/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "enroll.h"
#include "error.h"
#include "signer.h"
#include "test_pki.h"
#include "tpm.h"

/*
 * The TPM backend against a real swtpm started by swtpm-env.sh, driven through the ops table
 * as the core drives it. What the backend claims is checked independently with tpm2-tools
 * (attributes, NV content, handles) and OpenSSL (signatures). The tests run in order and share
 * the one TPM; every test closes its device before tpm2-tools talk to swtpm (swtpm serves one
 * connection at a time).
 */

#define KEY_HANDLE 0x81000101u
#define NV_INDEX 0x01800101u

static const char *tcti;
static const char *workdir;
static char dev_uri[256];
static EVP_PKEY *ca_key;
static long next_serial = 1;
static unsigned char key_id[16];

/* ---- helpers ------------------------------------------------------------------------- */

static void assert_message_has(const char *needle)
{
    const char *msg = prov_error_message();

    if (msg == NULL || strstr(msg, needle) == NULL) {
        fail_msg("error message \"%s\" lacks \"%s\"", msg ? msg : "(none)", needle);
    }
}

static struct prov_device *open_with(const struct prov_device_params *params)
{
    struct prov_device *dev = NULL;
    int r;

    prov_error_clear();
    r = prov_tpm_ops.open(dev_uri, params, &dev);
    if (r != 0) {
        fail_msg("open %s: %d %s", dev_uri, r, prov_error_message());
    }
    assert_int_equal(dev->ops->login(dev, NULL), 0);
    return dev;
}

static struct prov_device *open_dev(void)
{
    return open_with(NULL);
}

/* Runs a shell command: stdout and stderr in *out (freed by the caller); returns its exit code. */
static int run(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int run(char **out, const char *fmt, ...)
{
    char cmd[2048];
    char *buf = NULL;
    size_t len = 0, cap = 0, n;
    va_list ap;
    FILE *f;
    int status;

    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    strncat(cmd, " 2>&1", sizeof(cmd) - strlen(cmd) - 1);
    f = popen(cmd, "r");
    assert_non_null(f);
    do {
        if (cap - len < 4096) {
            cap += 65536;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
        n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
    } while (n > 0);
    buf[len] = '\0';
    status = pclose(f);
    *out = buf;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Runs a command that must succeed; returns its output (freed by the caller). Not inlined:
 * gcc 12 then takes the returned buffer for a pointer to run_ok's own local (-Wdangling-pointer).
 */
static char *run_ok(const char *cmd) __attribute__((noinline));

static char *run_ok(const char *cmd)
{
    char *out = NULL;

    if (run(&out, "%s", cmd) != 0) {
        fail_msg("%s failed: %s", cmd, out);
    }
    return out;
}

static bool persistent_handle_exists(uint32_t handle)
{
    char *out = run_ok("tpm2_getcap handles-persistent");
    char want[16];
    bool found;

    snprintf(want, sizeof(want), "0x%08X", (unsigned)handle);
    found = strcasestr(out, want) != NULL;
    free(out);
    return found;
}

static bool nv_index_exists(uint32_t index)
{
    char *out = run_ok("tpm2_getcap handles-nv-index");
    char want[16];
    bool found;

    snprintf(want, sizeof(want), "0x%X", (unsigned)index);
    found = strcasestr(out, want) != NULL;
    free(out);
    return found;
}

/* doc/platform.md, swtpm's three slots: nothing transient may stay loaded after an operation. */
static void assert_no_transient(void)
{
    char *out = run_ok("tpm2_getcap handles-transient");

    if (strstr(out, "0x80") != NULL) {
        fail_msg("transient objects left loaded: %s", out);
    }
    free(out);
}

/* The NV index content as tpm2_nvread returns it (index authorization, as firmware reads). */
static unsigned char *nvread(uint32_t index, size_t *len)
{
    char cmd[512], path[400];
    unsigned char *data;
    FILE *f;
    long n;

    snprintf(path, sizeof(path), "%s/nvread.bin", workdir);
    snprintf(cmd, sizeof(cmd), "tpm2_nvread 0x%08x -C 0x%08x -o '%s'", (unsigned)index,
             (unsigned)index, path);
    free(run_ok(cmd));
    f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    data = malloc((size_t)n + 1);
    assert_non_null(data);
    assert_int_equal(fread(data, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return data;
}

static void assert_nv_holds(X509 *cert)
{
    unsigned char *der = NULL;
    int der_len = i2d_X509(cert, &der);
    size_t len = 0;
    unsigned char *nv = nvread(NV_INDEX, &len);

    assert_true(der_len > 0);
    assert_int_equal(len, (size_t)der_len);
    assert_memory_equal(nv, der, len);
    free(nv);
    OPENSSL_free(der);
}

/* A certificate for pub issued by the test CA; n_san DNS names make it as large as needed. */
static X509 *make_cert(EVP_PKEY *pub, int n_san)
{
    size_t cap = (size_t)n_san * 40 + 1, len = 0;
    char *san = calloc(1, cap);
    const char *exts[] = {"subjectAltName", san, NULL};
    X509 *c;

    assert_non_null(san);
    for (int i = 0; i < n_san; i++) {
        len += (size_t)snprintf(san + len, cap - len, "%sDNS:device-%04d.factory.example",
                                i ? "," : "", i);
    }
    c = test_pki_cert(&(struct test_cert_spec){
        .cn = "tpm-test",
        .serial = next_serial++,
        .key = pub,
        .issuer_key = ca_key,
        .not_after = TEST_PKI_DAY,
        .exts = n_san > 0 ? exts : NULL,
    });
    free(san);
    return c;
}

static int der_size(X509 *cert)
{
    return i2d_X509(cert, NULL);
}

static struct prov_key *generate(struct prov_device *dev, enum prov_key_type type, uint32_t handle,
                                 bool replace)
{
    struct prov_keygen_params kp = {
        .type = type,
        .label = "SN-TPM-1",
        .id = key_id,
        .id_len = sizeof(key_id),
        .tpm_handle = handle,
        .replace = replace,
    };
    struct prov_key *key = NULL;
    int r;

    prov_error_clear();
    r = dev->ops->generate_key(dev, &kp, &key);
    if (r != 0) {
        fail_msg("generate_key at 0x%08x: %d %s", (unsigned)handle, r, prov_error_message());
    }
    assert_non_null(key);
    return key;
}

static struct prov_key *find_uri(struct prov_device *dev, uint32_t handle)
{
    struct prov_key *key = NULL;
    char *uri = prov_tpm_key_uri(tcti, handle);
    int r;

    prov_error_clear();
    r = dev->ops->find_key(dev, uri, &key);
    if (r != 0) {
        fail_msg("find_key %s: %d %s", uri, r, prov_error_message());
    }
    free(uri);
    return key;
}

/* Signs data with the key through the core's signer (the path CSR and TLS take). */
static void sign_and_verify(struct prov_key *key, const EVP_MD *md, int rsa_padding)
{
    static const unsigned char data[] = "challenge from the test";
    unsigned char sig[1024];
    size_t sig_len = sizeof(sig);
    EVP_PKEY *signer = NULL;
    EVP_PKEY_CTX *pctx = NULL;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();

    assert_int_equal(prov_signer_pkey(key, &signer), 0);
    assert_int_equal(EVP_DigestSignInit(ctx, &pctx, md, NULL, signer), 1);
    if (rsa_padding != 0) {
        assert_int_equal(EVP_PKEY_CTX_set_rsa_padding(pctx, rsa_padding), 1);
    }
    if (EVP_DigestSign(ctx, sig, &sig_len, data, sizeof(data)) != 1) {
        fail_msg("sign through the signer failed: %s", prov_error_message());
    }
    EVP_MD_CTX_free(ctx);
    ctx = EVP_MD_CTX_new();
    assert_int_equal(EVP_DigestVerifyInit(ctx, &pctx, md, NULL, key->pub), 1);
    if (rsa_padding != 0) {
        assert_int_equal(EVP_PKEY_CTX_set_rsa_padding(pctx, rsa_padding), 1);
    }
    assert_int_equal(EVP_DigestVerify(ctx, sig, sig_len, data, sizeof(data)), 1);
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(signer);
}

static int setup(void **state)
{
    tcti = getenv("PROV_TEST_TCTI");
    workdir = getenv("PROV_TEST_WORKDIR");
    if (tcti == NULL || workdir == NULL || getenv("TPM2TOOLS_TCTI") == NULL) {
        fprintf(stderr, "run through swtpm-env.sh\n");
        return -1;
    }
    snprintf(dev_uri, sizeof(dev_uri), "tpm2:%s", tcti);
    ca_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    if (ca_key == NULL || RAND_bytes(key_id, sizeof(key_id)) != 1) {
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    EVP_PKEY_free(ca_key);
    return 0;
}

/* ---- tests --------------------------------------------------------------------------- */

static void test_unreachable_is_not_found(void **state)
{
    struct prov_device *dev = NULL;
    char uri[256];

    snprintf(uri, sizeof(uri), "tpm2:%s", getenv("PROV_TEST_DEAD_TCTI"));
    prov_error_clear();
    assert_int_equal(prov_tpm_ops.open(uri, NULL, &dev), PROV_ERR_NOT_FOUND);
    assert_null(dev);
    assert_message_has("TPM swtpm:host=127.0.0.1,port=");
    assert_message_has("not reachable");
    assert_message_has("TSS2_RC 0x");
}

static void test_device_strings(void **state)
{
    char *conf = NULL;
    uint32_t handle = 0;

    assert_true(prov_tpm_ops.handles("tpm2:device:/dev/tpmrm0"));
    assert_false(prov_tpm_ops.handles("pkcs11:token=x"));
    assert_int_equal(
        prov_tpm_uri_split("tpm2:swtpm:host=h,port=1;handle=0x81000101", &conf, &handle), 0);
    assert_string_equal(conf, "swtpm:host=h,port=1");
    assert_int_equal(handle, 0x81000101);
    free(conf);
    /* A ';' inside the TCTI configuration stays there; only the last ;handle= counts. */
    assert_int_equal(prov_tpm_uri_split("tpm2:cmd:a;b;handle=0x81000002", &conf, &handle), 0);
    assert_string_equal(conf, "cmd:a;b");
    free(conf);
    prov_error_clear();
    assert_int_equal(prov_tpm_uri_split("tpm2:x;handle=0x01000001", &conf, &handle),
                     PROV_ERR_USAGE);
    assert_null(conf);
    prov_error_clear();
    assert_int_equal(prov_tpm_uri_split("tpm2:x;handle=81000001", &conf, &handle), PROV_ERR_USAGE);
    prov_error_clear();
}

/* The first key creates the SRK at 0x81000001; the key gets the doc/keys.md attributes. */
static void test_generate_creates_srk_and_key(void **state)
{
    struct prov_device *dev;
    struct prov_key *key;
    struct prov_key_props pr;
    char want_uri[300];

    assert_false(persistent_handle_exists(PROV_TPM_DEFAULT_SRK_HANDLE));
    dev = open_dev();
    assert_int_equal(strncmp(dev->name, "TPM ", 4), 0);
    assert_string_equal(dev->name + 4, tcti);
    key = generate(dev, PROV_KEY_EC_P256, 0, false);
    assert_int_equal(key->type, PROV_KEY_EC_P256);
    snprintf(want_uri, sizeof(want_uri), "tpm2:%s;handle=0x81000101", tcti);
    assert_string_equal(key->uri, want_uri);
    assert_string_equal(key->label, "SN-TPM-1");
    assert_int_equal(key->id_len, sizeof(key_id));
    assert_memory_equal(key->id, key_id, sizeof(key_id));
    assert_int_equal(EVP_PKEY_get_bits(key->pub), 256);
    assert_int_equal(dev->ops->key_props(dev, key, &pr), 0);
    assert_true(pr.is_private_token_object && pr.is_sensitive && pr.is_never_extractable &&
                pr.is_local && pr.can_sign);
    assert_false(pr.is_extractable || pr.can_decrypt);
    assert_int_equal(prov_check_key_protection(key, "device key"), 0);
    prov_key_free(key);
    prov_device_close(dev);
    assert_true(persistent_handle_exists(PROV_TPM_DEFAULT_SRK_HANDLE));
    assert_true(persistent_handle_exists(KEY_HANDLE));
    assert_no_transient();
}

/* tpm2-tools, not the backend, says what the key at the handle is. */
static void test_tools_see_required_attributes(void **state)
{
    char *out = run_ok("tpm2_readpublic -c 0x81000101");
    const char *attrs = strstr(out, "attributes:");
    const char *want[] = {"fixedtpm", "fixedparent", "sensitivedataorigin", "userwithauth", "sign"};
    const char *value = attrs ? strstr(attrs, "value:") : NULL;
    char line[256] = "";
    int n = value ? sscanf(value, "value: %255s", line) : 0;

    assert_int_equal(n, 1);
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        char padded[300], needle[64];

        snprintf(padded, sizeof(padded), "|%s|", line);
        snprintf(needle, sizeof(needle), "|%s|", want[i]);
        if (strstr(padded, needle) == NULL) {
            fail_msg("attribute %s missing: %s", want[i], line);
        }
    }
    if (strstr(line, "decrypt") != NULL || strstr(line, "restricted") != NULL) {
        fail_msg("key may decrypt or is restricted: %s", line);
    }
    assert_non_null(strstr(out, "ecc"));
    free(out);
}

static void test_sign_verifies(void **state)
{
    struct prov_device *dev = open_dev();
    struct prov_key *key = find_uri(dev, KEY_HANDLE);
    unsigned char digest[32], sig[128];
    size_t sig_len = sizeof(sig);
    EVP_PKEY_CTX *vctx = EVP_PKEY_CTX_new(key->pub, NULL);

    assert_int_equal(RAND_bytes(digest, sizeof(digest)), 1);
    assert_int_equal(
        dev->ops->sign(dev, key, PROV_SIG_ECDSA, digest, sizeof(digest), sig, &sig_len), 0);
    assert_int_equal(EVP_PKEY_verify_init(vctx), 1);
    assert_int_equal(EVP_PKEY_verify(vctx, sig, sig_len, digest, sizeof(digest)), 1);
    EVP_PKEY_CTX_free(vctx);
    sign_and_verify(key, EVP_sha256(), 0);
    sign_and_verify(key, EVP_sha384(), 0);
    /* A wrong mechanism for the key type is refused, not attempted. */
    sig_len = sizeof(sig);
    prov_error_clear();
    assert_int_equal(
        dev->ops->sign(dev, key, PROV_SIG_RSA_RAW, digest, sizeof(digest), sig, &sig_len),
        PROV_ERR_UNSUPPORTED);
    prov_error_clear();
    prov_key_free(key);
    prov_device_close(dev);
    assert_no_transient();
}

static void test_lookups(void **state)
{
    struct prov_device *dev = open_dev();
    struct prov_key *key = find_uri(dev, KEY_HANDLE);
    struct prov_key *other = NULL;
    EVP_PKEY *stranger = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    char *uri;

    /* The id given at creation comes back from the TPM. */
    assert_int_equal(key->id_len, sizeof(key_id));
    assert_memory_equal(key->id, key_id, sizeof(key_id));
    assert_int_equal(dev->ops->find_key_by_id(dev, key_id, sizeof(key_id), &other), 0);
    assert_int_equal(EVP_PKEY_eq(other->pub, key->pub), 1);
    assert_string_equal(other->uri, key->uri);
    prov_key_free(other);
    assert_int_equal(dev->ops->find_key_by_public(dev, key->pub, &other), 0);
    assert_string_equal(other->uri, key->uri);
    prov_key_free(other);
    other = NULL;

    prov_error_clear();
    assert_int_equal(dev->ops->find_key_by_public(dev, stranger, &other), PROV_ERR_NOT_FOUND);
    assert_null(other);
    prov_error_clear();
    assert_int_equal(dev->ops->find_key_by_id(dev, (const unsigned char *)"nope", 4, &other),
                     PROV_ERR_NOT_FOUND);
    uri = prov_tpm_key_uri(tcti, 0x81000177);
    prov_error_clear();
    assert_int_equal(dev->ops->find_key(dev, uri, &other), PROV_ERR_NOT_FOUND);
    assert_message_has("0x81000177");
    prov_error_clear();
    free(uri);
    EVP_PKEY_free(stranger);
    prov_key_free(key);
    prov_device_close(dev);
    assert_no_transient();
}

static void test_occupied_handle_refused(void **state)
{
    struct prov_device *dev = open_dev();
    struct prov_key *before = find_uri(dev, KEY_HANDLE);
    struct prov_key *key = NULL;
    struct prov_key *after;
    struct prov_keygen_params kp = {.type = PROV_KEY_EC_P256, .id = key_id, .id_len = 4};

    prov_error_clear();
    assert_int_equal(dev->ops->generate_key(dev, &kp, &key), PROV_ERR_ALREADY_ISSUED);
    assert_null(key);
    assert_message_has("persistent handle 0x81000101 already holds a key");
    assert_message_has("--reissue");
    prov_error_clear();
    after = find_uri(dev, KEY_HANDLE);
    assert_int_equal(EVP_PKEY_eq(before->pub, after->pub), 1);
    prov_key_free(before);
    prov_key_free(after);
    prov_device_close(dev);
    assert_no_transient();
}

static void test_store_certificate(void **state)
{
    struct prov_device *dev = open_dev();
    struct prov_key *key = find_uri(dev, KEY_HANDLE);
    X509 *cert = make_cert(key->pub, 2);
    EVP_PKEY *stranger = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    X509 *wrong = make_cert(stranger, 0);

    assert_int_equal(dev->ops->store_certificate(dev, key, cert), 0);
    /* Storing it again is harmless. */
    assert_int_equal(dev->ops->store_certificate(dev, key, cert), 0);
    prov_error_clear();
    assert_int_equal(dev->ops->store_certificate(dev, key, wrong), PROV_ERR_INPUT);
    prov_error_clear();
    prov_key_free(key);
    prov_device_close(dev);
    assert_nv_holds(cert);
    assert_no_transient();
    X509_free(cert);
    X509_free(wrong);
    EVP_PKEY_free(stranger);
}

/* Larger than TPM2_PT_NV_BUFFER_MAX (1024 on swtpm): written and read in chunks. */
static void test_store_large_certificate(void **state)
{
    struct prov_device *dev = open_dev();
    struct prov_key *key = find_uri(dev, KEY_HANDLE);
    X509 *big = make_cert(key->pub, 30);
    X509 *huge = make_cert(key->pub, 80);
    assert_true(der_size(big) > 1024);
    assert_true(der_size(big) <= 2048);
    assert_true(der_size(huge) > 2048);
    if (dev->ops->store_certificate(dev, key, big) != 0) {
        fail_msg("store big certificate: %s", prov_error_message());
    }
    prov_error_clear();
    assert_int_equal(dev->ops->store_certificate(dev, key, huge), PROV_ERR_UNSUPPORTED);
    assert_message_has("TPM2_PT_NV_INDEX_MAX");
    prov_error_clear();
    prov_key_free(key);
    prov_device_close(dev);
    /* The refused certificate left the stored one intact. */
    assert_nv_holds(big);
    assert_no_transient();
    X509_free(big);
    X509_free(huge);
}

/*
 * An SRK that is already there is used as it is: replaced by an RSA storage key made with
 * tpm2-tools, a new device key is created under it and the SRK stays that RSA key.
 */
static void test_existing_srk_is_reused(void **state)
{
    char cmd[800];
    char *before, *after;
    struct prov_device_params params = {.tpm_key_handle = 0x81000102, .tpm_nv_index = 0x01800102};
    struct prov_device *dev;
    struct prov_key *key;

    snprintf(cmd, sizeof(cmd),
             "tpm2_evictcontrol -C o -c 0x81000001 >/dev/null && "
             "tpm2_createprimary -C o -G rsa2048:aes128cfb -c '%s/srk.ctx' >/dev/null && "
             "tpm2_evictcontrol -C o -c '%s/srk.ctx' 0x81000001 >/dev/null && "
             "tpm2_flushcontext -t",
             workdir, workdir);
    free(run_ok(cmd));
    before = run_ok("tpm2_readpublic -c 0x81000001 | grep '^name:'");
    /* A second identity on the TPM: its own key handle and NV index. */
    dev = open_with(&params);
    key = generate(dev, PROV_KEY_EC_P256, 0, false);
    assert_int_equal(prov_check_key_protection(key, "device key"), 0);
    sign_and_verify(key, EVP_sha256(), 0);
    assert_int_equal(dev->ops->delete_key(dev, key), 0);
    prov_key_free(key);
    prov_device_close(dev);
    after = run_ok("tpm2_readpublic -c 0x81000001 | grep '^name:'");
    assert_string_equal(before, after);
    assert_false(persistent_handle_exists(0x81000102));
    free(before);
    free(after);
    assert_no_transient();
}

static void test_srk_handle_must_hold_storage_key(void **state)
{
    struct prov_device_params params = {
        .tpm_srk_handle = KEY_HANDLE, .tpm_key_handle = 0x81000105, .tpm_nv_index = 0x01800105};
    struct prov_device *dev = open_with(&params);
    struct prov_keygen_params kp = {.type = PROV_KEY_EC_P256, .tpm_handle = 0x81000105};
    struct prov_key *key = NULL;

    prov_error_clear();
    assert_int_equal(dev->ops->generate_key(dev, &kp, &key), PROV_ERR_CONFIG);
    assert_message_has("not a storage key");
    prov_error_clear();
    prov_device_close(dev);
    assert_false(persistent_handle_exists(0x81000105));
    assert_no_transient();
}

/*
 * The SRK is checked on every device's key, not once per process: a key generated under the
 * storage key at 0x81000001, then a signing key put at that handle in the same process, is
 * refused ("not a storage key"). The storage key is put back after.
 */
static void test_replaced_srk_checked_again(void **state)
{
    struct prov_device_params params = {.tpm_key_handle = 0x81000106, .tpm_nv_index = 0x01800106};
    struct prov_keygen_params kp = {.type = PROV_KEY_EC_P256, .tpm_handle = 0x81000106};
    struct prov_device *dev = open_with(&params);
    struct prov_key *key = generate(dev, PROV_KEY_EC_P256, 0, false);
    char cmd[800];

    assert_int_equal(dev->ops->delete_key(dev, key), 0);
    prov_key_free(key);
    prov_device_close(dev);
    snprintf(cmd, sizeof(cmd),
             "tpm2_evictcontrol -C o -c 0x81000001 >/dev/null && "
             "tpm2_createprimary -C o -G ecc256:ecdsa-sha256 -a "
             "'fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign' -c '%s/sig.ctx' "
             ">/dev/null && tpm2_evictcontrol -C o -c '%s/sig.ctx' 0x81000001 >/dev/null && "
             "tpm2_flushcontext -t",
             workdir, workdir);
    free(run_ok(cmd));
    dev = open_with(&params);
    key = NULL;
    prov_error_clear();
    assert_int_equal(dev->ops->generate_key(dev, &kp, &key), PROV_ERR_CONFIG);
    assert_message_has("not a storage key");
    prov_error_clear();
    prov_device_close(dev);
    assert_false(persistent_handle_exists(0x81000106));
    /* the signing key goes; the next key makes a storage SRK there again */
    free(run_ok("tpm2_evictcontrol -C o -c 0x81000001 >/dev/null"));
    dev = open_with(&params);
    key = generate(dev, PROV_KEY_EC_P256, 0, false);
    assert_int_equal(dev->ops->delete_key(dev, key), 0);
    prov_key_free(key);
    prov_device_close(dev);
    assert_no_transient();
}

/* Keys made by other tools with the wrong attributes: the backend reports, the core refuses. */
static void test_wrong_attributes_refused(void **state)
{
    static const struct {
        uint32_t handle;
        const char *attrs;
        const char *complaint;
    } cases[] = {
        {0x81000110, "sign|decrypt|fixedtpm|fixedparent|sensitivedataorigin|userwithauth",
         "decrypt"},
        {0x81000111, "sign|sensitivedataorigin|userwithauth", "extractable"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char cmd[1200];
        struct prov_device *dev;
        struct prov_key *key;

        snprintf(cmd, sizeof(cmd),
                 "tpm2_create -C 0x81000001 -G ecc256 -a '%s' -u '%s/k.pub' -r '%s/k.priv' "
                 ">/dev/null && tpm2_load -C 0x81000001 -u '%s/k.pub' -r '%s/k.priv' "
                 "-c '%s/k.ctx' >/dev/null && tpm2_evictcontrol -C o -c '%s/k.ctx' 0x%08x "
                 ">/dev/null && tpm2_flushcontext -t",
                 cases[i].attrs, workdir, workdir, workdir, workdir, workdir, workdir,
                 (unsigned)cases[i].handle);
        free(run_ok(cmd));
        dev = open_dev();
        key = find_uri(dev, cases[i].handle);
        /* No tag: the id is the handle, and it finds the key again. */
        assert_int_equal(key->id_len, 4);
        prov_error_clear();
        assert_int_equal(prov_check_key_protection(key, "device key"), PROV_ERR_POLICY);
        assert_message_has(cases[i].complaint);
        prov_error_clear();
        {
            struct prov_key *again = NULL;

            assert_int_equal(dev->ops->find_key_by_id(dev, key->id, key->id_len, &again), 0);
            assert_string_equal(again->uri, key->uri);
            prov_key_free(again);
        }
        assert_int_equal(dev->ops->delete_key(dev, key), 0);
        prov_key_free(key);
        prov_device_close(dev);
        assert_false(persistent_handle_exists(cases[i].handle));
    }
    assert_no_transient();
}

/* delete_key evicts the key and undefines the NV index holding its certificate. */
static void test_delete(void **state)
{
    struct prov_device *dev = open_dev();
    struct prov_key *key = find_uri(dev, KEY_HANDLE);

    assert_true(nv_index_exists(NV_INDEX));
    assert_int_equal(dev->ops->delete_key(dev, key), 0);
    prov_key_free(key);
    prov_device_close(dev);
    assert_false(persistent_handle_exists(KEY_HANDLE));
    assert_false(nv_index_exists(NV_INDEX));
    assert_no_transient();
}

/* An NV index holding something else: refused before any key is made, unless replace. */
static void test_nv_occupied(void **state)
{
    char cmd[800];
    struct prov_device *dev;
    struct prov_keygen_params kp = {.type = PROV_KEY_EC_P256, .id = key_id, .id_len = 16};
    struct prov_key *key = NULL;
    X509 *cert;

    snprintf(cmd, sizeof(cmd),
             "head -c 64 /dev/urandom >'%s/junk' && "
             "tpm2_nvdefine 0x01800101 -C o -s 64 -a 'ownerread|ownerwrite|authread' && "
             "tpm2_nvwrite 0x01800101 -C o -i '%s/junk'",
             workdir, workdir);
    free(run_ok(cmd));
    dev = open_dev();
    prov_error_clear();
    assert_int_equal(dev->ops->generate_key(dev, &kp, &key), PROV_ERR_ALREADY_ISSUED);
    assert_message_has("NV index 0x01800101 already holds 64 bytes that are not a certificate");
    assert_message_has("--reissue");
    prov_error_clear();
    prov_device_close(dev);
    assert_false(persistent_handle_exists(KEY_HANDLE)); /* nothing half-made */

    /* Too small and never written, with someone else's attributes: refused as well. */
    free(run_ok("tpm2_nvundefine 0x01800101 -C o && "
                "tpm2_nvdefine 0x01800101 -C o -s 100 -a 'ownerread|ownerwrite'"));
    dev = open_dev();
    prov_error_clear();
    assert_int_equal(dev->ops->generate_key(dev, &kp, &key), PROV_ERR_ALREADY_ISSUED);
    assert_message_has("never written");
    prov_error_clear();

    /* replace clears it; the new certificate goes in. */
    key = generate(dev, PROV_KEY_EC_P256, 0, true);
    cert = make_cert(key->pub, 0);
    assert_int_equal(dev->ops->store_certificate(dev, key, cert), 0);
    prov_key_free(key);
    prov_device_close(dev);
    assert_nv_holds(cert);
    X509_free(cert);
    assert_no_transient();
}

/*
 * replace: the earlier key and its certificate go - only for the identity being reissued
 * (replaceable_pub): a key the NV index certifies under another name stays. Without replace,
 * a certificate left by an evicted key still blocks a new key, and store_certificate will not
 * overwrite another key's certificate (the install path, which finds the key instead of
 * making it).
 */
static void test_replace(void **state)
{
    char cmd[800];
    struct prov_device *dev = open_dev();
    struct prov_key *old = find_uri(dev, KEY_HANDLE);
    struct prov_key *key;
    struct prov_keygen_params kp = {.type = PROV_KEY_EC_P256, .id = key_id, .id_len = 16};
    struct prov_key *none = NULL;
    unsigned char *old_der = NULL;
    int old_len;
    X509 *old_cert = make_cert(old->pub, 0);
    X509 *cert;

    assert_int_equal(dev->ops->store_certificate(dev, old, old_cert), 0);
    /* certified in NV under another name, and not the identity being reissued: it stays */
    kp.label = "SN-TPM-2";
    kp.replace = true;
    prov_error_clear();
    assert_int_equal(dev->ops->generate_key(dev, &kp, &none), PROV_ERR_POLICY);
    assert_message_has("holds the key of another identity");
    assert_null(none);
    key = find_uri(dev, KEY_HANDLE);
    assert_int_equal(EVP_PKEY_eq(key->pub, old->pub), 1);
    prov_key_free(key);
    /* the identity being reissued: its key goes */
    kp.replaceable_pub = old->pub;
    prov_error_clear();
    assert_int_equal(dev->ops->generate_key(dev, &kp, &key), 0);
    assert_int_equal(EVP_PKEY_eq(key->pub, old->pub), 0);
    kp = (struct prov_keygen_params){.type = PROV_KEY_EC_P256, .id = key_id, .id_len = 16};
    prov_key_free(old);
    prov_key_free(key);
    prov_device_close(dev);
    assert_false(nv_index_exists(NV_INDEX)); /* the old key's certificate went with it */

    /* The old certificate back in NV (as a stale leftover would be) with tpm2-tools. */
    old_len = i2d_X509(old_cert, &old_der);
    snprintf(cmd, sizeof(cmd), "%s/old.der", workdir);
    {
        FILE *f = fopen(cmd, "wb");

        assert_non_null(f);
        assert_int_equal(fwrite(old_der, 1, (size_t)old_len, f), (size_t)old_len);
        fclose(f);
    }
    snprintf(cmd, sizeof(cmd),
             "tpm2_nvdefine 0x01800101 -C o -s %d -a 'ownerread|ownerwrite|authread|no_da' && "
             "tpm2_nvwrite 0x01800101 -C o -i '%s/old.der'",
             old_len, workdir);
    free(run_ok(cmd));
    dev = open_dev();
    key = find_uri(dev, KEY_HANDLE);
    cert = make_cert(key->pub, 0);
    prov_error_clear();
    assert_int_equal(dev->ops->store_certificate(dev, key, cert), PROV_ERR_ALREADY_ISSUED);
    assert_message_has("a certificate for another key");
    prov_error_clear();
    assert_int_equal(dev->ops->delete_key(dev, key), 0);
    prov_key_free(key);
    /* The stale certificate is not this key's: delete_key left it. A new key is refused. */
    prov_error_clear();
    assert_int_equal(dev->ops->generate_key(dev, &kp, &none), PROV_ERR_ALREADY_ISSUED);
    assert_message_has("a certificate for another key");
    prov_error_clear();
    prov_device_close(dev);
    assert_true(nv_index_exists(NV_INDEX));
    X509_free(cert);
    X509_free(old_cert);
    OPENSSL_free(old_der);
    free(run_ok("tpm2_nvundefine 0x01800101 -C o"));
    assert_no_transient();
}

static void test_rsa_and_p384(void **state)
{
    struct prov_device *dev = open_dev();
    struct prov_key *rsa = generate(dev, PROV_KEY_RSA_2048, 0x81000120, false);
    struct prov_key *p384 = generate(dev, PROV_KEY_EC_P384, 0x81000121, false);
    unsigned char block[256] = {0};
    unsigned char sig[512];
    size_t sig_len = sizeof(sig);

    assert_int_equal(rsa->type, PROV_KEY_RSA_2048);
    assert_int_equal(EVP_PKEY_get_bits(rsa->pub), 2048);
    assert_int_equal(prov_check_key_protection(rsa, "device key"), 0);
    sign_and_verify(rsa, EVP_sha256(), RSA_PKCS1_PADDING);
    sign_and_verify(rsa, EVP_sha384(), RSA_PKCS1_PADDING);
    prov_error_clear();
    assert_int_equal(
        dev->ops->sign(dev, rsa, PROV_SIG_RSA_RAW, block, sizeof(block), sig, &sig_len),
        PROV_ERR_UNSUPPORTED);
    assert_message_has("RSA-PSS");
    prov_error_clear();

    assert_int_equal(p384->type, PROV_KEY_EC_P384);
    assert_int_equal(prov_check_key_protection(p384, "device key"), 0);
    sign_and_verify(p384, EVP_sha384(), 0);
    sign_and_verify(p384, EVP_sha256(), 0);

    assert_int_equal(dev->ops->delete_key(dev, rsa), 0);
    assert_int_equal(dev->ops->delete_key(dev, p384), 0);
    prov_key_free(rsa);
    prov_key_free(p384);
    prov_device_close(dev);
    assert_false(persistent_handle_exists(0x81000120));
    assert_false(persistent_handle_exists(0x81000121));
    assert_no_transient();
}

/* The EK digest: stable, and what tpm2-tools + openssl compute for the ECC EK. */
static void test_identity(void **state)
{
    struct prov_device *dev = open_dev();
    char a[128], b[128], cmd[800];
    char *out;

    assert_int_equal(dev->ops->identity(dev, a, sizeof(a)), 0);
    prov_device_close(dev);
    dev = open_dev();
    assert_int_equal(dev->ops->identity(dev, b, sizeof(b)), 0);
    prov_device_close(dev);
    assert_string_equal(a, b);
    assert_int_equal(strlen(a), 64);
    assert_int_equal(strspn(a, "0123456789abcdef"), 64);
    snprintf(cmd, sizeof(cmd),
             "tpm2_createek -c '%s/ek.ctx' -G ecc -u '%s/ek.pem' -f pem >/dev/null && "
             "tpm2_flushcontext -t && openssl pkey -pubin -in '%s/ek.pem' -outform DER | "
             "openssl dgst -sha256 -r | cut -c1-64",
             workdir, workdir, workdir);
    out = run_ok(cmd);
    out[strcspn(out, "\n")] = '\0';
    assert_string_equal(out, a);
    free(out);
    assert_no_transient();
}

/* The TPM goes away mid-session: PROV_ERR_DEVICE_REMOVED, naming the TPM. Runs last. */
static void test_removed_mid_operation(void **state)
{
    struct prov_device *dev = open_dev();
    struct prov_key *key = generate(dev, PROV_KEY_EC_P256, 0, false);
    pid_t pid = (pid_t)atoi(getenv("PROV_TEST_SWTPM_PID"));
    unsigned char digest[32] = {1}, sig[128];
    size_t sig_len = sizeof(sig);

    assert_true(pid > 1);
    assert_int_equal(kill(pid, SIGTERM), 0);
    for (int i = 0; i < 50 && kill(pid, 0) == 0; i++) {
        usleep(100000);
    }
    prov_error_clear();
    assert_int_equal(
        dev->ops->sign(dev, key, PROV_SIG_ECDSA, digest, sizeof(digest), sig, &sig_len),
        PROV_ERR_DEVICE_REMOVED);
    assert_message_has(dev->name);
    prov_error_clear();
    prov_key_free(key);
    prov_device_close(dev);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unreachable_is_not_found),
        cmocka_unit_test(test_device_strings),
        cmocka_unit_test(test_generate_creates_srk_and_key),
        cmocka_unit_test(test_tools_see_required_attributes),
        cmocka_unit_test(test_sign_verifies),
        cmocka_unit_test(test_lookups),
        cmocka_unit_test(test_occupied_handle_refused),
        cmocka_unit_test(test_store_certificate),
        cmocka_unit_test(test_store_large_certificate),
        cmocka_unit_test(test_existing_srk_is_reused),
        cmocka_unit_test(test_srk_handle_must_hold_storage_key),
        cmocka_unit_test(test_replaced_srk_checked_again),
        cmocka_unit_test(test_wrong_attributes_refused),
        cmocka_unit_test(test_delete),
        cmocka_unit_test(test_nv_occupied),
        cmocka_unit_test(test_replace),
        cmocka_unit_test(test_rsa_and_p384),
        cmocka_unit_test(test_identity),
        cmocka_unit_test(test_removed_mid_operation),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
