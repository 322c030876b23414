/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Device storage (doc/storage.md): every file with the right content and mode; a failure part-way
 * (a file size limit hit after some temp files were written, a directory where a file must
 * go, an unreadable server CA) leaves the previous identity untouched and no temp files;
 * identity.json parses back; a file whose bytes change between write and sync is caught by the
 * read-back before anything is renamed; prov_cert_facts values; atomic single-file writes,
 * and files written as a stream.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include <json-c/json.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "cert_der.h"
#include "error.h"
#include "hex.h"
#include "storage.h"
#include "test_pki.h"

#define KEY_URI "pkcs11:token=dev-0001;object=device;id=%01"

/* Every fsync the code under test makes, by inode (linked with -Wl,--wrap=fsync). */
int __real_fsync(int fd);
int __wrap_fsync(int fd);
static ino_t synced[4096];
static size_t n_synced;
/* When set, the temp file whose name contains this gets its first byte changed before sync. */
static const char *corrupt_temp;

int __wrap_fsync(int fd)
{
    struct stat st;

    if (fstat(fd, &st) == 0 && n_synced < sizeof(synced) / sizeof(synced[0])) {
        synced[n_synced++] = st.st_ino;
    }
    if (corrupt_temp != NULL) {
        char link[64];
        char name[PATH_MAX];
        ssize_t n;

        snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
        n = readlink(link, name, sizeof(name) - 1);
        name[n > 0 ? n : 0] = '\0';
        if (strstr(name, corrupt_temp) != NULL) {
            assert_int_equal(pwrite(fd, "X", 1, 0), 1);
        }
    }
    return __real_fsync(fd);
}

/* When > 0, the n-th rename from now on fails with EIO (linked with -Wl,--wrap=rename). */
int __real_rename(const char *from, const char *to);
int __wrap_rename(const char *from, const char *to);
static int fail_rename_in;
/* n_synced when the last rename succeeded: the syncs after it are synced[synced_at_rename..]. */
static size_t synced_at_rename;

int __wrap_rename(const char *from, const char *to)
{
    int r;

    if (fail_rename_in > 0 && --fail_rename_in == 0) {
        errno = EIO;
        return -1;
    }
    r = __real_rename(from, to);
    if (r == 0) {
        synced_at_rename = n_synced;
    }
    return r;
}

static bool synced_between(const char *path, size_t from, size_t to)
{
    struct stat st;

    assert_int_equal(stat(path, &st), 0);
    for (size_t i = from; i < to && i < n_synced; i++) {
        if (synced[i] == st.st_ino) {
            return true;
        }
    }
    return false;
}

static bool was_synced(const char *path)
{
    return synced_between(path, 0, SIZE_MAX);
}

/* Synced after the last successful rename: what makes a renamed entry survive a power cut. */
static bool synced_after_rename(const char *path)
{
    return synced_between(path, synced_at_rename, SIZE_MAX);
}

static bool synced_before_rename(const char *path)
{
    return synced_between(path, 0, synced_at_rename);
}

struct fixture {
    char dir[64];
    char server_ca[96];
    EVP_PKEY *root_key;
    EVP_PKEY *inter_key;
    EVP_PKEY *leaf_key;
    X509 *root;
    X509 *inter;
    X509 *leaf;
    STACK_OF(X509) *chain; /* inter, root */
};

static X509 *make_cert(const char *cn, long serial, EVP_PKEY *key, X509 *issuer,
                       EVP_PKEY *issuer_key, bool is_ca)
{
    static const char *const ca_exts[] = {"basicConstraints", "critical,CA:true", NULL};
    static const char *const leaf_exts[] = {"basicConstraints", "critical,CA:false", NULL};

    return test_pki_cert(&(struct test_cert_spec){
        .org = "Example",
        .cn = cn,
        .serial = serial,
        .key = key,
        .issuer = issuer,
        .issuer_key = issuer_key,
        .not_before_text = "20260101000000Z",
        .not_after_text = "20361231235959Z",
        .exts = is_ca ? ca_exts : leaf_exts,
    });
}

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof(*fx));

    strcpy(fx->dir, "/tmp/test_storage.XXXXXX");
    if (mkdtemp(fx->dir) == NULL) {
        return -1;
    }
    fx->root_key = EVP_EC_gen("P-256");
    fx->inter_key = EVP_EC_gen("P-256");
    fx->leaf_key = EVP_EC_gen("P-256");
    fx->root = make_cert("Test Root", 1, fx->root_key, NULL, fx->root_key, true);
    fx->inter = make_cert("Test Intermediate", 2, fx->inter_key, fx->root, fx->root_key, true);
    fx->leaf = make_cert("SN-0001", 0x0102abcdefL, fx->leaf_key, fx->inter, fx->inter_key, false);
    fx->chain = sk_X509_new_null();
    sk_X509_push(fx->chain, fx->inter);
    sk_X509_push(fx->chain, fx->root);
    snprintf(fx->server_ca, sizeof(fx->server_ca), "%s/server-ca-src.pem", fx->dir);
    test_pki_write_pem(fx->server_ca, fx->root, fx->inter);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    char cmd[256];
    int rc;

    snprintf(cmd, sizeof(cmd), "chmod -R u+w '%s'; rm -rf '%s'", fx->dir, fx->dir);
    rc = system(cmd);
    sk_X509_free(fx->chain);
    X509_free(fx->root);
    X509_free(fx->inter);
    X509_free(fx->leaf);
    EVP_PKEY_free(fx->root_key);
    EVP_PKEY_free(fx->inter_key);
    EVP_PKEY_free(fx->leaf_key);
    free(fx);
    return rc == 0 ? 0 : -1;
}

