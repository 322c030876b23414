/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The CA: a root (its key in a PKCS#11 token or an encrypted PEM file, or imported) and an
 * intermediate whose key is generated inside the HSM token and never leaves it. The
 * intermediate is what signs device certificates; chain.pem is what devices and edges get.
 */
#include "ca.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "backend.h"
#include "chain.h"
#include "device.h"
#include "error.h"
#include "log.h"
#include "secret.h"
#include "signer.h"
#include "storage.h"

#define CA_KEY_ID_BYTES 16
#define CLOCK_SKEW_SECONDS 300

/* A signing key for ca init: either a hardware key (dev+key) or an in-memory file key. */
struct ca_key {
    struct prov_device *dev;
    struct prov_key *key;
    EVP_PKEY *pkey; /* signer (hardware) or the decrypted file key */
    enum prov_key_type type;
    bool is_generated; /* made by this run: deleted again if ca init fails */
    const char *file;  /* the key file, for a file key */
};

void prov_ca_token_key_free(EVP_PKEY *pkey, struct prov_key *key, struct prov_device *dev)
{
    EVP_PKEY_free(pkey);
    prov_key_free(key);
    prov_device_close(dev);
}

static void ca_key_clear(struct ca_key *k)
{
    prov_ca_token_key_free(k->pkey, k->key, k->dev);
    memset(k, 0, sizeof(*k));
}

int prov_ca_token_keygen(struct prov_device *dev, enum prov_key_type type, const char *label,
                         const unsigned char *id, size_t id_len, const char *what,
                         struct prov_key **out)
{
    struct prov_keygen_params kp = {.type = type, .label = label, .id = id, .id_len = id_len};
    struct prov_key *key = NULL;
    int r;

    *out = NULL;
    r = dev->ops->generate_key(dev, &kp, &key);
    if (r < 0) {
        return r;
    }
    r = prov_check_key_protection(key, what);
    if (r < 0) {
        dev->ops->delete_key(dev, key); /* the check's error is what the caller reports */
        prov_key_free(key);
        return r;
    }
    *out = key;
    return 0;
}

int prov_ca_lint(X509 *cert, const char *what)
{
    int findings = 0;
    int idx = X509_get_ext_by_NID(cert, NID_basic_constraints, -1);
    uint32_t flags = X509_get_extension_flags(cert);

    if (idx < 0 || !(flags & EXFLAG_CA)) {
        prov_warn("%s: no basicConstraints CA:true; verifiers will not accept it as a CA", what);
        findings++;
    } else if (!X509_EXTENSION_get_critical(X509_get_ext(cert, idx))) {
        prov_warn("%s: basicConstraints is not critical; `openssl verify -x509_strict` and "
                  "other strict verifiers reject it (use \"basicConstraints = critical, CA:true\")",
                  what);
        findings++;
    }
    if (!(flags & EXFLAG_KUSAGE)) {
        prov_warn("%s: no keyUsage; strict verifiers reject a CA without keyCertSign (use "
                  "\"keyUsage = critical, keyCertSign, cRLSign\")",
                  what);
        findings++;
    } else if (!(X509_get_key_usage(cert) & KU_KEY_CERT_SIGN)) {
        prov_warn("%s: keyUsage lacks keyCertSign; it cannot sign certificates", what);
        findings++;
    }
    return findings;
}

/*
 * Label and id of a key URI (its backend reads them: object=, id= for PKCS#11); the id is
 * random when the URI names none.
 */
static int key_uri_label_id(const char *uri, char **label, unsigned char *id, size_t *id_len)
{
    int r = prov_key_uri_label_id(uri, label, id, id_len);

    if (r == 0 && *label == NULL) {
        r = prov_fail(PROV_ERR_CONFIG, "key URI \"%s\": needs object= to name the new key", uri);
    }
    if (r == 0 && *id_len == 0) {
        if (RAND_bytes(id, CA_KEY_ID_BYTES) == 1) {
            *id_len = CA_KEY_ID_BYTES;
        } else {
            r = prov_fail_ossl(PROV_ERR_CRYPTO, "key URI \"%s\": no randomness for the key id",
                               uri);
        }
    }
    if (r < 0) {
        free(*label);
        *label = NULL;
    }
    return r;
}

/*
 * Generates a key inside the token named by uri (or, with force, replaces one that is
 * already there). Refuses to overwrite an existing key without force: a CA key is not
 * something to lose by re-running a command.
 */
static int hsm_generate(const struct prov_config *cfg, const char *uri, const char *pin_spec,
                        enum prov_key_type type, bool force, const char *what, struct ca_key *k)
{
    unsigned char id[64];
    size_t id_len = sizeof(id);
    char *label = NULL;
    struct prov_key *old = NULL;
    int r;

    r = key_uri_label_id(uri, &label, id, &id_len);
    if (r < 0) {
        goto out;
    }
    r = prov_device_open_login(cfg, uri, pin_spec, "CA token PIN", false, &k->dev);
    if (r < 0) {
        goto out;
    }
    r = k->dev->ops->find_key(k->dev, uri, &old);
    if (r == 0) {
        if (!force) {
            r = prov_fail(PROV_ERR_ALREADY_ISSUED,
                          "%s %s: a key already exists on %s (use --force to replace it)", what,
                          uri, k->dev->name);
            goto out;
        }
        r = k->dev->ops->delete_key(k->dev, old);
        if (r < 0) {
            goto out;
        }
    } else if (r != PROV_ERR_NOT_FOUND) {
        goto out;
    }
    prov_error_clear();
    r = prov_ca_token_keygen(k->dev, type, label, id, id_len, what, &k->key);
    if (r < 0) {
        goto out;
    }
    k->is_generated = true;
    r = prov_signer_pkey(k->key, &k->pkey);
    k->type = type;
out:
    prov_key_free(old);
    free(label);
    return r;
}

/* An existing hardware key: found, protection checked, wrapped as a signer. */
static int hsm_open(const struct prov_config *cfg, const char *uri, const char *pin_spec,
                    const char *what, struct ca_key *k)
{
    int r;

    r = prov_device_open_login(cfg, uri, pin_spec, "CA token PIN", false, &k->dev);
    if (r < 0) {
        return r;
    }
    r = k->dev->ops->find_key(k->dev, uri, &k->key);
    if (r < 0) {
        return r;
    }
    r = prov_check_key_protection(k->key, what);
    if (r < 0) {
        return r;
    }
    k->type = k->key->type;
    return prov_signer_pkey(k->key, &k->pkey);
}

/* The root key in an encrypted PEM file: loaded when the file exists, else generated. */
static int file_root_key(const struct prov_config *cfg, const char *path, struct ca_key *k,
                         bool must_exist)
{
    struct prov_secret *pass = NULL;
    BIO *bio = NULL;
    int fd = -1;
    int r;

    if (cfg->root_key_pass == NULL) {
        return prov_fail(PROV_ERR_CONFIG,
                         "%s: [ca] root_key_pass is required for a root key file (%s)",
                         cfg->path, path);
    }
    r = prov_secret_load(cfg->root_key_pass, "root key passphrase", &pass);
    if (r < 0) {
        goto out;
    }
    bio = BIO_new_file(path, "r");
    if (bio != NULL) {
        k->pkey = PEM_read_bio_PrivateKey(bio, NULL, NULL, pass->data);
        if (k->pkey == NULL) {
            r = prov_fail_ossl(PROV_ERR_PIN_INCORRECT,
                               "root key %s: cannot decrypt (wrong passphrase or not a key)",
                               path);
            goto out;
        }
        k->type = prov_key_type_of(k->pkey);
        r = 0;
        goto out;
    }
    ERR_clear_error();
    if (must_exist || errno != ENOENT) {
        r = prov_fail(PROV_ERR_IO, "root key %s: %s", path, strerror(errno));
        goto out;
    }
    k->type = cfg->root_key_type;
    if (prov_key_type_is_ec(k->type)) {
        k->pkey = EVP_PKEY_Q_keygen(NULL, NULL, "EC", OBJ_nid2sn(prov_key_type_curve_nid(k->type)));
    } else {
        k->pkey = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)prov_key_type_rsa_bits(k->type));
    }
    if (k->pkey == NULL) {
        r = prov_fail_ossl(PROV_ERR_CRYPTO, "root key %s: generation failed", path);
        goto out;
    }
    /* O_EXCL|O_NOFOLLOW, 0600: a private key file must be new and ours alone. */
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        r = prov_fail(PROV_ERR_STORAGE, "root key %s: %s", path, strerror(errno));
        goto out;
    }
    k->is_generated = true;
    k->file = path;
    bio = BIO_new_fd(fd, BIO_CLOSE);
    fd = -1;
    if (bio == NULL ||
        !PEM_write_bio_PrivateKey(bio, k->pkey, EVP_aes_256_cbc(), NULL, 0, NULL, pass->data) ||
        BIO_flush(bio) != 1) {
        r = prov_fail_ossl(PROV_ERR_STORAGE, "root key %s: write failed", path);
        unlink(path);
        goto out;
    }
    r = 0;
