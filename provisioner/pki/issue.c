/* SPDX-License-Identifier: Apache-2.0 */
#include "issue.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "chain.h"
#include "crl_names.h"
#include "csr.h"
#include "error.h"
#include "keytype.h"
#include "log.h"

/* Clock skew allowed for devices whose clock is a little behind the station's. */
#define BACKDATE_SECONDS 300

bool prov_serial_is_valid(const char *serial)
{
    size_t len;

    if (serial == NULL) {
        return false;
    }
    len = strlen(serial);
    if (len == 0 || len > 64 || strcmp(serial, ".") == 0 || strcmp(serial, "..") == 0) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)serial[i];

        if (!(isascii(c) && isalnum(c)) && c != '.' && c != '_' && c != '-') {
            return false;
        }
    }
    return true;
}

int prov_serial_random(ASN1_INTEGER **out)
{
    unsigned char buf[PROV_SERIAL_BYTES];
    ASN1_INTEGER *serial = NULL;
    BIGNUM *bn = NULL;
    int r = PROV_ERR_CRYPTO;

    *out = NULL;
    /*
     * Top bit clear keeps the DER INTEGER positive and exactly PROV_SERIAL_BYTES long; a zero
     * first byte is redrawn so that the length never shrinks (some parsers assume 20 bytes).
     */
    do {
        if (RAND_bytes(buf, sizeof(buf)) != 1) {
            r = prov_fail_ossl(PROV_ERR_CRYPTO, "certificate serial: no randomness");
            goto out;
        }
        buf[0] &= 0x7f;
    } while (buf[0] == 0);
    bn = BN_bin2bn(buf, sizeof(buf), NULL);
    serial = bn != NULL ? BN_to_ASN1_INTEGER(bn, NULL) : NULL;
    if (serial == NULL) {
        r = prov_fail_ossl(PROV_ERR_NOMEM, "certificate serial: out of memory");
        goto out;
    }
    *out = serial;
    r = 0;
out:
    OPENSSL_cleanse(buf, sizeof(buf));
    BN_free(bn);
    return r;
}

/* The template variables of a request: the manifest's x_ columns plus the fixed names. */
static struct prov_vars request_vars(const struct prov_request *rq)
{
    struct prov_vars v = rq->vars;

    v.serial = rq->serial;
    v.cn = rq->cn != NULL ? rq->cn : rq->serial;
    v.lot = rq->lot;
    v.profile = rq->profile != NULL ? rq->profile->name : NULL;
    return v;
}

/*
 * The attribute name of a subject line. Like `openssl req`, "0.OU" and "1.OU" name two OU
 * values (a config section cannot repeat a key); a dotted OID such as "2.5.4.3" stays as is.
 */
static const char *attribute_name(const char *key)
{
    const char *p = key;

    while (isdigit((unsigned char)*p)) {
        p++;
    }
    if (p != key && (*p == '.' || *p == ',' || *p == ':') && isalpha((unsigned char)p[1])) {
        return p + 1;
    }
    return key;
}

static int add_rdn(X509_NAME *name, const char *attr, const char *value, const char *serial)
{
    if (value[0] == '\0') {
        return prov_fail(PROV_ERR_POLICY, "serial %s: subject attribute %s is empty", serial,
                         attr);
    }
    if (OBJ_txt2nid(attr) == NID_undef) {
        return prov_fail(PROV_ERR_CONFIG, "subject attribute \"%s\": unknown attribute name",
                         attr);
    }
    /* The value goes in as one attribute value: it is never parsed as a DN. */
    if (X509_NAME_add_entry_by_txt(name, attr, MBSTRING_UTF8, (const unsigned char *)value, -1,
                                   -1, 0) != 1) {
        return prov_fail_ossl(PROV_ERR_POLICY,
                              "serial %s: subject attribute %s: value not allowed (too long?)",
                              serial, attr);
    }
    return 0;
}

static int subject_from_section(const struct prov_config *cfg, const struct prov_request *rq,
                                const struct prov_vars *vars, X509_NAME *name)
{
    const char *section = rq->profile->subject_section;
    STACK_OF(CONF_VALUE) *lines = cfg->conf ? NCONF_get_section(cfg->conf, section) : NULL;
    char *value = NULL;
    int r = 0;

    if (lines == NULL || sk_CONF_VALUE_num(lines) == 0) {
        ERR_clear_error();
        return prov_fail(PROV_ERR_CONFIG, "profile %s: subject section [%s] is missing or empty",
                         rq->profile->name, section);
    }
    for (int i = 0; i < sk_CONF_VALUE_num(lines) && r == 0; i++) {
        const CONF_VALUE *line = sk_CONF_VALUE_value(lines, i);

        r = prov_template_expand(line->value, vars, &value);
        if (r == 0) {
            r = add_rdn(name, attribute_name(line->name), value, rq->serial);
        }
        free(value);
        value = NULL;
    }
    return r;
}

