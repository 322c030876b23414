/* SPDX-License-Identifier: Apache-2.0 */
#include <dlfcn.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <p11-kit/pkcs11.h>

#include "enroll.h"
#include "error.h"
#include "pkcs11.h"
#include "test_pki.h"

/*
 * The PKCS#11 backend against real SoftHSM2 tokens made by softhsm-env.sh: token lookup,
 * login, key generation with the doc/keys.md attributes (checked through the backend and,
 * independently, with pkcs11-tool), signing verified by OpenSSL, lookups, certificates, delete.
 */

static const char *module;
static const char *pin_text;
static struct prov_secret *pin;

static int setup(void **state)
{
    module = getenv("PROV_TEST_MODULE");
    pin_text = getenv("PROV_TEST_PIN");
    if (module == NULL || pin_text == NULL || getenv("SOFTHSM2_CONF") == NULL) {
        fprintf(stderr, "run through softhsm-env.sh\n");
        return -1;
    }
    return prov_secret_from_buf(pin_text, strlen(pin_text), &pin);
}

static int teardown(void **state)
{
    prov_secret_free(pin);
    prov_pkcs11_unload_all();
    return 0;
}

static int open_dev(const char *uri, bool read_only, struct prov_device **dev)
{
    struct prov_device_params params = {.module_path = module, .read_only = read_only};

    prov_error_clear();
    return prov_pkcs11_ops.open(uri, &params, dev);
}

static struct prov_device *open_login(const char *uri)
{
    struct prov_device *dev = NULL;

    assert_int_equal(open_dev(uri, false, &dev), 0);
    assert_int_equal(dev->ops->login(dev, pin), 0);
    return dev;
}

static void assert_message_has(const char *needle)
{
    const char *msg = prov_error_message();

    if (msg == NULL || strstr(msg, needle) == NULL) {
        fail_msg("error message \"%s\" lacks \"%s\"", msg ? msg : "(none)", needle);
    }
}

/* Everything pkcs11-tool lists on keys-0001 (its --id does not filter --list-objects). */
static char *list_objects(void)
{
    char cmd[512], *out = NULL;
    size_t len = 0, cap = 0, n;
    FILE *f;
    int status;

    snprintf(cmd, sizeof(cmd),
             "pkcs11-tool --module '%s' --token-label keys-0001 --login --pin '%s' "
             "--list-objects 2>&1",
             module, pin_text);
    f = popen(cmd, "r");
    assert_non_null(f);
    do {
        if (cap - len < 4096) {
            cap += 65536;
            out = realloc(out, cap);
            assert_non_null(out);
        }
        n = fread(out + len, 1, cap - len - 1, f);
        len += n;
    } while (n > 0);
    out[len] = '\0';
    status = pclose(f);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fail_msg("pkcs11-tool failed: %s", out);
    }
    return out;
}

/*
 * The blocks of a pkcs11-tool listing whose header starts with kind and whose ID is idhex,
 * concatenated into buf; returns how many.
 */
static int objects_with_id(const char *listing, const char *kind, const char *idhex, char *buf,
                           size_t buf_len)
{
    const char *p = listing;
    char id_line[160];
    int count = 0;

    snprintf(id_line, sizeof(id_line), "ID:         %s\n", idhex);
    buf[0] = '\0';
    while (*p != '\0') {
        const char *end = p + 1;

        /* A block runs until the next line that does not start with a space. */
        while (*end != '\0' && !(end[-1] == '\n' && end[0] != ' ')) {
            end++;
        }
        if (strncmp(p, kind, strlen(kind)) == 0) {
            char *block = strndup(p, (size_t)(end - p));

            assert_non_null(block);
            if (strstr(block, id_line) != NULL) {
                count++;
                strncat(buf, block, buf_len - strlen(buf) - 1);
            }
            free(block);
        }
        p = end;
    }
    return count;
}

static void id_hex(const unsigned char *id, size_t len, char *buf)
{
    for (size_t i = 0; i < len; i++) {
        sprintf(buf + 2 * i, "%02x", id[i]);
    }
    buf[2 * len] = '\0';
}

static void test_handles(void **state)
{
    assert_true(prov_pkcs11_ops.handles("pkcs11:token=x"));
    assert_false(prov_pkcs11_ops.handles("tpm2:device:/dev/tpmrm0"));
    assert_false(prov_pkcs11_ops.handles("PKCS11x"));
    assert_false(prov_pkcs11_ops.handles(NULL));
}