out:
    if (fd >= 0) {
        close(fd);
    }
    BIO_free(bio);
    prov_secret_free(pass);
    return r;
}

/* A CA's subject: the fields of DN section section of conf, or CN=default_cn without one. */
static int add_name_section(CONF *conf, const char *section, const char *default_cn,
                            X509_NAME *name)
{
    STACK_OF(CONF_VALUE) *sk;

    if (section == NULL) {
        return X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                          (const unsigned char *)default_cn, -1, -1, 0)
                   ? 0
                   : PROV_ERR_CRYPTO;
    }
    sk = NCONF_get_section(conf, section);
    if (sk == NULL) {
        return prov_fail(PROV_ERR_CONFIG, "DN section [%s] not found", section);
    }
    for (int i = 0; i < sk_CONF_VALUE_num(sk); i++) {
        CONF_VALUE *v = sk_CONF_VALUE_value(sk, i);
        const char *field = v->name;
        const char *dot = strrchr(field, '.');

        /* "1.OU" names a second OU, as in openssl req. */
        if (dot != NULL && dot[1] != '\0') {
            field = dot + 1;
        }
        if (!X509_NAME_add_entry_by_txt(name, field, MBSTRING_UTF8,
                                        (const unsigned char *)v->value, -1, -1, 0)) {
            return prov_fail_ossl(PROV_ERR_CONFIG, "DN section [%s]: bad field \"%s\"", section,
                                  v->name);
        }
    }
    return 0;
}