int prov_issue_subject(const struct prov_config *cfg, const struct prov_request *rq,
                       X509_NAME **out)
{
    struct prov_vars vars = request_vars(rq);
    X509_NAME *name = NULL;
    int r = PROV_ERR_NOMEM;

    *out = NULL;
    if (rq->serial == NULL || !prov_serial_is_valid(rq->serial)) {
        return prov_fail(PROV_ERR_INPUT, "serial \"%s\": must match " PROV_SERIAL_RULE,
                         rq->serial ? rq->serial : "");
    }
    name = X509_NAME_new();
    if (name == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "serial %s: out of memory", rq->serial);
    }
    if (rq->profile != NULL && rq->profile->subject_section != NULL) {
        r = subject_from_section(cfg, rq, &vars, name);
    } else {
        r = add_rdn(name, "CN", vars.cn, rq->serial);
    }
    if (r < 0) {
        goto out;
    }
    *out = name;
    name = NULL;
out:
    X509_NAME_free(name);
    return r;
}

/* Names an unsupported public key for a refusal message. */
static int refuse_key(EVP_PKEY *pub, const char *profile)
{
    char group[64] = "";
    size_t len = 0;

    if (EVP_PKEY_is_a(pub, "RSA")) {
        if (EVP_PKEY_get_bits(pub) < 2048) {
            return prov_fail(PROV_ERR_POLICY, "CSR key RSA-%d: weaker than RSA-2048",
                             EVP_PKEY_get_bits(pub));
        }
        return prov_fail(PROV_ERR_POLICY, "CSR key RSA-%d: not a supported size (2048, 3072)",
                         EVP_PKEY_get_bits(pub));
    }
    if (EVP_PKEY_is_a(pub, "EC")) {
        if (!EVP_PKEY_get_group_name(pub, group, sizeof(group), &len)) {
            snprintf(group, sizeof(group), "with explicit parameters");
        }
        ERR_clear_error();
        return prov_fail(PROV_ERR_POLICY, "CSR key EC %s: curve not allowed (P-256, P-384)",
                         group);
    }
    return prov_fail(PROV_ERR_POLICY, "CSR key %s: algorithm not allowed by profile %s",
                     EVP_PKEY_get0_type_name(pub) ? EVP_PKEY_get0_type_name(pub) : "(unknown)",
                     profile);
}

/* Only what a device may ask for harmlessly is tolerated; it is ignored either way. */
static int check_requested_extensions(X509_REQ *req)
{
    STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(req);
    int r = 0;

    if (exts == NULL && X509_REQ_get_attr_by_NID(req, NID_ext_req, -1) >= 0) {
        return prov_fail_ossl(PROV_ERR_POLICY, "CSR: requested extensions are unreadable");
    }
    for (int i = 0; i < sk_X509_EXTENSION_num(exts) && r == 0; i++) {
        X509_EXTENSION *ext = sk_X509_EXTENSION_value(exts, i);
        int nid = OBJ_obj2nid(X509_EXTENSION_get_object(ext));
        BASIC_CONSTRAINTS *bc;
        char oid[80];

        switch (nid) {
        case NID_subject_alt_name:
        case NID_key_usage:
        case NID_ext_key_usage:
        case NID_subject_key_identifier:
            break;
        case NID_basic_constraints:
            bc = X509V3_EXT_d2i(ext);
            if (bc == NULL || bc->ca) {
                r = prov_fail(PROV_ERR_POLICY, "CSR requests basicConstraints CA:true");
            }
            BASIC_CONSTRAINTS_free(bc);
            break;
        default:
            /* The short name when OpenSSL knows one, else the dotted OID. */
            OBJ_obj2txt(oid, sizeof(oid), X509_EXTENSION_get_object(ext), 1);
            r = prov_fail(PROV_ERR_POLICY, "CSR requests extension %s, which is not allowed",
                          nid != NID_undef ? OBJ_nid2sn(nid) : oid);
            break;
        }
    }
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    return r;
}

int prov_issue_check_key(const struct prov_profile *profile, EVP_PKEY *pub,
                         enum prov_key_type *type_out)
{
    enum prov_key_type type = prov_key_type_of(pub);
    unsigned allowed;

    *type_out = PROV_KEY_NONE;
    if (type == PROV_KEY_NONE) {
        return refuse_key(pub, profile->name);
    }
    /* A profile that lists nothing allows its own key type only. */
    allowed = profile->allowed_keys ? profile->allowed_keys : PROV_KEY_BIT(profile->key_type);
    if (!(allowed & PROV_KEY_BIT(type))) {
        return prov_fail(PROV_ERR_POLICY, "CSR key %s: not allowed by profile %s",
                         prov_key_type_name(type), profile->name);
    }
    *type_out = type;
    return 0;
}

int prov_issue_check_csr(const struct prov_profile *profile, X509_REQ *req,
                         enum prov_key_type *type_out)
{
    EVP_PKEY *pub;
    enum prov_key_type type;
    int r;

    if (type_out != NULL) {
        *type_out = PROV_KEY_NONE;
    }
    r = prov_csr_verify(req, NULL);
    if (r < 0) {
        return r;
    }
    pub = X509_REQ_get0_pubkey(req);
    r = prov_issue_check_key(profile, pub, &type);
    if (r < 0) {
        return r;
    }
    r = check_requested_extensions(req);
    if (r < 0) {
        return r;
    }
    if (type_out != NULL) {
        *type_out = type;
    }
    return 0;
}

