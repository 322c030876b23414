/* SPDX-License-Identifier: Apache-2.0 */
#include "storage.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "error.h"
#include "memo.h"

/* Certificates and JSON are a few KiB; a bigger file is not what it claims to be. */
#define READ_MAX (4 * 1024 * 1024)

/* One file of the identity, prepared in memory and then in a temp file. */
struct staged {
    const char *name;
    mode_t mode;
    unsigned char *data;
    size_t len;
    char *tmp;          /* temp file path once written, NULL before */
};

/* The files of SPEC §8; client.crt is renamed last because it marks "identity present". */
enum { F_DER, F_FULLCHAIN, F_CHAIN, F_SERVER_CA, F_KEY_URI, F_JSON, F_CRT, F_COUNT };
static const char *const file_names[F_COUNT] = {
    "client.der", "fullchain.pem", "chain.pem", "server-ca.pem", "key.uri", "identity.json",
    "client.crt",
};

static char *join(const char *dir, const char *name)
{
    char *p = NULL;

    if (asprintf(&p, "%s/%s", dir, name) < 0) {
        return NULL;
    }
    return p;
}

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int r = 0;

    if (fd < 0 || fsync(fd) != 0) {
        r = prov_fail(PROV_ERR_STORAGE, "%s: cannot sync directory (%s)", dir, strerror(errno));
    }
    if (fd >= 0) {
        close(fd);
    }
    return r;
}

static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');

    if (slash == NULL) {
        return strdup(".");
    }
    if (slash == path) {
        return strdup("/");
    }
    return strndup(path, (size_t)(slash - path));
}

/*
 * The synced file read back and compared with buf, byte for byte (a short or changed write is
 * caught here, before anything is renamed into place). PROV_ERR_STORAGE naming path if not equal.
 */
static int check_read_back(int fd, const unsigned char *buf, size_t len, const char *path)
{
    unsigned char chunk[4096];
    size_t done = 0;

    for (;;) {
        ssize_t n = pread(fd, chunk, sizeof(chunk), (off_t)done);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            return prov_fail(PROV_ERR_STORAGE, "%s: cannot read back (%s)", path, strerror(errno));
        }
        if (n == 0) {
            break;
        }
        if ((size_t)n > len - done || memcmp(chunk, buf + done, (size_t)n) != 0) {
            return prov_fail(PROV_ERR_STORAGE, "%s: reads back different from what was written",
                             path);
        }
        done += (size_t)n;
    }
    if (done != len) {
        return prov_fail(PROV_ERR_STORAGE, "%s: reads back %zu of %zu bytes", path, done, len);
    }
    return 0;
}

/*
 * Writes buf into a new "path.tmp.XXXXXX" (created exclusively by mkostemp, then given mode
 * regardless of the umask), syncs it and reads it back. On success *tmp_out names the temp
 * file; on failure nothing is left behind.
 */
static int write_temp(const char *path, const void *buf, size_t len, mode_t mode, char **tmp_out)
{
    const unsigned char *p = buf;
    char *tmp = NULL;
    int fd = -1;
    int r = PROV_ERR_STORAGE;

    *tmp_out = NULL;
    if (asprintf(&tmp, "%s.tmp.XXXXXX", path) < 0) {
        tmp = NULL;
        r = prov_fail(PROV_ERR_NOMEM, "%s: out of memory", path);
        goto out;
    }
    fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        prov_fail(r, "%s: cannot create temp file (%s)", path, strerror(errno));
        free(tmp);
        tmp = NULL;
        goto out;
    }
    if (fchmod(fd, mode) != 0) {
        prov_fail(r, "%s: cannot set mode (%s)", path, strerror(errno));
        goto out;
    }
    for (size_t done = 0; done < len;) {
        ssize_t n = write(fd, p + done, len - done);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            prov_fail(r, "%s: write failed (%s)", path, strerror(errno));
            goto out;
        }
        done += (size_t)n;
    }
    if (fsync(fd) != 0) {
        prov_fail(r, "%s: fsync failed (%s)", path, strerror(errno));
        goto out;
    }
    if (check_read_back(fd, p, len, path) < 0) {
        goto out;
    }
    if (close(fd) != 0) {
        fd = -1;
        prov_fail(r, "%s: close failed (%s)", path, strerror(errno));
        goto out;
    }
    fd = -1;
    *tmp_out = tmp;
    tmp = NULL;
    r = 0;
out:
    if (fd >= 0) {
        close(fd);
    }
    if (tmp != NULL) {
        unlink(tmp);
        free(tmp);
    }
    return r;
}