/* What the URIs alone show about naming one token (the CA token check, provisioner/pki/ca.c). */
static void test_names_same_device(void **state)
{
    bool (*same)(const char *, const char *, const char *) = prov_pkcs11_ops.names_same_device;

    assert_non_null(same);
    assert_true(same("pkcs11:token=ca", "pkcs11:token=ca;object=intermediate", module));
    assert_true(same("pkcs11:token=ca;manufacturer=SoftHSM%20project",
                     "pkcs11:token=ca;object=intermediate", module));
    assert_true(same("pkcs11:serial=0011", "pkcs11:token=ca;serial=0011;object=k", module));
    /* a URI's module-path, else the default module */
    assert_true(same("pkcs11:token=ca?module-path=/m.so", "pkcs11:token=ca", "/m.so"));
    assert_false(same("pkcs11:token=ca?module-path=/other.so", "pkcs11:token=ca", "/m.so"));
    /* nothing in common, or something that differs: cannot say they are one */
    assert_false(same("pkcs11:serial=0011", "pkcs11:token=ca;object=intermediate", module));
    assert_false(same("pkcs11:token=dev-1", "pkcs11:token=ca", module));
    assert_false(same("pkcs11:token=ca;serial=0011", "pkcs11:token=ca;serial=0022", module));
    assert_false(same("pkcs11:token=ca", "not a uri", module));
}

static void test_open_by_label_and_serial(void **state)
{
    struct prov_device *dev = NULL, *again = NULL;
    char serial[64], uri[128], again_serial[64];

    assert_int_equal(open_dev("pkcs11:token=dev-1", false, &dev), 0);
    assert_string_equal(dev->name, "token dev-1");
    assert_int_equal(dev->ops->identity(dev, serial, sizeof(serial)), 0);
    assert_int_equal(strlen(serial), 16);
    assert_int_not_equal(dev->ops->identity(dev, serial, 4), 0);

    snprintf(uri, sizeof(uri), "pkcs11:serial=%s", serial);
    assert_int_equal(open_dev(uri, true, &again), 0);
    assert_string_equal(again->name, "token dev-1");
    assert_int_equal(again->ops->identity(again, again_serial, sizeof(again_serial)), 0);
    assert_string_equal(again_serial, serial);
    prov_pkcs11_ops.close(again);
    prov_pkcs11_ops.close(dev);
    prov_pkcs11_ops.close(NULL);
}

/* doc/platform.md: "dev-1" must not pick "dev-10", nor "dev" either of them. */
static void test_exact_match(void **state)
{
    struct prov_device *d1 = NULL, *d10 = NULL, *none = NULL;
    char s1[64], s10[64];

    assert_int_equal(open_dev("pkcs11:token=dev-10", false, &d10), 0);
    assert_string_equal(d10->name, "token dev-10");
    assert_int_equal(open_dev("pkcs11:token=dev-1", false, &d1), 0);
    assert_int_equal(d1->ops->identity(d1, s1, sizeof(s1)), 0);
    assert_int_equal(d10->ops->identity(d10, s10, sizeof(s10)), 0);
    assert_string_not_equal(s1, s10);

    assert_int_equal(open_dev("pkcs11:token=dev", false, &none), PROV_ERR_NOT_FOUND);
    assert_null(none);
    assert_int_equal(open_dev("pkcs11:token=dev-1;serial=0000", false, &none), PROV_ERR_NOT_FOUND);
    prov_pkcs11_ops.close(d1);
    prov_pkcs11_ops.close(d10);
}

static void test_not_found_and_ambiguous(void **state)
{
    struct prov_device *dev = NULL;
    char want[256];

    assert_int_equal(open_dev("pkcs11:token=dev-0001", false, &dev), PROV_ERR_NOT_FOUND);
    assert_null(dev);
    snprintf(want, sizeof(want), "token \"dev-0001\" not found (module %s)", module);
    assert_message_has(want);

    /* Every initialized token matches: the URI must say which one. */
    assert_int_equal(open_dev("pkcs11:manufacturer=SoftHSM%20project", false, &dev),
                     PROV_ERR_CONFIG);
    assert_null(dev);
    assert_message_has("serial=");
}

/* Re-initializes the token labelled from (no session open on it) as to, in this process. */
static void relabel_token(const char *from, const char *to)
{
    CK_C_GetFunctionList get_list;
    CK_FUNCTION_LIST *fl = NULL;
    CK_SLOT_ID slots[32];
    CK_ULONG n = sizeof(slots) / sizeof(slots[0]);
    CK_TOKEN_INFO ti;
    CK_UTF8CHAR label[32];
    CK_RV rv;
    void *h = dlopen(module, RTLD_NOW | RTLD_LOCAL);
    bool done = false;

    assert_non_null(h);
    get_list = (CK_C_GetFunctionList)dlsym(h, "C_GetFunctionList");
    assert_non_null(get_list);
    assert_int_equal(get_list(&fl), CKR_OK);
    rv = fl->C_Initialize(NULL);
    assert_true(rv == CKR_OK || rv == CKR_CRYPTOKI_ALREADY_INITIALIZED);
    assert_int_equal(fl->C_GetSlotList(CK_TRUE, slots, &n), CKR_OK);
    memset(label, ' ', sizeof(label));
    memcpy(label, to, strlen(to));
    for (CK_ULONG i = 0; i < n && !done; i++) {
        char have[33];

        assert_int_equal(fl->C_GetTokenInfo(slots[i], &ti), CKR_OK);
        size_t len = sizeof(ti.label);

        while (len > 0 && ti.label[len - 1] == ' ') {
            len--;
        }
        snprintf(have, sizeof(have), "%.*s", (int)len, (const char *)ti.label);
        if (strcmp(have, from) == 0) {
            assert_int_equal(fl->C_InitToken(slots[i], (CK_UTF8CHAR *)"5678", 4, label), CKR_OK);
            done = true;
        }
    }
    assert_true(done);
    dlclose(h); /* the module stays loaded: the backend holds it */
}

