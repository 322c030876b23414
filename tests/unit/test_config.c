/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Config loading: strict checking of the tool's sections (every error names file, section and
 * key, or the line), defaults, path resolution, the built-in device profile, and that the
 * tool's ${...} templates survive OpenSSL's own variable expansion.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "issue.h"
#include "error.h"

#define ALL_KEYS                                                                                   \
    (PROV_KEY_BIT(PROV_KEY_EC_P256) | PROV_KEY_BIT(PROV_KEY_EC_P384) |                             \
     PROV_KEY_BIT(PROV_KEY_RSA_2048) | PROV_KEY_BIT(PROV_KEY_RSA_3072))

static struct prov_config *parse_ok(const char *text)
{
    struct prov_config *cfg = NULL;

    prov_error_clear();
    if (prov_issue_parse_config(text, strlen(text), "t.cnf", "/etc/prov", &cfg) != 0) {
        fail_msg("parse failed: %s", prov_error_message());
    }
    assert_non_null(cfg);
    return cfg;
}

/* Parses text expecting PROV_ERR_CONFIG with every needle in the message. */
static void parse_fail(const char *text, const char *needle1, const char *needle2)
{
    struct prov_config *cfg = (struct prov_config *)1;
    const char *msg;

    prov_error_clear();
    assert_int_equal(prov_issue_parse_config(text, strlen(text), "t.cnf", "/etc/prov", &cfg),
                     PROV_ERR_CONFIG);
    assert_null(cfg);
    msg = prov_error_message();
    assert_non_null(msg);
    if (strstr(msg, "t.cnf") == NULL || strstr(msg, needle1) == NULL ||
        (needle2 != NULL && strstr(msg, needle2) == NULL)) {
        fail_msg("message \"%s\" lacks \"%s\" / \"%s\"", msg, needle1, needle2 ? needle2 : "");
    }
}

static const char *conf_value(const struct prov_config *cfg, const char *section,
                              const char *name)
{
    return NCONF_get_string(cfg->conf, section, name);
}

static void test_empty_gives_defaults(void **state)
{
    struct prov_config *cfg = parse_ok("");
    const struct prov_profile *p;

    (void)state;
    assert_string_equal(cfg->output_dir, "/etc/prov/devices");
    assert_string_equal(cfg->ca_dir, "/etc/prov/ca");
    assert_int_equal(cfg->ca_key_type, PROV_KEY_EC_P256);
    assert_int_equal(cfg->ca_days, 1825);
    assert_int_equal(cfg->root_key_type, PROV_KEY_EC_P384);
    assert_int_equal(cfg->root_days, 7300);
    assert_null(cfg->server_ca);
    assert_null(cfg->device_pin);
    assert_null(cfg->lot);
    assert_null(cfg->pkcs11_module);
    assert_non_null(cfg->conf);
    assert_int_equal(cfg->n_profiles, 1);
    p = prov_config_profile(cfg, "device");
    assert_non_null(p);
    assert_int_equal(p->key_type, PROV_KEY_EC_P256);
    assert_int_equal(p->days, 365);
    assert_int_equal(p->allowed_keys, ALL_KEYS);
    assert_null(p->subject_section);
    assert_null(p->extensions_section);
    assert_null(prov_config_profile(cfg, "other"));
    prov_config_free(cfg);
}

static const char good[] =
    "# a comment\n"
    "[provisioner]\n"
    "pkcs11_module = lib/softhsm.so\n"
    "output_dir = out\n"
    "server_ca = /abs/server-ca.pem\n"
    "device_pin = file:pins/device.pin\n"
    "lot = L7\n"
    "[ca]\n"
    "dir = myca\n"
    "intermediate_key = pkcs11:token=ca;object=intermediate\n"
    "pin = env:CA_PIN\n"
    "intermediate_key_type = ec-p384\n"
    "intermediate_subject = ca_dn\n"
    "intermediate_days = 1000\n"
    "root_config = root.conf\n"
    "root_key = file:keys/root.pem\n"
    "root_key_pass = fd:3\n"
    "root_cert = root.crt\n"
    "root_key_type = rsa-3072\n"
    "root_days = 36500\n"
    "[ca_dn]\n"
    "CN = Issuing CA\n"
    "[profile_device]\n"
    "key = ec-p384\n"
    "allowed_keys = ec-p384 , rsa-2048\n"
    "days = 90\n"
    "subject = device_dn\n"
    "extensions = device_ext\n"
    "san_dns = ${serial}.devices.example\n"
    "san_uri = urn:dev:${x_site}:${serial}\n"
    "san_email = ops@example.com\n"
    "san_ip = 10.0.0.1\n"
    "[profile_gateway-2]\n"
    "days = 30\n"
    "[device_dn]\n"
    "O = Example $$ Devices\n"
    "OU = ${lot}/${profile}\n"
    "CN = ${cn}\n"
    "serialNumber = \\${serial}\n"
    "[device_ext]\n"
    "basicConstraints = critical, CA:false\n"
    "authorityKeyIdentifier = keyid\n";