/* Syncs the directory that holds path's last component ("." or "/" for a top-level one). */
static int fsync_parent(const char *path)
{
    char *parent = dir_of(path);
    int r;

    if (parent == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "%s: out of memory", path);
    }
    r = fsync_dir(parent);
    free(parent);
    return r;
}

int prov_atomic_write_file(const char *path, const void *buf, size_t len, mode_t mode)
{
    char *tmp = NULL;
    int r;

    r = write_temp(path, buf, len, mode, &tmp);
    if (r < 0) {
        goto out;
    }
    if (rename(tmp, path) != 0) {
        r = prov_fail(PROV_ERR_STORAGE, "%s: cannot rename into place (%s)", path,
                      strerror(errno));
        unlink(tmp);
        goto out;
    }
    r = fsync_parent(path);
out:
    free(tmp);
    return r;
}

/*
 * Makes dir: 1 when it already exists, 0 when made (and its parent synced), < 0 on error;
 * PROV_ERR_NOT_FOUND, with nothing recorded, for a missing parent when is_quiet_if_no_parent.
 */
static int make_one(const char *dir, bool is_quiet_if_no_parent)
{
    if (prov_mkdir_public(dir) == 0) {
        return fsync_parent(dir);
    }
    if (errno == EEXIST) {
        return 1;
    }
    if (errno == ENOENT && is_quiet_if_no_parent) {
        return PROV_ERR_NOT_FOUND;
    }
    return prov_fail(PROV_ERR_STORAGE, "%s: cannot create directory (%s)", dir, strerror(errno));
}

/* Makes every component of dir from the root down (make_one each). */
static int make_each(const char *dir)
{
    char *p = strdup(dir);
    int r = 0;

    if (p == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "%s: out of memory", dir);
    }
    for (char *s = p + 1; r >= 0; s++) {
        bool end = *s == '\0';

        if (*s != '/' && !end) {
            continue;
        }
        *s = '\0';
        r = make_one(p, false);
        if (end) {
            break;
        }
        *s = '/';
    }
    free(p);
    return r;
}

/*
 * Creates dir and its missing parents (0755). Each directory that gains an entry is synced,
 * so that what is created here survives a power cut together with the files written into it
 * (the journal records "stored" only after prov_storage_write returns).
 */
int prov_storage_mkdirs(const char *dir)
{
    size_t n = strlen(dir);
    bool is_walk = n <= 1 || dir[n - 1] == '/';
    struct stat st;
    int r = 0;

    /*
     * Once a batch's first device has made the parents, only dir is new: one mkdir. A missing
     * parent, or a path that ends in a slash, takes the walk from the root.
     */
    if (!is_walk) {
        r = make_one(dir, true);
        is_walk = r == PROV_ERR_NOT_FOUND;
    }
    if (is_walk) {
        r = make_each(dir);
    }
    if (r >= 0 && (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))) {
        r = prov_fail(PROV_ERR_STORAGE, "%s: not a directory", dir);
    }
    return r < 0 ? r : 0;
}

/*
 * access() rather than a probe file: it sees what the kernel would refuse (a read-only file
 * system, an immutable directory, even for root), and leaves nothing behind if killed.
 */
static int check_writable_dir(const char *dir, const char *what, const char *path)
{
    struct stat st;

    if (stat(dir, &st) != 0) {
        return prov_fail(PROV_ERR_STORAGE, "%s %s: directory %s: %s", what, path, dir,
                         strerror(errno));
    }
    if (!S_ISDIR(st.st_mode)) {
        return prov_fail(PROV_ERR_STORAGE, "%s %s: %s is not a directory", what, path, dir);
    }
    if (access(dir, W_OK | X_OK) != 0) {
        return prov_fail(PROV_ERR_STORAGE, "%s %s: directory %s is not writable: %s", what,
                         path, dir, strerror(errno));
    }
    return 0;
}

int prov_storage_check_output_file(const char *path, const char *what)
{
    const char *slash = strrchr(path, '/');
    struct stat st;
    char *dir;
    int r;

    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        return prov_fail(PROV_ERR_STORAGE, "%s %s: is a directory", what, path);
    }
    dir = slash == NULL ? strdup(".") : slash == path ? strdup("/")
                                                      : strndup(path, (size_t)(slash - path));
    if (dir == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "%s %s: out of memory", what, path);
    }
    r = check_writable_dir(dir, what, path);
    free(dir);
    return r;
}