int prov_ca_add_ext(X509 *cert, X509V3_CTX *ctx, int nid, const char *value)
{
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
    int ok = ext != NULL && X509_add_ext(cert, ext, -1);

    X509_EXTENSION_free(ext);
    return ok ? 0 : prov_fail_ossl(PROV_ERR_CRYPTO, "extension %s = %s", OBJ_nid2sn(nid), value);
}

static int new_cert(X509_NAME *subject, X509 *issuer, EVP_PKEY *pub, int days, X509 **out)
{
    ASN1_INTEGER *serial = NULL;
    X509 *cert = X509_new();
    int r;

    *out = NULL;
    if (cert == NULL) {
        return PROV_ERR_NOMEM;
    }
    r = prov_serial_random(&serial);
    if (r < 0) {
        goto out;
    }
    r = PROV_ERR_CRYPTO;
    if (!X509_set_version(cert, X509_VERSION_3) || !X509_set_serialNumber(cert, serial) ||
        !X509_set_subject_name(cert, subject) ||
        !X509_set_issuer_name(cert, issuer ? X509_get_subject_name(issuer) : subject) ||
        !X509_set_pubkey(cert, pub) ||
        !X509_gmtime_adj(X509_getm_notBefore(cert), -CLOCK_SKEW_SECONDS) ||
        !X509_gmtime_adj(X509_getm_notAfter(cert), (long)days * 86400L)) {
        r = prov_fail_ossl(PROV_ERR_CRYPTO, "building a CA certificate");
        goto out;
    }
    /* Validity periods nest (doc/chains.md): never outlive the issuer. */
    if (issuer != NULL && ASN1_TIME_compare(X509_get0_notAfter(cert), X509_get0_notAfter(issuer)) > 0) {
        X509_set1_notAfter(cert, X509_get0_notAfter(issuer));
    }
    *out = cert;
    cert = NULL;
    r = 0;
out:
    ASN1_INTEGER_free(serial);
    X509_free(cert);
    return r;
}

static int sign_cert(X509 *cert, struct ca_key *k, const char *what)
{
    if (X509_sign(cert, k->pkey, prov_key_type_digest(k->type)) <= 0) {
        int r = prov_fail_ossl(PROV_ERR_CRYPTO, "%s: signing failed", what);

        /* The HSM's own reason (and code: removed, PIN...) wins when it gave one. */
        return prov_error_code() < 0 ? prov_error_code() : r;
    }
    return 0;
}

/* An `openssl req`-style root config (examples/root.conf): [req] distinguished_name and
 * x509_extensions. */
static int root_conf_sections(CONF *conf, const char **dn, const char **ext)
{
    *dn = NCONF_get_string(conf, "req", "distinguished_name");
    *ext = NCONF_get_string(conf, "req", "x509_extensions");
    ERR_clear_error();
    return 0;
}

/* A CA certificate named from the DN section (or default_cn alone), before its extensions. */
static int new_named_cert(CONF *conf, const char *dn_sec, const char *default_cn, X509 *issuer,
                          EVP_PKEY *pub, int days, X509 **out)
{
    X509_NAME *name = X509_NAME_new();
    int r;

    *out = NULL;
    if (name == NULL) {
        return PROV_ERR_NOMEM;
    }
    r = add_name_section(conf, dn_sec, default_cn, name);
    if (r >= 0) {
        r = new_cert(name, issuer, pub, days, out);
    }
    X509_NAME_free(name);
    return r;
}

