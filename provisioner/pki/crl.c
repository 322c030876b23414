/* SPDX-License-Identifier: Apache-2.0 */
/*
 * CRLs (crl.h): made from the CA index's revocations and signed by the CA's keys where they
 * live (the intermediate's in the HSM, through the same signer that signs certificates), and
 * read back for `check --crl` and `chain verify --crl`.
 */
#include "crl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "ca.h"
#include "ca_index.h"
#include "chain.h"
#include "durable.h"
#include "error.h"
#include "issue.h"
#include "keytype.h"
#include "log.h"
#include "storage.h"

int prov_crl_parse_time(const char *text, time_t *out)
{
    struct tm tm = {0};
    char rest[16] = "";
    int n = 0;

    *out = 0;
    if (text == NULL) {
        return prov_fail(PROV_ERR_USAGE, "no time given");
    }
    if (sscanf(text, "%4d-%2d-%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &n) == 3 &&
        text[n] == '\0' && n == 10) {
        /* a date alone: its midnight, UTC */
    } else if (sscanf(text, "%4d-%2d-%2dT%2d:%2d:%2d%15s", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                      &tm.tm_hour, &tm.tm_min, &tm.tm_sec, rest) != 7 ||
               strlen(text) < 20 || text[10] != 'T' ||
               (strcmp(rest, "Z") != 0 &&
                (rest[0] != '.' || strspn(rest + 1, "0123456789") != strlen(rest) - 2 ||
                 rest[strlen(rest) - 1] != 'Z'))) {
        return prov_fail(PROV_ERR_USAGE,
                         "time \"%s\": expected YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ (UTC)", text);
    }
    if (tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 || tm.tm_mday > 31 ||
        tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 60 || tm.tm_year < 1970) {
        return prov_fail(PROV_ERR_USAGE, "time \"%s\": out of range", text);
    }
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    *out = timegm(&tm);
    return 0;
}

static void rfc3339(const ASN1_TIME *t, char out[32])
{
    struct tm tm;

    if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1) {
        snprintf(out, 32, "%s", "");
        return;
    }
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* One entry: serial, revocation date, reasonCode (not for unspecified: RFC 5280 5.3.1 asks
   for the extension to be absent then) and invalidityDate. */
static int add_entry(X509_CRL *crl, const struct prov_ca_revocation *rv)
{
    X509_REVOKED *entry = X509_REVOKED_new();
    ASN1_INTEGER *serial = NULL;
    ASN1_TIME *at = NULL;
    ASN1_ENUMERATED *reason = NULL;
    ASN1_GENERALIZEDTIME *invalid = NULL;
    BIGNUM *bn = NULL;
    time_t t;
    int r = PROV_ERR_CRYPTO;

    if (BN_hex2bn(&bn, rv->cert_serial) != (int)strlen(rv->cert_serial)) {
        prov_warn("CA index: certificate serial \"%s\" (device %s) is not hex; left off the CRL",
                  rv->cert_serial, rv->serial);
        r = 0;
        goto out;
    }
    if (prov_crl_parse_time(rv->revoked_at, &t) < 0) {
        goto out;
    }
    serial = BN_to_ASN1_INTEGER(bn, NULL);
    at = ASN1_TIME_set(NULL, t);
    if (entry == NULL || serial == NULL || at == NULL ||
        X509_REVOKED_set_serialNumber(entry, serial) != 1 ||
        X509_REVOKED_set_revocationDate(entry, at) != 1) {
        goto out;
    }
    if (rv->reason != PROV_CRL_REASON_UNSPECIFIED) {
        reason = ASN1_ENUMERATED_new();
        if (reason == NULL || ASN1_ENUMERATED_set(reason, rv->reason) != 1 ||
            X509_REVOKED_add1_ext_i2d(entry, NID_crl_reason, reason, 0, 0) != 1) {
            goto out;
        }
    }
    if (rv->invalidity_date[0] != '\0') {
        if (prov_crl_parse_time(rv->invalidity_date, &t) < 0) {
            goto out;
        }
        invalid = ASN1_GENERALIZEDTIME_set(NULL, t);
        if (invalid == NULL ||
            X509_REVOKED_add1_ext_i2d(entry, NID_invalidity_date, invalid, 0, 0) != 1) {
            goto out;
        }
    }
    if (X509_CRL_add0_revoked(crl, entry) != 1) {
        goto out;
    }
    entry = NULL;
    r = 0;
out:
    if (r < 0) {
        r = prov_fail_ossl(PROV_ERR_CRYPTO, "CRL entry for certificate %s: cannot build",
                           rv->cert_serial);
    }
    X509_REVOKED_free(entry);
    ASN1_INTEGER_free(serial);
    ASN1_TIME_free(at);
    ASN1_ENUMERATED_free(reason);
    ASN1_GENERALIZEDTIME_free(invalid);
    BN_free(bn);
    return r;
}

/* A CRL v2 of issuer: entries, thisUpdate now, nextUpdate days ahead, cRLNumber, AKI. */
static int build_crl(X509 *issuer, const struct prov_ca_revocation *list, size_t n,
                     long long number, int days, time_t now, X509_CRL **out)
{
    X509_CRL *crl = X509_CRL_new();
    ASN1_TIME *this_update = ASN1_TIME_set(NULL, now);
    ASN1_TIME *next_update = ASN1_TIME_set(NULL, now + (time_t)days * 86400);
    ASN1_INTEGER *num = ASN1_INTEGER_new();
    X509_EXTENSION *aki = NULL;
    X509V3_CTX ctx;
    int r = PROV_ERR_CRYPTO;

    *out = NULL;
    if (crl == NULL || this_update == NULL || next_update == NULL || num == NULL ||
        X509_CRL_set_version(crl, X509_CRL_VERSION_2) != 1 ||
        X509_CRL_set_issuer_name(crl, X509_get_subject_name(issuer)) != 1 ||
        X509_CRL_set1_lastUpdate(crl, this_update) != 1 ||
        X509_CRL_set1_nextUpdate(crl, next_update) != 1 || ASN1_INTEGER_set_int64(num, number) != 1 ||
        X509_CRL_add1_ext_i2d(crl, NID_crl_number, num, 0, 0) != 1) {
        r = prov_fail_ossl(PROV_ERR_CRYPTO, "CRL: cannot build");
        goto out;
    }
    X509V3_set_ctx(&ctx, issuer, NULL, NULL, crl, 0);
    aki = X509V3_EXT_conf_nid(NULL, &ctx, NID_authority_key_identifier, "keyid:always");
    if (aki == NULL || X509_CRL_add_ext(crl, aki, -1) != 1) {
        r = prov_fail_ossl(PROV_ERR_CRYPTO,
                           "CRL: no authority key identifier (the CA certificate has no "
                           "subjectKeyIdentifier?)");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        r = add_entry(crl, &list[i]);
        if (r < 0) {
            goto out;
        }
    }
    X509_CRL_sort(crl);
    *out = crl;
    crl = NULL;
    r = 0;
out:
    X509_EXTENSION_free(aki);
    ASN1_INTEGER_free(num);
    ASN1_TIME_free(this_update);
    ASN1_TIME_free(next_update);
    X509_CRL_free(crl);
    return r;
}

static int sign_crl(X509_CRL *crl, EVP_PKEY *key, enum prov_key_type type, const char *what)
{
    if (X509_CRL_sign(crl, key, prov_key_type_digest(type)) <= 0) {
        int r = prov_fail_ossl(PROV_ERR_CRYPTO, "%s: signing failed", what);

        /* The HSM's own reason (and code: removed, PIN...) wins when it gave one. */
        return prov_error_code() < 0 ? prov_error_code() : r;
    }
    return 0;
}

/* The encodings of a CRL, made before any file is written. */
struct crl_files {
    unsigned char *der;
    int der_len;
    char *pem;
    long pem_len;
};

static int encode_crl(X509_CRL *crl, struct crl_files *f)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *data = NULL;
    int r = PROV_ERR_CRYPTO;

    f->der_len = i2d_X509_CRL(crl, &f->der);
    if (bio != NULL && f->der_len > 0 && PEM_write_bio_X509_CRL(bio, crl) == 1) {
        f->pem_len = BIO_get_mem_data(bio, &data);
        f->pem = malloc((size_t)f->pem_len + 1);
        if (f->pem != NULL) {
            memcpy(f->pem, data, (size_t)f->pem_len);
            f->pem[f->pem_len] = '\0';
            r = 0;
        }
    }
    BIO_free(bio);
    return r == 0 ? 0 : prov_fail_ossl(PROV_ERR_CRYPTO, "CRL: cannot encode");
}