/*
 * Opening a device asks only the slot where the last full look-up saw the token
 * (find_kept_token in backends/pkcs11/pkcs11.c): a token re-initialized under another label
 * since is no longer found by its old label, and is found by its new one.
 */
static void test_token_relabelled_after_lookup(void **state)
{
    struct prov_device *dev = NULL;

    for (int i = 0; i < 3; i++) {
        assert_int_equal(open_dev("pkcs11:token=dev-10", true, &dev), 0);
        assert_string_equal(dev->name, "token dev-10");
        prov_pkcs11_ops.close(dev);
        dev = NULL;
    }
    relabel_token("dev-10", "dev-10-new");
    assert_int_equal(open_dev("pkcs11:token=dev-10", true, &dev), PROV_ERR_NOT_FOUND);
    assert_null(dev);
    assert_int_equal(open_dev("pkcs11:token=dev-10-new", true, &dev), 0);
    assert_string_equal(dev->name, "token dev-10-new");
    prov_pkcs11_ops.close(dev);
    dev = NULL;
    assert_int_equal(open_dev("pkcs11:token=dev-1", true, &dev), 0);
    assert_string_equal(dev->name, "token dev-1");
    prov_pkcs11_ops.close(dev);
    relabel_token("dev-10-new", "dev-10");
    assert_int_equal(open_dev("pkcs11:token=dev-10-new", true, &dev), PROV_ERR_NOT_FOUND);
    assert_int_equal(open_dev("pkcs11:token=dev-10", true, &dev), 0);
    prov_pkcs11_ops.close(dev);
}

static void test_bad_uri_and_module(void **state)
{
    struct prov_device *dev = NULL;
    struct prov_device_params params = {.module_path = "/nonexistent/libnothing.so"};

    assert_int_equal(open_dev("pkcs11:token=dev-1;bogus=1", false, &dev), PROV_ERR_USAGE);
    assert_message_has("bogus=1");
    assert_int_equal(open_dev("pkcs11:token=%zz", false, &dev), PROV_ERR_USAGE);
    assert_int_equal(open_dev("pkcs11:token=dev-1?pin-value=1234", false, &dev), PROV_ERR_USAGE);
    assert_null(strstr(prov_error_message(), "1234"));
    assert_null(dev);

    prov_error_clear();
    assert_int_equal(prov_pkcs11_ops.open("pkcs11:token=dev-1", &params, &dev), PROV_ERR_CONFIG);
    assert_message_has("/nonexistent/libnothing.so");
    assert_null(dev);
}

static void test_login(void **state)
{
    struct prov_device *dev = NULL;

    assert_int_equal(open_dev("pkcs11:token=dev-10", false, &dev), 0);
    prov_error_clear();
    assert_int_equal(dev->ops->login(dev, NULL), PROV_ERR_PIN_SOURCE);
    assert_int_equal(dev->ops->login(dev, pin), 0);
    /* Logged in already (the state is per token and application): still success. */
    assert_int_equal(dev->ops->login(dev, pin), 0);
    prov_pkcs11_ops.close(dev);
}

static EVP_PKEY *copy_public(EVP_PKEY *pkey)
{
    unsigned char *der = NULL;
    const unsigned char *p;
    int len = i2d_PUBKEY(pkey, &der);
    EVP_PKEY *copy;

    assert_true(len > 0);
    p = der;
    copy = d2i_PUBKEY(NULL, &p, len);
    assert_non_null(copy);
    OPENSSL_free(der);
    return copy;
}

static void check_ecdsa(struct prov_device *dev, struct prov_key *key)
{
    unsigned char digest[EVP_MAX_MD_SIZE], sig[256];
    unsigned int dlen = 0;
    size_t sig_len = sizeof(sig);
    EVP_PKEY_CTX *ctx;

    assert_int_equal(EVP_Digest("hello", 5, digest, &dlen, prov_key_type_digest(key->type), NULL),
                     1);
    assert_int_equal(dev->ops->sign(dev, key, PROV_SIG_ECDSA, digest, dlen, sig, &sig_len), 0);
    ctx = EVP_PKEY_CTX_new(key->pub, NULL);
    assert_int_equal(EVP_PKEY_verify_init(ctx), 1);
    assert_int_equal(EVP_PKEY_verify(ctx, sig, sig_len, digest, dlen), 1);
    digest[0] ^= 1;
    assert_int_not_equal(EVP_PKEY_verify(ctx, sig, sig_len, digest, dlen), 1);
    EVP_PKEY_CTX_free(ctx);

    sig_len = 8;
    prov_error_clear();
    assert_int_equal(dev->ops->sign(dev, key, PROV_SIG_ECDSA, digest, dlen, sig, &sig_len),
                     PROV_ERR_INTERNAL);
}