int prov_storage_check_output_dir(const char *dir, const char *what)
{
    char *probe = strdup(dir);
    struct stat st;
    int r;

    if (probe == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "%s %s: out of memory", what, dir);
    }
    /* the nearest ancestor that exists decides whether the rest can be made */
    for (;;) {
        char *slash;

        if (stat(probe, &st) == 0 || errno != ENOENT) {
            break;
        }
        slash = strrchr(probe, '/');
        while (slash != NULL && slash > probe && slash[-1] == '/') {
            slash--;
        }
        if (slash == NULL) {
            strcpy(probe, ".");
        } else if (slash == probe) {
            probe[1] = '\0';
        } else {
            *slash = '\0';
        }
    }
    r = check_writable_dir(probe, what, dir);
    free(probe);
    return r;
}

/* Reads a whole small file; err is the code for a missing or unreadable file. */
static int read_all(const char *path, int err, unsigned char **out, size_t *out_len)
{
    unsigned char *buf = NULL;
    size_t len = 0;
    size_t cap = 0;
    int fd;
    int r = err;

    *out = NULL;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return prov_fail(err, "%s: %s", path, strerror(errno));
    }
    for (;;) {
        ssize_t n;

        if (len == cap) {
            unsigned char *grown;

            if (cap >= READ_MAX) {
                prov_fail(err, "%s: larger than %d bytes", path, READ_MAX);
                goto out;
            }
            cap = cap ? cap * 2 : 4096;
            grown = realloc(buf, cap + 1);
            if (grown == NULL) {
                r = prov_fail(PROV_ERR_NOMEM, "%s: out of memory", path);
                goto out;
            }
            buf = grown;
        }
        n = read(fd, buf + len, cap - len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            prov_fail(err, "%s: %s", path, strerror(errno));
            goto out;
        }
        if (n == 0) {
            break;
        }
        len += (size_t)n;
    }
    if (buf == NULL && (buf = malloc(1)) == NULL) {
        r = prov_fail(PROV_ERR_NOMEM, "%s: out of memory", path);
        goto out;
    }
    buf[len] = '\0';
    *out = buf;
    *out_len = len;
    buf = NULL;
    r = 0;
out:
    close(fd);
    free(buf);
    return r;
}

/* Every certificate of a PEM buffer in order; at least one, and no trailing garbage block. */
static int parse_pem_certs(const unsigned char *buf, size_t len, const char *what,
                           STACK_OF(X509) **out)
{
    STACK_OF(X509) *certs = sk_X509_new_null();
    BIO *bio = len <= INT_MAX ? BIO_new_mem_buf(buf, (int)len) : NULL;
    X509 *x = NULL;
    unsigned long e;
    int r = PROV_ERR_NOMEM;

    *out = NULL;
    if (certs == NULL || bio == NULL) {
        prov_fail(r, "%s: out of memory", what);
        goto out;
    }
    ERR_clear_error();
    while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        if (!sk_X509_push(certs, x)) {
            X509_free(x);
            prov_fail(r, "%s: out of memory", what);
            goto out;
        }
    }
    e = ERR_peek_last_error();
    if (ERR_GET_LIB(e) != ERR_LIB_PEM || ERR_GET_REASON(e) != PEM_R_NO_START_LINE) {
        r = prov_fail_ossl(PROV_ERR_INPUT, "%s: certificate %d does not parse", what,
                           sk_X509_num(certs) + 1);
        goto out;
    }
    ERR_clear_error();
    if (sk_X509_num(certs) == 0) {
        r = prov_fail(PROV_ERR_INPUT, "%s: no PEM certificate", what);
        goto out;
    }
    *out = certs;
    certs = NULL;
    r = 0;
out:
    BIO_free(bio);
    sk_X509_pop_free(certs, X509_free);
    return r;
}

static int load_certs(const char *path, STACK_OF(X509) **out)
{
    unsigned char *buf = NULL;
    size_t len = 0;
    int r;

    *out = NULL;
    r = read_all(path, PROV_ERR_INPUT, &buf, &len);
    if (r == 0) {
        r = parse_pem_certs(buf, len, path, out);
    }
    free(buf);
    return r;
}