/* What a root and an intermediate both carry; basic names their basicConstraints. */
static int add_ca_exts(X509 *cert, X509V3_CTX *ctx, const char *basic)
{
    int r;

    if ((r = prov_ca_add_ext(cert, ctx, NID_basic_constraints, basic)) < 0 ||
        (r = prov_ca_add_ext(cert, ctx, NID_key_usage, "critical,keyCertSign,cRLSign")) < 0 ||
        (r = prov_ca_add_ext(cert, ctx, NID_subject_key_identifier, "hash")) < 0) {
        return r;
    }
    return 0;
}

static int build_root(const struct prov_config *cfg, CONF *rconf, EVP_PKEY *pub, X509 **out)
{
    const char *dn_sec = NULL;
    const char *ext_sec = NULL;
    X509V3_CTX ctx;
    X509 *cert = NULL;
    int r;

    *out = NULL;
    if (rconf != NULL) {
        root_conf_sections(rconf, &dn_sec, &ext_sec);
    }
    r = new_named_cert(rconf, dn_sec, "Provisioner Root CA", NULL, pub, cfg->root_days, &cert);
    if (r < 0) {
        return r;
    }
    X509V3_set_ctx(&ctx, cert, cert, NULL, NULL, 0);
    X509V3_set_issuer_pkey(&ctx, pub);
    if (ext_sec != NULL) {
        X509V3_set_nconf(&ctx, rconf);
        if (!X509V3_EXT_add_nconf(rconf, &ctx, ext_sec, cert)) {
            X509_free(cert);
            return prov_fail_ossl(PROV_ERR_CONFIG, "root config: extension section [%s]", ext_sec);
        }
    } else if ((r = add_ca_exts(cert, &ctx, "critical,CA:TRUE")) < 0) {
        X509_free(cert);
        return r;
    }
    *out = cert;
    return 0;
}

static int build_intermediate(const struct prov_config *cfg, X509 *root, EVP_PKEY *pub, X509 **out)
{
    X509V3_CTX ctx;
    X509 *cert = NULL;
    int r;

    *out = NULL;
    r = new_named_cert(cfg->conf, cfg->ca_subject_section, "Provisioner Intermediate CA", root,
                       pub, cfg->ca_days, &cert);
    if (r < 0) {
        return r;
    }
    X509V3_set_ctx(&ctx, root, cert, NULL, NULL, 0);
    if ((r = add_ca_exts(cert, &ctx, "critical,CA:TRUE,pathlen:0")) < 0 ||
        (r = prov_ca_add_ext(cert, &ctx, NID_authority_key_identifier, "keyid:always")) < 0) {
        X509_free(cert);
        return r;
    }
    *out = cert;
    return 0;
}

static int write_pem_certs(const char *dir, const char *file, X509 *a, X509 *b)
{
    STACK_OF(X509) *sk = sk_X509_new_null();
    char *pem = NULL;
    size_t len = 0;
    char *path = NULL;
    int r = PROV_ERR_NOMEM;

    if (sk == NULL || !sk_X509_push(sk, a) || (b != NULL && !sk_X509_push(sk, b))) {
        goto out;
    }
    r = prov_chain_to_pem(sk, &pem, &len);
    if (r < 0) {
        goto out;
    }
    if (asprintf(&path, "%s/%s", dir, file) < 0) {
        r = PROV_ERR_NOMEM;
        goto out;
    }
    r = prov_atomic_write_file(path, pem, len, 0644);
out:
    free(path);
    free(pem);
    sk_X509_free(sk); /* the certificates are borrowed */
    return r;
}

static bool is_pkcs11(const char *uri)
{
    return uri != NULL && strncmp(uri, "pkcs11:", 7) == 0;
}

/* The root: imported (root_cert + root_key) or new (key per root_key, cert per root config). */
static int make_root(const struct prov_config *cfg, const struct prov_ca_init_opts *opts,
                     struct ca_key *rk, X509 **root)
{
    CONF *rconf = NULL;
    bool own_conf = false;
    int r;