static struct prov_identity identity(struct fixture *fx)
{
    struct prov_identity id = {
        .serial = "SN-0001",
        .cert = fx->leaf,
        .chain = fx->chain,
        .server_ca_path = fx->server_ca,
        .key_uri = KEY_URI,
        .key_type = PROV_KEY_EC_P256,
        .backend = "pkcs11",
        .profile = "device",
        .lot = NULL,
    };
    return id;
}

/* The whole file; *len set. */
static char *slurp(const char *dir, const char *name, size_t *len)
{
    char path[256];
    FILE *f;
    char *buf = malloc(65536);
    size_t n;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "rb");
    if (f == NULL) {
        fail_msg("%s: cannot open", path);
    }
    n = fread(buf, 1, 65535, f);
    fclose(f);
    buf[n] = '\0';
    if (len != NULL) {
        *len = n;
    }
    return buf;
}

static char *pem_of(X509 *a, X509 *b)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *data;
    long n;
    char *out;

    PEM_write_bio_X509(bio, a);
    if (b != NULL) {
        PEM_write_bio_X509(bio, b);
    }
    n = BIO_get_mem_data(bio, &data);
    out = strndup(data, (size_t)n);
    BIO_free(bio);
    return out;
}

static void assert_file_equals(const char *dir, const char *name, const char *want)
{
    char *got = slurp(dir, name, NULL);

    assert_string_equal(got, want);
    free(got);
}

static int count_temp_files(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;

    if (d == NULL) {
        return 0;
    }
    while ((e = readdir(d)) != NULL) {
        n += strstr(e->d_name, ".tmp.") != NULL;
    }
    closedir(d);
    return n;
}

static mode_t mode_of(const char *dir, const char *name)
{
    char path[256];
    struct stat st;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    assert_int_equal(stat(path, &st), 0);
    return st.st_mode & 07777;
}

static const char *const all_files[] = {"client.crt", "client.der", "fullchain.pem", "chain.pem",
                                        "server-ca.pem", "key.uri", "identity.json"};

static void test_write_all_files(void **state)
{
    struct fixture *fx = *state;
    struct prov_identity id = identity(fx);
    char dir[128];
    char *want;
    char *got;
    size_t len;
    unsigned char *der = NULL;
    int der_len;

    snprintf(dir, sizeof(dir), "%s/devices/nested/SN-0001", fx->dir);
    assert_false(prov_storage_has_identity(dir));
    prov_error_clear();
    if (prov_storage_write(dir, &id) != 0) {
        fail_msg("%s", prov_error_message());
    }
    assert_true(prov_storage_has_identity(dir));
    assert_int_equal(mode_of(fx->dir, "devices/nested/SN-0001"), 0755);
    for (size_t i = 0; i < sizeof(all_files) / sizeof(all_files[0]); i++) {
        assert_int_equal(mode_of(dir, all_files[i]), 0644);
    }
    assert_int_equal(count_temp_files(dir), 0);

    want = pem_of(fx->leaf, NULL);
    assert_file_equals(dir, "client.crt", want);
    free(want);
    /* what the client presents: no root */
    want = pem_of(fx->leaf, fx->inter);
    assert_file_equals(dir, "fullchain.pem", want);
    free(want);
    want = pem_of(fx->inter, fx->root);
    assert_file_equals(dir, "chain.pem", want);
    free(want);
    /* verbatim copy of the source file (root, then intermediate there) */
    want = pem_of(fx->root, fx->inter);
    assert_file_equals(dir, "server-ca.pem", want);
    free(want);
    assert_file_equals(dir, "key.uri", KEY_URI "\n");

    der_len = i2d_X509(fx->leaf, &der);
    got = slurp(dir, "client.der", &len);
    assert_int_equal(len, (size_t)der_len);
    assert_memory_equal(got, der, len);
    free(got);
    OPENSSL_free(der);
}

static const char *json_str(json_object *obj, const char *key)
{
    json_object *v = NULL;

    assert_true(json_object_object_get_ex(obj, key, &v));
    return v ? json_object_get_string(v) : NULL;
}

/*
 * A storage directory created on the way is durable: the directory that received each new
 * entry is synced (else a power cut after "stored" was journaled could lose the directory
 * with every file in it), and so is the storage directory after the renames.
 */