static void test_good_config(void **state)
{
    struct prov_config *cfg = parse_ok(good);
    const struct prov_profile *p;

    (void)state;
    assert_string_equal(cfg->pkcs11_module, "/etc/prov/lib/softhsm.so");
    assert_string_equal(cfg->output_dir, "/etc/prov/out");
    assert_string_equal(cfg->server_ca, "/abs/server-ca.pem");
    assert_string_equal(cfg->device_pin, "file:/etc/prov/pins/device.pin");
    assert_string_equal(cfg->lot, "L7");
    assert_string_equal(cfg->ca_dir, "/etc/prov/myca");
    assert_string_equal(cfg->ca_key, "pkcs11:token=ca;object=intermediate");
    assert_string_equal(cfg->ca_pin, "env:CA_PIN");
    assert_int_equal(cfg->ca_key_type, PROV_KEY_EC_P384);
    assert_string_equal(cfg->ca_subject_section, "ca_dn");
    assert_int_equal(cfg->ca_days, 1000);
    assert_string_equal(cfg->root_config, "/etc/prov/root.conf");
    assert_string_equal(cfg->root_key, "file:/etc/prov/keys/root.pem");
    assert_string_equal(cfg->root_key_pass, "fd:3");
    assert_string_equal(cfg->root_cert, "/etc/prov/root.crt");
    assert_int_equal(cfg->root_key_type, PROV_KEY_RSA_3072);
    assert_int_equal(cfg->root_days, 36500);

    assert_int_equal(cfg->n_profiles, 2);
    p = prov_config_profile(cfg, "device");
    assert_non_null(p);
    assert_int_equal(p->key_type, PROV_KEY_EC_P384);
    assert_int_equal(p->allowed_keys,
                     PROV_KEY_BIT(PROV_KEY_EC_P384) | PROV_KEY_BIT(PROV_KEY_RSA_2048));
    assert_int_equal(p->days, 90);
    assert_string_equal(p->subject_section, "device_dn");
    assert_string_equal(p->extensions_section, "device_ext");
    assert_string_equal(p->san_dns, "${serial}.devices.example");
    assert_string_equal(p->san_uri, "urn:dev:${x_site}:${serial}");
    assert_string_equal(p->san_email, "ops@example.com");
    assert_string_equal(p->san_ip, "10.0.0.1");

    p = prov_config_profile(cfg, "gateway-2");
    assert_non_null(p);
    assert_int_equal(p->days, 30);
    assert_int_equal(p->key_type, PROV_KEY_EC_P256);
    assert_int_equal(p->allowed_keys, ALL_KEYS);
    prov_config_free(cfg);
}

/* NCONF would expand (and reject) ${cn}; the tool's templates must reach the DN unexpanded. */
static void test_templates_survive(void **state)
{
    struct prov_config *cfg = parse_ok(good);

    (void)state;
    assert_string_equal(conf_value(cfg, "device_dn", "CN"), "${cn}");
    assert_string_equal(conf_value(cfg, "device_dn", "OU"), "${lot}/${profile}");
    assert_string_equal(conf_value(cfg, "device_dn", "O"), "Example $$ Devices");
    /* the escaped form is accepted too and means the same */
    assert_string_equal(conf_value(cfg, "device_dn", "serialNumber"), "${serial}");
    prov_config_free(cfg);
}

static void test_nconf_variables_still_work(void **state)
{
    struct prov_config *cfg = parse_ok("base = /srv/pki\n"
                                       "[provisioner]\n"
                                       "server_ca = $base/server-ca.pem\n"
                                       "output_dir = ${base}/devices\n"
                                       "[x]\n"
                                       "serial = 7\n"
                                       "a = $serial ${x::serial} \"${serial}\" '${cn}'\n"
                                       "price = \\$5\n");

    (void)state;
    assert_string_equal(cfg->server_ca, "/srv/pki/server-ca.pem");
    assert_string_equal(cfg->output_dir, "/srv/pki/devices");
    assert_string_equal(conf_value(cfg, "x", "a"), "7 7 ${serial} ${cn}");
    assert_string_equal(conf_value(cfg, "x", "price"), "$5");
    prov_config_free(cfg);
}