/* PEM of cert (may be NULL) followed by certs[0 .. n), into a malloc'd buffer. */
static int certs_to_pem(X509 *cert, STACK_OF(X509) *certs, int n, struct staged *f)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *data = NULL;
    long len;
    int r = PROV_ERR_CRYPTO;

    if (bio == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "%s: out of memory", f->name);
    }
    if (cert != NULL && !PEM_write_bio_X509(bio, cert)) {
        prov_fail_ossl(r, "%s: cannot encode certificate", f->name);
        goto out;
    }
    for (int i = 0; i < n; i++) {
        if (!PEM_write_bio_X509(bio, sk_X509_value(certs, i))) {
            prov_fail_ossl(r, "%s: cannot encode certificate", f->name);
            goto out;
        }
    }
    len = BIO_get_mem_data(bio, &data);
    f->data = malloc(len > 0 ? (size_t)len : 1);
    if (f->data == NULL) {
        r = prov_fail(PROV_ERR_NOMEM, "%s: out of memory", f->name);
        goto out;
    }
    memcpy(f->data, data, (size_t)len);
    f->len = (size_t)len;
    r = 0;
out:
    BIO_free(bio);
    return r;
}

static void json_add_str(json_object *obj, const char *key, const char *val)
{
    json_object_object_add(obj, key, val ? json_object_new_string(val) : NULL);
}

static int identity_json(const struct prov_identity *id, const struct prov_cert_facts *facts,
                         struct staged *f)
{
    json_object *obj = json_object_new_object();
    const char *text;
    int r = PROV_ERR_NOMEM;

    if (obj == NULL) {
        return prov_fail(r, "identity.json: out of memory");
    }
    json_add_str(obj, "serial", id->serial);
    json_add_str(obj, "cert_serial", facts->serial_hex);
    json_add_str(obj, "sha256", facts->sha256_hex);
    json_add_str(obj, "not_before", facts->not_before);
    json_add_str(obj, "not_after", facts->not_after);
    json_add_str(obj, "key_type", prov_key_type_name(id->key_type));
    json_add_str(obj, "backend", id->backend);
    json_add_str(obj, "profile", id->profile);
    json_add_str(obj, "lot", id->lot);
    json_add_str(obj, "issuer", facts->issuer);
    json_add_str(obj, "subject", facts->subject);
    json_add_str(obj, "key_uri", id->key_uri);
    text = json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PRETTY |
                                                   JSON_C_TO_STRING_NOSLASHESCAPE);
    if (text == NULL || asprintf((char **)&f->data, "%s\n", text) < 0) {
        f->data = NULL;
        prov_fail(r, "identity.json: out of memory");
        goto out;
    }
    f->len = strlen((char *)f->data);
    r = 0;
out:
    json_object_put(obj);
    return r;
}

/* The chain minus a final self-signed root: what a client presents after its certificate. */
static int presented_count(STACK_OF(X509) *chain)
{
    int n = sk_X509_num(chain);

    if (n > 0 && X509_self_signed(sk_X509_value(chain, n - 1), 0) == 1) {
        n--;
    }
    return n;
}

static int prepare(const struct prov_identity *id, const unsigned char *server_ca, size_t ca_len,
                   struct staged files[F_COUNT])
{
    struct prov_cert_facts facts;
    unsigned char *der = NULL;
    int der_len;
    int r;

    if ((r = certs_to_pem(id->cert, NULL, 0, &files[F_CRT])) < 0 ||
        (r = certs_to_pem(id->cert, id->chain, presented_count(id->chain),
                          &files[F_FULLCHAIN])) < 0 ||
        (r = certs_to_pem(NULL, id->chain, sk_X509_num(id->chain), &files[F_CHAIN])) < 0 ||
        (r = prov_cert_facts(id->cert, &facts)) < 0 ||
        (r = identity_json(id, &facts, &files[F_JSON])) < 0) {
        return r;
    }
    der_len = i2d_X509(id->cert, &der);
    if (der_len <= 0) {
        return prov_fail_ossl(PROV_ERR_CRYPTO, "client.der: cannot encode certificate");
    }
    files[F_DER].data = der;
    files[F_DER].len = (size_t)der_len;
    files[F_SERVER_CA].data = malloc(ca_len > 0 ? ca_len : 1);
    if (asprintf((char **)&files[F_KEY_URI].data, "%s\n", id->key_uri) < 0) {
        files[F_KEY_URI].data = NULL;
    }
    if (files[F_SERVER_CA].data == NULL || files[F_KEY_URI].data == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "identity: out of memory");
    }
    memcpy(files[F_SERVER_CA].data, server_ca, ca_len);
    files[F_SERVER_CA].len = ca_len;
    files[F_KEY_URI].len = strlen((char *)files[F_KEY_URI].data);
    return 0;
}