static void test_new_directories_synced(void **state)
{
    struct fixture *fx = *state;
    struct prov_identity id = identity(fx);
    char dir[128];
    char path[160];

    snprintf(dir, sizeof(dir), "%s/sync/lot-7/SN-0001", fx->dir);
    n_synced = 0;
    prov_error_clear();
    if (prov_storage_write(dir, &id) != 0) {
        fail_msg("%s", prov_error_message());
    }
    assert_true(was_synced(fx->dir));
    snprintf(path, sizeof(path), "%s/sync", fx->dir);
    assert_true(was_synced(path));
    snprintf(path, sizeof(path), "%s/sync/lot-7", fx->dir);
    assert_true(was_synced(path));
    assert_true(was_synced(dir));
    snprintf(path, sizeof(path), "%s/client.crt", dir);
    assert_true(was_synced(path));

    /* The next device of the lot: only its own directory is new, and lot-7 gains it. */
    snprintf(dir, sizeof(dir), "%s/sync/lot-7/SN-0002", fx->dir);
    n_synced = 0;
    assert_int_equal(prov_storage_write(dir, &id), 0);
    snprintf(path, sizeof(path), "%s/sync/lot-7", fx->dir);
    assert_true(was_synced(path));
    snprintf(path, sizeof(path), "%s/sync", fx->dir);
    assert_false(was_synced(path));
    /* Written again: no directory is new, lot-7 has nothing to sync. */
    n_synced = 0;
    assert_int_equal(prov_storage_write(dir, &id), 0);
    snprintf(path, sizeof(path), "%s/sync/lot-7", fx->dir);
    assert_false(was_synced(path));
    assert_true(was_synced(dir));
}

static void test_identity_json(void **state)
{
    struct fixture *fx = *state;
    struct prov_identity id = identity(fx);
    struct prov_cert_facts facts;
    json_object *obj;
    json_object *v = NULL;
    char dir[128];
    char *text;
    size_t len;

    snprintf(dir, sizeof(dir), "%s/json", fx->dir);
    assert_int_equal(prov_storage_write(dir, &id), 0);
    assert_int_equal(prov_cert_facts(fx->leaf, &facts), 0);
    text = slurp(dir, "identity.json", &len);
    assert_true(len > 2 && text[len - 1] == '\n' && text[len - 2] != '\n');
    obj = json_tokener_parse(text);
    assert_non_null(obj);
    assert_string_equal(json_str(obj, "serial"), "SN-0001");
    assert_string_equal(json_str(obj, "cert_serial"), "0102abcdef");
    assert_string_equal(json_str(obj, "sha256"), facts.sha256_hex);
    assert_string_equal(json_str(obj, "not_before"), "2026-01-01T00:00:00Z");
    assert_string_equal(json_str(obj, "not_after"), "2036-12-31T23:59:59Z");
    assert_string_equal(json_str(obj, "key_type"), "ec-p256");
    assert_string_equal(json_str(obj, "backend"), "pkcs11");
    assert_string_equal(json_str(obj, "profile"), "device");
    assert_string_equal(json_str(obj, "issuer"), "CN=Test Intermediate,O=Example");
    assert_string_equal(json_str(obj, "subject"), "CN=SN-0001,O=Example");
    assert_string_equal(json_str(obj, "key_uri"), KEY_URI);
    assert_true(json_object_object_get_ex(obj, "lot", &v));
    assert_null(v);
    json_object_put(obj);
    free(text);

    id.lot = "lot-7";
    assert_int_equal(prov_storage_write(dir, &id), 0);
    text = slurp(dir, "identity.json", NULL);
    obj = json_tokener_parse(text);
    assert_string_equal(json_str(obj, "lot"), "lot-7");
    json_object_put(obj);
    free(text);
}

static void test_read_back(void **state)
{
    struct fixture *fx = *state;
    struct prov_identity id = identity(fx);
    struct prov_stored_identity *s = NULL;
    char dir[128];

    snprintf(dir, sizeof(dir), "%s/readback", fx->dir);
    assert_int_equal(prov_storage_write(dir, &id), 0);
    prov_error_clear();
    assert_int_equal(prov_storage_read(dir, &s), 0);
    assert_int_equal(X509_cmp(s->cert, fx->leaf), 0);
    assert_int_equal(sk_X509_num(s->fullchain), 2);
    assert_int_equal(sk_X509_num(s->chain), 2);
    assert_int_equal(X509_cmp(sk_X509_value(s->chain, 1), fx->root), 0);
    assert_int_equal(sk_X509_num(s->server_ca), 2);
    assert_string_equal(s->key_uri, KEY_URI);
    assert_string_equal(s->serial, "SN-0001");
    assert_string_equal(s->backend, "pkcs11");
    prov_stored_identity_free(s);
    prov_stored_identity_free(NULL);
}

static void expect_read_error(const char *dir, const char *needle)
{
    struct prov_stored_identity *s = (struct prov_stored_identity *)1;

    prov_error_clear();
    assert_int_equal(prov_storage_read(dir, &s), PROV_ERR_INPUT);
    assert_null(s);
    if (strstr(prov_error_message(), needle) == NULL) {
        fail_msg("\"%s\" lacks \"%s\"", prov_error_message(), needle);
    }
}

static void put_file(const char *dir, const char *name, const char *text)
{
    char path[256];

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    assert_int_equal(prov_atomic_write_file(path, text, strlen(text), 0644), 0);
}