static void crl_files_clear(struct crl_files *f)
{
    OPENSSL_free(f->der);
    free(f->pem);
    memset(f, 0, sizeof(*f));
}

static int write_in(const char *dir, const char *name, const void *buf, size_t len)
{
    char *path = NULL;
    int r;

    if (asprintf(&path, "%s/%s", dir, name) < 0) {
        return prov_fail(PROV_ERR_NOMEM, "CRL: out of memory");
    }
    /* public: edges and web servers read CRLs */
    r = prov_atomic_write_file(path, buf, len, 0644);
    free(path);
    return r;
}

static int write_files(const char *dir, const struct crl_files *inter,
                       const struct crl_files *root)
{
    size_t n = (size_t)inter->pem_len + (size_t)root->pem_len;
    char *both = malloc(n + 1);
    int r;

    if (both == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "CRL: out of memory");
    }
    snprintf(both, n + 1, "%s%s", inter->pem, root->pem);
    if ((r = write_in(dir, PROV_CRL_INTERMEDIATE_DER, inter->der, (size_t)inter->der_len)) < 0 ||
        (r = write_in(dir, PROV_CRL_INTERMEDIATE_PEM, inter->pem, (size_t)inter->pem_len)) < 0 ||
        (r = write_in(dir, PROV_CRL_ROOT_DER, root->der, (size_t)root->der_len)) < 0 ||
        (r = write_in(dir, PROV_CRL_ROOT_PEM, root->pem, (size_t)root->pem_len)) < 0 ||
        (r = write_in(dir, PROV_CRL_CHAIN_PEM, both, n)) < 0) {
        free(both);
        return r;
    }
    free(both);
    return 0;
}