/* LDH labels (RFC 1123), an optional leading "*." wildcard label. */
static bool is_dns_name(const char *s)
{
    size_t label = 0;
    size_t total = strlen(s);

    if (strncmp(s, "*.", 2) == 0) {
        s += 2;
    }
    if (*s == '\0' || total > 253) {
        return false;
    }
    for (const char *p = s;; p++) {
        if (*p == '.' || *p == '\0') {
            if (label == 0 || label > 63 || p[-1] == '-') {
                return false;
            }
            if (*p == '\0') {
                return true;
            }
            label = 0;
            continue;
        }
        if (!(isascii((unsigned char)*p) && isalnum((unsigned char)*p)) &&
            !(*p == '-' && label > 0)) {
            return false;
        }
        label++;
    }
}

/* IA5String content that is safe to print: visible ASCII, no spaces. */
static bool is_visible_ascii(const char *s)
{
    for (; *s; s++) {
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f) {
            return false;
        }
    }
    return true;
}

static bool is_email(const char *s)
{
    const char *at = strchr(s, '@');

    return is_visible_ascii(s) && at != NULL && at != s && strchr(at + 1, '@') == NULL &&
           at[1] != '\0';
}

/* RFC 3986: scheme ":" then something. */
static bool is_uri(const char *s)
{
    const char *p = s;

    if (!is_visible_ascii(s) || !isalpha((unsigned char)*p)) {
        return false;
    }
    while (isalnum((unsigned char)*p) || *p == '+' || *p == '-' || *p == '.') {
        p++;
    }
    return *p == ':' && p[1] != '\0';
}

static GENERAL_NAME *ia5_name(int type, const char *value)
{
    GENERAL_NAME *gen = GENERAL_NAME_new();
    ASN1_IA5STRING *ia5 = ASN1_IA5STRING_new();

    if (gen == NULL || ia5 == NULL || ASN1_STRING_set(ia5, value, (int)strlen(value)) != 1) {
        GENERAL_NAME_free(gen);
        ASN1_IA5STRING_free(ia5);
        return NULL;
    }
    GENERAL_NAME_set0_value(gen, type, ia5);
    return gen;
}

static const char *san_kind_name(int type)
{
    switch (type) {
    case GEN_DNS: return "DNS";
    case GEN_URI: return "URI";
    case GEN_EMAIL: return "email";
    default: return "IP";
    }
}

/* One SAN entry, validated: a bad entry is a refusal naming it, never silently dropped. */
static int add_san_entry(GENERAL_NAMES *gens, int type, const char *value, const char *serial)
{
    GENERAL_NAME *gen = NULL;
    ASN1_OCTET_STRING *ip;
    bool ok;

    switch (type) {
    case GEN_DNS: ok = is_dns_name(value); break;
    case GEN_URI: ok = is_uri(value); break;
    case GEN_EMAIL: ok = is_email(value); break;
    default: ok = true; break;
    }
    if (type == GEN_IPADD) {
        ip = a2i_IPADDRESS(value);
        ERR_clear_error();
        ok = ip != NULL;
        if (ok) {
            gen = GENERAL_NAME_new();
            if (gen == NULL) {
                ASN1_OCTET_STRING_free(ip);
            } else {
                GENERAL_NAME_set0_value(gen, GEN_IPADD, ip);
            }
        }
    } else if (ok) {
        gen = ia5_name(type, value);
    }
    if (!ok) {
        return prov_fail(PROV_ERR_POLICY, "serial %s: subjectAltName %s entry \"%s\" is invalid",
                         serial, san_kind_name(type), value);
    }
    if (gen == NULL || sk_GENERAL_NAME_push(gens, gen) <= 0) {
        GENERAL_NAME_free(gen);
        return prov_fail(PROV_ERR_NOMEM, "serial %s: out of memory", serial);
    }
    return 0;
}

/* Splits a ';'-separated list, trimming blanks around entries and skipping empty ones. */
static int add_san_list(GENERAL_NAMES *gens, int type, const char *list, const char *serial)
{
    char *copy = strdup(list);
    char *save = NULL;
    int r = 0;

    if (copy == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "serial %s: out of memory", serial);
    }
    for (char *tok = strtok_r(copy, ";", &save); tok != NULL && r == 0;
         tok = strtok_r(NULL, ";", &save)) {
        char *end = tok + strlen(tok);

        while (*tok == ' ' || *tok == '\t') {
            tok++;
        }
        while (end > tok && (end[-1] == ' ' || end[-1] == '\t')) {
            *--end = '\0';
        }
        if (*tok != '\0') {
            r = add_san_entry(gens, type, tok, serial);
        }
    }
    free(copy);
    return r;
}

/* The request's SAN lists (taken literally), else the profile's templates, expanded. */
static int build_san(const struct prov_request *rq, GENERAL_NAMES **out)
{
    const struct prov_profile *pr = rq->profile;
    struct prov_vars vars = request_vars(rq);
    const struct {
        int type;
        const char *given;
        const char *tmpl;
    } kinds[] = {
        {GEN_DNS, rq->san_dns, pr->san_dns},
        {GEN_URI, rq->san_uri, pr->san_uri},
        {GEN_EMAIL, rq->san_email, pr->san_email},
        {GEN_IPADD, rq->san_ip, pr->san_ip},
    };
    GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
    char *expanded = NULL;
    int r = 0;

    *out = NULL;
    if (gens == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "serial %s: out of memory", rq->serial);
    }
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]) && r == 0; i++) {
        if (kinds[i].given != NULL) {
            r = add_san_list(gens, kinds[i].type, kinds[i].given, rq->serial);
        } else if (kinds[i].tmpl != NULL) {
            r = prov_template_expand(kinds[i].tmpl, &vars, &expanded);
            if (r == 0) {
                r = add_san_list(gens, kinds[i].type, expanded, rq->serial);
            }
            free(expanded);
            expanded = NULL;
        }
    }
    if (r < 0 || sk_GENERAL_NAME_num(gens) == 0) {
        GENERAL_NAMES_free(gens);
        return r;
    }
    *out = gens;
    return 0;
}