    *root = NULL;
    if (cfg->root_key == NULL) {
        return prov_fail(PROV_ERR_CONFIG, "%s: [ca] root_key is not set (pkcs11:... or file:PATH)",
                         cfg->path);
    }
    if (cfg->root_cert != NULL) {
        BIO *bio = BIO_new_file(cfg->root_cert, "r");

        *root = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
        BIO_free(bio);
        if (*root == NULL) {
            return prov_fail_ossl(PROV_ERR_INPUT, "root certificate %s: cannot read", cfg->root_cert);
        }
        r = is_pkcs11(cfg->root_key) ? hsm_open(cfg, cfg->root_key, cfg->ca_pin, "root key", rk)
                                     : file_root_key(cfg, cfg->root_key + 5, rk, true);
        if (r < 0) {
            return r;
        }
        if (X509_check_private_key(*root, rk->pkey) != 1 &&
            EVP_PKEY_eq(X509_get0_pubkey(*root), rk->key ? rk->key->pub : rk->pkey) != 1) {
            return prov_fail(PROV_ERR_CONFIG, "root certificate %s does not match root key %s",
                             cfg->root_cert, cfg->root_key);
        }
        if (X509_check_issued(*root, *root) != X509_V_OK) {
            return prov_fail(PROV_ERR_INPUT, "root certificate %s is not self-signed",
                             cfg->root_cert);
        }
        if (prov_ca_lint(*root, cfg->root_cert) > 0 && opts->strict) {
            return prov_fail(PROV_ERR_POLICY, "root certificate %s: refused by --strict",
                             cfg->root_cert);
        }
        return 0;
    }

    if (cfg->root_config != NULL) {
        BIO *bio = BIO_new_file(cfg->root_config, "r");
        long line = 0;

        rconf = NCONF_new(NULL);
        own_conf = true;
        if (bio == NULL || rconf == NULL || NCONF_load_bio(rconf, bio, &line) <= 0) {
            BIO_free(bio);
            r = prov_fail_ossl(PROV_ERR_CONFIG, "root config %s: cannot load (line %ld)",
                               cfg->root_config, line);
            goto out;
        }
        BIO_free(bio);
    } else {
        rconf = cfg->conf;
    }

    /* Lint the extensions first with a throwaway key, so --strict refuses before a key exists. */
    {
        EVP_PKEY *tmp = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
        X509 *probe = NULL;
        const char *what = cfg->root_config ? cfg->root_config : cfg->path;
        int findings;

        r = tmp ? build_root(cfg, rconf, tmp, &probe) : PROV_ERR_CRYPTO;
        findings = r == 0 ? prov_ca_lint(probe, what) : 0;
        X509_free(probe);
        EVP_PKEY_free(tmp);
        if (r < 0) {
            goto out;
        }
        if (findings > 0 && opts->strict) {
            r = prov_fail(PROV_ERR_POLICY,
                          "root config %s: %d finding(s) that strict verifiers reject; refused "
                          "by --strict",
                          what, findings);
            goto out;
        }
    }

    if (is_pkcs11(cfg->root_key)) {
        r = hsm_generate(cfg, cfg->root_key, cfg->ca_pin, cfg->root_key_type, opts->force,
                         "root key", rk);
    } else if (strncmp(cfg->root_key, "file:", 5) == 0) {
        r = file_root_key(cfg, cfg->root_key + 5, rk, false);
    } else {
        r = prov_fail(PROV_ERR_CONFIG, "%s: [ca] root_key \"%s\": expected pkcs11:... or file:PATH",
                      cfg->path, cfg->root_key);
    }
    if (r < 0) {
        goto out;
    }
    r = build_root(cfg, rconf, rk->key ? rk->key->pub : rk->pkey, root);
    if (r < 0) {
        goto out;
    }
    r = sign_cert(*root, rk, "root certificate");
out:
    if (own_conf) {
        NCONF_free(rconf);
    }
    return r;
}

static int ca_dir_ready(const struct prov_config *cfg, bool force)
{
    char *chain = NULL;
    struct stat st;
    int r = 0;

    if (prov_mkdir_public(cfg->ca_dir) < 0 && errno != EEXIST) {
        return prov_fail(PROV_ERR_STORAGE, "CA directory %s: %s", cfg->ca_dir, strerror(errno));
    }
    if (asprintf(&chain, "%s/chain.pem", cfg->ca_dir) < 0) {
        return PROV_ERR_NOMEM;
    }
    if (!force && stat(chain, &st) == 0) {
        r = prov_fail(PROV_ERR_ALREADY_ISSUED,
                      "CA directory %s already holds a CA (chain.pem); use --force to replace it",
                      cfg->ca_dir);
    }
    free(chain);
    return r;
}