/* The root's CRL, signed by the root key rk. */
static int make_root_crl(const struct prov_config *cfg, struct prov_ca *ca,
                         struct prov_ca_root_key *rk, time_t now, struct prov_crl_result *res,
                         X509_CRL **out)
{
    int r;

    *out = NULL;
    r = prov_ca_index_next_crl_number(ca->index, "root_crl_number", &res->root_number);
    if (r == 0) {
        r = build_crl(ca->root, NULL, 0, res->root_number, cfg->root_crl_days, now, out);
    }
    if (r == 0) {
        r = sign_crl(*out, prov_ca_root_key_pkey(rk), prov_ca_root_key_type(rk), "root CRL");
    }
    if (r < 0) {
        X509_CRL_free(*out);
        *out = NULL;
    }
    return r;
}

int prov_crl_publish(const struct prov_config *cfg, struct prov_crl_result *res)
{
    struct prov_ca_revocation *list = NULL;
    struct crl_files inter = {0};
    struct crl_files root = {0};
    struct prov_ca *ca = NULL;
    struct prov_ca_root_key *rk = NULL;
    X509_CRL *crl = NULL;
    X509_CRL *root_crl = NULL;
    time_t now = time(NULL);
    size_t n = 0;
    int r;

    memset(res, 0, sizeof(*res));
    r = prov_ca_open(cfg, true, &ca);
    /* Both keys first: a key that cannot be used costs no CRL number. */
    if (r == 0) {
        r = prov_ca_root_key_open(cfg, ca->root, &rk);
    }
    if (r == 0) {
        r = prov_ca_index_revocations(ca->index, ca->cert, &list, &n);
    }
    if (r == 0) {
        r = prov_ca_index_next_crl_number(ca->index, "crl_number", &res->number);
    }
    if (r == 0) {
        r = build_crl(ca->cert, list, n, res->number, cfg->crl_days, now, &crl);
    }
    if (r == 0) {
        /* the same signer as the certificates' (issue.c): the key never leaves the HSM */
        r = sign_crl(crl, ca->key, prov_key_type_of(X509_get0_pubkey(ca->cert)),
                     "intermediate CRL");
    }
    if (r == 0) {
        r = make_root_crl(cfg, ca, rk, now, res, &root_crl);
    }
    if (r == 0) {
        r = encode_crl(crl, &inter);
    }
    if (r == 0) {
        r = encode_crl(root_crl, &root);
    }
    if (r == 0) {
        r = write_files(cfg->ca_dir, &inter, &root);
    }
    if (r == 0) {
        res->n_revoked = (size_t)sk_X509_REVOKED_num(X509_CRL_get_REVOKED(crl));
        rfc3339(X509_CRL_get0_lastUpdate(crl), res->this_update);
        rfc3339(X509_CRL_get0_nextUpdate(crl), res->next_update);
        rfc3339(X509_CRL_get0_nextUpdate(root_crl), res->root_next_update);
    }
    crl_files_clear(&inter);
    crl_files_clear(&root);
    X509_CRL_free(crl);
    X509_CRL_free(root_crl);
    free(list);
    prov_ca_root_key_close(rk);
    prov_ca_close(ca);
    return r;
}