/* notBefore a little in the past (but not before the issuer's), notAfter capped at the issuer's. */
static int set_validity(X509 *cert, const X509 *issuer, int days, const char *serial)
{
    time_t now = time(NULL);
    time_t start = now - BACKDATE_SECONDS;
    const ASN1_TIME *issuer_nb = X509_get0_notBefore(issuer);
    const ASN1_TIME *issuer_na = X509_get0_notAfter(issuer);
    ASN1_TIME *na = NULL;
    int r = PROV_ERR_CRYPTO;

    if (days <= 0) {
        return prov_fail(PROV_ERR_CONFIG, "serial %s: profile lifetime of %d days", serial, days);
    }
    if (X509_time_adj_ex(X509_getm_notBefore(cert), 0, 0, &start) == NULL) {
        return prov_fail_ossl(PROV_ERR_CRYPTO, "serial %s: cannot set notBefore", serial);
    }
    if (ASN1_TIME_compare(X509_get0_notBefore(cert), issuer_nb) < 0 &&
        X509_set1_notBefore(cert, issuer_nb) != 1) {
        return prov_fail_ossl(PROV_ERR_CRYPTO, "serial %s: cannot set notBefore", serial);
    }
    na = X509_time_adj_ex(NULL, days, 0, &now);
    if (na == NULL) {
        return prov_fail_ossl(PROV_ERR_CRYPTO, "serial %s: cannot set notAfter", serial);
    }
    /* A certificate must not outlive its issuer (doc/chains.md, validity nesting). */
    if (ASN1_TIME_compare(na, issuer_na) > 0) {
        ASN1_TIME_free(na);
        na = ASN1_TIME_dup(issuer_na);
    }
    if (na == NULL || X509_set1_notAfter(cert, na) != 1) {
        r = prov_fail_ossl(PROV_ERR_CRYPTO, "serial %s: cannot set notAfter", serial);
        goto out;
    }
    if (X509_cmp_time(na, &now) <= 0) {
        r = prov_fail(PROV_ERR_POLICY,
                      "serial %s: no lifetime left: the issuing CA expires before now", serial);
        goto out;
    }
    r = 0;
out:
    ASN1_TIME_free(na);
    return r;
}

static int add_default_extensions(X509V3_CTX *ctx, X509 *cert)
{
    static const struct {
        int nid;
        const char *value;
    } defaults[] = {
        {NID_basic_constraints, "critical,CA:FALSE"},
        {NID_key_usage, "critical,digitalSignature"},
        {NID_ext_key_usage, "clientAuth"},
        {NID_subject_key_identifier, "hash"},
        {NID_authority_key_identifier, "keyid"},
    };

    for (size_t i = 0; i < sizeof(defaults) / sizeof(defaults[0]); i++) {
        X509_EXTENSION *ext = X509V3_EXT_nconf_nid(NULL, ctx, defaults[i].nid, defaults[i].value);
        int ok = ext != NULL && X509_add_ext(cert, ext, -1) == 1;

        X509_EXTENSION_free(ext);
        if (!ok) {
            return prov_fail_ossl(PROV_ERR_CRYPTO, "cannot add extension %s",
                                  OBJ_nid2sn(defaults[i].nid));
        }
    }
    return 0;
}

static int add_extensions(const struct prov_config *cfg, const struct prov_ca *ca,
                          const struct prov_request *rq, X509 *cert)
{
    const struct prov_profile *pr = rq->profile;
    GENERAL_NAMES *san = NULL;
    X509V3_CTX ctx;
    int r;

    X509V3_set_ctx(&ctx, ca->cert, cert, NULL, NULL, 0);
    if (pr->extensions_section != NULL) {
        X509V3_set_nconf(&ctx, cfg->conf);
        if (cfg->conf == NULL ||
            X509V3_EXT_add_nconf(cfg->conf, &ctx, pr->extensions_section, cert) != 1) {
            return prov_fail_ossl(PROV_ERR_CONFIG, "profile %s: extensions section [%s] is bad",
                                  pr->name, pr->extensions_section);
        }
    } else {
        r = add_default_extensions(&ctx, cert);
        if (r < 0) {
            return r;
        }
    }
    r = build_san(rq, &san);
    if (r < 0) {
        return r;
    }
    /* The request's SAN replaces any the profile's section wrote. */
    if (san != NULL &&
        X509_add1_ext_i2d(cert, NID_subject_alt_name, san, 0, X509V3_ADD_REPLACE) != 1) {
        r = prov_fail_ossl(PROV_ERR_CRYPTO, "serial %s: cannot add subjectAltName", rq->serial);
    }
    GENERAL_NAMES_free(san);
    /* The profile's crl_url, a template like the SANs (doc/revocation.md). */
    if (r == 0 && pr->crl_url != NULL) {
        struct prov_vars vars = request_vars(rq);
        char *url = NULL;

        r = prov_template_expand(pr->crl_url, &vars, &url);
        if (r == 0) {
            r = prov_crl_add_distribution_point(cert, url, pr->name);
        }
        free(url);
    }
    return r;
}

