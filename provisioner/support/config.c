/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>

#include "error.h"
#include "secret.h"

/* A config is a few KiB; anything near this is a mistake (or a fuzzer), not a config. */
#define CONFIG_MAX_SIZE (1024 * 1024)
#define DAYS_MAX 36500
#define PROFILE_PREFIX "profile_"
#define ALL_KEY_TYPES                                                                              \
    (PROV_KEY_BIT(PROV_KEY_EC_P256) | PROV_KEY_BIT(PROV_KEY_EC_P384) |                             \
     PROV_KEY_BIT(PROV_KEY_RSA_2048) | PROV_KEY_BIT(PROV_KEY_RSA_3072))

static const char *const provisioner_keys[] = {
    "pkcs11_module", "output_dir", "server_ca", "device_pin", "lot", "journal", "journal_password",
    "journal_lease",
    "tpm_srk_handle", "tpm_key_handle", "tpm_nv_index", NULL,
};

static const char *const ca_keys[] = {
    "dir", "intermediate_key", "pin", "intermediate_key_type", "intermediate_subject",
    "intermediate_days", "root_config", "root_key", "root_key_pass", "root_cert",
    "root_key_type", "root_days", "crl_days", "root_crl_days", "url", "station_cert",
    "station_key", "station_pin", "tls_ca", NULL,
};

static const char *const profile_keys[] = {
    "key", "allowed_keys", "days", "subject", "extensions",
    "san_dns", "san_uri", "san_email", "san_ip", "crl_url", "revoke_superseded", NULL,
};

/* Section being read: the file name and section name go into every message. */
struct section {
    const struct prov_config *cfg;
    const char *name;
    STACK_OF(CONF_VALUE) *values; /* NULL when the file has no such section */
};

static bool is_tool_var_name(const char *s, size_t n)
{
    static const char *const fixed[] = {"serial", "cn", "lot", "profile"};

    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
        if (strlen(fixed[i]) == n && strncmp(s, fixed[i], n) == 0) {
            return true;
        }
    }
    if (n < 3 || strncmp(s, "x_", 2) != 0) {
        return false;
    }
    for (size_t i = 2; i < n; i++) {
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || s[i] == '_')) {
            return false;
        }
    }
    return true;
}

/* Skips NCONF line continuations (backslash, optional CR, newline) at p. */
static size_t skip_continuations(const char *buf, size_t len, size_t p)
{
    for (;;) {
        if (p + 1 < len && buf[p] == '\\' && buf[p + 1] == '\n') {
            p += 2;
        } else if (p + 2 < len && buf[p] == '\\' && buf[p + 1] == '\r' && buf[p + 2] == '\n') {
            p += 3;
        } else {
            return p;
        }
    }
}

/*
 * True when a line starting at p is an NCONF ".include" directive, even one split by line
 * continuations: includes would read other files (relative to the working directory, not the
 * config), and prov_config_parse() promises to touch nothing beyond its buffer.
 */
static bool is_include_line(const char *buf, size_t len, size_t p)
{
    static const char word[] = ".include";

    for (;;) {
        p = skip_continuations(buf, len, p);
        if (p < len && (buf[p] == ' ' || buf[p] == '\t' || buf[p] == '\r')) {
            p++;
        } else {
            break;
        }
    }
    for (size_t i = 0; word[i] != '\0'; i++) {
        p = skip_continuations(buf, len, p);
        if (p >= len || (buf[p] | 0x20) != word[i]) {
            return false;
        }
        p++;
    }
    return true;
}

/*
 * NCONF expands "$name" and "${name}" while loading and fails on undefined names, so the
 * tool's template variables would never survive the load. Before loading, "${serial}",
 * "${cn}", "${lot}", "${profile}", "${x_NAME}" and "$$" are escaped with a backslash, which
 * NCONF turns back into the literal text: the values in cfg->conf keep the template for
 * prov_template_expand(). Text already escaped ("\${cn}") is copied unchanged, and every
 * other "$var" is still NCONF's own variable. The output has the same line structure.
 */
static int escape_templates(const char *buf, size_t len, const char *name, char **out,
                            size_t *out_len)
{
    size_t line = 1;
    size_t o = 0;
    char *dst;

    *out = NULL;
    dst = malloc(2 * len + 1);
    if (dst == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "%s: out of memory", name);
    }
    for (size_t i = 0; i < len;) {
        if (buf[i] == '\0') {
            free(dst);
            return prov_fail(PROV_ERR_CONFIG, "%s: line %zu: NUL byte in the file", name, line);
        }
        if (i == 0 || buf[i - 1] == '\n') {
            if (is_include_line(buf, len, i)) {
                free(dst);
                return prov_fail(PROV_ERR_CONFIG, "%s: line %zu: .include is not supported",
                                 name, line);
            }
        }
        if (buf[i] == '\n') {
            line++;
        }
        if (buf[i] == '\\' && i + 1 < len) {
            if (buf[i + 1] == '\n') {
                line++;
            }
            dst[o++] = buf[i++];
            dst[o++] = buf[i++];
            continue;
        }
        if (buf[i] == '$' && i + 1 < len && buf[i + 1] == '$') {
            memcpy(dst + o, "\\$\\$", 4);
            o += 4;
            i += 2;
            continue;
        }
        if (buf[i] == '$' && i + 1 < len && buf[i + 1] == '{') {
            const char *close = memchr(buf + i + 2, '}', len - i - 2);

            if (close != NULL && is_tool_var_name(buf + i + 2, (size_t)(close - buf - i - 2))) {
                dst[o++] = '\\';
            }
        }
        dst[o++] = buf[i++];
    }
    dst[o] = '\0';
    *out = dst;
    *out_len = o;
    return 0;
}