static int check_identity(const struct prov_identity *id)
{
    if (id == NULL || id->cert == NULL) {
        return prov_fail(PROV_ERR_INPUT, "identity: no certificate");
    }
    if (id->chain == NULL || sk_X509_num(id->chain) == 0) {
        return prov_fail(PROV_ERR_INPUT, "identity %s: no CA chain", id->serial ? id->serial : "");
    }
    if (id->key_uri == NULL || id->key_uri[0] == '\0' || strchr(id->key_uri, '\n') != NULL) {
        return prov_fail(PROV_ERR_INPUT, "identity %s: no key URI (or one with a newline)",
                         id->serial ? id->serial : "");
    }
    if (id->server_ca_path == NULL) {
        return prov_fail(PROV_ERR_INPUT, "identity %s: no server CA file",
                         id->serial ? id->serial : "");
    }
    return 0;
}

/*
 * A directory (or anything else that is not a file) where a file must go would make its
 * rename fail after others succeeded; checked before anything is renamed.
 */
static int check_targets(const char *dir)
{
    for (int i = 0; i < F_COUNT; i++) {
        char *path = join(dir, file_names[i]);
        struct stat st;
        int r = 0;

        if (path == NULL) {
            return prov_fail(PROV_ERR_NOMEM, "%s: out of memory", dir);
        }
        if (lstat(path, &st) == 0 && !S_ISREG(st.st_mode) && !S_ISLNK(st.st_mode)) {
            r = prov_fail(PROV_ERR_STORAGE, "%s: exists and is not a regular file", path);
        }
        free(path);
        if (r < 0) {
            return r;
        }
    }
    return 0;
}

/* Removes dir/client.crt if there is one, and makes that durable before anything is renamed. */
static int drop_old_certificate(const char *dir)
{
    char *path = join(dir, file_names[F_CRT]);
    int r = 0;

    if (path == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "%s: out of memory", dir);
    }
    if (unlink(path) == 0) {
        r = fsync_dir(dir);
    } else if (errno != ENOENT) {
        r = prov_fail(PROV_ERR_STORAGE, "%s: cannot replace (%s)", path, strerror(errno));
    }
    free(path);
    return r;
}

/*
 * Server CA files that parsed, by the digest of their bytes: a batch copies the same file into
 * every device's storage, and parsing it each time cost a tenth of the batch's instructions.
 */
static struct prov_memo server_ca_memo = PROV_MEMO_INIT;

/* The server CA file's bytes are PEM certificates only (parse_pem_certs), else its error. */
static int check_server_ca(const unsigned char *buf, size_t len, const char *path)
{
    STACK_OF(X509) *certs = NULL;
    unsigned char d[32];
    bool is_memo = prov_memo_digest(d, buf, len, NULL, 0);
    int r;

    if (is_memo && prov_memo_has(&server_ca_memo, d)) {
        return 0;
    }
    r = parse_pem_certs(buf, len, path, &certs);
    sk_X509_pop_free(certs, X509_free);
    if (r == 0 && is_memo) {
        prov_memo_add(&server_ca_memo, d);
    }
    return r;
}

int prov_storage_write(const char *dir, const struct prov_identity *id)
{
    struct staged files[F_COUNT];
    unsigned char *server_ca = NULL;
    size_t ca_len = 0;
    char *path = NULL;
    int r;

    memset(files, 0, sizeof(files));
    for (int i = 0; i < F_COUNT; i++) {
        files[i].name = file_names[i];
        files[i].mode = 0644; /* key.uri too: a URI, never a PIN */
    }
    if ((r = check_identity(id)) < 0) {
        goto out;
    }
    r = read_all(id->server_ca_path, PROV_ERR_INPUT, &server_ca, &ca_len);
    if (r < 0 || (r = check_server_ca(server_ca, ca_len, id->server_ca_path)) < 0 ||
        (r = prepare(id, server_ca, ca_len, files)) < 0 || (r = prov_storage_mkdirs(dir)) < 0 ||
        (r = check_targets(dir)) < 0) {
        goto out;
    }
    for (int i = 0; i < F_COUNT; i++) {
        path = join(dir, files[i].name);
        if (path == NULL) {
            r = prov_fail(PROV_ERR_NOMEM, "%s: out of memory", dir);
            goto out;
        }
        r = write_temp(path, files[i].data, files[i].len, files[i].mode, &files[i].tmp);
        if (r < 0) {
            goto out;
        }
        free(path);
        path = NULL;
    }
    /*
     * Every temp file is complete and synced. client.crt, renamed last, commits the identity.
     * When one is replaced, its old client.crt goes first (durably): a stop or an I/O error
     * between the renames then leaves no identity, never the old certificate beside the new
     * key.uri (the journal's resume writes it again).
     */
    r = drop_old_certificate(dir);
    if (r < 0) {
        goto out;
    }
    for (int i = 0; i < F_COUNT; i++) {
        path = join(dir, files[i].name);
        if (path == NULL) {
            r = prov_fail(PROV_ERR_NOMEM, "%s: out of memory", dir);
            goto out;
        }
        if (rename(files[i].tmp, path) != 0) {
            r = prov_fail(PROV_ERR_STORAGE, "%s: cannot rename into place (%s)", path,
                          strerror(errno));
            goto out;
        }
        free(files[i].tmp);
        files[i].tmp = NULL;
        free(path);
        path = NULL;
    }
    r = fsync_dir(dir);
out:
    for (int i = 0; i < F_COUNT; i++) {
        if (files[i].tmp != NULL) {
            unlink(files[i].tmp);
            free(files[i].tmp);
        }
        free(files[i].data);
    }
    free(path);
    free(server_ca);
    return r;
}