/* Serial, names, validity, key and extensions of a new certificate (the subject is given). */
static int fill_certificate(const struct prov_config *cfg, const struct prov_ca *ca,
                            EVP_PKEY *pub, const X509_NAME *subject,
                            const struct prov_request *rq, X509 *cert)
{
    ASN1_INTEGER *serial = NULL;
    int r;

    r = prov_serial_random(&serial);
    if (r < 0) {
        goto out;
    }
    if (X509_set_version(cert, X509_VERSION_3) != 1 || X509_set_serialNumber(cert, serial) != 1 ||
        X509_set_subject_name(cert, subject) != 1 ||
        X509_set_issuer_name(cert, X509_get_subject_name(ca->cert)) != 1 ||
        X509_set_pubkey(cert, pub) != 1) {
        r = prov_fail_ossl(PROV_ERR_CRYPTO, "serial %s: cannot fill in the certificate",
                           rq->serial);
        goto out;
    }
    r = set_validity(cert, ca->cert, rq->profile->days, rq->serial);
    if (r < 0) {
        goto out;
    }
    r = add_extensions(cfg, ca, rq, cert);
out:
    ASN1_INTEGER_free(serial);
    return r;
}

/*
 * Why cert is not the end entity a device profile must issue, or NULL: the chain rules check
 * a device certificate for clientAuth and take a leaf that claims CA:TRUE for a CA (chain.c
 * check_purpose, is_ca_position), and -x509_strict refuses keyCertSign without CA:TRUE.
 * *nid is the extension that says so. The extensions are decoded here rather than through
 * X509_get_extension_flags(): that caches facts of the certificate (its hash among them),
 * which must not happen before it is signed.
 */
static const char *end_entity_problem(X509 *cert, int *nid)
{
    BASIC_CONSTRAINTS *bc = X509_get_ext_d2i(cert, NID_basic_constraints, NULL, NULL);
    ASN1_BIT_STRING *ku = X509_get_ext_d2i(cert, NID_key_usage, NULL, NULL);
    EXTENDED_KEY_USAGE *eku = X509_get_ext_d2i(cert, NID_ext_key_usage, NULL, NULL);
    const char *why = NULL;
    bool has_client_auth = false;

    for (int i = 0; i < sk_ASN1_OBJECT_num(eku); i++) {
        has_client_auth = has_client_auth ||
                          OBJ_obj2nid(sk_ASN1_OBJECT_value(eku, i)) == NID_client_auth;
    }
    /* keyUsage bits (RFC 5280 4.2.1.3): digitalSignature 0, keyCertSign 5, cRLSign 6. */
    if (bc != NULL && bc->ca) {
        *nid = NID_basic_constraints;
        why = "CA:true would make every device a CA; a device profile issues end entities "
              "(CA:false)";
    } else if (ku != NULL && (ASN1_BIT_STRING_get_bit(ku, 5) || ASN1_BIT_STRING_get_bit(ku, 6))) {
        *nid = NID_key_usage;
        why = "allows keyCertSign or cRLSign, which only a CA may have; a device profile issues "
              "end entities";
    } else if (ku != NULL && !ASN1_BIT_STRING_get_bit(ku, 0)) {
        *nid = NID_key_usage;
        why = "lacks digitalSignature, which a TLS client key signs the handshake with";
    } else if (eku != NULL && !has_client_auth) {
        *nid = NID_ext_key_usage;
        why = "lacks clientAuth, which the chain rules require of a device certificate";
    }
    BASIC_CONSTRAINTS_free(bc);
    ASN1_BIT_STRING_free(ku);
    EXTENDED_KEY_USAGE_free(eku);
    ERR_clear_error();
    return why;
}

/* The line of an extension section that sets nid, as the user spelled its name, or NULL. */
static const char *section_key(const struct prov_config *cfg, const char *section, int nid)
{
    STACK_OF(CONF_VALUE) *lines = cfg->conf ? NCONF_get_section(cfg->conf, section) : NULL;

    for (int i = 0; i < sk_CONF_VALUE_num(lines); i++) {
        const char *name = sk_CONF_VALUE_value(lines, i)->name;

        if (strcasecmp(name, OBJ_nid2sn(nid)) == 0 || strcasecmp(name, OBJ_nid2ln(nid)) == 0) {
            return name;
        }
    }
    ERR_clear_error();
    return NULL;
}