static int load_conf(const char *buf, size_t len, const char *name, CONF **out)
{
    char *text = NULL;
    size_t text_len = 0;
    BIO *bio = NULL;
    CONF *conf = NULL;
    long eline = 0;
    int r;

    *out = NULL;
    if (len > CONFIG_MAX_SIZE) {
        return prov_fail(PROV_ERR_CONFIG, "%s: larger than %d bytes", name, CONFIG_MAX_SIZE);
    }
    r = escape_templates(buf, len, name, &text, &text_len);
    if (r < 0) {
        goto out;
    }
    r = PROV_ERR_NOMEM;
    conf = NCONF_new(NULL);
    bio = BIO_new_mem_buf(text, (int)text_len);
    if (conf == NULL || bio == NULL) {
        prov_fail(r, "%s: out of memory", name);
        goto out;
    }
    ERR_clear_error();
    if (NCONF_load_bio(conf, bio, &eline) <= 0) {
        unsigned long e = ERR_peek_last_error();
        const char *why = e != 0 ? ERR_reason_error_string(e) : NULL;
        bool no_value = e != 0 && ERR_GET_REASON(e) == CONF_R_VARIABLE_HAS_NO_VALUE;

        ERR_clear_error();
        r = prov_fail(PROV_ERR_CONFIG, "%s: line %ld: %s%s", name, eline,
                      why ? why : "syntax error",
                      no_value ? " (a literal '$' is written \\$; template variables are "
                                 "${serial} ${cn} ${lot} ${profile} ${x_NAME})"
                               : "");
        goto out;
    }
    *out = conf;
    conf = NULL;
    r = 0;
out:
    BIO_free(bio);
    NCONF_free(conf);
    free(text);
    return r;
}

static const char *section_get(const struct section *s, const char *key)
{
    const char *v = NULL;

    /* Walked by hand: NCONF_get_string() falls back to the default section. Last one wins. */
    for (int i = 0; s->values != NULL && i < sk_CONF_VALUE_num(s->values); i++) {
        CONF_VALUE *cv = sk_CONF_VALUE_value(s->values, i);

        if (cv->name != NULL && strcmp(cv->name, key) == 0) {
            v = cv->value;
        }
    }
    return v;
}

static int check_known_keys(const struct section *s, const char *const *known)
{
    for (int i = 0; s->values != NULL && i < sk_CONF_VALUE_num(s->values); i++) {
        CONF_VALUE *cv = sk_CONF_VALUE_value(s->values, i);
        bool found = false;

        for (size_t k = 0; known[k] != NULL && !found; k++) {
            found = strcmp(cv->name, known[k]) == 0;
        }
        if (!found) {
            return prov_fail(PROV_ERR_CONFIG, "%s: [%s] key \"%s\": unknown key", s->cfg->path,
                             s->name, cv->name);
        }
        if (cv->value == NULL || cv->value[0] == '\0') {
            return prov_fail(PROV_ERR_CONFIG, "%s: [%s] %s: empty value", s->cfg->path, s->name,
                             cv->name);
        }
    }
    return 0;
}

/*
 * key's value when the section sets it, into *out (replacing what was there): as written, or
 * as a path relative to the config file's directory (prov_config_path).
 */
static int get_value(const struct section *s, const char *key, bool is_path, char **out)
{
    const char *v = section_get(s, key);

    if (v == NULL) {
        return 0;
    }
    free(*out);
    *out = is_path ? prov_config_path(s->cfg, v) : strdup(v);
    if (*out == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "%s: [%s] %s: out of memory", s->cfg->path, s->name, key);
    }
    return 0;
}

static int get_string(const struct section *s, const char *key, char **out)
{
    return get_value(s, key, false, out);
}

static int get_path(const struct section *s, const char *key, char **out)
{
    return get_value(s, key, true, out);
}

/* A journal: a libpq URI (the shared ledger, doc/ledger.md) as written, else a path. */
static int get_journal(const struct section *s, const char *key, char **out)
{
    const char *v = section_get(s, key);

    if (v != NULL && (strncmp(v, "postgresql://", 13) == 0 || strncmp(v, "postgres://", 11) == 0)) {
        return get_string(s, key, out);
    }
    return get_path(s, key, out);
}