static void test_read_errors(void **state)
{
    struct fixture *fx = *state;
    struct prov_identity id = identity(fx);
    char dir[128];

    snprintf(dir, sizeof(dir), "%s/broken", fx->dir);
    expect_read_error(dir, "client.crt");
    assert_int_equal(prov_storage_write(dir, &id), 0);
    put_file(dir, "identity.json", "{\"serial\": 5}\n");
    expect_read_error(dir, "identity.json");
    put_file(dir, "identity.json", "not json");
    expect_read_error(dir, "identity.json");
    put_file(dir, "key.uri", "\n");
    expect_read_error(dir, "key.uri");
    put_file(dir, "chain.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
    expect_read_error(dir, "chain.pem");
    put_file(dir, "fullchain.pem", "");
    expect_read_error(dir, "fullchain.pem");
}

/* Byte copies of every file, to prove a failed write changed nothing. */
static void snapshot(const char *dir, char *copies[7])
{
    for (size_t i = 0; i < 7; i++) {
        copies[i] = slurp(dir, all_files[i], NULL);
    }
}

static void assert_unchanged(const char *dir, char *copies[7])
{
    for (size_t i = 0; i < 7; i++) {
        assert_file_equals(dir, all_files[i], copies[i]);
        free(copies[i]);
    }
    assert_int_equal(count_temp_files(dir), 0);
}

/*
 * A refused write: DIR (FX->dir/NAME) holds an identity written before, FRESH (NAME-fresh)
 * none. refused_before writes DIR and snapshots it; refused_after asserts that DIR is
 * unchanged and FRESH holds no identity and no temp file.
 */
struct refused {
    char dir[128];
    char fresh[128];
    char *copies[7];
};

static void refused_before(struct fixture *fx, const char *name, const struct prov_identity *id,
                           struct refused *t)
{
    snprintf(t->dir, sizeof(t->dir), "%s/%s", fx->dir, name);
    snprintf(t->fresh, sizeof(t->fresh), "%s/%s-fresh", fx->dir, name);
    assert_int_equal(prov_storage_write(t->dir, id), 0);
    snapshot(t->dir, t->copies);
}

static void refused_after(struct refused *t)
{
    assert_unchanged(t->dir, t->copies);
    assert_false(prov_storage_has_identity(t->fresh));
    assert_int_equal(count_temp_files(t->fresh), 0);
}

/* A file size limit makes a later temp file fail after earlier ones were written. */
static void test_failure_midway_keeps_previous(void **state)
{
    struct fixture *fx = *state;
    struct prov_identity id = identity(fx);
    struct rlimit saved;
    struct rlimit small = {.rlim_cur = 1000, .rlim_max = RLIM_INFINITY};
    struct refused t;
    int r;

    refused_before(fx, "midway", &id, &t);

    id.serial = "SN-0002";
    id.key_uri = "pkcs11:token=other";
    id.chain = NULL;
    {
        STACK_OF(X509) *chain = sk_X509_new_null();

        sk_X509_push(chain, fx->inter);
        id.chain = chain;
        assert_int_equal(getrlimit(RLIMIT_FSIZE, &saved), 0);
        small.rlim_max = saved.rlim_max;
        signal(SIGXFSZ, SIG_IGN);
        assert_int_equal(setrlimit(RLIMIT_FSIZE, &small), 0);
        prov_error_clear();
        r = prov_storage_write(t.dir, &id);
        assert_int_equal(prov_error_code(), PROV_ERR_STORAGE);
        assert_non_null(strstr(prov_error_message(), "fullchain.pem"));
        prov_error_clear();
        assert_int_equal(prov_storage_write(t.fresh, &id), PROV_ERR_STORAGE);
        assert_int_equal(setrlimit(RLIMIT_FSIZE, &saved), 0);
        signal(SIGXFSZ, SIG_DFL);
        sk_X509_free(chain);
    }
    assert_int_equal(r, PROV_ERR_STORAGE);
    refused_after(&t);
}

/*
 * Replacing an identity, a rename fails after key.uri and four other files are in place (as a
 * stop between the renames would): the directory must not hold the old client.crt beside the
 * new key.uri. It holds no identity (client.crt gone), and the next write makes it whole.
 */
static void test_replacement_stopped_between_renames(void **state)
{
    struct fixture *fx = *state;
    struct prov_identity id = identity(fx);
    char dir[160];
    char *uri;

    snprintf(dir, sizeof(dir), "%s/replaced", fx->dir);
    assert_int_equal(prov_storage_write(dir, &id), 0);
    id.serial = "SN-0002";
    id.key_uri = "pkcs11:token=other";
    fail_rename_in = 6; /* der, fullchain, chain, server-ca, key.uri renamed; identity.json fails */
    prov_error_clear();
    assert_int_equal(prov_storage_write(dir, &id), PROV_ERR_STORAGE);
    fail_rename_in = 0;
    assert_non_null(strstr(prov_error_message(), "identity.json"));
    uri = slurp(dir, "key.uri", NULL);
    assert_non_null(strstr(uri, "pkcs11:token=other"));
    free(uri);
    assert_false(prov_storage_has_identity(dir));
    prov_error_clear();
    assert_int_equal(prov_storage_write(dir, &id), 0);
    assert_true(prov_storage_has_identity(dir));
    assert_int_equal(count_temp_files(dir), 0);
}

/*
 * What is on disk is compared with what was meant, byte for byte, before any file is renamed:
 * a change between write and sync fails the write, names the file, keeps the previous identity
 * and leaves no temp file.
 */
static void test_read_back_differs(void **state)
{
    struct fixture *fx = *state;
    struct prov_identity id = identity(fx);
    struct refused t;
    char msg[512];
    int r;
    int r2;

    refused_before(fx, "differs", &id, &t);
    id.serial = "SN-0002";
    corrupt_temp = "/chain.pem.tmp.";
    prov_error_clear();
    r = prov_storage_write(t.dir, &id);
    snprintf(msg, sizeof(msg), "%s", prov_error_message());
    prov_error_clear();
    r2 = prov_storage_write(t.fresh, &id);
    corrupt_temp = NULL; /* before any assertion, so that a failure here spares later tests */
    assert_int_equal(r, PROV_ERR_STORAGE);
    assert_non_null(strstr(msg, "/chain.pem: "));
    assert_non_null(strstr(msg, "reads back"));
    assert_int_equal(r2, PROV_ERR_STORAGE);
    refused_after(&t);
}

static void test_directory_in_the_way(void **state)
{
    struct fixture *fx = *state;
    struct prov_identity id = identity(fx);
    char dir[128];
    char path[160];

    snprintf(dir, sizeof(dir), "%s/blocked", fx->dir);
    snprintf(path, sizeof(path), "%s/chain.pem", dir);
    assert_int_equal(mkdir(dir, 0755), 0);
    assert_int_equal(mkdir(path, 0755), 0);
    prov_error_clear();
    assert_int_equal(prov_storage_write(dir, &id), PROV_ERR_STORAGE);
    assert_non_null(strstr(prov_error_message(), "chain.pem"));
    assert_false(prov_storage_has_identity(dir));
    assert_int_equal(count_temp_files(dir), 0);

    /* over an existing identity: a directory where the new server-ca.pem must go */
    snprintf(dir, sizeof(dir), "%s/blocked2", fx->dir);
    assert_int_equal(prov_storage_write(dir, &id), 0);
    snprintf(path, sizeof(path), "%s/server-ca.pem", dir);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(mkdir(path, 0755), 0);
    prov_error_clear();
    id.key_uri = "pkcs11:token=changed";
    assert_int_equal(prov_storage_write(dir, &id), PROV_ERR_STORAGE);
    assert_non_null(strstr(prov_error_message(), "server-ca.pem"));
    assert_file_equals(dir, "key.uri", KEY_URI "\n");
    assert_int_equal(count_temp_files(dir), 0);
}

/* The write into a read-only directory, checked by exit status (it may run in a child). */
static int write_read_only(const char *dir, const struct prov_identity *id)
{
    prov_error_clear();
    if (prov_storage_write(dir, id) != PROV_ERR_STORAGE) {
        return 1;
    }
    if (prov_error_message() == NULL || strstr(prov_error_message(), dir) == NULL) {
        return 2;
    }
    return count_temp_files(dir) == 0 ? 0 : 3;
}

static void test_read_only_dir(void **state)
{
    struct fixture *fx = *state;
    struct prov_identity id = identity(fx);
    char dir[128];
    int status = 0;
    pid_t pid;

    snprintf(dir, sizeof(dir), "%s/ro", fx->dir);
    assert_int_equal(mkdir(dir, 0555), 0);
    if (geteuid() != 0) {
        assert_int_equal(write_read_only(dir, &id), 0);
        return;
    }
    /* root ignores directory modes: run the write as an unprivileged user instead. */
    assert_int_equal(chmod(fx->dir, 0755), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (setgid(65534) != 0 || setuid(65534) != 0) {
            _exit(10);
        }
        _exit(write_read_only(dir, &id));
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

/* Output paths checked before anything is made: nothing is created by the check itself. */
static void test_check_output_paths(void **state)
{
    struct fixture *fx = *state;
    char path[256];
    char file[160];
    const char *msg;

    snprintf(file, sizeof(file), "%s/a-file", fx->dir);
    test_pki_write_pem(file, fx->leaf, NULL);

    snprintf(path, sizeof(path), "%s/results.csv", fx->dir);
    assert_int_equal(prov_storage_check_output_file(path, "results"), 0);
    assert_int_equal(access(path, F_OK), -1); /* nothing made */
    assert_int_equal(prov_storage_check_output_file(file, "results"), 0); /* replaced later */
    prov_error_clear();
    snprintf(path, sizeof(path), "%s/missing/results.csv", fx->dir);
    assert_int_equal(prov_storage_check_output_file(path, "results"), PROV_ERR_STORAGE);
    msg = prov_error_message();
    assert_non_null(strstr(msg, "results"));
    assert_non_null(strstr(msg, path));
    prov_error_clear();
    assert_int_equal(prov_storage_check_output_file(fx->dir, "--out"), PROV_ERR_STORAGE);
    assert_non_null(strstr(prov_error_message(), "is a directory"));
    prov_error_clear();
    snprintf(path, sizeof(path), "%s/x.pem", file);
    assert_int_equal(prov_storage_check_output_file(path, "--out"), PROV_ERR_STORAGE);
    assert_non_null(strstr(prov_error_message(), "not a directory"));
    prov_error_clear();

    /* directories: existing, or creatable under the nearest existing ancestor */
    assert_int_equal(prov_storage_check_output_dir(fx->dir, "output_dir"), 0);
    snprintf(path, sizeof(path), "%s/new/deeper/devices", fx->dir);
    assert_int_equal(prov_storage_check_output_dir(path, "output_dir"), 0);
    snprintf(path, sizeof(path), "%s/new", fx->dir);
    assert_int_equal(access(path, F_OK), -1); /* nothing made */
    snprintf(path, sizeof(path), "%s/devices", file);
    assert_int_equal(prov_storage_check_output_dir(path, "output_dir"), PROV_ERR_STORAGE);
    assert_non_null(strstr(prov_error_message(), path));
    prov_error_clear();
    assert_int_equal(prov_storage_check_output_dir(file, "output_dir"), PROV_ERR_STORAGE);
    assert_non_null(strstr(prov_error_message(), "not a directory"));
    prov_error_clear();
}

static void test_bad_server_ca(void **state)
{
    struct fixture *fx = *state;
    struct prov_identity id = identity(fx);
    char dir[128];
    char bad[128];
    FILE *f;

    snprintf(dir, sizeof(dir), "%s/badca", fx->dir);
    snprintf(bad, sizeof(bad), "%s/not-a-cert.pem", fx->dir);
    f = fopen(bad, "w");
    fputs("hello\n", f);
    fclose(f);
    id.server_ca_path = bad;
    prov_error_clear();
    assert_int_equal(prov_storage_write(dir, &id), PROV_ERR_INPUT);
    assert_non_null(strstr(prov_error_message(), bad));
    assert_false(prov_storage_has_identity(dir));

    snprintf(bad, sizeof(bad), "%s/missing.pem", fx->dir);
    prov_error_clear();
    assert_int_equal(prov_storage_write(dir, &id), PROV_ERR_INPUT);
    assert_non_null(strstr(prov_error_message(), bad));
}

/*
 * A server CA file that parsed once is not parsed again for the next device, but the same
 * path with other bytes is: appended garbage after a good write is still refused.
 */
static void test_server_ca_changed_after_use(void **state)
{
    struct fixture *fx = *state;
    struct prov_identity id = identity(fx);
    char dir[128];
    FILE *f;

    snprintf(dir, sizeof(dir), "%s/first", fx->dir);
    assert_int_equal(prov_storage_write(dir, &id), 0);
    snprintf(dir, sizeof(dir), "%s/second", fx->dir);
    assert_int_equal(prov_storage_write(dir, &id), 0);
    f = fopen(fx->server_ca, "a");
    assert_non_null(f);
    fputs("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n", f);
    assert_int_equal(fclose(f), 0);
    snprintf(dir, sizeof(dir), "%s/third", fx->dir);
    prov_error_clear();
    assert_int_equal(prov_storage_write(dir, &id), PROV_ERR_INPUT);
    assert_non_null(strstr(prov_error_message(), "certificate 3 does not parse"));
    assert_false(prov_storage_has_identity(dir));
    test_pki_write_pem(fx->server_ca, fx->root, fx->inter);
}

static void test_cert_facts(void **state)
{
    struct fixture *fx = *state;
    struct prov_cert_facts f;
    unsigned char *der = NULL;
    unsigned char md[32];
    char hex[65];
    int len;

    len = i2d_X509(fx->root, &der);
    assert_true(EVP_Digest(der, (size_t)len, md, NULL, EVP_sha256(), NULL));
    OPENSSL_free(der);
    for (int i = 0; i < 32; i++) {
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    }
    assert_int_equal(prov_cert_facts(fx->root, &f), 0);
    assert_string_equal(f.serial_hex, "01");
    assert_string_equal(f.sha256_hex, hex);
    assert_string_equal(f.not_before, "2026-01-01T00:00:00Z");
    assert_string_equal(f.not_after, "2036-12-31T23:59:59Z");
    assert_string_equal(f.issuer, "CN=Test Root,O=Example");
    assert_string_equal(f.subject, "CN=Test Root,O=Example");
    assert_int_equal(prov_cert_facts(fx->leaf, &f), 0);
    assert_string_equal(f.serial_hex, "0102abcdef");
    prov_error_clear();
    assert_int_equal(prov_cert_facts(NULL, &f), PROV_ERR_INPUT);
}

/* A fingerprint of the certificate's DER, as in identity.json. */
static void sha256_hex_of(X509 *cert, char hex[65])
{
    unsigned char *der = NULL;
    unsigned char md[32];
    int len = i2d_X509(cert, &der);

    assert_true(len > 0);
    assert_true(EVP_Digest(der, (size_t)len, md, NULL, EVP_sha256(), NULL));
    OPENSSL_free(der);
    for (int i = 0; i < 32; i++) {
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    }
}

/*
 * The facts are kept with the certificate object (storage.c, kept_facts_get): asked again,
 * the same object gives the same facts; changed and signed again, it gives the new ones.
 */
static void test_cert_facts_follow_the_certificate(void **state)
{
    struct fixture *fx = *state;
    X509 *x = make_cert("kept", 7, fx->leaf_key, fx->inter, fx->inter_key, false);
    struct prov_cert_facts f1, f2;
    char hex[65];

    assert_int_equal(prov_cert_facts(x, &f1), 0);
    assert_int_equal(prov_cert_facts(x, &f2), 0);
    assert_memory_equal(&f1, &f2, sizeof(f1));
    sha256_hex_of(x, hex);
    assert_string_equal(f2.sha256_hex, hex);

    ASN1_INTEGER_set(X509_get_serialNumber(x), 8);
    assert_true(X509_sign(x, fx->inter_key, EVP_sha256()) > 0);
    assert_int_equal(prov_cert_facts(x, &f2), 0);
    assert_string_equal(f2.serial_hex, "08");
    sha256_hex_of(x, hex);
    assert_string_equal(f2.sha256_hex, hex);
    assert_string_not_equal(f1.sha256_hex, f2.sha256_hex);
    X509_free(x);
}

/* cert's DER as i2d_X509 makes it, compared with what prov_cert_der gives. */
static void assert_der_is_i2d(X509 *cert)
{
    unsigned char *want = NULL, *got = NULL;
    int want_len = i2d_X509(cert, &want);
    size_t len = 0;

    assert_true(want_len > 0);
    assert_int_equal(prov_cert_der(cert, &got, &len), 0);
    assert_int_equal(len, (size_t)want_len);
    assert_memory_equal(got, want, len);
    OPENSSL_free(got);
    OPENSSL_free(want);
}

/*
 * The DER and its SHA-256 are kept with the object (cert_der.c, used by the chain check's memo
 * and the facts): the same when asked again, the facts carry the same digest, and a
 * certificate signed again is encoded and hashed again.
 */
static void test_cert_der_follows_the_certificate(void **state)
{
    struct fixture *fx = *state;
    X509 *x = make_cert("kept", 7, fx->leaf_key, fx->inter, fx->inter_key, false);
    struct prov_cert_facts f;
    unsigned char d1[32], d2[32];
    unsigned char *der = NULL;
    size_t len = 1;
    char hex[65], got[65];

    assert_der_is_i2d(x);
    assert_der_is_i2d(x);
    assert_int_equal(prov_cert_sha256(x, d1), 0);
    assert_int_equal(prov_cert_sha256(x, d2), 0);
    assert_memory_equal(d1, d2, sizeof(d1));
    sha256_hex_of(x, hex);
    prov_hex_encode(d1, sizeof(d1), got);
    assert_string_equal(got, hex);
    assert_int_equal(prov_cert_facts(x, &f), 0);
    assert_string_equal(f.sha256_hex, hex);
    assert_string_equal(f.serial_hex, "07");

    ASN1_INTEGER_set(X509_get_serialNumber(x), 8);
    assert_true(X509_sign(x, fx->inter_key, EVP_sha256()) > 0);
    assert_der_is_i2d(x);
    assert_int_equal(prov_cert_sha256(x, d2), 0);
    sha256_hex_of(x, hex);
    prov_hex_encode(d2, sizeof(d2), got);
    assert_string_equal(got, hex);
    assert_memory_not_equal(d1, d2, sizeof(d1));
    assert_int_equal(prov_cert_facts(x, &f), 0);
    assert_string_equal(f.serial_hex, "08");
    assert_int_equal(prov_cert_sha256(NULL, d1), PROV_ERR_INPUT);
    assert_int_equal(prov_cert_der(NULL, &der, &len), PROV_ERR_INPUT);
    assert_null(der);
    X509_free(x);
}

static void test_atomic_write_file(void **state)
{
    struct fixture *fx = *state;
    char path[128];
    mode_t old_umask;

    snprintf(path, sizeof(path), "%s/single.txt", fx->dir);
    old_umask = umask(077);
    n_synced = 0;
    synced_at_rename = SIZE_MAX;
    assert_int_equal(prov_atomic_write_file(path, "one", 3, 0644), 0);
    umask(old_umask);
    /*
     * Durable: the data was synced before the rename, and the directory after it, else a power
     * cut could bring back the old file or no file at all although the call returned 0.
     */
    assert_true(synced_at_rename != SIZE_MAX);
    assert_true(synced_before_rename(path));
    assert_true(synced_after_rename(fx->dir));
    assert_int_equal(mode_of(fx->dir, "single.txt"), 0644);
    assert_file_equals(fx->dir, "single.txt", "one");
    n_synced = 0;
    synced_at_rename = SIZE_MAX;
    assert_int_equal(prov_atomic_write_file(path, "two!", 4, 0600), 0);
    assert_true(synced_at_rename != SIZE_MAX);
    assert_true(synced_after_rename(fx->dir));
    assert_file_equals(fx->dir, "single.txt", "two!");
    assert_int_equal(mode_of(fx->dir, "single.txt"), 0600);
    assert_int_equal(prov_atomic_write_file(path, "", 0, 0644), 0);
    assert_file_equals(fx->dir, "single.txt", "");

    snprintf(path, sizeof(path), "%s/no-such-dir/x", fx->dir);
    prov_error_clear();
    assert_int_equal(prov_atomic_write_file(path, "x", 1, 0644), PROV_ERR_STORAGE);
    assert_non_null(strstr(prov_error_message(), path));
    assert_non_null(strstr(prov_error_message(), "No such file"));

    /* a directory at the target: the rename fails, the temp file is removed */
    snprintf(path, sizeof(path), "%s/adir", fx->dir);
    assert_int_equal(mkdir(path, 0755), 0);
    prov_error_clear();
    assert_int_equal(prov_atomic_write_file(path, "x", 1, 0644), PROV_ERR_STORAGE);
    assert_non_null(strstr(prov_error_message(), path));
    assert_int_equal(count_temp_files(fx->dir), 0);
}

/* A line of the streamed test file: 40 bytes, numbered. */
static void stream_lines(FILE *f, char *expect, size_t n)
{
    size_t k = 0;

    for (size_t i = 0; i < n; i++) {
        char line[64];
        int len = snprintf(line, sizeof(line), "row %08zu,abcdefghijklmnopqrstuvwxyz\n", i);

        assert_int_equal(len, 40);
        assert_int_equal(fputs(line, f) >= 0, 1);
        memcpy(expect + k, line, 40);
        k += 40;
    }
    expect[k] = '\0';
}

/* The whole file at path is want (prov_read_small_file: past slurp's 64 KiB). */
static void assert_big_file_equals(const char *path, const char *want)
{
    unsigned char *got = NULL;
    size_t len = 0;

    assert_int_equal(prov_read_small_file(path, PROV_ERR_STORAGE, &got, &len), 0);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(got, want, len);
    free(got);
}

/*
 * The streamed writer (the batch's results): megabytes written through the stream land whole,
 * with the mode whatever the umask, synced before the rename and the directory after it; a
 * byte changed between write and sync is caught by the read-back (hash and length) and the
 * previous file stays; an abort leaves the previous file and no temp file.
 */
static void test_durable_stream(void **state)
{
    struct fixture *fx = *state;
    const size_t n = 40000; /* 1.6 MB: many times the stream's buffer */
    char *expect = malloc(n * 40 + 1);
    struct prov_durable_stream *s = NULL;
    char path[128];
    mode_t old_umask;
    int r;

    assert_non_null(expect);
    snprintf(path, sizeof(path), "%s/big.csv", fx->dir);
    old_umask = umask(077);
    n_synced = 0;
    synced_at_rename = SIZE_MAX;
    assert_int_equal(prov_durable_stream_open(path, 0644, &s), 0);
    assert_int_equal(count_temp_files(fx->dir), 1);
    stream_lines(prov_durable_stream_file(s), expect, n);
    assert_int_equal(prov_durable_stream_commit(s), 0);
    umask(old_umask);
    assert_true(synced_at_rename != SIZE_MAX);
    assert_true(synced_before_rename(path));
    assert_true(synced_after_rename(fx->dir));
    assert_int_equal(mode_of(fx->dir, "big.csv"), 0644);
    assert_big_file_equals(path, expect);
    assert_int_equal(count_temp_files(fx->dir), 0);

    /* a byte changed on disk before the sync: refused, the previous file kept */
    assert_int_equal(prov_durable_stream_open(path, 0644, &s), 0);
    fputs("replacement\n", prov_durable_stream_file(s));
    corrupt_temp = "/big.csv.tmp.";
    prov_error_clear();
    r = prov_durable_stream_commit(s);
    corrupt_temp = NULL; /* before any assertion, so that a failure here spares later tests */
    assert_int_equal(r, PROV_ERR_STORAGE);
    assert_non_null(strstr(prov_error_message(), "/big.csv: reads back different"));
    assert_big_file_equals(path, expect);
    assert_int_equal(count_temp_files(fx->dir), 0);

    /* abandoned: nothing changes */
    assert_int_equal(prov_durable_stream_open(path, 0644, &s), 0);
    fputs("abandoned\n", prov_durable_stream_file(s));
    prov_durable_stream_abort(s);
    prov_durable_stream_abort(NULL);
    assert_big_file_equals(path, expect);
    assert_int_equal(count_temp_files(fx->dir), 0);

    /* no directory: refused at the open, naming the file */
    snprintf(path, sizeof(path), "%s/no-such-dir/x", fx->dir);
    prov_error_clear();
    assert_int_equal(prov_durable_stream_open(path, 0644, &s), PROV_ERR_STORAGE);
    assert_null(s);
    assert_non_null(strstr(prov_error_message(), path));
    free(expect);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_write_all_files),
        cmocka_unit_test(test_new_directories_synced),
        cmocka_unit_test(test_identity_json),
        cmocka_unit_test(test_read_back),
        cmocka_unit_test(test_read_errors),
        cmocka_unit_test(test_failure_midway_keeps_previous),
        cmocka_unit_test(test_replacement_stopped_between_renames),
        cmocka_unit_test(test_read_back_differs),
        cmocka_unit_test(test_directory_in_the_way),
        cmocka_unit_test(test_read_only_dir),
        cmocka_unit_test(test_check_output_paths),
        cmocka_unit_test(test_bad_server_ca),
        cmocka_unit_test(test_server_ca_changed_after_use),
        cmocka_unit_test(test_cert_facts),
        cmocka_unit_test(test_cert_facts_follow_the_certificate),
        cmocka_unit_test(test_cert_der_follows_the_certificate),
        cmocka_unit_test(test_atomic_write_file),
        cmocka_unit_test(test_durable_stream),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