static void test_unknown_keys(void **state)
{
    (void)state;
    parse_fail("[provisioner]\nkye = 1\n", "[provisioner] key \"kye\": unknown key", NULL);
    parse_fail("[ca]\ndir = ca\nintermediate_kye = x\n",
               "[ca] key \"intermediate_kye\": unknown key", NULL);
    parse_fail("[profile_device]\nday = 3\n", "[profile_device] key \"day\": unknown key", NULL);
    parse_fail("[profile_x]\nkey = ec-p256\nsubjet = dn\n",
               "[profile_x] key \"subjet\": unknown key", NULL);
}

/*
 * A section the tool neither reads nor finds referred to is an error naming it: a typo such
 * as [profle_device] must not leave the intended profile silently unused.
 */
static void test_unknown_sections(void **state)
{
    struct prov_config *cfg;

    (void)state;
    parse_fail("[profle_device]\ndays = 30\n", "[profle_device]", "unknown section");
    parse_fail("[provisionr]\nlot = x\n", "[provisionr]", "unknown section");
    parse_fail("[profile_device]\nsubject = dn\n[dn]\nCN = ${cn}\n[dn2]\nCN = x\n", "[dn2]",
               "unknown section");
    /* an extension section referred to by nothing (the profile names another) */
    parse_fail("[profile_device]\nextensions = ext\n[ext]\nbasicConstraints = CA:false\n"
               "[ext_old]\nkeyUsage = digitalSignature\n",
               "[ext_old]", NULL);

    /* Everything referred to, directly or through another referred section, is fine. */
    cfg = parse_ok("base = /srv\n"
                   "[paths]\n"
                   "out = $base/devices\n"
                   "[provisioner]\n"
                   "output_dir = ${paths::out}\n"
                   "[ca]\n"
                   "intermediate_subject = ca_dn\n"
                   "[ca_dn]\n"
                   "CN = CA\n"
                   "[profile_device]\n"
                   "subject = dev_dn\n"
                   "extensions = dev_ext\n"
                   "[dev_dn]\n"
                   "CN = ${cn}\n"
                   "[dev_ext]\n"
                   "basicConstraints = critical, CA:false\n"
                   "authorityKeyIdentifier = keyid\n"
                   "subjectAltName = @alt\n"
                   "certificatePolicies = ia5org, @pol\n"
                   "issuerAltName = dirName:dir_sect\n"
                   "[alt]\n"
                   "DNS.1 = ${serial}.example\n"
                   "[pol]\n"
                   "policyIdentifier = 1.3.6.1.4.1.99999.1\n"
                   "userNotice.1 = @notice\n"
                   "[notice]\n"
                   "explicitText = Example\n"
                   "[dir_sect]\n"
                   "CN = Issuer\n"
                   "[req]\n"
                   "distinguished_name = root_dn\n"
                   "x509_extensions = v3_root\n"
                   "[root_dn]\n"
                   "CN = Root\n"
                   "[v3_root]\n"
                   "basicConstraints = critical, CA:true\n"
                   "[station]\n"
                   "mode = next-free\n");
    prov_config_free(cfg);
}

static void test_default_section_does_not_leak(void **state)
{
    struct prov_config *cfg = parse_ok("lot = from-default\nkey = rsa-2048\n[provisioner]\n");

    (void)state;
    assert_null(cfg->lot);
    assert_int_equal(prov_config_profile(cfg, "device")->key_type, PROV_KEY_EC_P256);
    prov_config_free(cfg);
}

static void test_syntax_errors(void **state)
{
    (void)state;
    parse_fail("[provisioner]\nlot = a\nthis line has no equals sign\n", "line 3", NULL);
    parse_fail("[provisioner]\n\n\nlot = $undefined\n", "line 4", "no value");
    parse_fail("[provisioner]\nlot = ${serial\n", "line 2", NULL);
    parse_fail("[provisioner\nlot = a\n", "line 1", NULL);
    parse_fail("[s]\na = 1\n.include /etc/passwd\n", "line 3", ".include");
    parse_fail("[s]\na = 1 \\\n\n.inc\\\nlude = /etc/passwd\n", ".include", NULL);
}