static void check_rsa(struct prov_device *dev, struct prov_key *key)
{
    /* DER DigestInfo prefix for SHA-256 (RFC 8017 §9.2 note 1). */
    static const unsigned char prefix[] = {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60,
                                           0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                                           0x01, 0x05, 0x00, 0x04, 0x20};
    unsigned char info[sizeof(prefix) + 32], sig[512], block[256], back[512];
    unsigned int dlen = 0;
    size_t sig_len = sizeof(sig), back_len = sizeof(back);
    EVP_PKEY_CTX *ctx;

    memcpy(info, prefix, sizeof(prefix));
    assert_int_equal(EVP_Digest("hello", 5, info + sizeof(prefix), &dlen, EVP_sha256(), NULL), 1);
    assert_int_equal(
        dev->ops->sign(dev, key, PROV_SIG_RSA_PKCS1, info, sizeof(info), sig, &sig_len), 0);
    assert_int_equal(sig_len, 256);
    ctx = EVP_PKEY_CTX_new(key->pub, NULL);
    assert_int_equal(EVP_PKEY_verify_init(ctx), 1);
    assert_int_equal(EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING), 1);
    assert_int_equal(EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256()), 1);
    assert_int_equal(EVP_PKEY_verify(ctx, sig, sig_len, info + sizeof(prefix), 32), 1);
    EVP_PKEY_CTX_free(ctx);

    /* Raw RSA (the core pads for PSS itself): the public operation gives the block back. */
    assert_int_equal(RAND_bytes(block, sizeof(block)), 1);
    block[0] = 0;
    sig_len = sizeof(sig);
    assert_int_equal(
        dev->ops->sign(dev, key, PROV_SIG_RSA_RAW, block, sizeof(block), sig, &sig_len), 0);
    ctx = EVP_PKEY_CTX_new(key->pub, NULL);
    assert_int_equal(EVP_PKEY_verify_recover_init(ctx), 1);
    assert_int_equal(EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_NO_PADDING), 1);
    assert_int_equal(EVP_PKEY_verify_recover(ctx, back, &back_len, sig, sig_len), 1);
    assert_int_equal(back_len, sizeof(block));
    assert_memory_equal(back, block, sizeof(block));
    EVP_PKEY_CTX_free(ctx);

    sig_len = 100;
    prov_error_clear();
    assert_int_equal(
        dev->ops->sign(dev, key, PROV_SIG_RSA_PKCS1, info, sizeof(info), sig, &sig_len),
        PROV_ERR_INTERNAL);
}

/* A self-signed certificate; its subject key is subject_key when given. */
static X509 *make_cert(const char *cn, long serial, EVP_PKEY *subject_key)
{
    EVP_PKEY *ca = test_pki_ec_key("P-256");
    X509 *cert = test_pki_cert(&(struct test_cert_spec){
        .cn = cn,
        .serial = serial,
        .key = subject_key ? subject_key : ca,
        .issuer_key = ca,
        .not_after = 3600,
    });

    EVP_PKEY_free(ca);
    return cert;
}