int prov_crl_load(const char *path, STACK_OF(X509_CRL) **out)
{
    STACK_OF(X509_CRL) *crls = sk_X509_CRL_new_null();
    unsigned char *buf = NULL;
    size_t len = 0;
    BIO *bio = NULL;
    X509_CRL *crl;
    int r;

    *out = NULL;
    if (crls == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "%s: out of memory", path);
    }
    r = prov_read_small_file(path, PROV_ERR_INPUT, &buf, &len);
    if (r < 0) {
        sk_X509_CRL_free(crls);
        return r;
    }
    bio = BIO_new_mem_buf(buf, (int)len);
    while (bio != NULL && (crl = PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL)) != NULL) {
        if (sk_X509_CRL_push(crls, crl) <= 0) {
            X509_CRL_free(crl);
            break;
        }
    }
    ERR_clear_error();
    if (sk_X509_CRL_num(crls) == 0) {
        const unsigned char *p = buf;

        crl = d2i_X509_CRL(NULL, &p, (long)len);
        if (crl != NULL && sk_X509_CRL_push(crls, crl) <= 0) {
            X509_CRL_free(crl);
        }
    }
    BIO_free(bio);
    free(buf);
    if (sk_X509_CRL_num(crls) == 0) {
        sk_X509_CRL_free(crls);
        return prov_fail_ossl(PROV_ERR_INPUT, "%s: no CRL (PEM or DER) in it", path);
    }
    *out = crls;
    return 0;
}

static long long crl_number(X509_CRL *crl)
{
    ASN1_INTEGER *num = X509_CRL_get_ext_d2i(crl, NID_crl_number, NULL, NULL);
    int64_t v = -1;

    if (num == NULL || ASN1_INTEGER_get_int64(&v, num) != 1) {
        v = -1;
    }
    ASN1_INTEGER_free(num);
    return (long long)v;
}