/* A throwaway CA the way `ca init` makes the intermediate, for prov_issue_check_profile. */
static int probe_ca(struct prov_ca *ca)
{
    static const struct {
        int nid;
        const char *value;
    } exts[] = {
        {NID_basic_constraints, "critical,CA:TRUE,pathlen:0"},
        {NID_key_usage, "critical,keyCertSign,cRLSign"},
        {NID_subject_key_identifier, "hash"},
    };
    X509 *cert = X509_new();
    X509V3_CTX ctx;

    memset(ca, 0, sizeof(*ca));
    ca->key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    if (cert == NULL || ca->key == NULL || X509_set_version(cert, X509_VERSION_3) != 1 ||
        ASN1_INTEGER_set(X509_get_serialNumber(cert), 1) != 1 ||
        X509_NAME_add_entry_by_txt(X509_get_subject_name(cert), "CN", MBSTRING_UTF8,
                                   (const unsigned char *)"profile probe CA", -1, -1, 0) != 1 ||
        X509_set_issuer_name(cert, X509_get_subject_name(cert)) != 1 ||
        X509_gmtime_adj(X509_getm_notBefore(cert), -86400) == NULL ||
        X509_gmtime_adj(X509_getm_notAfter(cert), 86400L * 36500) == NULL ||
        X509_set_pubkey(cert, ca->key) != 1) {
        X509_free(cert);
        return prov_fail_ossl(PROV_ERR_CRYPTO, "profile check: cannot make a probe CA");
    }
    X509V3_set_ctx(&ctx, cert, cert, NULL, NULL, 0);
    for (size_t i = 0; i < sizeof(exts) / sizeof(exts[0]); i++) {
        X509_EXTENSION *ext = X509V3_EXT_nconf_nid(NULL, &ctx, exts[i].nid, exts[i].value);
        int ok = ext != NULL && X509_add_ext(cert, ext, -1) == 1;

        X509_EXTENSION_free(ext);
        if (!ok) {
            X509_free(cert);
            return prov_fail_ossl(PROV_ERR_CRYPTO, "profile check: cannot make a probe CA");
        }
    }
    if (X509_sign(cert, ca->key, EVP_sha256()) <= 0) {
        X509_free(cert);
        return prov_fail_ossl(PROV_ERR_CRYPTO, "profile check: cannot make a probe CA");
    }
    ca->cert = cert;
    return 0;
}

int prov_issue_check_profile(const struct prov_config *cfg, const struct prov_profile *pr)
{
    /* No SAN from the request (""), so only the profile's own extension lines count. */
    struct prov_request rq = {.serial = "probe", .san_dns = "", .san_uri = "", .san_email = "",
                              .san_ip = "", .profile = pr};
    struct prov_chain_report rep = {0};
    struct prov_ca ca = {0};
    STACK_OF(X509) *chain = NULL;
    X509_NAME *subject = X509_NAME_new();
    EVP_PKEY *key = NULL;
    X509 *cert = X509_new();
    const char *why;
    int nid = NID_undef;
    int r;

    if (pr->extensions_section == NULL) {
        r = 0; /* the built-in device set (add_default_extensions) */
        goto out;
    }
    r = probe_ca(&ca);
    if (r < 0) {
        goto out;
    }
    key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    chain = sk_X509_new_null();
    if (key == NULL || subject == NULL || cert == NULL || chain == NULL ||
        X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_UTF8,
                                   (const unsigned char *)"profile probe", -1, -1, 0) != 1) {
        r = prov_fail_ossl(PROV_ERR_NOMEM, "profile %s: out of memory", pr->name);
        goto out;
    }
    r = fill_certificate(cfg, &ca, key, subject, &rq, cert);
    if (r < 0) {
        prov_error_clear();
        r = prov_fail_ossl(PROV_ERR_CONFIG, "%s: [profile_%s] extensions: section [%s] is bad",
                           cfg->path, pr->name, pr->extensions_section);
        goto out;
    }
    why = end_entity_problem(cert, &nid);
    if (why != NULL) {
        const char *key_name = section_key(cfg, pr->extensions_section, nid);

        r = prov_fail(PROV_ERR_CONFIG, "%s: [%s] %s (extensions of [profile_%s]): %s", cfg->path,
                      pr->extensions_section, key_name ? key_name : OBJ_nid2sn(nid), pr->name,
                      why);
        goto out;
    }
    if (X509_sign(cert, ca.key, EVP_sha256()) <= 0 || sk_X509_push(chain, cert) <= 0 ||
        sk_X509_push(chain, ca.cert) <= 0) {
        r = prov_fail_ossl(PROV_ERR_CRYPTO, "profile %s: cannot sign a probe", pr->name);
        goto out;
    }
    /* Anything else the chain rules refuse, as they name it. */
    r = prov_chain_verify(chain, NULL, PROV_PURPOSE_CLIENT, time(NULL), &rep);
    if (r == PROV_ERR_VERIFY) {
        r = prov_fail(PROV_ERR_CONFIG,
                      "%s: [profile_%s] extensions = %s: a certificate it issues fails the chain "
                      "rules: %s: %s",
                      cfg->path, pr->name, pr->extensions_section,
                      rep.n > 0 ? rep.items[0].rule : "?", rep.n > 0 ? rep.items[0].detail : "");
    }
out:
    prov_chain_report_free(&rep);
    sk_X509_free(chain); /* borrowed */
    X509_free(cert);
    X509_NAME_free(subject);
    EVP_PKEY_free(key);
    X509_free(ca.cert);
    EVP_PKEY_free(ca.key);
    return r;
}

/* A name from a CSR for an error line: printable ASCII only, at most size - 1 bytes. */
static void printable(const unsigned char *s, size_t len, char *out, size_t size)
{
    size_t n = 0;

    for (size_t i = 0; i < len && n + 1 < size; i++) {
        out[n++] = s[i] >= 0x20 && s[i] < 0x7f ? (char)s[i] : '?';
    }
    out[n] = '\0';
}