/* A whole number of units from 1 to max. */
static int get_count(const struct section *s, const char *key, long max, const char *unit,
                     int *out)
{
    const char *v = section_get(s, key);
    long n = 0;

    if (v == NULL) {
        return 0;
    }
    for (const char *p = v; *p != '\0'; p++) {
        if (*p < '0' || *p > '9' || n > max) {
            n = -1;
            break;
        }
        n = n * 10 + (*p - '0');
    }
    if (n < 1 || n > max) {
        return prov_fail(PROV_ERR_CONFIG, "%s: [%s] %s \"%s\": expected a whole number of %s "
                         "from 1 to %ld", s->cfg->path, s->name, key, v, unit, max);
    }
    *out = (int)n;
    return 0;
}

static int get_days(const struct section *s, const char *key, int *out)
{
    return get_count(s, key, DAYS_MAX, "days", out);
}

static int get_bool(const struct section *s, const char *key, bool *out)
{
    const char *v = section_get(s, key);

    if (v == NULL) {
        return 0;
    }
    if (strcmp(v, "true") == 0 || strcmp(v, "yes") == 0) {
        *out = true;
    } else if (strcmp(v, "false") == 0 || strcmp(v, "no") == 0) {
        *out = false;
    } else {
        return prov_fail(PROV_ERR_CONFIG, "%s: [%s] %s \"%s\": expected true or false",
                         s->cfg->path, s->name, key, v);
    }
    return 0;
}

/* A TPM handle in hex (0x...) within [lo, hi]: persistent objects or NV indices. */
static int get_tpm_handle(const struct section *s, const char *key, uint32_t lo, uint32_t hi,
                          uint32_t *out)
{
    const char *v = section_get(s, key);
    unsigned long n = 0;
    char *end = NULL;

    if (v == NULL) {
        return 0;
    }
    errno = 0;
    if (strncmp(v, "0x", 2) == 0 && v[2] != '\0') {
        n = strtoul(v + 2, &end, 16);
    }
    if (end == NULL || *end != '\0' || errno != 0 || n < lo || n > hi) {
        return prov_fail(PROV_ERR_CONFIG, "%s: [%s] %s \"%s\": expected a hex handle from "
                         "0x%08lx to 0x%08lx", s->cfg->path, s->name, key, v,
                         (unsigned long)lo, (unsigned long)hi);
    }
    *out = (uint32_t)n;
    return 0;
}

/* Key type by name without recording an error: the caller names section and key. */
static bool key_type_lookup(const char *name, size_t n, enum prov_key_type *out)
{
    for (int t = PROV_KEY_EC_P256; t <= PROV_KEY_RSA_3072; t++) {
        const char *tn = prov_key_type_name((enum prov_key_type)t);

        if (tn != NULL && strlen(tn) == n && strncmp(name, tn, n) == 0) {
            *out = (enum prov_key_type)t;
            return true;
        }
    }
    return false;
}

static int get_key_type(const struct section *s, const char *key, enum prov_key_type *out)
{
    const char *v = section_get(s, key);

    if (v == NULL) {
        return 0;
    }
    if (!key_type_lookup(v, strlen(v), out)) {
        return prov_fail(PROV_ERR_CONFIG, "%s: [%s] %s \"%s\": unknown key type (use ec-p256, "
                         "ec-p384, rsa-2048 or rsa-3072)", s->cfg->path, s->name, key, v);
    }
    return 0;
}

static int get_allowed_keys(const struct section *s, const char *key, unsigned *out)
{
    const char *v = section_get(s, key);
    unsigned bits = 0;

    if (v == NULL) {
        return 0;
    }
    for (const char *p = v;;) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        enum prov_key_type t;

        while (n > 0 && (*p == ' ' || *p == '\t')) {
            p++;
            n--;
        }
        while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t')) {
            n--;
        }
        if (!key_type_lookup(p, n, &t)) {
            return prov_fail(PROV_ERR_CONFIG, "%s: [%s] %s \"%s\": expected a comma-separated "
                             "list of ec-p256, ec-p384, rsa-2048, rsa-3072", s->cfg->path,
                             s->name, key, v);
        }
        bits |= PROV_KEY_BIT(t);
        if (end == NULL) {
            break;
        }
        p = end + 1;
    }
    *out = bits;
    return 0;
}

/* A value naming another section of this file (DN or extension lines) must name one. */
static int get_section_ref(const struct section *s, const char *key, char **out)
{
    const char *v = section_get(s, key);

    if (v != NULL && NCONF_get_section(s->cfg->conf, v) == NULL) {
        return prov_fail(PROV_ERR_CONFIG, "%s: [%s] %s: section [%s] does not exist",
                         s->cfg->path, s->name, key, v);
    }
    return get_string(s, key, out);
}

/*
 * A PIN source; the path of file: is resolved. A rejected value is never echoed: a bare
 * string here may well be the PIN itself.
 */