static void test_nul_byte(void **state)
{
    static const char text[] = "[provisioner]\nlot = a\0b\n";
    struct prov_config *cfg = NULL;

    (void)state;
    prov_error_clear();
    assert_int_equal(prov_issue_parse_config(text, sizeof(text) - 1, "t.cnf", NULL, &cfg),
                     PROV_ERR_CONFIG);
    assert_null(cfg);
    assert_non_null(strstr(prov_error_message(), "line 2"));
}

static void test_bad_days(void **state)
{
    static const char *const bad[] = {"0", "-1", "36501", "abc", "10x", "99999999999999999999"};
    char text[128];

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(text, sizeof(text), "[profile_device]\ndays = %s\n", bad[i]);
        parse_fail(text, "[profile_device] days", NULL);
        snprintf(text, sizeof(text), "[ca]\nintermediate_days = %s\n", bad[i]);
        parse_fail(text, "[ca] intermediate_days", NULL);
        snprintf(text, sizeof(text), "[ca]\nroot_days = %s\n", bad[i]);
        parse_fail(text, "[ca] root_days", NULL);
    }
}

static void test_tpm_handles(void **state)
{
    static const char *const bad_persistent[] = {"81000101", "0x", "0x80ffffff", "0x82000000",
                                                 "0x81000101x", "0x181000101", "-0x81000101"};
    static const char *const bad_nv[] = {"0x00ffffff", "0x02000000", "1800101", "0x01zz"};
    struct prov_config *cfg;
    char text[160];

    (void)state;
    cfg = parse_ok("[provisioner]\ntpm_srk_handle = 0x81000002\ntpm_key_handle = 0x81ffffff\n"
                   "tpm_nv_index = 0x01000000\n");
    assert_int_equal(cfg->tpm_srk_handle, 0x81000002u);
    assert_int_equal(cfg->tpm_key_handle, 0x81ffffffu);
    assert_int_equal(cfg->tpm_nv_index, 0x01000000u);
    prov_config_free(cfg);
    cfg = parse_ok("");
    assert_int_equal(cfg->tpm_key_handle, 0); /* 0: the backend's documented default */
    prov_config_free(cfg);
    for (size_t i = 0; i < sizeof(bad_persistent) / sizeof(bad_persistent[0]); i++) {
        snprintf(text, sizeof(text), "[provisioner]\ntpm_key_handle = %s\n", bad_persistent[i]);
        parse_fail(text, "[provisioner] tpm_key_handle", bad_persistent[i]);
        snprintf(text, sizeof(text), "[provisioner]\ntpm_srk_handle = %s\n", bad_persistent[i]);
        parse_fail(text, "[provisioner] tpm_srk_handle", "0x81000000");
    }
    for (size_t i = 0; i < sizeof(bad_nv) / sizeof(bad_nv[0]); i++) {
        snprintf(text, sizeof(text), "[provisioner]\ntpm_nv_index = %s\n", bad_nv[i]);
        parse_fail(text, "[provisioner] tpm_nv_index", "0x01ffffff");
    }
}

static void test_bad_key_types(void **state)
{
    (void)state;
    parse_fail("[profile_device]\nkey = ec-p521\n", "[profile_device] key", "ec-p521");
    parse_fail("[ca]\nintermediate_key_type = rsa-1024\n", "[ca] intermediate_key_type", NULL);
    parse_fail("[ca]\nroot_key_type = ed25519\n", "[ca] root_key_type", NULL);
    parse_fail("[profile_device]\nallowed_keys = ec-p256,,rsa-2048\n",
               "[profile_device] allowed_keys", NULL);
    parse_fail("[profile_device]\nallowed_keys = ec-p256, dsa\n",
               "[profile_device] allowed_keys", NULL);
    parse_fail("[profile_device]\nallowed_keys = rsa-2048\n", "[profile_device] key",
               "not in allowed_keys");
    parse_fail("[profile_d]\nkey = ec-p384\nallowed_keys = ec-p256\n", "[profile_d] key",
               "not in allowed_keys");
}

static void test_missing_sections(void **state)
{
    (void)state;
    parse_fail("[profile_device]\nsubject = nowhere\n", "[profile_device] subject", "[nowhere]");
    parse_fail("[profile_device]\nextensions = noext\n", "[profile_device] extensions",
               "[noext]");
    parse_fail("[ca]\nintermediate_subject = ca_dn\n", "[ca] intermediate_subject", "[ca_dn]");
}