/* true when name holds an entry of entry's type with entry's value. */
static bool name_has_entry(const X509_NAME *name, const X509_NAME_ENTRY *entry)
{
    int nid = OBJ_obj2nid(X509_NAME_ENTRY_get_object(entry));
    const ASN1_STRING *want = X509_NAME_ENTRY_get_data(entry);

    for (int i = X509_NAME_get_index_by_NID(name, nid, -1); i >= 0;
         i = X509_NAME_get_index_by_NID(name, nid, i)) {
        const ASN1_STRING *have = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i));

        if (ASN1_STRING_length(have) == ASN1_STRING_length(want) &&
            memcmp(ASN1_STRING_get0_data(have), ASN1_STRING_get0_data(want),
                   (size_t)ASN1_STRING_length(want)) == 0) {
            return true;
        }
    }
    return false;
}

/*
 * The names a CSR asks for must be names the certificate carries (they come from the request
 * and the profile, never from the CSR; doc/architecture.md, step 4): every subject attribute,
 * except that a CN equal to the serial is always fine (`csr` writes it; `sign --cn` may give
 * another), and every subjectAltName entry. A CSR that names something else is another device's or a forgery.
 */
static int check_csr_names(X509_REQ *req, const struct prov_request *rq, X509 *cert)
{
    const X509_NAME *asked = X509_REQ_get_subject_name(req);
    const X509_NAME *given = X509_get_subject_name(cert);
    GENERAL_NAMES *asked_san = NULL;
    GENERAL_NAMES *given_san = NULL;
    STACK_OF(X509_EXTENSION) *exts;
    int r = 0;

    for (int i = 0; i < X509_NAME_entry_count(asked) && r == 0; i++) {
        const X509_NAME_ENTRY *e = X509_NAME_get_entry(asked, i);
        const ASN1_STRING *v = X509_NAME_ENTRY_get_data(e);
        int nid = OBJ_obj2nid(X509_NAME_ENTRY_get_object(e));
        bool is_serial = nid == NID_commonName &&
                         (size_t)ASN1_STRING_length(v) == strlen(rq->serial) &&
                         memcmp(ASN1_STRING_get0_data(v), rq->serial, strlen(rq->serial)) == 0;

        if (!is_serial && !name_has_entry(given, e)) {
            char text[129];

            printable(ASN1_STRING_get0_data(v), (size_t)ASN1_STRING_length(v), text,
                      sizeof(text));
            r = prov_fail(PROV_ERR_POLICY,
                          "serial %s: the CSR asks for subject %s=%s, which the manifest and "
                          "profile do not give this device",
                          rq->serial, nid != NID_undef ? OBJ_nid2sn(nid) : "?", text);
        }
    }
    exts = r == 0 ? X509_REQ_get_extensions(req) : NULL;
    for (int i = 0; i < sk_X509_EXTENSION_num(exts); i++) {
        X509_EXTENSION *ext = sk_X509_EXTENSION_value(exts, i);

        if (OBJ_obj2nid(X509_EXTENSION_get_object(ext)) == NID_subject_alt_name) {
            asked_san = X509V3_EXT_d2i(ext);
            break;
        }
    }
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    if (asked_san != NULL) {
        given_san = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    }
    for (int i = 0; i < sk_GENERAL_NAME_num(asked_san) && r == 0; i++) {
        GENERAL_NAME *a = sk_GENERAL_NAME_value(asked_san, i);
        bool found = false;

        for (int k = 0; k < sk_GENERAL_NAME_num(given_san) && !found; k++) {
            found = GENERAL_NAME_cmp(a, sk_GENERAL_NAME_value(given_san, k)) == 0;
        }
        if (!found) {
            BIO *b = BIO_new(BIO_s_mem());
            char *data = NULL;
            long len = 0;
            char text[129] = "?";

            if (b != NULL && GENERAL_NAME_print(b, a) == 1) {
                len = BIO_get_mem_data(b, &data);
                printable((const unsigned char *)data, len > 0 ? (size_t)len : 0, text,
                          sizeof(text));
            }
            r = prov_fail(PROV_ERR_POLICY,
                          "serial %s: the CSR asks for subjectAltName %s, which the manifest "
                          "and profile do not give this device",
                          rq->serial, text);
            BIO_free(b);
        }
    }
    GENERAL_NAMES_free(asked_san);
    GENERAL_NAMES_free(given_san);
    return r;
}

/*
 * The certificate for pub, from a CSR (req, its policy checked) or from a public key whose
 * possession the caller proved another way (req NULL: the CMP server, which verified the
 * request's POP, service/cmp_server.c).
 */