int prov_ca_init(const struct prov_config *cfg, const struct prov_ca_init_opts *opts)
{
    struct ca_key rk = {0};
    struct ca_key ik = {0};
    X509 *root = NULL;
    X509 *inter = NULL;
    int r;

    if (cfg->ca_key == NULL || !is_pkcs11(cfg->ca_key)) {
        return prov_fail(PROV_ERR_CONFIG,
                         "%s: [ca] intermediate_key must be the pkcs11: URI of the HSM key",
                         cfg->path);
    }
    r = ca_dir_ready(cfg, opts->force);
    if (r < 0) {
        goto out;
    }
    /*
     * A CA index on PostgreSQL ([ca] index, doc/revocation.md) gets its schema now, before any
     * key is made: a database that cannot be reached or is of a newer tool stops ca init with
     * nothing made. (The SQLite index is made by the first command that opens it.)
     */
    if (cfg->ca_index != NULL) {
        struct prov_ca_index *ix = NULL;

        r = prov_ca_index_open_config(cfg, &ix);
        prov_ca_index_close(ix);
        if (r < 0) {
            goto out;
        }
    }
    r = make_root(cfg, opts, &rk, &root);
    if (r < 0) {
        goto out;
    }
    r = hsm_generate(cfg, cfg->ca_key, cfg->ca_pin, cfg->ca_key_type, opts->force,
                     "intermediate key", &ik);
    if (r < 0) {
        goto out;
    }
    r = build_intermediate(cfg, root, ik.key->pub, &inter);
    if (r < 0) {
        goto out;
    }
    r = sign_cert(inter, &rk, "intermediate certificate");
    if (r < 0) {
        goto out;
    }
    /* The intermediate certificate also lives on the token, next to its key. */
    r = ik.dev->ops->store_certificate(ik.dev, ik.key, inter);
    if (r < 0) {
        goto out;
    }
    if ((r = write_pem_certs(cfg->ca_dir, "root.crt", root, NULL)) < 0 ||
        (r = write_pem_certs(cfg->ca_dir, "intermediate.crt", inter, NULL)) < 0 ||
        (r = write_pem_certs(cfg->ca_dir, "chain.pem", inter, root)) < 0) {
        goto out;
    }
    r = 0;
out:
    if (r < 0) {
        /* A failed ca init leaves no key behind that nothing refers to. */
        if (ik.is_generated) {
            ik.dev->ops->delete_key(ik.dev, ik.key);
        }
        if (rk.is_generated && rk.dev != NULL) {
            rk.dev->ops->delete_key(rk.dev, rk.key);
        } else if (rk.is_generated && rk.file != NULL) {
            unlink(rk.file);
        }
    }
    X509_free(inter);
    X509_free(root);
    ca_key_clear(&ik);
    ca_key_clear(&rk);
    return r;
}

struct prov_ca_root_key {
    struct ca_key k;
};

int prov_ca_root_key_open(const struct prov_config *cfg, X509 *root,
                          struct prov_ca_root_key **out)
{
    struct prov_ca_root_key *rk = calloc(1, sizeof(*rk));
    int lock_fd = -1;
    int r;

    *out = NULL;
    if (rk == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "root key: out of memory");
    }
    if (cfg->root_key == NULL) {
        r = prov_fail(PROV_ERR_CONFIG, "%s: [ca] root_key is not set (pkcs11:... or file:PATH)",
                      cfg->path);
    } else if (is_pkcs11(cfg->root_key)) {
        r = prov_ca_index_token_lock(cfg->ca_dir, &lock_fd);
        if (r == 0) {
            r = hsm_open(cfg, cfg->root_key, cfg->ca_pin, "root key", &rk->k);
        }
        prov_ca_index_token_unlock(lock_fd);
    } else if (strncmp(cfg->root_key, "file:", 5) == 0) {
        r = file_root_key(cfg, cfg->root_key + 5, &rk->k, true);
    } else {
        r = prov_fail(PROV_ERR_CONFIG, "%s: [ca] root_key \"%s\": expected pkcs11:... or file:PATH",
                      cfg->path, cfg->root_key);
    }
    if (r == 0 &&
        EVP_PKEY_eq(X509_get0_pubkey(root), rk->k.key ? rk->k.key->pub : rk->k.pkey) != 1) {
        r = prov_fail(PROV_ERR_CONFIG, "root key %s does not match the root certificate",
                      cfg->root_key);
    }
    if (r < 0) {
        prov_ca_root_key_close(rk);
        return r;
    }
    *out = rk;
    return 0;
}

EVP_PKEY *prov_ca_root_key_pkey(const struct prov_ca_root_key *k)
{
    return k->k.pkey;
}

enum prov_key_type prov_ca_root_key_type(const struct prov_ca_root_key *k)
{
    return k->k.type;
}

void prov_ca_root_key_close(struct prov_ca_root_key *k)
{
    if (k != NULL) {
        ca_key_clear(&k->k);
        free(k);
    }
}