int prov_storage_remove_temp_files(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *ent;
    int n = 0;

    if (d == NULL) {
        return 0;
    }
    while ((ent = readdir(d)) != NULL) {
        const char *tmp = strstr(ent->d_name, ".tmp.");

        /* "NAME.tmp.XXXXXX" (write_temp) and ".provisioner-probe.XXXXXX" (enroll.c) */
        if (((tmp != NULL && strlen(tmp) == 11) ||
             strncmp(ent->d_name, ".provisioner-probe.", 19) == 0) &&
            unlinkat(dirfd(d), ent->d_name, 0) == 0) {
            n++;
        }
    }
    closedir(d);
    return n;
}

bool prov_storage_has_identity(const char *dir)
{
    char *path = join(dir, "client.crt");
    struct stat st;
    bool present;

    if (path == NULL) {
        return false;
    }
    present = stat(path, &st) == 0 && S_ISREG(st.st_mode);
    free(path);
    return present;
}

static int read_certs_file(const char *dir, const char *name, STACK_OF(X509) **out)
{
    char *path = join(dir, name);
    int r;

    if (path == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "%s: out of memory", dir);
    }
    r = load_certs(path, out);
    free(path);
    return r;
}

static int read_key_uri(const char *dir, char **out)
{
    char *path = join(dir, "key.uri");
    unsigned char *buf = NULL;
    size_t len = 0;
    int r;

    if (path == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "%s: out of memory", dir);
    }
    r = read_all(path, PROV_ERR_INPUT, &buf, &len);
    if (r == 0) {
        if (len > 0 && buf[len - 1] == '\n') {
            buf[--len] = '\0';
        }
        if (len == 0 || memchr(buf, '\n', len) != NULL || memchr(buf, '\0', len) != NULL) {
            r = prov_fail(PROV_ERR_INPUT, "%s: expected one line holding the key URI", path);
        } else {
            *out = (char *)buf;
            buf = NULL;
        }
    }
    free(buf);
    free(path);
    return r;
}

static int json_get_str(json_object *obj, const char *path, const char *key, char **out)
{
    json_object *v = NULL;

    if (!json_object_object_get_ex(obj, key, &v) || !json_object_is_type(v, json_type_string)) {
        return prov_fail(PROV_ERR_INPUT, "%s: \"%s\" missing or not a string", path, key);
    }
    *out = strdup(json_object_get_string(v));
    if (*out == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "%s: out of memory", path);
    }
    return 0;
}

static int read_identity_json(const char *dir, struct prov_stored_identity *s)
{
    char *path = join(dir, "identity.json");
    unsigned char *buf = NULL;
    json_object *obj = NULL;
    size_t len = 0;
    int r;

    if (path == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "%s: out of memory", dir);
    }
    r = read_all(path, PROV_ERR_INPUT, &buf, &len);
    if (r < 0) {
        goto out;
    }
    obj = json_tokener_parse((const char *)buf);
    if (obj == NULL || !json_object_is_type(obj, json_type_object)) {
        r = prov_fail(PROV_ERR_INPUT, "%s: not a JSON object", path);
        goto out;
    }
    if ((r = json_get_str(obj, path, "serial", &s->serial)) < 0 ||
        (r = json_get_str(obj, path, "backend", &s->backend)) < 0) {
        goto out;
    }