/* Is newer than best: a higher cRLNumber, else a later thisUpdate. */
static bool is_newer(X509_CRL *crl, X509_CRL *best)
{
    long long a = crl_number(crl);
    long long b = crl_number(best);
    int day = 0;
    int sec = 0;

    if (a != b) {
        return a > b;
    }
    ASN1_TIME_diff(&day, &sec, X509_CRL_get0_lastUpdate(best), X509_CRL_get0_lastUpdate(crl));
    return day > 0 || sec > 0;
}

static void freshness(X509_CRL *crl, time_t now, char next_update[32], bool *is_expired,
                      bool *is_near_expiry)
{
    const ASN1_TIME *next = X509_CRL_get0_nextUpdate(crl);
    const ASN1_TIME *last = X509_CRL_get0_lastUpdate(crl);
    struct tm tm_next;
    struct tm tm_last;
    time_t t_next;
    time_t window = PROV_CRL_WARN_SECONDS;

    *is_expired = false;
    *is_near_expiry = false;
    rfc3339(next, next_update);
    if (next == NULL || ASN1_TIME_to_tm(next, &tm_next) != 1) {
        return; /* no nextUpdate: nothing expires */
    }
    t_next = timegm(&tm_next);
    if (last != NULL && ASN1_TIME_to_tm(last, &tm_last) == 1 &&
        (t_next - timegm(&tm_last)) / 2 < window) {
        window = (t_next - timegm(&tm_last)) / 2;
    }
    *is_expired = t_next <= now;
    *is_near_expiry = !*is_expired && t_next - now < window;
}

int prov_crl_status(STACK_OF(X509_CRL) *crls, X509 *cert, X509 *issuer, time_t now,
                    struct prov_crl_status *st)
{
    EVP_PKEY *key = X509_get0_pubkey(issuer);
    X509_CRL *best = NULL;
    X509_REVOKED *entry = NULL;

    memset(st, 0, sizeof(*st));
    for (int i = 0; i < sk_X509_CRL_num(crls); i++) {
        X509_CRL *crl = sk_X509_CRL_value(crls, i);

        if (X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_subject_name(issuer)) != 0 ||
            key == NULL || X509_CRL_verify(crl, key) != 1) {
            continue;
        }
        if (best == NULL || is_newer(crl, best)) {
            best = crl;
        }
    }
    ERR_clear_error();
    if (best == NULL) {
        return 0;
    }
    st->is_covered = true;
    freshness(best, now, st->next_update, &st->is_expired, &st->is_near_expiry);
    if (X509_CRL_get0_by_serial(best, &entry, X509_get0_serialNumber(cert)) == 1 &&
        entry != NULL) {
        ASN1_ENUMERATED *reason = X509_REVOKED_get_ext_d2i(entry, NID_crl_reason, NULL, NULL);

        st->is_revoked = true;
        st->reason = reason != NULL ? (int)ASN1_ENUMERATED_get(reason)
                                    : PROV_CRL_REASON_UNSPECIFIED;
        ASN1_ENUMERATED_free(reason);
        rfc3339(X509_REVOKED_get0_revocationDate(entry), st->revoked_at);
    }
    return 0;
}

int prov_crl_file_freshness(const char *path, time_t now, char next_update[32], bool *is_expired,
                            bool *is_near_expiry)
{
    STACK_OF(X509_CRL) *crls = NULL;
    int r = prov_crl_load(path, &crls);

    if (r == 0) {
        freshness(sk_X509_CRL_value(crls, 0), now, next_update, is_expired, is_near_expiry);
    }
    sk_X509_CRL_pop_free(crls, X509_CRL_free);
    return r;
}