static int get_pin_source(const struct section *s, const char *key, char **out)
{
    const char *v = section_get(s, key);
    enum prov_secret_kind kind;
    const char *arg;
    char *path = NULL;

    if (v == NULL) {
        return 0;
    }
    if (prov_secret_parse_source(v, &kind, &arg) < 0) {
        return prov_fail(PROV_ERR_CONFIG, "%s: [%s] %s \"[****]\": expected file:PATH, env:VAR, "
                         "fd:N or prompt", s->cfg->path, s->name, key);
    }
    if (kind != PROV_SECRET_FILE) {
        return get_string(s, key, out);
    }
    path = prov_config_path(s->cfg, arg);
    free(*out);
    *out = NULL;
    if (path == NULL || asprintf(out, "file:%s", path) < 0) {
        *out = NULL;
        free(path);
        return prov_fail(PROV_ERR_NOMEM, "%s: [%s] %s: out of memory", s->cfg->path, s->name, key);
    }
    free(path);
    return 0;
}

static int get_pkcs11_module(const struct section *s, char **out)
{
    const char *v = section_get(s, "pkcs11_module");

    /* A bare library name is left to the dynamic loader's search path. */
    if (v != NULL && strchr(v, '/') == NULL) {
        return get_string(s, "pkcs11_module", out);
    }
    return get_path(s, "pkcs11_module", out);
}

static int get_root_key(const struct section *s, char **out)
{
    const char *v = section_get(s, "root_key");
    char *path = NULL;

    if (v == NULL || strncmp(v, "pkcs11:", 7) == 0) {
        return get_string(s, "root_key", out);
    }
    if (strncmp(v, "file:", 5) != 0 || v[5] == '\0') {
        return prov_fail(PROV_ERR_CONFIG, "%s: [%s] root_key: expected pkcs11:URI or file:PATH",
                         s->cfg->path, s->name);
    }
    path = prov_config_path(s->cfg, v + 5);
    free(*out);
    *out = NULL;
    if (path == NULL || asprintf(out, "file:%s", path) < 0) {
        *out = NULL;
        free(path);
        return prov_fail(PROV_ERR_NOMEM, "%s: [%s] root_key: out of memory", s->cfg->path,
                         s->name);
    }
    free(path);
    return 0;
}

static void section_open(struct section *s, const struct prov_config *cfg, const char *name)
{
    s->cfg = cfg;
    s->name = name;
    s->values = NCONF_get_section(cfg->conf, name);
}

static int read_provisioner(struct prov_config *cfg)
{
    struct section s;
    int r;

    section_open(&s, cfg, "provisioner");
    if ((r = check_known_keys(&s, provisioner_keys)) < 0 ||
        (r = get_pkcs11_module(&s, &cfg->pkcs11_module)) < 0 ||
        (r = get_path(&s, "output_dir", &cfg->output_dir)) < 0 ||
        (r = get_path(&s, "server_ca", &cfg->server_ca)) < 0 ||
        (r = get_pin_source(&s, "device_pin", &cfg->device_pin)) < 0 ||
        (r = get_journal(&s, "journal", &cfg->journal)) < 0 ||
        (r = get_pin_source(&s, "journal_password", &cfg->journal_password)) < 0 ||
        (r = get_count(&s, "journal_lease", 3600, "seconds", &cfg->journal_lease)) < 0 ||
        (r = get_string(&s, "lot", &cfg->lot)) < 0 ||
        (r = get_tpm_handle(&s, "tpm_srk_handle", 0x81000000u, 0x81ffffffu,
                            &cfg->tpm_srk_handle)) < 0 ||
        (r = get_tpm_handle(&s, "tpm_key_handle", 0x81000000u, 0x81ffffffu,
                            &cfg->tpm_key_handle)) < 0 ||
        (r = get_tpm_handle(&s, "tpm_nv_index", 0x01000000u, 0x01ffffffu,
                            &cfg->tpm_nv_index)) < 0) {
        return r;
    }
    return 0;
}