/* The whole life of one key: every operation of the ops table on it. */
static void key_roundtrip(enum prov_key_type type, unsigned char tag)
{
    const unsigned char id[] = {0x70, tag, 0x00, 0xff, 0x20, 0x3b};
    char label[32], idhex[16], blocks[8192], *listing;
    struct prov_keygen_params kp = {.type = type, .label = label, .id = id, .id_len = sizeof(id)};
    struct prov_device *dev = open_login("pkcs11:token=keys-0001");
    struct prov_key *key = NULL, *found = NULL;
    struct prov_key_props props;
    EVP_PKEY *pub;
    X509 *cert;

    snprintf(label, sizeof(label), "key %s", prov_key_type_name(type));
    id_hex(id, sizeof(id), idhex);
    prov_error_clear();
    assert_int_equal(dev->ops->generate_key(dev, &kp, &key), 0);
    assert_int_equal(key->type, type);
    assert_int_equal(prov_key_type_of(key->pub), type);
    assert_memory_equal(key->id, id, sizeof(id));
    assert_int_equal(key->id_len, sizeof(id));
    assert_string_equal(key->label, label);
    assert_non_null(strstr(key->uri, "token=keys-0001"));
    assert_non_null(strstr(key->uri, "serial="));
    assert_non_null(strstr(key->uri, "id=%70"));
    assert_non_null(strstr(key->uri, "%00%FF%20%3B"));
    assert_non_null(strstr(key->uri, "type=private"));
    assert_null(strstr(key->uri, "module-path"));
    assert_null(strstr(key->uri, "pin"));

    /* doc/keys.md attributes, as the backend reads them... */
    assert_int_equal(dev->ops->key_props(dev, key, &props), 0);
    assert_true(props.is_private_token_object);
    assert_true(props.is_sensitive);
    assert_false(props.is_extractable);
    assert_true(props.is_never_extractable);
    assert_true(props.is_local);
    assert_true(props.can_sign);
    assert_false(props.can_decrypt);

    /* ...and as pkcs11-tool sees them, independently. */
    listing = list_objects();
    assert_int_equal(objects_with_id(listing, "Private Key Object", idhex, blocks, sizeof(blocks)),
                     1);
    assert_non_null(strstr(blocks, "Usage:      sign\n"));
    assert_non_null(strstr(blocks, "Access:     sensitive, always sensitive, never extractable, "
                                   "local\n"));
    assert_non_null(strstr(blocks, label));
    assert_int_equal(objects_with_id(listing, "Public Key Object", idhex, blocks, sizeof(blocks)),
                     1);
    assert_non_null(strstr(blocks, "Usage:      verify\n"));
    free(listing);

    if (prov_key_type_is_ec(type)) {
        check_ecdsa(dev, key);
    } else {
        check_rsa(dev, key);
    }

    /* Lookups: by key.uri (round trip), by id, by public key. */
    prov_error_clear();
    assert_int_equal(dev->ops->find_key(dev, key->uri, &found), 0);
    assert_int_equal(EVP_PKEY_eq(found->pub, key->pub), 1);
    assert_string_equal(found->uri, key->uri);
    assert_int_equal(found->type, type);
    dev->ops->free_key(dev, found);
    found = NULL;
    assert_int_equal(dev->ops->find_key_by_id(dev, id, sizeof(id), &found), 0);
    assert_int_equal(EVP_PKEY_eq(found->pub, key->pub), 1);
    assert_string_equal(found->label, label);
    dev->ops->free_key(dev, found);
    found = NULL;
    pub = copy_public(key->pub);
    assert_int_equal(dev->ops->find_key_by_public(dev, pub, &found), 0);
    assert_memory_equal(found->id, id, sizeof(id));
    dev->ops->free_key(dev, found);
    found = NULL;

    /* Certificates: stored under the key's id and label, replaced by the next one. */
    cert = make_cert("cert-one", 1001, key->pub);
    assert_int_equal(dev->ops->store_certificate(dev, key, cert), 0);
    X509_free(cert);
    cert = make_cert("cert-two", 1002, key->pub);
    assert_int_equal(dev->ops->store_certificate(dev, key, cert), 0);
    X509_free(cert);
    listing = list_objects();
    assert_int_equal(objects_with_id(listing, "Certificate Object", idhex, blocks, sizeof(blocks)),
                     1);
    assert_non_null(strstr(blocks, "cert-two"));
    assert_null(strstr(blocks, "cert-one"));
    assert_non_null(strstr(blocks, label));
    free(listing);

    /* Delete: nothing with this id is left; lookups say not found. */
    assert_int_equal(dev->ops->delete_key(dev, key), 0);
    dev->ops->free_key(dev, key);
    listing = list_objects();
    assert_null(strstr(listing, idhex));
    free(listing);
    prov_error_clear();
    assert_int_equal(dev->ops->find_key_by_id(dev, id, sizeof(id), &found), PROV_ERR_NOT_FOUND);
    assert_null(found);
    prov_error_clear();
    assert_int_equal(dev->ops->find_key_by_public(dev, pub, &found), PROV_ERR_NOT_FOUND);
    EVP_PKEY_free(pub);
    prov_pkcs11_ops.close(dev);
}

static void test_key_ec_p256(void **state)
{
    key_roundtrip(PROV_KEY_EC_P256, 1);
}

static void test_key_ec_p384(void **state)
{
    key_roundtrip(PROV_KEY_EC_P384, 2);
}

static void test_key_rsa_2048(void **state)
{
    key_roundtrip(PROV_KEY_RSA_2048, 3);
}

/* CA-style URIs name the key by object= only; two keys with that label must not be guessed. */
static void test_find_by_label(void **state)
{
    const unsigned char id1[] = {0xca, 0x01}, id2[] = {0xca, 0x02};
    struct prov_keygen_params kp = {
        .type = PROV_KEY_EC_P256, .label = "intermediate", .id = id1, .id_len = sizeof(id1)};
    struct prov_device *dev = open_login("pkcs11:token=keys-0001");
    struct prov_key *k1 = NULL, *k2 = NULL, *found = NULL;

    assert_int_equal(dev->ops->generate_key(dev, &kp, &k1), 0);
    assert_int_equal(dev->ops->find_key(dev, "pkcs11:token=keys-0001;object=intermediate", &found),
                     0);
    assert_memory_equal(found->id, id1, sizeof(id1));
    dev->ops->free_key(dev, found);
    found = NULL;

    kp.id = id2;
    assert_int_equal(dev->ops->generate_key(dev, &kp, &k2), 0);
    prov_error_clear();
    assert_int_equal(dev->ops->find_key(dev, "pkcs11:object=intermediate", &found),
                     PROV_ERR_CONFIG);
    assert_null(found);
    assert_int_equal(dev->ops->find_key(dev, "pkcs11:object=intermediate;id=%CA%02", &found), 0);
    assert_memory_equal(found->id, id2, sizeof(id2));
    dev->ops->free_key(dev, found);
    found = NULL;

    prov_error_clear();
    assert_int_equal(dev->ops->find_key(dev, "pkcs11:object=nothing-here", &found),
                     PROV_ERR_NOT_FOUND);
    prov_error_clear();
    assert_int_equal(dev->ops->find_key(dev, "pkcs11:token=dev-1;object=intermediate", &found),
                     PROV_ERR_NOT_FOUND);
    prov_error_clear();
    assert_int_equal(dev->ops->find_key(dev, "pkcs11:token=keys-0001", &found), PROV_ERR_CONFIG);
    prov_error_clear();
    assert_int_equal(dev->ops->find_key(dev, "pkcs11:object=intermediate;type=cert", &found),
                     PROV_ERR_CONFIG);
    assert_null(found);

    assert_int_equal(dev->ops->delete_key(dev, k1), 0);
    assert_int_equal(dev->ops->delete_key(dev, k2), 0);
    dev->ops->free_key(dev, k1);
    dev->ops->free_key(dev, k2);
    prov_pkcs11_ops.close(dev);
}

