/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_CONFIG_H
#define PROV_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/conf.h>

#include "keytype.h"

/*
 * The config file is OpenSSL config syntax (NCONF), so X509v3 extension sections and the
 * seed-style root.conf sections ([req], [dn], [v3_ca]) work unchanged. Sections the tool
 * owns — [provisioner], [ca] and every [profile_NAME] — are checked strictly: an unknown key
 * there is a config error (a typo must not silently change what gets issued), and so is a
 * section that neither the tool reads nor anything refers to (config.c, check_sections: the
 * keys naming sections, @NAME and dirName:NAME inside the sections named, NCONF variables
 * ${NAME::var}). Relative paths are resolved against the directory of the config file
 * (output_dir, server_ca, [ca] dir, root_config, root_cert, the PATH of file: PIN sources
 * and of a file: root_key, and pkcs11_module when it contains a '/': a bare library name is
 * left to the loader).
 * See README.md "Configuration".
 *
 * Templates: users write ${serial} ${cn} ${lot} ${profile} ${x_NAME} (and "$$" for "$")
 * directly in the config. NCONF would expand "${...}" itself at load time and fails on an
 * undefined name, so before NCONF sees the text, exactly these braced names and "$$" are
 * escaped ("\${cn}"); NCONF turns that back into the literal text, and the values in
 * cfg->conf hold the template for prov_template_expand(). Writing "\${cn}" by hand works
 * too. Every other "$name", "${name}", "${section::name}" is NCONF's own variable, as in
 * any OpenSSL config; a literal "$" elsewhere is written "\$". ".include" is refused (it
 * would read files relative to the working directory, and parsing must do no I/O).
 */

/* Bit for a key type in prov_profile.allowed_keys. */
#define PROV_KEY_BIT(t) (1u << (unsigned)(t))

struct prov_profile {
    char *name;                 /* "device" for [profile_device] */
    enum prov_key_type key_type;/* key = ec-p256 (default) */
    unsigned allowed_keys;      /* allowed_keys = ec-p256, ec-p384 (default: all four) */
    int days;                   /* days = 365 */
    char *subject_section;      /* subject = SECTION of RDN lines whose values are templates;
                                   NULL: CN = ${cn} */
    char *extensions_section;   /* extensions = SECTION of X509v3 lines; NULL: the built-in
                                   device set (CA:false, digitalSignature, clientAuth, SKI/AKI) */
    char *san_dns;              /* templates, ';'-separated, used when the manifest row has none */
    char *san_uri;
    char *san_email;
    char *san_ip;
    char *crl_url;              /* crl_url = template: a CRL distribution point URI; NULL: none */
    bool is_revoke_superseded;  /* revoke_superseded = true: a reissue records the certificate
                                   it supersedes as revoked (superseded) */
};

/* The parent of the device storage directories when output_dir is not set. */
#define PROV_OUTPUT_DIR_DEFAULT "devices"

struct prov_config {
    CONF *conf;                 /* the parsed file: extension and DN sections live here */
    char *path;                 /* as given */
    char *dir;                  /* directory of the file, for relative paths */

    /* [provisioner] */
    char *pkcs11_module;        /* pkcs11_module = PATH; NULL: URI's module-path, then default */
    char *output_dir;           /* output_dir = DIR: default parent of device storage */
    char *server_ca;            /* server_ca = FILE: installed as server-ca.pem */
    char *device_pin;           /* device_pin = file:...|env:...|fd:N|prompt */
    char *lot;                  /* lot = NAME, recorded in identity.json */
    char *journal;              /* journal = PATH | postgresql://... (doc/ledger.md); NULL: */
                                /* the manifest's own SQLite journal */
    char *journal_password;     /* journal_password = file:...|env:...: the ledger's password */
    int journal_lease;          /* journal_lease = SECONDS a row's lease lasts; 0: default 30 */
    uint32_t tpm_srk_handle;    /* tpm_srk_handle = 0x81...: storage root key; 0: backend default */
    uint32_t tpm_key_handle;    /* tpm_key_handle = 0x81...: device key; 0: backend default */
    uint32_t tpm_nv_index;      /* tpm_nv_index = 0x01...: NV index for client.der; 0: default */

    /* [ca] */
    char *ca_dir;               /* dir = DIR: root.crt, intermediate.crt, chain.pem */
    char *ca_index;             /* index = postgresql://...: the CA index shared by a CA pair
                                   (doc/revocation.md); NULL: DIR/index.sqlite */
    char *ca_index_password;    /* index_password = file:...|env:...: its password */
    char *ca_key;               /* intermediate_key = pkcs11:... URI of the intermediate key */
    char *ca_pin;               /* pin = PIN source for the CA token */
    enum prov_key_type ca_key_type;   /* intermediate_key_type = ec-p256 */
    char *ca_subject_section;   /* intermediate_subject = SECTION (RDN lines) */
    int ca_days;                /* intermediate_days = 1825 */
    char *root_config;          /* root_config = FILE in `openssl req` format ([req]/[dn]/[v3_ca]);
                                   NULL: the [req] section of this file */
    char *root_key;             /* root_key = pkcs11:... | file:PATH (encrypted PEM) */
    char *root_key_pass;        /* root_key_pass = PIN/passphrase source for root_key */
    char *root_cert;            /* root_cert = FILE: import an existing root (with root_key);
                                   with url: the root the service must chain to */
    enum prov_key_type root_key_type; /* root_key_type = ec-p384 */
    int root_days;              /* root_days = 7300 */
    int crl_days;               /* crl_days = 7: the intermediate's CRL nextUpdate */
    int root_crl_days;          /* root_crl_days = 90: the root's CRL nextUpdate */
    /* A station that issues through the CA service (doc/ca-service.md) instead of a CA token: */
    char *ca_url;               /* url = cmp://HOST:PORT/PATH, est://HOST:PORT, https://... */
    char *station_cert;         /* station_cert = FILE: the station's identity certificate */
    char *station_key;          /* station_key = pkcs11:... its key, in the station's token */
    char *station_pin;          /* station_pin = PIN source for that token */
    char *ca_tls_ca;            /* tls_ca = FILE: the CA of an est:// service's TLS certificate */

    struct prov_profile *profiles;
    size_t n_profiles;
};

/*
 * Loads and validates path. Errors: PROV_ERR_IO (cannot read), PROV_ERR_CONFIG (syntax, with
 * line; unknown key with section and key; bad value). The error text names the file.
 */
int prov_config_load(const char *path, struct prov_config **out);

/* The same from memory (tests, fuzzing); name is used in messages; base_dir may be NULL. */
int prov_config_parse(const char *buf, size_t len, const char *name, const char *base_dir,
                      struct prov_config **out);

void prov_config_free(struct prov_config *cfg);

/* The profile by name, or NULL. */
const struct prov_profile *prov_config_profile(const struct prov_config *cfg, const char *name);

/* Resolves a path from the config against cfg->dir (absolute paths unchanged). Caller frees. */
char *prov_config_path(const struct prov_config *cfg, const char *path);

#endif
