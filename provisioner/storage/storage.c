/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A device's storage directory: the identity's files prepared, written together through
 * durable.c and committed by client.crt, and read back for check and install.
 */
#include "storage.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "cert_der.h"
#include "error.h"
#include "memo.h"

/* One file of the identity, prepared in memory and then in a temp file. */
struct staged {
    const char *name;
    mode_t mode;
    unsigned char *data;
    size_t len;
    char *tmp;          /* temp file path once written, NULL before */
};

/* The files of doc/storage.md; client.crt is renamed last: it marks "identity present". */
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
    r = prov_read_small_file(path, PROV_ERR_INPUT, &buf, &len);
    if (r == 0) {
        r = parse_pem_certs(buf, len, path, out);
    }
    free(buf);
    return r;
}

/*
 * The PEM of cert into bio, from its DER as kept with the object (cert_der.h): the same
 * certificates go into client.crt, fullchain.pem and chain.pem for every device, and
 * PEM_write_bio_X509 would encode each afresh.
 */
static int write_pem(BIO *bio, X509 *cert, const char *name)
{
    unsigned char *der = NULL;
    size_t len = 0;
    int r = prov_cert_der(cert, &der, &len);

    if (r == 0 && PEM_write_bio(bio, PEM_STRING_X509, "", der, (long)len) <= 0) {
        r = prov_fail_ossl(PROV_ERR_CRYPTO, "%s: cannot encode certificate", name);
    }
    OPENSSL_free(der);
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
    if (cert != NULL && (r = write_pem(bio, cert, f->name)) < 0) {
        goto out;
    }
    for (int i = 0; i < n; i++) {
        if ((r = write_pem(bio, sk_X509_value(certs, i), f->name)) < 0) {
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
    int r;

    if ((r = certs_to_pem(id->cert, NULL, 0, &files[F_CRT])) < 0 ||
        (r = certs_to_pem(id->cert, id->chain, presented_count(id->chain),
                          &files[F_FULLCHAIN])) < 0 ||
        (r = certs_to_pem(NULL, id->chain, sk_X509_num(id->chain), &files[F_CHAIN])) < 0 ||
        (r = prov_cert_facts(id->cert, &facts)) < 0 ||
        (r = identity_json(id, &facts, &files[F_JSON])) < 0) {
        return r;
    }
    r = prov_cert_der(id->cert, &files[F_DER].data, &files[F_DER].len);
    if (r < 0) {
        return r;
    }
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
        r = prov_fsync_dir(dir);
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
    r = prov_read_small_file(id->server_ca_path, PROV_ERR_INPUT, &server_ca, &ca_len);
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
        r = prov_write_temp_file(path, files[i].data, files[i].len, files[i].mode, &files[i].tmp);
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
    r = prov_fsync_dir(dir);
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

        /* "NAME.tmp.XXXXXX" (prov_write_temp_file) and ".provisioner-probe.XXXXXX" (enroll.c) */
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
    r = prov_read_small_file(path, PROV_ERR_INPUT, &buf, &len);
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
    r = prov_read_small_file(path, PROV_ERR_INPUT, &buf, &len);
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

/* Counts a failure; prov_fail has kept the first one's reason. Returns the first failure. */
static int note_bad(int r, int first, int *n_bad)
{
    if (r < 0) {
        (*n_bad)++;
    }
    return first < 0 ? first : r;
}

/*
 * Reads every part of dir into s, file by file, going on past a failure: what could not be read
 * stays NULL. Returns the first failure (0 if none) and counts them in *n_bad.
 */
static int read_parts(const char *dir, struct prov_stored_identity *s, int *n_bad)
{
    STACK_OF(X509) *crt = NULL;
    int first;
    int r;

    *n_bad = 0;
    r = read_certs_file(dir, "client.crt", &crt);
    if (r == 0 && sk_X509_num(crt) != 1) {
        r = prov_fail(PROV_ERR_INPUT, "%s/client.crt: expected exactly one certificate", dir);
    }
    if (r == 0) {
        s->cert = sk_X509_shift(crt);
    }
    sk_X509_pop_free(crt, X509_free);
    first = note_bad(r, 0, n_bad);
    first = note_bad(read_certs_file(dir, "fullchain.pem", &s->fullchain), first, n_bad);
    first = note_bad(read_certs_file(dir, "chain.pem", &s->chain), first, n_bad);
    first = note_bad(read_certs_file(dir, "server-ca.pem", &s->server_ca), first, n_bad);
    first = note_bad(read_key_uri(dir, &s->key_uri), first, n_bad);
    r = read_identity_json(dir, s);
    if (r < 0) {
        free(s->serial);
        free(s->backend);
        s->serial = s->backend = NULL;
    }
    return note_bad(r, first, n_bad);
}

int prov_storage_read(const char *dir, struct prov_stored_identity **out)
{
    struct prov_stored_identity *s;
    int n_bad;
    int r;

    *out = NULL;
    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "%s: out of memory", dir);
    }
    r = read_parts(dir, s, &n_bad);
    if (r < 0) {
        prov_stored_identity_free(s);
        return r;
    }
    *out = s;
    return 0;
}

int prov_storage_read_each(const char *dir, struct prov_stored_identity **out, int *n_bad)
{
    struct prov_stored_identity *s;

    *out = NULL;
    *n_bad = 0;
    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "%s: out of memory", dir);
    }
    (void)read_parts(dir, s, n_bad);
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