/* A device URI naming its module: key URIs carry it, and find_key accepts them back. */
static void test_module_path_in_uri(void **state)
{
    const unsigned char id[] = {0x4d, 0x50};
    struct prov_keygen_params kp = {
        .type = PROV_KEY_EC_P256, .label = "mp", .id = id, .id_len = sizeof(id)};
    struct prov_device_params params = {.module_path = "/nonexistent/ignored.so"};
    struct prov_device *dev = NULL;
    struct prov_key *key = NULL, *found = NULL;
    char uri[512];

    snprintf(uri, sizeof(uri), "pkcs11:token=keys-0001?module-path=%s", module);
    prov_error_clear();
    assert_int_equal(prov_pkcs11_ops.open(uri, &params, &dev), 0);
    assert_int_equal(dev->ops->login(dev, pin), 0);
    assert_int_equal(dev->ops->generate_key(dev, &kp, &key), 0);
    assert_non_null(strstr(key->uri, "?module-path=%2F"));
    assert_int_equal(dev->ops->find_key(dev, key->uri, &found), 0);
    assert_int_equal(EVP_PKEY_eq(found->pub, key->pub), 1);
    assert_int_equal(dev->ops->delete_key(dev, found), 0);
    dev->ops->free_key(dev, found);
    dev->ops->free_key(dev, key);
    prov_pkcs11_ops.close(dev);
}

/* A key whose public key object is gone is still found through its certificate. */
static void test_public_from_certificate(void **state)
{
    const unsigned char id[] = {0xce, 0x01};
    struct prov_keygen_params kp = {
        .type = PROV_KEY_EC_P256, .label = "certonly", .id = id, .id_len = sizeof(id)};
    struct prov_device *dev = open_login("pkcs11:token=keys-0001");
    struct prov_key *key = NULL, *found = NULL;
    char cmd[512], *listing, blocks[4096];
    X509 *cert;

    assert_int_equal(dev->ops->generate_key(dev, &kp, &key), 0);
    cert = make_cert("certonly", 7, key->pub);
    assert_int_equal(dev->ops->store_certificate(dev, key, cert), 0);
    X509_free(cert);
    snprintf(cmd, sizeof(cmd),
             "pkcs11-tool --module '%s' --token-label keys-0001 --login --pin '%s' "
             "--delete-object --type pubkey --id ce01 >/dev/null 2>&1",
             module, pin_text);
    assert_int_equal(system(cmd), 0);
    listing = list_objects();
    assert_int_equal(objects_with_id(listing, "Public Key Object", "ce01", blocks, sizeof(blocks)),
                     0);
    free(listing);

    prov_error_clear();
    assert_int_equal(dev->ops->find_key_by_id(dev, id, sizeof(id), &found), 0);
    assert_int_equal(EVP_PKEY_eq(found->pub, key->pub), 1);
    assert_int_equal(dev->ops->delete_key(dev, found), 0);
    dev->ops->free_key(dev, found);
    dev->ops->free_key(dev, key);
    listing = list_objects();
    assert_null(strstr(listing, "ce01"));
    free(listing);
    prov_pkcs11_ops.close(dev);
}

/*
 * A kill inside C_GenerateKeyPair or delete_key can leave the public key (and certificate)
 * without the private key: find_key_by_id removes such leftovers, so that "not found" means
 * nothing with the id is left (the batch's resume relies on it).
 */
static void test_half_key_removed(void **state)
{
    const unsigned char id[] = {0x4a, 0x1f};
    struct prov_keygen_params kp = {
        .type = PROV_KEY_EC_P256, .label = "half", .id = id, .id_len = sizeof(id)};
    struct prov_device *dev = open_login("pkcs11:token=keys-0001");
    struct prov_key *key = NULL, *found = NULL;
    char cmd[512], *listing, blocks[4096];
    X509 *cert;

    assert_int_equal(dev->ops->generate_key(dev, &kp, &key), 0);
    cert = make_cert("half", 9, key->pub);
    assert_int_equal(dev->ops->store_certificate(dev, key, cert), 0);
    X509_free(cert);
    snprintf(cmd, sizeof(cmd),
             "pkcs11-tool --module '%s' --token-label keys-0001 --login --pin '%s' "
             "--delete-object --type privkey --id 4a1f >/dev/null 2>&1",
             module, pin_text);
    assert_int_equal(system(cmd), 0);
    listing = list_objects();
    assert_int_equal(objects_with_id(listing, "Public Key Object", "4a1f", blocks, sizeof(blocks)),
                     1);
    free(listing);

    prov_error_clear();
    assert_int_equal(dev->ops->find_key_by_id(dev, id, sizeof(id), &found), PROV_ERR_NOT_FOUND);
    assert_null(found);
    listing = list_objects();
    assert_null(strstr(listing, "4a1f"));
    free(listing);
    dev->ops->free_key(dev, key);
    prov_pkcs11_ops.close(dev);
}