/*
 * A device profile issues end entities that the chain rules accept (clientAuth): a profile
 * whose extensions make a CA, or leave out what a TLS client certificate needs, is refused
 * when the config is loaded, naming the extension section and key.
 */
static void test_profile_must_issue_end_entities(void **state)
{
    (void)state;
    /* the shape of a CA: CA:true, keyCertSign, no EKU, no key identifiers */
    parse_fail("[profile_leaf]\nextensions = leaf_ext\n"
               "[leaf_ext]\nbasicConstraints = critical, CA:true\nkeyUsage = keyCertSign\n",
               "[leaf_ext] basicConstraints (extensions of [profile_leaf])", "end entit");
    parse_fail("[profile_leaf]\nextensions = leaf_ext\n"
               "[leaf_ext]\nkeyUsage = critical, digitalSignature, cRLSign\n"
               "authorityKeyIdentifier = keyid\n",
               "[leaf_ext] keyUsage", "cRLSign");
    parse_fail("[profile_leaf]\nextensions = leaf_ext\n"
               "[leaf_ext]\nkeyUsage = critical, keyEncipherment\n"
               "authorityKeyIdentifier = keyid\n",
               "[leaf_ext] keyUsage", "digitalSignature");
    parse_fail("[profile_device]\nextensions = srv\n"
               "[srv]\nextendedKeyUsage = serverAuth\nauthorityKeyIdentifier = keyid\n",
               "[srv] extendedKeyUsage", "clientAuth");
    /* anything else the chain rules reject, as they name it (strict: no AKI) */
    parse_fail("[profile_device]\nextensions = no_aki\n"
               "[no_aki]\nbasicConstraints = critical, CA:false\n",
               "[profile_device] extensions = no_aki", "Authority Key Identifier");
    /*
     * the profile names what it issues, and a section no profile uses is not checked as a
     * leaf (here the root's extensions, which [req] names: an unnamed one is an error)
     */
    prov_config_free(parse_ok("[req]\nx509_extensions = v3_ca\n"
                              "[profile_device]\nextensions = ee\n"
                              "[ee]\nbasicConstraints = critical, CA:false\n"
                              "keyUsage = critical, digitalSignature\n"
                              "extendedKeyUsage = clientAuth, serverAuth\n"
                              "authorityKeyIdentifier = keyid\n"
                              "[v3_ca]\nbasicConstraints = critical, CA:true\n"));
}

static void test_bad_values(void **state)
{
    (void)state;
    parse_fail("[profile_]\ndays = 3\n", "[profile_]", "name");
    parse_fail("[provisioner]\nlot =\n", "[provisioner] lot", "empty");
    parse_fail("[ca]\nintermediate_key = /dev/key\n", "[ca] intermediate_key", "pkcs11:");
    parse_fail("[ca]\nroot_key = key.pem\n", "[ca] root_key", "file:PATH");
    /* the CA index is a libpq URI or nothing; the value (which may hold a password) is not echoed */
    parse_fail("[ca]\nindex = /srv/ix.sqlite\n", "[ca] index", "postgresql://");
    assert_null(strstr(prov_error_message(), "/srv/ix.sqlite"));
}

/* [ca] index and index_password: the CA index a CA pair shares (doc/revocation.md). */
static void test_ca_index(void **state)
{
    struct prov_config *cfg;

    (void)state;
    cfg = parse_ok("[ca]\nindex = postgresql://ca@db1,db2/ix?target_session_attrs=read-write\n"
                   "index_password = env:CA_INDEX_PW\n");
    assert_string_equal(cfg->ca_index, "postgresql://ca@db1,db2/ix?target_session_attrs=read-write");
    assert_string_equal(cfg->ca_index_password, "env:CA_INDEX_PW");
    prov_config_free(cfg);
    cfg = parse_ok("[ca]\n");
    assert_null(cfg->ca_index);
    prov_config_free(cfg);
}

/* A PIN written where a PIN source belongs must not end up in the error text. */
static void test_pin_source_never_echoed(void **state)
{
    static const char *const keys[][2] = {{"provisioner", "device_pin"},
                                          {"ca", "pin"},
                                          {"ca", "root_key_pass"},
                                          {"ca", "index_password"}};
    char text[128];
    char needle[64];

    (void)state;
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        snprintf(text, sizeof(text), "[%s]\n%s = 735911\n", keys[i][0], keys[i][1]);
        snprintf(needle, sizeof(needle), "[%s] %s", keys[i][0], keys[i][1]);
        parse_fail(text, needle, "[****]");
        assert_null(strstr(prov_error_message(), "735911"));
    }
}