int prov_ca_check_device_uri(const struct prov_config *cfg, const char *device_uri)
{
    const struct prov_backend_ops *ops = device_uri ? prov_backend_for(device_uri) : NULL;

    if (cfg->ca_key == NULL || ops == NULL || ops != prov_backend_for(cfg->ca_key) ||
        ops->names_same_device == NULL ||
        !ops->names_same_device(device_uri, cfg->ca_key, cfg->pkcs11_module)) {
        return 0;
    }
    return prov_fail(PROV_ERR_USAGE,
                     "device %s names the CA's token ([ca] intermediate_key = %s): a device key "
                     "is never made on the CA token",
                     device_uri, cfg->ca_key);
}

/* The identity of the CA's token, read without a login; "" when there is none to read. */
static int ca_token_identity(const struct prov_config *cfg, const struct prov_ca *ca,
                             const struct prov_backend_ops **ops, char *buf, size_t len)
{
    struct prov_device_params params;
    struct prov_device *dev = NULL;
    int lock_fd = -1;
    int r;

    buf[0] = '\0';
    *ops = NULL;
    if (ca != NULL && ca->dev != NULL) {
        *ops = ca->dev->ops;
        return ca->dev->ops->identity(ca->dev, buf, len);
    }
    if (cfg->ca_key == NULL) {
        return 0;
    }
    r = prov_ca_index_token_lock(cfg->ca_dir, &lock_fd);
    if (r == 0) {
        prov_device_params_from_config(cfg, true, &params);
        r = prov_device_open(cfg->ca_key, &params, &dev);
        if (r == 0) {
            *ops = dev->ops;
            r = dev->ops->identity(dev, buf, len);
        } else if (r == PROV_ERR_NOT_FOUND) {
            prov_error_clear(); /* not on this host: it cannot be the device */
            r = 0;
        }
    }
    prov_device_close(dev);
    prov_ca_index_token_unlock(lock_fd);
    return r;
}

int prov_ca_check_device(const struct prov_config *cfg, const struct prov_ca *ca,
                         struct prov_device *dev)
{
    const struct prov_backend_ops *ca_ops = NULL;
    char ca_ident[256];
    char ident[256];
    int r;

    /* Another kind of device (a TPM) cannot be the CA's token: nothing to open for it. */
    if (cfg->ca_key == NULL || prov_backend_for(cfg->ca_key) != dev->ops) {
        return 0;
    }
    r = ca_token_identity(cfg, ca, &ca_ops, ca_ident, sizeof(ca_ident));
    if (r < 0 || ca_ops != dev->ops || ca_ident[0] == '\0') {
        return r;
    }
    r = dev->ops->identity(dev, ident, sizeof(ident));
    if (r == 0 && strcmp(ident, ca_ident) == 0) {
        r = prov_fail(PROV_ERR_POLICY,
                      "%s is the CA's token ([ca] intermediate_key = %s): a device key is never "
                      "made on the CA token, nor is it logged in to as a device",
                      dev->name, cfg->ca_key);
    }
    return r;
}

/* How long until t, for a message: "12 days", "23 hours" (rounded down). */
static void time_left(const ASN1_TIME *t, time_t now, char *buf, size_t len)
{
    ASN1_TIME *from = ASN1_TIME_set(NULL, now);
    int days = 0;
    int secs = 0;

    if (from == NULL || ASN1_TIME_diff(&days, &secs, from, t) != 1) {
        days = secs = 0;
    }
    ASN1_TIME_free(from);
    if (days > 0 || secs < 0) {
        snprintf(buf, len, "%d day%s", days, days == 1 ? "" : "s");
    } else {
        snprintf(buf, len, "%d hour%s", secs / 3600, secs / 3600 == 1 ? "" : "s");
    }
}

int prov_ca_lint_lifetime(const struct prov_config *cfg, const struct prov_ca *ca, time_t now,
                          struct prov_chain_report *rep)
{
    const ASN1_TIME *end = X509_get0_notAfter(ca->cert);
    struct prov_cert_facts f;
    int r;

    if (X509_cmp_time(end, &now) <= 0) {
        return 0; /* expired: the chain rules' "validity" says so */
    }
    r = prov_cert_facts(ca->cert, &f);
    for (size_t i = 0; r == 0 && i < cfg->n_profiles; i++) {
        const struct prov_profile *p = &cfg->profiles[i];
        time_t until = now;
        ASN1_TIME *want = X509_time_adj_ex(NULL, p->days, 0, &until);

        if (want == NULL) {
            return prov_fail_ossl(PROV_ERR_NOMEM, "CA lifetime check: out of memory");
        }
        if (ASN1_TIME_compare(want, end) > 0) {
            char left[32];

            time_left(end, now, left, sizeof(left));
            r = prov_chain_report_add(rep, ca->chain, 0, "lifetime",
                                      "expires %s (%s left), before the %d days of profile %s: "
                                      "its certificates are capped at that date",
                                      f.not_after, left, p->days, p->name);
        }
        ASN1_TIME_free(want);
    }
    return r;
}