static void test_read_only_session(void **state)
{
    const unsigned char id[] = {0x52, 0x4f};
    struct prov_keygen_params kp = {
        .type = PROV_KEY_EC_P256, .label = "ro", .id = id, .id_len = sizeof(id)};
    struct prov_device *dev = NULL;
    struct prov_key *key = NULL;

    assert_int_equal(open_dev("pkcs11:token=keys-0001", true, &dev), 0);
    assert_int_equal(dev->ops->login(dev, pin), 0);
    prov_error_clear();
    assert_true(dev->ops->generate_key(dev, &kp, &key) < 0);
    assert_message_has("token keys-0001: C_GenerateKeyPair: CKR_SESSION_READ_ONLY (0x000000b5)");
    assert_null(key);
    prov_pkcs11_ops.close(dev);
}

struct seen {
    int n;
    int n_with_id;  /* objects with the test's id, by kind below */
    int n_priv;
    int n_pub;
    int n_cert;
    int n_no_id;    /* data objects without a CKA_ID labelled "no-id" */
    bool is_label_ok;
};

static int see_object(void *ctx, const struct prov_device_object *o)
{
    static const unsigned char id[] = {0x6c, 0x69};
    struct seen *s = ctx;

    s->n++;
    if (o->id != NULL && o->id_len == sizeof(id) && memcmp(o->id, id, sizeof(id)) == 0) {
        s->n_with_id++;
        s->n_priv += strcmp(o->kind, "private-key") == 0;
        s->n_pub += strcmp(o->kind, "public-key") == 0;
        s->n_cert += strcmp(o->kind, "certificate") == 0;
        s->is_label_ok = o->label != NULL && strcmp(o->label, "listed") == 0;
    }
    if (o->id == NULL && o->label != NULL && strcmp(o->label, "no-id") == 0) {
        s->n_no_id += strcmp(o->kind, "data") == 0;
    }
    return 0;
}

static int stop_at_first(void *ctx, const struct prov_device_object *o)
{
    (*(int *)ctx)++;
    return prov_fail(PROV_ERR_INTERNAL, "stop");
}

/*
 * list_objects (batch status --tokens, check): every object, with its class, CKA_ID and label;
 * an object without a CKA_ID is reported without one; private objects only after a login;
 * a callback's error stops the walk and is returned.
 */
static void test_list_objects(void **state)
{
    const unsigned char id[] = {0x6c, 0x69};
    struct prov_keygen_params kp = {
        .type = PROV_KEY_EC_P256, .label = "listed", .id = id, .id_len = sizeof(id)};
    struct prov_device *dev = open_login("pkcs11:token=keys-0001");
    struct prov_device *ro = NULL;
    struct prov_key *key = NULL;
    struct seen s = {0};
    char cmd[640];
    X509 *cert;
    int calls = 0;

    assert_int_equal(dev->ops->generate_key(dev, &kp, &key), 0);
    cert = make_cert("listed", 11, key->pub);
    assert_int_equal(dev->ops->store_certificate(dev, key, cert), 0);
    X509_free(cert);
    snprintf(cmd, sizeof(cmd),
             "printf x >/tmp/prov-no-id.$$ && pkcs11-tool --module '%s' --token-label keys-0001 "
             "--login --pin '%s' --write-object /tmp/prov-no-id.$$ --type data --label no-id "
             ">/dev/null 2>&1; r=$?; rm -f /tmp/prov-no-id.$$; exit $r",
             module, pin_text);
    assert_int_equal(system(cmd), 0);
    prov_pkcs11_ops.close(dev);

    dev = open_login("pkcs11:token=keys-0001");
    assert_non_null(dev->ops->list_objects);
    assert_int_equal(dev->ops->list_objects(dev, see_object, &s), 0);
    assert_int_equal(s.n_with_id, 3);
    assert_int_equal(s.n_priv, 1);
    assert_int_equal(s.n_pub, 1);
    assert_int_equal(s.n_cert, 1);
    assert_true(s.is_label_ok);
    assert_int_equal(s.n_no_id, 1);
    prov_error_clear();
    assert_int_equal(dev->ops->list_objects(dev, stop_at_first, &calls), PROV_ERR_INTERNAL);
    assert_int_equal(calls, 1);
    dev->ops->free_key(dev, key);
    prov_pkcs11_ops.close(dev);

    /* without a login the private key is not seen: only the public objects */
    prov_pkcs11_unload_all();
    memset(&s, 0, sizeof(s));
    assert_int_equal(open_dev("pkcs11:token=keys-0001", true, &ro), 0);
    assert_int_equal(ro->ops->list_objects(ro, see_object, &s), 0);
    assert_int_equal(s.n_priv, 0);
    assert_int_equal(s.n_pub, 1);
    assert_int_equal(s.n_cert, 1);
    prov_pkcs11_ops.close(ro);
}