static int issue_for(const struct prov_config *cfg, const struct prov_ca *ca, EVP_PKEY *pub,
                     X509_REQ *req, const struct prov_request *rq, X509 **out)
{
    struct prov_ca_record record;
    enum prov_key_type ca_type;
    enum prov_key_type type;
    X509_NAME *subject = NULL;
    X509 *cert = NULL;
    const char *why;
    int nid = NID_undef;
    int r;

    *out = NULL;
    if (rq->profile == NULL || ca->cert == NULL || ca->key == NULL) {
        return prov_fail(PROV_ERR_INTERNAL, "serial %s: issuing without a profile or CA key",
                         rq->serial ? rq->serial : "");
    }
    r = req != NULL ? prov_issue_check_csr(rq->profile, req, NULL)
                    : prov_issue_check_key(rq->profile, pub, &type);
    if (r < 0) {
        return r;
    }
    r = prov_issue_subject(cfg, rq, &subject);
    if (r < 0) {
        return r;
    }
    cert = X509_new();
    if (cert == NULL) {
        r = prov_fail(PROV_ERR_NOMEM, "serial %s: out of memory", rq->serial);
        goto out;
    }
    r = fill_certificate(cfg, ca, pub, subject, rq, cert);
    if (r < 0) {
        goto out;
    }
    r = req != NULL ? check_csr_names(req, rq, cert) : 0;
    if (r < 0) {
        goto out;
    }
    /* The config refuses such a profile; a profile made any other way is not signed either. */
    why = end_entity_problem(cert, &nid);
    if (why != NULL) {
        r = prov_fail(PROV_ERR_CONFIG,
                      "serial %s: profile %s would issue a certificate that is not a device end "
                      "entity: %s %s",
                      rq->serial, rq->profile->name, OBJ_nid2sn(nid), why);
        goto out;
    }
    /* The index's rules and the record, locked around the signing (ca_index.h). */
    record = rq->record;
    record.is_revoke_superseded = record.is_reissue && rq->profile->is_revoke_superseded;
    if (ca->index != NULL) {
        r = rq->is_signed_unlocked ? prov_ca_index_check(ca->index, rq->serial, &record, pub)
                                   : prov_ca_index_begin(ca->index, rq->serial, &record, pub);
        if (r < 0) {
            goto out;
        }
    }
    /* The certificate's public key is the CA key's public half, and a plain OpenSSL key. */
    ca_type = prov_key_type_of(X509_get0_pubkey(ca->cert));
    prov_debug("ca", "serial %s: signing", rq->serial);
    if (X509_sign(cert, ca->key, prov_key_type_digest(ca_type)) <= 0) {
        r = prov_fail_ossl(PROV_ERR_CRYPTO, "serial %s: signing with the CA key failed",
                           rq->serial);
        /* The HSM's own reason (and code: removed, PIN...) wins when it gave one. */
        r = prov_error_code() < 0 ? prov_error_code() : r;
        if (ca->index != NULL && !rq->is_signed_unlocked) {
            prov_ca_index_abort(ca->index);
        }
        goto out;
    }
    prov_debug("ca", "serial %s: signed", rq->serial);
    if (ca->index != NULL && rq->is_signed_unlocked) {
        r = prov_ca_index_begin(ca->index, rq->serial, &record, pub);
        if (r < 0) {
            char refusal[512];

            snprintf(refusal, sizeof(refusal), "%s", prov_error_message());
            prov_debug("ca", "serial %s: signed, then refused: %s", rq->serial, refusal);
            if (prov_ca_index_discarded(ca->index, rq->serial, cert, refusal) < 0) {
                prov_warn("serial %s: a certificate signed and then refused is not in the "
                          "audit trail: %s", rq->serial, prov_error_message());
            }
            r = prov_fail(r, "%s", refusal);
            goto out;
        }
    }
    if (ca->index != NULL) {
        r = prov_ca_index_record(ca->index, rq->serial, &record, rq->profile->name, cert,
                                 ca->cert);
        if (r < 0) {
            goto out; /* signed but not recorded: never handed out */
        }
    }
    prov_chain_note_issued(cert, ca->cert);
    *out = cert;
    cert = NULL;
    r = 0;
out:
    X509_NAME_free(subject);
    X509_free(cert);
    return r;
}

int prov_issue_certificate(const struct prov_config *cfg, const struct prov_ca *ca,
                           X509_REQ *req, const struct prov_request *rq, X509 **out)
{
    EVP_PKEY *pub = X509_REQ_get0_pubkey(req);
    EVP_PKEY *plain = NULL;
    int r;

    /*
     * A CSR read from DER carries an OpenSSL 3.0 provider key, which X509_set_pubkey would
     * write out through the encoders and read back (2.2 M instructions, nearly half of this
     * path); the certificate gets a plain copy of the same SPKI instead (keytype.h). A key
     * made in this process (a batch's device key) is given as it is.
     */
    if (pub != NULL && EVP_PKEY_get0_provider(pub) != NULL) {
        plain = prov_key_type_plain_copy(X509_REQ_get_X509_PUBKEY(req));
        ERR_clear_error();
    }
    r = issue_for(cfg, ca, plain != NULL ? plain : pub, req, rq, out);
    EVP_PKEY_free(plain);
    return r;
}

int prov_issue_certificate_for_key(const struct prov_config *cfg, const struct prov_ca *ca,
                                   EVP_PKEY *pub, const struct prov_request *rq, X509 **out)
{
    return issue_for(cfg, ca, pub, NULL, rq, out);
}

/* Every profile of a loaded config issues device end entities; frees cfg when not. */
static int check_profiles(struct prov_config **cfg)
{
    for (size_t i = 0; i < (*cfg)->n_profiles; i++) {
        int r = prov_issue_check_profile(*cfg, &(*cfg)->profiles[i]);

        if (r < 0) {
            prov_config_free(*cfg);
            *cfg = NULL;
            return r;
        }
    }
    return 0;
}

int prov_issue_load_config(const char *path, struct prov_config **out)
{
    int r = prov_config_load(path, out);

    return r < 0 ? r : check_profiles(out);
}

int prov_issue_parse_config(const char *buf, size_t len, const char *name, const char *base_dir,
                            struct prov_config **out)
{
    int r = prov_config_parse(buf, len, name, base_dir, out);

    return r < 0 ? r : check_profiles(out);
}