static void test_relative_without_base_dir(void **state)
{
    struct prov_config *cfg = NULL;
    const char text[] = "[provisioner]\noutput_dir = out\npkcs11_module = libsofthsm2.so\n";

    (void)state;
    prov_error_clear();
    assert_int_equal(prov_issue_parse_config(text, strlen(text), "t.cnf", NULL, &cfg), 0);
    assert_string_equal(cfg->output_dir, "out");
    /* a bare library name is left to the loader's search path */
    assert_string_equal(cfg->pkcs11_module, "libsofthsm2.so");
    assert_null(prov_config_path(cfg, NULL));
    prov_config_free(cfg);
    prov_config_free(NULL);
}

static void test_load_file(void **state)
{
    char dir[] = "/tmp/test_config.XXXXXX";
    char path[64];
    struct prov_config *cfg = NULL;
    FILE *f;
    char *resolved;

    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/p.cnf", dir);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("[provisioner]\nserver_ca = ca.pem\n", f);
    fclose(f);
    prov_error_clear();
    assert_int_equal(prov_issue_load_config(path, &cfg), 0);
    assert_string_equal(cfg->path, path);
    assert_string_equal(cfg->dir, dir);
    resolved = prov_config_path(cfg, "ca.pem");
    assert_string_equal(cfg->server_ca, resolved);
    free(resolved);
    resolved = prov_config_path(cfg, "/abs");
    assert_string_equal(resolved, "/abs");
    free(resolved);
    prov_config_free(cfg);
    unlink(path);

    /* A config that is not there is a config error (exit 2), naming the file. */
    prov_error_clear();
    cfg = (struct prov_config *)1;
    assert_int_equal(prov_issue_load_config(path, &cfg), PROV_ERR_CONFIG);
    assert_null(cfg);
    assert_non_null(strstr(prov_error_message(), path));
    rmdir(dir);
}

/* The shipped example must always load (tests find it through the source tree). */
static void test_example_config(void **state)
{
    const char *root = getenv("PROV_SOURCE_ROOT");
    char path[4096];
    struct prov_config *cfg = NULL;
    const struct prov_profile *p;

    (void)state;
    if (root != NULL) {
        snprintf(path, sizeof(path), "%s/examples/provisioner.cnf", root);
    } else {
        /* __FILE__ is tests/unit/test_config.c, relative to the build directory */
        snprintf(path, sizeof(path), "%.*s/../../examples/provisioner.cnf",
                 (int)(strrchr(__FILE__, '/') - __FILE__), __FILE__);
    }
    prov_error_clear();
    if (prov_issue_load_config(path, &cfg) != 0) {
        fail_msg("%s: %s", path, prov_error_message());
    }
    assert_non_null(strstr(cfg->ca_dir, "/ca"));
    assert_non_null(strstr(cfg->root_config, "/root.conf"));
    assert_string_equal(cfg->pkcs11_module, "/usr/lib/softhsm/libsofthsm2.so");
    assert_non_null(strstr(cfg->device_pin, "file:"));
    p = prov_config_profile(cfg, "device");
    assert_non_null(p);
    assert_string_equal(p->subject_section, "device_dn");
    assert_string_equal(p->extensions_section, "device_ext");
    assert_string_equal(conf_value(cfg, "device_dn", "CN"), "${cn}");
    prov_config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_gives_defaults),
        cmocka_unit_test(test_good_config),
        cmocka_unit_test(test_templates_survive),
        cmocka_unit_test(test_nconf_variables_still_work),
        cmocka_unit_test(test_unknown_keys),
        cmocka_unit_test(test_unknown_sections),
        cmocka_unit_test(test_default_section_does_not_leak),
        cmocka_unit_test(test_syntax_errors),
        cmocka_unit_test(test_nul_byte),
        cmocka_unit_test(test_bad_days),
        cmocka_unit_test(test_tpm_handles),
        cmocka_unit_test(test_bad_key_types),
        cmocka_unit_test(test_missing_sections),
        cmocka_unit_test(test_profile_must_issue_end_entities),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_ca_index),
        cmocka_unit_test(test_pin_source_never_echoed),
        cmocka_unit_test(test_relative_without_base_dir),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_example_config),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