static int read_ca(struct prov_config *cfg)
{
    struct section s;
    const char *key;
    int r;

    section_open(&s, cfg, "ca");
    if ((r = check_known_keys(&s, ca_keys)) < 0 ||
        (r = get_path(&s, "dir", &cfg->ca_dir)) < 0 ||
        (r = get_string(&s, "intermediate_key", &cfg->ca_key)) < 0 ||
        (r = get_pin_source(&s, "pin", &cfg->ca_pin)) < 0 ||
        (r = get_key_type(&s, "intermediate_key_type", &cfg->ca_key_type)) < 0 ||
        (r = get_section_ref(&s, "intermediate_subject", &cfg->ca_subject_section)) < 0 ||
        (r = get_days(&s, "intermediate_days", &cfg->ca_days)) < 0 ||
        (r = get_path(&s, "root_config", &cfg->root_config)) < 0 ||
        (r = get_root_key(&s, &cfg->root_key)) < 0 ||
        (r = get_pin_source(&s, "root_key_pass", &cfg->root_key_pass)) < 0 ||
        (r = get_path(&s, "root_cert", &cfg->root_cert)) < 0 ||
        (r = get_key_type(&s, "root_key_type", &cfg->root_key_type)) < 0 ||
        (r = get_days(&s, "root_days", &cfg->root_days)) < 0 ||
        (r = get_days(&s, "crl_days", &cfg->crl_days)) < 0 ||
        (r = get_days(&s, "root_crl_days", &cfg->root_crl_days)) < 0 ||
        (r = get_string(&s, "url", &cfg->ca_url)) < 0 ||
        (r = get_path(&s, "station_cert", &cfg->station_cert)) < 0 ||
        (r = get_string(&s, "station_key", &cfg->station_key)) < 0 ||
        (r = get_pin_source(&s, "station_pin", &cfg->station_pin)) < 0 ||
        (r = get_path(&s, "tls_ca", &cfg->ca_tls_ca)) < 0) {
        return r;
    }
    if (cfg->ca_url != NULL && strncmp(cfg->ca_url, "cmp://", 6) != 0 &&
        strncmp(cfg->ca_url, "cmps://", 7) != 0 && strncmp(cfg->ca_url, "est://", 6) != 0 &&
        strncmp(cfg->ca_url, "https://", 8) != 0) {
        return prov_fail(PROV_ERR_CONFIG,
                         "%s: [ca] url \"%s\": expected cmp://HOST:PORT/PATH, "
                         "cmps://HOST:PORT/PATH, est://HOST:PORT or "
                         "https://HOST:PORT/.well-known/est",
                         cfg->path, cfg->ca_url);
    }
    if (cfg->ca_url != NULL && (cfg->station_cert == NULL || cfg->station_key == NULL ||
                                cfg->root_cert == NULL)) {
        return prov_fail(PROV_ERR_CONFIG,
                         "%s: [ca] url needs station_cert, station_key and root_cert", cfg->path);
    }
    key = cfg->ca_key;
    if (key != NULL && strncmp(key, "pkcs11:", 7) != 0) {
        return prov_fail(PROV_ERR_CONFIG, "%s: [ca] intermediate_key \"%s\": expected a pkcs11: "
                         "URI (the intermediate key lives in the HSM)", cfg->path, key);
    }
    return 0;
}

static void profile_clear(struct prov_profile *p)
{
    free(p->name);
    free(p->subject_section);
    free(p->extensions_section);
    free(p->san_dns);
    free(p->san_uri);
    free(p->san_email);
    free(p->san_ip);
    free(p->crl_url);
    memset(p, 0, sizeof(*p));
}

static int add_profile(struct prov_config *cfg, const char *name, struct prov_profile **out)
{
    struct prov_profile *grown;

    *out = NULL;
    grown = realloc(cfg->profiles, (cfg->n_profiles + 1) * sizeof(*grown));
    if (grown == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "%s: out of memory", cfg->path);
    }
    cfg->profiles = grown;
    memset(&grown[cfg->n_profiles], 0, sizeof(*grown));
    grown[cfg->n_profiles].name = strdup(name);
    if (grown[cfg->n_profiles].name == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "%s: out of memory", cfg->path);
    }
    grown[cfg->n_profiles].key_type = PROV_KEY_EC_P256;
    grown[cfg->n_profiles].allowed_keys = ALL_KEY_TYPES;
    grown[cfg->n_profiles].days = 365;
    *out = &grown[cfg->n_profiles];
    cfg->n_profiles++;
    return 0;
}

static int read_profile(struct prov_config *cfg, const char *section_name)
{
    const char *name = section_name + strlen(PROFILE_PREFIX);
    struct prov_profile *p;
    struct section s;
    int r;

    if (name[0] == '\0') {
        return prov_fail(PROV_ERR_CONFIG, "%s: [%s]: a profile section needs a name "
                         "([profile_NAME])", cfg->path, section_name);
    }
    r = add_profile(cfg, name, &p);
    if (r < 0) {
        return r;
    }
    section_open(&s, cfg, section_name);
    if ((r = check_known_keys(&s, profile_keys)) < 0 ||
        (r = get_key_type(&s, "key", &p->key_type)) < 0 ||
        (r = get_allowed_keys(&s, "allowed_keys", &p->allowed_keys)) < 0 ||
        (r = get_days(&s, "days", &p->days)) < 0 ||
        (r = get_section_ref(&s, "subject", &p->subject_section)) < 0 ||
        (r = get_section_ref(&s, "extensions", &p->extensions_section)) < 0 ||
        (r = get_string(&s, "san_dns", &p->san_dns)) < 0 ||
        (r = get_string(&s, "san_uri", &p->san_uri)) < 0 ||
        (r = get_string(&s, "san_email", &p->san_email)) < 0 ||
        (r = get_string(&s, "san_ip", &p->san_ip)) < 0 ||
        (r = get_string(&s, "crl_url", &p->crl_url)) < 0 ||
        (r = get_bool(&s, "revoke_superseded", &p->is_revoke_superseded)) < 0) {
        return r;
    }
    if ((p->allowed_keys & PROV_KEY_BIT(p->key_type)) == 0) {
        return prov_fail(PROV_ERR_CONFIG, "%s: [%s] key \"%s\": not in allowed_keys", cfg->path,
                         section_name, prov_key_type_name(p->key_type));
    }
    return 0;
}