out:
    json_object_put(obj);
    free(buf);
    free(path);
    return r;
}

int prov_storage_read(const char *dir, struct prov_stored_identity **out)
{
    struct prov_stored_identity *s;
    STACK_OF(X509) *crt = NULL;
    int r;

    *out = NULL;
    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "%s: out of memory", dir);
    }
    if ((r = read_certs_file(dir, "client.crt", &crt)) < 0 ||
        (r = read_certs_file(dir, "fullchain.pem", &s->fullchain)) < 0 ||
        (r = read_certs_file(dir, "chain.pem", &s->chain)) < 0 ||
        (r = read_certs_file(dir, "server-ca.pem", &s->server_ca)) < 0 ||
        (r = read_key_uri(dir, &s->key_uri)) < 0 || (r = read_identity_json(dir, s)) < 0) {
        goto out;
    }
    if (sk_X509_num(crt) != 1) {
        r = prov_fail(PROV_ERR_INPUT, "%s/client.crt: expected exactly one certificate", dir);
        goto out;
    }
    s->cert = sk_X509_shift(crt);
    *out = s;
    s = NULL;
    r = 0;
out:
    sk_X509_pop_free(crt, X509_free);
    prov_stored_identity_free(s);
    return r;
}

/* Keeps the first failure's reason (prov_fail keeps the first) and goes on. */
static void note_bad(int r, int *n_bad)
{
    if (r < 0) {
        (*n_bad)++;
    }
}

int prov_storage_read_each(const char *dir, struct prov_stored_identity **out, int *n_bad)
{
    struct prov_stored_identity *s;
    STACK_OF(X509) *crt = NULL;
    int r;

    *out = NULL;
    *n_bad = 0;
    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "%s: out of memory", dir);
    }
    r = read_certs_file(dir, "client.crt", &crt);
    if (r == 0 && sk_X509_num(crt) != 1) {
        r = prov_fail(PROV_ERR_INPUT, "%s/client.crt: expected exactly one certificate", dir);
    }
    if (r == 0) {
        s->cert = sk_X509_shift(crt);
    }
    note_bad(r, n_bad);
    note_bad(read_certs_file(dir, "fullchain.pem", &s->fullchain), n_bad);
    note_bad(read_certs_file(dir, "chain.pem", &s->chain), n_bad);
    note_bad(read_certs_file(dir, "server-ca.pem", &s->server_ca), n_bad);
    note_bad(read_key_uri(dir, &s->key_uri), n_bad);
    r = read_identity_json(dir, s);
    if (r < 0) {
        free(s->serial);
        free(s->backend);
        s->serial = s->backend = NULL;
    }
    note_bad(r, n_bad);
    sk_X509_pop_free(crt, X509_free);
    if (prov_error_code() == PROV_ERR_NOMEM) {
        prov_stored_identity_free(s);
        return PROV_ERR_NOMEM;
    }
    *out = s;
    return 0;
}

void prov_stored_identity_free(struct prov_stored_identity *s)
{
    if (s == NULL) {
        return;
    }
    X509_free(s->cert);
    sk_X509_pop_free(s->fullchain, X509_free);
    sk_X509_pop_free(s->chain, X509_free);
    sk_X509_pop_free(s->server_ca, X509_free);
    free(s->key_uri);
    free(s->serial);
    free(s->backend);
    free(s);
}

static void to_hex(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 0x0f];
    }
    out[2 * n] = '\0';
}

static int rfc3339(const ASN1_TIME *t, char *out, size_t cap)
{
    struct tm tm;

    if (t == NULL || !ASN1_TIME_to_tm(t, &tm) ||
        strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) {
        return prov_fail(PROV_ERR_INPUT, "certificate: unreadable validity time");
    }
    return 0;
}

static int name_line(const X509_NAME *name, char *out, size_t cap)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *data = NULL;
    long len;

    /* RFC 2253 order and escaping, but UTF-8 kept as is: the JSON is UTF-8 anyway. */
    if (bio == NULL ||
        X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253 & ~(unsigned long)ASN1_STRFLGS_ESC_MSB) <
            0) {
        BIO_free(bio);
        return prov_fail_ossl(PROV_ERR_CRYPTO, "certificate: cannot print name");
    }
    len = BIO_get_mem_data(bio, &data);
    snprintf(out, cap, "%.*s", (int)len, data);
    BIO_free(bio);
    return 0;
}