int prov_crl_check_chain(STACK_OF(X509_CRL) *crls, const char *crl_path, STACK_OF(X509) *chain,
                         time_t now, struct prov_chain_report *rep, int *reason)
{
    int n = sk_X509_num(chain);
    int r = 0;

    *reason = -1;
    for (int i = 0; r == 0 && i + 1 < n; i++) {
        X509 *cert = sk_X509_value(chain, i);
        X509 *issuer = sk_X509_value(chain, i + 1);
        struct prov_cert_facts facts;
        struct prov_crl_status st;
        const char *who;

        r = prov_crl_status(crls, cert, issuer, now, &st);
        if (r < 0) {
            break;
        }
        who = prov_cert_facts(issuer, &facts) == 0 ? facts.subject : "?";
        if (!st.is_covered) {
            if (i == 0) {
                r = prov_chain_report_add(rep, chain, i, "crl",
                                          "%s holds no CRL of its issuer %s that verifies",
                                          crl_path, who);
            }
            continue;
        }
        if (st.is_expired || st.is_near_expiry) {
            prov_warn("%s: the CRL of %s %s at %s: verifiers that check CRLs then refuse every "
                      "certificate it covers",
                      crl_path, who, st.is_expired ? "expired" : "expires soon", st.next_update);
        }
        if (st.is_revoked) {
            if (*reason < 0) {
                *reason = st.reason;
            }
            r = prov_chain_report_add(rep, chain, i, "revoked", "%s, revoked at %s (CRL of %s)",
                                      prov_crl_reason_name(st.reason), st.revoked_at, who);
        }
    }
    return r;
}

int prov_crl_export_pem(const char *ca_dir, STACK_OF(X509) *chain, time_t now, char **pem,
                        size_t *len)
{
    STACK_OF(X509_CRL) *crls = NULL;
    BIO *bio = BIO_new(BIO_s_mem());
    char *path = NULL;
    char *data = NULL;
    long n;
    int r;

    *pem = NULL;
    *len = 0;
    if (bio == NULL || asprintf(&path, "%s/" PROV_CRL_CHAIN_PEM, ca_dir) < 0) {
        BIO_free(bio);
        return prov_fail(PROV_ERR_NOMEM, "CRL export: out of memory");
    }
    r = prov_crl_load(path, &crls);
    for (int i = 0; r == 0 && i < sk_X509_CRL_num(crls); i++) {
        X509_CRL *crl = sk_X509_CRL_value(crls, i);
        bool is_signed = false;
        bool is_expired = false;
        bool is_near = false;
        char next[32];

        for (int k = 0; !is_signed && k < sk_X509_num(chain); k++) {
            X509 *ca = sk_X509_value(chain, k);

            is_signed = X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_subject_name(ca)) == 0 &&
                        X509_CRL_verify(crl, X509_get0_pubkey(ca)) == 1;
        }
        ERR_clear_error();
        if (!is_signed) {
            r = prov_fail(PROV_ERR_INPUT,
                          "%s: CRL %d was not signed by a certificate of the chain (an old CA's "
                          "CRL? run `provisioner ca crl`)",
                          path, i);
            break;
        }
        freshness(crl, now, next, &is_expired, &is_near);
        if (is_expired || is_near) {
            prov_warn("%s: CRL %d: nextUpdate %s %s: run `provisioner ca crl` and export again",
                      path, i, next, is_expired ? "has passed" : "is close");
        }
        if (PEM_write_bio_X509_CRL(bio, crl) != 1) {
            r = prov_fail_ossl(PROV_ERR_CRYPTO, "%s: cannot encode", path);
        }
    }
    if (r == 0) {
        n = BIO_get_mem_data(bio, &data);
        *pem = malloc((size_t)n + 1);
        if (*pem == NULL) {
            r = prov_fail(PROV_ERR_NOMEM, "CRL export: out of memory");
        } else {
            memcpy(*pem, data, (size_t)n);
            (*pem)[n] = '\0';
            *len = (size_t)n;
        }
    }
    sk_X509_CRL_pop_free(crls, X509_CRL_free);
    BIO_free(bio);
    free(path);
    return r;
}