typedef int (*section_fn)(struct prov_config *cfg, const char *name, void *ctx);

/*
 * Calls fn for every section of the file, in NCONF's order. OpenSSL 3.0 has no call that
 * lists sections, but NCONF_dump_bio() writes one "[[name]]" line per section. A value holding
 * "\n[[x]]" can fake a line; such a name is only used when NCONF really has the section, so a
 * fake one is harmless.
 */
static int for_each_section(struct prov_config *cfg, section_fn fn, void *ctx)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *data = NULL;
    long n;
    int r = PROV_ERR_NOMEM;

    if (bio == NULL || !NCONF_dump_bio(cfg->conf, bio) || BIO_write(bio, "", 1) != 1) {
        prov_fail(r, "%s: out of memory", cfg->path);
        goto out;
    }
    n = BIO_get_mem_data(bio, &data);
    r = 0;
    for (char *line = data; r == 0 && line != NULL && line < data + n;) {
        char *nl = strchr(line, '\n');
        size_t len;

        if (nl != NULL) {
            *nl = '\0';
        }
        len = strlen(line);
        if (len > 4 && strncmp(line, "[[", 2) == 0 && strcmp(line + len - 2, "]]") == 0) {
            line[len - 2] = '\0';
            if (NCONF_get_section(cfg->conf, line + 2) != NULL) {
                r = fn(cfg, line + 2, ctx);
            }
        }
        line = nl ? nl + 1 : NULL;
    }
out:
    BIO_free(bio);
    return r;
}

static int profile_section(struct prov_config *cfg, const char *name, void *ctx)
{
    (void)ctx;
    if (strncmp(name, PROFILE_PREFIX, strlen(PROFILE_PREFIX)) != 0) {
        return 0;
    }
    return read_profile(cfg, name);
}

static int read_profiles(struct prov_config *cfg)
{
    return for_each_section(cfg, profile_section, NULL);
}

/* ---- sections nobody reads ------------------------------------------------------------- */

/* Section names a config refers to: what each key names, and what those sections name. */
struct section_refs {
    const struct prov_config *cfg;
    const char *text; /* the file as written: NCONF variables name sections there */
    size_t len;
    char **names;
    size_t n;
    size_t cap;
};

static bool refs_have(const struct section_refs *refs, const char *name, size_t len)
{
    for (size_t i = 0; i < refs->n; i++) {
        if (strlen(refs->names[i]) == len && strncmp(refs->names[i], name, len) == 0) {
            return true;
        }
    }
    return false;
}

/* Adds name (len bytes) when the file has such a section and it is not in the set yet. */
static int refs_add(struct section_refs *refs, const char *name, size_t len)
{
    char *copy;

    if (name == NULL || len == 0 || refs_have(refs, name, len)) {
        return 0;
    }
    copy = strndup(name, len);
    if (copy == NULL) {
        return PROV_ERR_NOMEM;
    }
    if (NCONF_get_section(refs->cfg->conf, copy) == NULL) {
        free(copy);
        return 0;
    }
    if (refs->n == refs->cap) {
        size_t cap = refs->cap ? 2 * refs->cap : 16;
        char **grown = realloc(refs->names, cap * sizeof(*grown));

        if (grown == NULL) {
            free(copy);
            return PROV_ERR_NOMEM;
        }
        refs->names = grown;
        refs->cap = cap;
    }
    refs->names[refs->n++] = copy;
    return 0;
}

static bool is_section_name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '.' || c == '-';
}

/*
 * What a value of an extension or name section refers to, as OpenSSL's X509V3 parser reads
 * it: "@alt" (subjectAltName, certificatePolicies, crlDistributionPoints...), "dirName:sect",
 * "ASN1:SEQUENCE:sect". Any "@NAME" or ":NAME" naming an existing section counts: being
 * lenient here can only miss a typo, never refuse a working config.
 */
static int refs_scan_value(struct section_refs *refs, const char *v)
{
    for (const char *p = v; *p != '\0'; p++) {
        if (*p == '@' || *p == ':') {
            size_t len = 0;

            while (is_section_name_char(p[1 + len])) {
                len++;
            }
            if (refs_add(refs, p + 1, len) < 0) {
                return PROV_ERR_NOMEM;
            }
        }
    }
    return 0;
}