/*
 * A key made outside the tool by pkcs11-make-key (make_key.c) with exactly one flaw, found by
 * id: the props the backend reads back, and the refusal of the core's protection check
 * (prov_check_key_protection, used for device keys and the CA key). "none" is the control: the
 * same key without a flaw passes, so a refusal is the flaw's doing.
 */
static void check_made_key(const char *flaw, const char *idhex, const unsigned char *id,
                           size_t id_len, struct prov_key_props *props)
{
    char cmd[1024], pin_path[512];
    struct prov_device *dev = open_login("pkcs11:token=keys-0001");
    struct prov_key *key = NULL;
    const char *tool = getenv("PROV_MAKE_KEY");
    const char *work = getenv("PROV_TEST_WORKDIR");
    FILE *f;

    assert_non_null(tool);
    assert_non_null(work);
    snprintf(pin_path, sizeof(pin_path), "%s/user.pin", work);
    f = fopen(pin_path, "w");
    assert_non_null(f);
    fputs(pin_text, f);
    fclose(f);
    snprintf(cmd, sizeof(cmd), "'%s' '%s' keys-0001 '%s' %s made-%s %s", tool, module, pin_path,
             idhex, flaw, strcmp(flaw, "none") == 0 ? "" : flaw);
    assert_int_equal(system(cmd), 0);

    prov_error_clear();
    assert_int_equal(dev->ops->find_key_by_id(dev, id, id_len, &key), 0);
    assert_int_equal(dev->ops->key_props(dev, key, props), 0);
    prov_error_clear();
    if (strcmp(flaw, "none") == 0) {
        assert_int_equal(prov_check_key_protection(key, "made key"), 0);
    } else {
        assert_int_equal(prov_check_key_protection(key, "made key"), PROV_ERR_POLICY);
    }
    assert_int_equal(dev->ops->delete_key(dev, key), 0);
    dev->ops->free_key(dev, key);
    prov_pkcs11_ops.close(dev);
}

static void test_made_key_without_flaw_accepted(void **state)
{
    const unsigned char id[] = {0x6d, 0x00};
    struct prov_key_props props;

    check_made_key("none", "6d00", id, sizeof(id), &props);
    assert_true(props.is_never_extractable);
    assert_false(props.can_decrypt);
}

/* doc/keys.md: signing only. CKA_DERIVE alone (decrypt and unwrap false) must be refused. */
static void test_key_allowing_derive_refused(void **state)
{
    const unsigned char id[] = {0x6d, 0x01};
    struct prov_key_props props;

    check_made_key("derive", "6d01", id, sizeof(id), &props);
    assert_true(props.can_decrypt);
    assert_true(props.is_never_extractable);
    assert_true(props.is_local);
    assert_message_has("allows decrypt, unwrap or derive");
}

/*
 * Not extractable now, but it was: CKA_EXTRACTABLE false, CKA_NEVER_EXTRACTABLE false, and
 * CKA_LOCAL true (it was generated on the token). The key may have been copied out while it
 * was extractable, so it is refused; only CKA_NEVER_EXTRACTABLE shows it.
 */
static void test_key_once_extractable_refused(void **state)
{
    const unsigned char id[] = {0x6d, 0x02};
    struct prov_key_props props;

    check_made_key("was-extractable", "6d02", id, sizeof(id), &props);
    assert_false(props.is_extractable);
    assert_false(props.is_never_extractable);
    assert_true(props.is_local);
    assert_true(props.is_sensitive);
    assert_false(props.can_decrypt);
    assert_message_has("CKA_NEVER_EXTRACTABLE is false");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_handles),
        cmocka_unit_test(test_names_same_device),
        cmocka_unit_test(test_open_by_label_and_serial),
        cmocka_unit_test(test_exact_match),
        cmocka_unit_test(test_not_found_and_ambiguous),
        cmocka_unit_test(test_bad_uri_and_module),
        cmocka_unit_test(test_login),
        cmocka_unit_test(test_key_ec_p256),
        cmocka_unit_test(test_key_ec_p384),
        cmocka_unit_test(test_key_rsa_2048),
        cmocka_unit_test(test_find_by_label),
        cmocka_unit_test(test_module_path_in_uri),
        cmocka_unit_test(test_public_from_certificate),
        cmocka_unit_test(test_half_key_removed),
        cmocka_unit_test(test_read_only_session),
        cmocka_unit_test(test_list_objects),
        cmocka_unit_test(test_made_key_without_flaw_accepted),
        cmocka_unit_test(test_key_allowing_derive_refused),
        cmocka_unit_test(test_key_once_extractable_refused),
        cmocka_unit_test(test_token_relabelled_after_lookup),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