/*
 * The facts of a certificate object, kept with it (ex_data): one device's certificate is asked
 * for them by the enrollment's result, the journal, the CA index (twice) and identity.json,
 * and a certificate just signed is encoded afresh for every SHA-256, about 0.1 M instructions
 * each time (bench/profile.sh). They are kept with the signature they were computed under and
 * used only while the object still carries it.
 */
#define KEPT_SIG_MAX 1024

struct kept_facts {
    struct prov_cert_facts f;
    size_t sig_len;
    unsigned char sig[KEPT_SIG_MAX];
};

static pthread_mutex_t kept_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t kept_once = PTHREAD_ONCE_INIT;
static int kept_index = -1;

static void kept_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    free(ptr);
}

static void kept_init(void)
{
    kept_index = X509_get_ex_new_index(0, NULL, NULL, NULL, kept_free);
}

static const ASN1_BIT_STRING *signature_of(X509 *cert)
{
    const ASN1_BIT_STRING *sig = NULL;

    X509_get0_signature(&sig, NULL, cert);
    return sig != NULL && sig->length > 0 && sig->length <= KEPT_SIG_MAX ? sig : NULL;
}

static bool kept_facts_get(X509 *cert, struct prov_cert_facts *f)
{
    const ASN1_BIT_STRING *sig = signature_of(cert);
    const struct kept_facts *k;
    bool found = false;

    pthread_once(&kept_once, kept_init);
    if (kept_index < 0 || sig == NULL) {
        return false;
    }
    pthread_mutex_lock(&kept_lock);
    k = X509_get_ex_data(cert, kept_index);
    if (k != NULL && k->sig_len == (size_t)sig->length &&
        memcmp(k->sig, sig->data, k->sig_len) == 0) {
        *f = k->f;
        found = true;
    }
    pthread_mutex_unlock(&kept_lock);
    return found;
}

static void kept_facts_put(X509 *cert, const struct prov_cert_facts *f)
{
    const ASN1_BIT_STRING *sig = signature_of(cert);
    struct kept_facts *k;

    if (kept_index < 0 || sig == NULL || (k = calloc(1, sizeof(*k))) == NULL) {
        return; /* only an optimisation */
    }
    k->f = *f;
    k->sig_len = (size_t)sig->length;
    memcpy(k->sig, sig->data, k->sig_len);
    pthread_mutex_lock(&kept_lock);
    free(X509_get_ex_data(cert, kept_index));
    if (X509_set_ex_data(cert, kept_index, k) != 1) {
        free(k);
    }
    pthread_mutex_unlock(&kept_lock);
}

int prov_cert_facts(X509 *cert, struct prov_cert_facts *f)
{
    const ASN1_INTEGER *serial;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    int n;
    int r;

    memset(f, 0, sizeof(*f));
    if (cert == NULL) {
        return prov_fail(PROV_ERR_INPUT, "certificate: none given");
    }
    if (kept_facts_get(cert, f)) {
        return 0;
    }
    serial = X509_get0_serialNumber(cert);
    n = serial ? ASN1_STRING_length(serial) : 0;
    if (n <= 0 || (size_t)n * 2 >= sizeof(f->serial_hex) ||
        ASN1_STRING_type(serial) == V_ASN1_NEG_INTEGER) {
        return prov_fail(PROV_ERR_INPUT, "certificate: serial number missing, negative or longer "
                         "than 32 bytes");
    }
    to_hex(ASN1_STRING_get0_data(serial), (size_t)n, f->serial_hex);
    if (!X509_digest(cert, EVP_sha256(), md, &md_len) || md_len != 32) {
        return prov_fail_ossl(PROV_ERR_CRYPTO, "certificate: cannot hash");
    }
    to_hex(md, md_len, f->sha256_hex);
    if ((r = rfc3339(X509_get0_notBefore(cert), f->not_before, sizeof(f->not_before))) < 0 ||
        (r = rfc3339(X509_get0_notAfter(cert), f->not_after, sizeof(f->not_after))) < 0 ||
        (r = name_line(X509_get_issuer_name(cert), f->issuer, sizeof(f->issuer))) < 0 ||
        (r = name_line(X509_get_subject_name(cert), f->subject, sizeof(f->subject))) < 0) {
        return r;
    }
    kept_facts_put(cert, f);
    return 0;
}

int prov_mkdir_public(const char *path)
{
    if (mkdir(path, 0755) != 0) {
        return -1;
    }
    /* Only a directory this call created: an existing one keeps the mode its owner chose. */
    return chmod(path, 0755);
}