/* NCONF variables "$sect::name" and "${sect::name}" name a section (read while loading). */
static int refs_scan_variables(struct section_refs *refs)
{
    for (size_t i = 0; i + 1 < refs->len; i++) {
        size_t start;
        size_t len = 0;

        if (refs->text[i] != '$') {
            continue;
        }
        start = i + 1 + (refs->text[i + 1] == '{');
        while (start + len < refs->len && is_section_name_char(refs->text[start + len])) {
            len++;
        }
        if (start + len + 1 < refs->len && refs->text[start + len] == ':' &&
            refs->text[start + len + 1] == ':' && refs_add(refs, refs->text + start, len) < 0) {
            return PROV_ERR_NOMEM;
        }
    }
    return 0;
}

static const char *const tool_sections[] = {"default", "provisioner", "ca", "station", "req",
                                            NULL};

static int check_section_known(struct prov_config *cfg, const char *name, void *ctx)
{
    const struct section_refs *refs = ctx;

    for (size_t i = 0; tool_sections[i] != NULL; i++) {
        if (strcmp(name, tool_sections[i]) == 0) {
            return 0;
        }
    }
    if (strncmp(name, PROFILE_PREFIX, strlen(PROFILE_PREFIX)) == 0 ||
        refs_have(refs, name, strlen(name))) {
        return 0;
    }
    return prov_fail(PROV_ERR_CONFIG,
                     "%s: [%s]: unknown section: neither one the tool reads ([provisioner], "
                     "[ca], [station], [req], [profile_NAME]) nor one a key names (subject, "
                     "extensions, intermediate_subject, distinguished_name, x509_extensions, "
                     "@NAME in an extension section); a typo?",
                     cfg->path, name);
}

/*
 * A section that is neither one the tool reads nor one a key refers to is an error: with a
 * typo such as [profle_device] the intended profile would silently not be used. The sections
 * referred to are collected from the tool's keys, then from what those sections refer to.
 */
static int check_sections(struct prov_config *cfg, const char *text, size_t len)
{
    struct section_refs refs = {.cfg = cfg, .text = text, .len = len};
    const char *const req_keys[] = {"distinguished_name", "x509_extensions"};
    int r = PROV_ERR_NOMEM;

    if (refs_add(&refs, cfg->ca_subject_section,
                 cfg->ca_subject_section ? strlen(cfg->ca_subject_section) : 0) < 0) {
        goto out;
    }
    for (size_t i = 0; i < cfg->n_profiles; i++) {
        const char *sub = cfg->profiles[i].subject_section;
        const char *ext = cfg->profiles[i].extensions_section;

        if (refs_add(&refs, sub, sub ? strlen(sub) : 0) < 0 ||
            refs_add(&refs, ext, ext ? strlen(ext) : 0) < 0) {
            goto out;
        }
    }
    for (size_t i = 0; i < sizeof(req_keys) / sizeof(req_keys[0]); i++) {
        const char *v = NCONF_get_string(cfg->conf, "req", req_keys[i]);

        ERR_clear_error();
        if (refs_add(&refs, v, v ? strlen(v) : 0) < 0) {
            goto out;
        }
    }
    if (refs_scan_variables(&refs) < 0) {
        goto out;
    }
    /* refs.n grows while the loop runs: every newly named section is scanned too */
    for (size_t i = 0; i < refs.n; i++) {
        STACK_OF(CONF_VALUE) *values = NCONF_get_section(cfg->conf, refs.names[i]);

        for (int k = 0; values != NULL && k < sk_CONF_VALUE_num(values); k++) {
            CONF_VALUE *cv = sk_CONF_VALUE_value(values, k);

            if (cv->value != NULL && refs_scan_value(&refs, cv->value) < 0) {
                goto out;
            }
        }
    }
    r = for_each_section(cfg, check_section_known, &refs);
out:
    if (r == PROV_ERR_NOMEM) {
        prov_fail(r, "%s: out of memory", cfg->path);
    }
    for (size_t i = 0; i < refs.n; i++) {
        free(refs.names[i]);
    }
    free(refs.names);
    return r;
}

static int set_defaults(struct prov_config *cfg)
{
    struct prov_profile *p;
    int r;

    if (cfg->output_dir == NULL && (cfg->output_dir = prov_config_path(cfg, PROV_OUTPUT_DIR_DEFAULT)) == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "%s: out of memory", cfg->path);
    }
    if (cfg->ca_dir == NULL && (cfg->ca_dir = prov_config_path(cfg, "ca")) == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "%s: out of memory", cfg->path);
    }
    if (prov_config_profile(cfg, "device") == NULL) {
        /* The built-in profile; subject and extensions NULL mean the built-in DN and set. */
        r = add_profile(cfg, "device", &p);
        if (r < 0) {
            return r;
        }
    }
    return 0;
}

int prov_config_parse(const char *buf, size_t len, const char *name, const char *base_dir,
                      struct prov_config **out)
{
    struct prov_config *cfg = NULL;
    int r = PROV_ERR_NOMEM;