/*
 * A CA that cannot issue now is refused before its token is opened (no PIN is spent, no row
 * of a lot starts): every certificate of its chain must be valid at now. What can still be
 * issued, but capped, is a warning (prov_ca_lint_lifetime).
 */
static int check_issuing_time(const struct prov_config *cfg, const struct prov_ca *ca,
                              const char *path, time_t now)
{
    struct prov_chain_report rep = {0};
    int r = 0;

    for (int i = 0; i < sk_X509_num(ca->chain); i++) {
        X509 *cert = sk_X509_value(ca->chain, i);
        const char *role = i == sk_X509_num(ca->chain) - 1 ? "root" : "intermediate";
        bool is_early = X509_cmp_time(X509_get0_notBefore(cert), &now) > 0;
        struct prov_cert_facts f;

        if (!is_early && X509_cmp_time(X509_get0_notAfter(cert), &now) > 0) {
            continue;
        }
        r = prov_cert_facts(cert, &f);
        if (r == 0) {
            r = prov_fail(PROV_ERR_POLICY,
                          "%s: the %s %s %s %s; nothing can be issued with this CA", path, role,
                          f.subject, is_early ? "is not valid before" : "expired at",
                          is_early ? f.not_before : f.not_after);
        }
        return r;
    }
    r = prov_ca_lint_lifetime(cfg, ca, now, &rep);
    for (size_t i = 0; r == 0 && i < rep.n; i++) {
        prov_warn("%s: the intermediate %s %s", path, rep.items[i].subject, rep.items[i].detail);
    }
    prov_chain_report_free(&rep);
    return r;
}

int prov_ca_open(const struct prov_config *cfg, bool with_key, struct prov_ca **out)
{
    struct prov_ca *ca = calloc(1, sizeof(*ca));
    char *path = NULL;
    int lock_fd = -1;
    int r = PROV_ERR_NOMEM;

    *out = NULL;
    if (ca == NULL || asprintf(&path, "%s/chain.pem", cfg->ca_dir) < 0) {
        goto out;
    }
    r = prov_chain_load_pem(path, &ca->chain);
    if (r < 0) {
        goto out;
    }
    if (sk_X509_num(ca->chain) < 2) {
        r = prov_fail(PROV_ERR_INPUT, "%s: expected the intermediate then the root", path);
        goto out;
    }
    ca->cert = sk_X509_value(ca->chain, 0);
    ca->root = sk_X509_value(ca->chain, sk_X509_num(ca->chain) - 1);
    if (with_key) {
        struct ca_key k = {0};

        if (cfg->ca_key == NULL) {
            r = prov_fail(PROV_ERR_CONFIG, "%s: [ca] intermediate_key is not set", cfg->path);
            goto out;
        }
        r = check_issuing_time(cfg, ca, path, time(NULL));
        if (r < 0) {
            goto out;
        }
        /* Whatever it signs is recorded there first (issue.c): no index, no issuing. */
        r = prov_ca_index_open_config(cfg, &ca->index);
        if (r < 0) {
            goto out;
        }
        r = prov_ca_index_token_lock(cfg->ca_dir, &lock_fd);
        if (r < 0) {
            goto out;
        }
        r = hsm_open(cfg, cfg->ca_key, cfg->ca_pin, "CA key", &k);
        prov_ca_index_token_unlock(lock_fd);
        ca->dev = k.dev;
        ca->hsm_key = k.key;
        ca->key = k.pkey;
        if (r < 0) {
            goto out;
        }
        if (EVP_PKEY_eq(X509_get0_pubkey(ca->cert), ca->hsm_key->pub) != 1) {
            r = prov_fail(PROV_ERR_CONFIG, "CA key %s does not match %s (intermediate)",
                          cfg->ca_key, path);
            goto out;
        }
    }
    *out = ca;
    ca = NULL;
    r = 0;
out:
    prov_ca_close(ca);
    free(path);
    return r;
}

void prov_ca_close(struct prov_ca *ca)
{
    if (ca == NULL) {
        return;
    }
    prov_ca_index_close(ca->index);
    prov_ca_token_key_free(ca->key, ca->hsm_key, ca->dev);
    sk_X509_pop_free(ca->chain, X509_free);
    free(ca);
}