    *out = NULL;
    cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL || (cfg->path = strdup(name ? name : "(config)")) == NULL ||
        (base_dir != NULL && (cfg->dir = strdup(base_dir)) == NULL)) {
        prov_fail(r, "%s: out of memory", name ? name : "(config)");
        goto out;
    }
    cfg->ca_key_type = PROV_KEY_EC_P256;
    cfg->ca_days = 1825;
    cfg->root_key_type = PROV_KEY_EC_P384;
    cfg->root_days = 7300;
    cfg->crl_days = 7;
    cfg->root_crl_days = 90;
    if ((r = load_conf(buf ? buf : "", buf ? len : 0, cfg->path, &cfg->conf)) < 0 ||
        (r = read_provisioner(cfg)) < 0 || (r = read_ca(cfg)) < 0 ||
        (r = read_profiles(cfg)) < 0 || (r = check_sections(cfg, buf ? buf : "", buf ? len : 0)) < 0 ||
        (r = set_defaults(cfg)) < 0) {
        goto out;
    }
    *out = cfg;
    cfg = NULL;
    r = 0;
out:
    prov_config_free(cfg);
    return r;
}

static int read_file(const char *path, char **out, size_t *out_len)
{
    FILE *f = NULL;
    char *buf = NULL;
    size_t n = 0;
    int r = PROV_ERR_IO;

    *out = NULL;
    f = fopen(path, "re");
    if (f == NULL) {
        /* A config that is not there is a config error (exit 2), not a storage fault. */
        r = prov_fail(PROV_ERR_CONFIG, "%s: cannot open config: %s", path, strerror(errno));
        goto out;
    }
    buf = malloc(CONFIG_MAX_SIZE + 1);
    if (buf == NULL) {
        r = prov_fail(PROV_ERR_NOMEM, "%s: out of memory", path);
        goto out;
    }
    n = fread(buf, 1, CONFIG_MAX_SIZE + 1, f);
    if (ferror(f)) {
        prov_fail(r, "%s: cannot read: %s", path, strerror(errno));
        goto out;
    }
    if (n > CONFIG_MAX_SIZE) {
        r = prov_fail(PROV_ERR_CONFIG, "%s: larger than %d bytes", path, CONFIG_MAX_SIZE);
        goto out;
    }
    *out = buf;
    *out_len = n;
    buf = NULL;
    r = 0;
out:
    if (f != NULL) {
        fclose(f);
    }
    free(buf);
    return r;
}

int prov_config_load(const char *path, struct prov_config **out)
{
    char *buf = NULL;
    char *dir = NULL;
    const char *slash;
    size_t len = 0;
    int r;

    *out = NULL;
    r = read_file(path, &buf, &len);
    if (r < 0) {
        goto out;
    }
    slash = strrchr(path, '/');
    if (slash == NULL) {
        dir = strdup(".");
    } else if (slash == path) {
        dir = strdup("/");
    } else {
        dir = strndup(path, (size_t)(slash - path));
    }
    if (dir == NULL) {
        r = prov_fail(PROV_ERR_NOMEM, "%s: out of memory", path);
        goto out;
    }
    r = prov_config_parse(buf, len, path, dir, out);
out:
    free(dir);
    free(buf);
    return r;
}

void prov_config_free(struct prov_config *cfg)
{
    if (cfg == NULL) {
        return;
    }
    NCONF_free(cfg->conf);
    free(cfg->path);
    free(cfg->dir);
    free(cfg->pkcs11_module);
    free(cfg->output_dir);
    free(cfg->server_ca);
    free(cfg->device_pin);
    free(cfg->journal);
    free(cfg->journal_password);
    free(cfg->lot);
    free(cfg->ca_dir);
    free(cfg->ca_key);
    free(cfg->ca_pin);
    free(cfg->ca_subject_section);
    free(cfg->root_config);
    free(cfg->root_key);
    free(cfg->root_key_pass);
    free(cfg->root_cert);
    free(cfg->ca_url);
    free(cfg->ca_tls_ca);
    free(cfg->station_cert);
    free(cfg->station_key);
    free(cfg->station_pin);
    for (size_t i = 0; i < cfg->n_profiles; i++) {
        profile_clear(&cfg->profiles[i]);
    }
    free(cfg->profiles);
    free(cfg);
}

const struct prov_profile *prov_config_profile(const struct prov_config *cfg, const char *name)
{
    for (size_t i = 0; cfg != NULL && name != NULL && i < cfg->n_profiles; i++) {
        if (strcmp(cfg->profiles[i].name, name) == 0) {
            return &cfg->profiles[i];
        }
    }
    return NULL;
}

char *prov_config_path(const struct prov_config *cfg, const char *path)
{
    char *out = NULL;

    if (path == NULL) {
        return NULL;
    }
    if (path[0] == '/' || cfg == NULL || cfg->dir == NULL) {
        return strdup(path);
    }
    if (asprintf(&out, "%s/%s", cfg->dir, path) < 0) {
        return NULL;
    }
    return out;
}
