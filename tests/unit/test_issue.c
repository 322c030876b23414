/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Issuance policy: serials, subject built from the request (never re-parsed), SAN validation,
 * validity capped by the issuer, CSR refusals, default extensions, and that the result passes
 * the chain rules. The CA is an in-memory root and intermediate.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include <openssl/bn.h>
#include <openssl/conf.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>

#include "chain.h"
#include "csr.h"
#include "error.h"
#include "issue.h"
#include "test_pki.h"

#define DAY 86400L

static EVP_PKEY *root_key;
static EVP_PKEY *inter_key;
static EVP_PKEY *device_key;

/* A CA whose intermediate is valid [now + inter_nb, now + inter_na]. */
static struct prov_ca *ca_new(long inter_nb, long inter_na)
{
    struct prov_ca *ca = calloc(1, sizeof(*ca));
    X509 *root = test_pki_ca_cert("Test Root", root_key, NULL, NULL, -30 * DAY, 3650 * DAY);

    assert_non_null(ca);
    test_pki_prov_ca(ca, test_pki_ca_cert("Test Issuing CA", inter_key, root, root_key, inter_nb,
                                          inter_na),
                     root, inter_key);
    return ca;
}

static void ca_free(struct prov_ca *ca)
{
    test_pki_prov_ca_clear(ca);
    free(ca);
}

static struct prov_profile profile_device(void)
{
    return (struct prov_profile){
        .name = "device",
        .key_type = PROV_KEY_EC_P256,
        .allowed_keys = PROV_KEY_BIT(PROV_KEY_EC_P256) | PROV_KEY_BIT(PROV_KEY_RSA_2048),
        .days = 365,
    };
}

static int group_setup(void **state)
{
    (void)state;
    root_key = test_pki_ec_key("P-256");
    inter_key = test_pki_ec_key("P-256");
    device_key = test_pki_ec_key("P-256");
    return root_key && inter_key && device_key ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    EVP_PKEY_free(root_key);
    EVP_PKEY_free(inter_key);
    EVP_PKEY_free(device_key);
    return 0;
}

/* ---- serials ----------------------------------------------------------------------------- */

static void test_serial_random_properties(void **state)
{
    enum { DRAWS = 500 };
    ASN1_INTEGER *seen[DRAWS];

    (void)state;
    for (int i = 0; i < DRAWS; i++) {
        const unsigned char *data;

        assert_int_equal(prov_serial_random(&seen[i]), 0);
        /* Positive, and exactly 20 content octets: the DER needs no leading zero byte. */
        assert_int_equal(ASN1_STRING_type(seen[i]), V_ASN1_INTEGER);
        assert_int_equal(ASN1_STRING_length(seen[i]), PROV_SERIAL_BYTES);
        data = ASN1_STRING_get0_data(seen[i]);
        assert_true(data[0] != 0 && data[0] < 0x80);
        for (int j = 0; j < i; j++) {
            assert_int_not_equal(ASN1_INTEGER_cmp(seen[i], seen[j]), 0);
        }
    }
    for (int i = 0; i < DRAWS; i++) {
        ASN1_INTEGER_free(seen[i]);
    }
}

/*
 * Every bit of the serial but the sign bit is random: over the draws each one is seen both
 * set and clear. Distinct serials alone would pass with 8 random bytes and 12 constant ones
 * (64 bits); a constant bit stays constant in every draw, while a random bit is constant in
 * 500 draws with probability 2^-499.
 */
static void test_serial_random_every_bit_varies(void **state)
{
    enum { DRAWS = 500 };
    unsigned char ones[PROV_SERIAL_BYTES] = {0};
    unsigned char zeros[PROV_SERIAL_BYTES] = {0};

    (void)state;
    for (int i = 0; i < DRAWS; i++) {
        ASN1_INTEGER *serial = NULL;
        const unsigned char *data;

        assert_int_equal(prov_serial_random(&serial), 0);
        assert_int_equal(ASN1_STRING_length(serial), PROV_SERIAL_BYTES);
        data = ASN1_STRING_get0_data(serial);
        for (int b = 0; b < PROV_SERIAL_BYTES; b++) {
            ones[b] |= data[b];
            zeros[b] |= (unsigned char)~data[b];
        }
        ASN1_INTEGER_free(serial);
    }
    for (int b = 0; b < PROV_SERIAL_BYTES; b++) {
        /* The top bit of the first byte is the sign: always clear. */
        unsigned char want = b == 0 ? 0x7f : 0xff;

        if ((ones[b] & want) != want || (zeros[b] & want) != want) {
            fail_msg("serial byte %d: bits %02x never set, %02x never clear over %d draws", b,
                     (unsigned)(want & ~ones[b]), (unsigned)(want & ~zeros[b]), DRAWS);
        }
    }
    assert_int_equal(ones[0] & 0x80, 0);
}

static void test_serial_validity(void **state)
{
    char longest[65];
    char too_long[66];
    const char *good[] = {"A", "dev-0001", "a.b_c-D9", "...", ".a", "a..", longest};
    /* "." and ".." match the character rule but would name the output directory or its parent */
    const char *bad[] = {"", "a b", "a/b", "a;b", "$x", "caf\xc3\xa9", "a\nb", "../x", ".", "..",
                         too_long};

    (void)state;
    memset(longest, 'x', 64);
    longest[64] = '\0';
    memset(too_long, 'x', 65);
    too_long[65] = '\0';
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        assert_true(prov_serial_is_valid(good[i]));
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (prov_serial_is_valid(bad[i])) {
            fail_msg("serial \"%s\" accepted", bad[i]);
        }
    }
    assert_false(prov_serial_is_valid(NULL));
}

/* ---- subject ----------------------------------------------------------------------------- */

static void assert_single_cn(const X509_NAME *name, const char *value)
{
    const X509_NAME_ENTRY *e;
    const ASN1_STRING *s;

    assert_int_equal(X509_NAME_entry_count(name), 1);
    e = X509_NAME_get_entry(name, 0);
    assert_int_equal(OBJ_obj2nid(X509_NAME_ENTRY_get_object(e)), NID_commonName);
    s = X509_NAME_ENTRY_get_data(e);
    assert_int_equal(ASN1_STRING_length(s), strlen(value));
    assert_memory_equal(ASN1_STRING_get0_data(s), value, strlen(value));
}

static void test_subject_injection_stays_one_cn(void **state)
{
    const char *cns[] = {"x,O=evil", "/CN=x/O=evil", "a+OU=b", "CN=x\\,y", "${serial}"};
    struct prov_profile prof = profile_device();
    struct prov_config cfg = {0};

    (void)state;
    for (size_t i = 0; i < sizeof(cns) / sizeof(cns[0]); i++) {
        struct prov_request rq = {.serial = "dev-1", .cn = cns[i], .profile = &prof};
        X509_NAME *name = NULL;

        assert_int_equal(prov_issue_subject(&cfg, &rq, &name), 0);
        assert_single_cn(name, cns[i]);
        X509_NAME_free(name);
    }
}

static void test_subject_default_cn_is_serial(void **state)
{
    struct prov_profile prof = profile_device();
    struct prov_config cfg = {0};
    struct prov_request rq = {.serial = "dev-42", .profile = &prof};
    X509_NAME *name = NULL;

    (void)state;
    assert_int_equal(prov_issue_subject(&cfg, &rq, &name), 0);
    assert_single_cn(name, "dev-42");
    X509_NAME_free(name);
    rq.cn = "";
    prov_error_clear();
    assert_int_equal(prov_issue_subject(&cfg, &rq, &name), PROV_ERR_POLICY);
    assert_null(name);
}

static CONF *conf_from(const char *text)
{
    CONF *conf = NCONF_new(NULL);
    BIO *bio = BIO_new_mem_buf(text, -1);
    long line = 0;

    assert_int_equal(NCONF_load_bio(conf, bio, &line), 1);
    BIO_free(bio);
    return conf;
}

static void test_subject_section_templates(void **state)
{
    static const char *const x_names[] = {"x_site"};
    static const char *const x_values[] = {"Plant 7, Line=2"};
    struct prov_profile prof = profile_device();
    struct prov_config cfg = {0};
    struct prov_request rq = {
        .serial = "dev-9",
        .cn = "x,O=evil",
        .lot = "L1",
        .profile = &prof,
        .vars = {.x_names = x_names, .x_values = x_values, .n_x = 1},
    };
    X509_NAME *name = NULL;
    char buf[256];

    (void)state;
    /* Escaped as config.c escapes template variables before NCONF sees them. */
    cfg.conf = conf_from("[dev_dn]\nC = DE\nO = ACME \\${lot}\n0.OU = \\${x_site}\n"
                         "1.OU = \\${profile}\nCN = \\${cn}\n");
    prof.subject_section = "dev_dn";
    assert_int_equal(prov_issue_subject(&cfg, &rq, &name), 0);
    assert_int_equal(X509_NAME_entry_count(name), 5);
    X509_NAME_oneline(name, buf, sizeof(buf));
    assert_string_equal(buf, "/C=DE/O=ACME L1/OU=Plant 7, Line=2/OU=device/CN=x,O=evil");
    X509_NAME_free(name);
    NCONF_free(cfg.conf);
}

/* ---- issuing ----------------------------------------------------------------------------- */

static X509 *issue(struct prov_ca *ca, const struct prov_request *rq, X509_REQ *req, int expect)
{
    struct prov_config cfg = {0};
    X509 *cert = NULL;

    prov_error_clear();
    assert_int_equal(prov_issue_certificate(&cfg, ca, req, rq, &cert), expect);
    if (expect != 0) {
        assert_null(cert);
        assert_non_null(prov_error_message());
    }
    return cert;
}

static void test_default_extensions_and_chain(void **state)
{
    struct prov_ca *ca = ca_new(-DAY, 1825 * DAY);
    struct prov_profile prof = profile_device();
    struct prov_request rq = {.serial = "dev-0001", .profile = &prof};
    X509_REQ *req = test_pki_csr(device_key, "dev-0001", NULL);
    struct prov_chain_report rep = {0};
    STACK_OF(X509) *chain = sk_X509_new_null();
    X509 *cert = issue(ca, &rq, req, 0);
    int crit = -1;
    BASIC_CONSTRAINTS *bc;
    ASN1_BIT_STRING *ku;
    EXTENDED_KEY_USAGE *eku;
    void *ext;

    (void)state;
    assert_int_equal(X509_get_version(cert), X509_VERSION_3);
    assert_single_cn(X509_get_subject_name(cert), "dev-0001");
    assert_int_equal(X509_NAME_cmp(X509_get_issuer_name(cert), X509_get_subject_name(ca->cert)),
                     0);
    assert_int_equal(EVP_PKEY_eq(X509_get0_pubkey(cert), device_key), 1);
    assert_int_equal(ASN1_STRING_length(X509_get0_serialNumber(cert)), PROV_SERIAL_BYTES);

    bc = X509_get_ext_d2i(cert, NID_basic_constraints, &crit, NULL);
    assert_non_null(bc);
    assert_int_equal(crit, 1);
    assert_false(bc->ca);
    BASIC_CONSTRAINTS_free(bc);
    ku = X509_get_ext_d2i(cert, NID_key_usage, &crit, NULL);
    assert_non_null(ku);
    assert_int_equal(crit, 1);
    assert_int_equal(X509_get_key_usage(cert), KU_DIGITAL_SIGNATURE);
    ASN1_BIT_STRING_free(ku);
    eku = X509_get_ext_d2i(cert, NID_ext_key_usage, &crit, NULL);
    assert_non_null(eku);
    assert_int_equal(crit, 0);
    assert_int_equal(X509_get_extended_key_usage(cert), XKU_SSL_CLIENT);
    EXTENDED_KEY_USAGE_free(eku);
    assert_non_null(X509_get0_subject_key_id(cert));
    assert_non_null(X509_get0_authority_key_id(cert));
    assert_int_equal(ASN1_OCTET_STRING_cmp(X509_get0_authority_key_id(cert),
                                           X509_get0_subject_key_id(ca->cert)),
                     0);
    /* No SAN in the request or profile: none in the certificate (never copied from the CSR). */
    ext = X509_get_ext_d2i(cert, NID_subject_alt_name, &crit, NULL);
    assert_null(ext);

    assert_int_equal(X509_verify(cert, inter_key), 1);
    sk_X509_push(chain, cert);
    sk_X509_push(chain, ca->cert);
    sk_X509_push(chain, ca->root);
    assert_int_equal(prov_chain_verify(chain, NULL, PROV_PURPOSE_CLIENT, time(NULL), &rep), 0);
    assert_int_equal(rep.n, 0);
    sk_X509_free(chain);
    X509_free(cert);
    X509_REQ_free(req);
    ca_free(ca);
}

/*
 * A CSR may ask only for names the certificate will carry anyway: a CN other than the serial
 * and the certificate's CN, another subject attribute, or a SAN entry the request does not
 * give is refused (another device's CSR, or a forgery), naming what was asked for.
 */
static void test_csr_names_refused(void **state)
{
    static const char *const evil_san[] = {"subjectAltName", "DNS:evil.example", NULL};
    static const char *const ok_san[] = {"subjectAltName", "DNS:dev-3.example.com", NULL};
    struct prov_ca *ca = ca_new(-DAY, 1825 * DAY);
    struct prov_profile prof = profile_device();
    struct prov_request rq = {.serial = "dev-3", .san_dns = "dev-3.example.com",
                              .profile = &prof};
    struct prov_request cn_rq = {.serial = "dev-3", .cn = "Pump 3", .profile = &prof};
    X509_REQ *other = test_pki_csr(device_key, "dev-4", NULL);
    X509_REQ *bad_san = test_pki_csr(device_key, "dev-3", evil_san);
    X509_REQ *good = test_pki_csr(device_key, "dev-3", ok_san);
    X509_REQ *serial_cn = test_pki_csr(device_key, "dev-3", NULL);
    X509 *cert;

    (void)state;
    issue(ca, &rq, other, PROV_ERR_POLICY);
    assert_non_null(strstr(prov_error_message(), "CN=dev-4"));
    issue(ca, &rq, bad_san, PROV_ERR_POLICY);
    assert_non_null(strstr(prov_error_message(), "DNS:evil.example"));
    cert = issue(ca, &rq, good, 0);
    X509_free(cert);
    /* the serial as CN is always acceptable, also when the certificate gets another CN */
    cert = issue(ca, &cn_rq, serial_cn, 0);
    assert_single_cn(X509_get_subject_name(cert), "Pump 3");
    X509_free(cert);
    X509_REQ_free(other);
    X509_REQ_free(bad_san);
    X509_REQ_free(good);
    X509_REQ_free(serial_cn);
    ca_free(ca);
}

static void test_request_san_used_not_csr_san(void **state)
{
    static const char *const csr_exts[] = {
        "subjectAltName", "DNS:dev-2.example.com",
        "keyUsage", "digitalSignature",
        "extendedKeyUsage", "serverAuth",
        "subjectKeyIdentifier", "hash",
        NULL,
    };
    struct prov_ca *ca = ca_new(-DAY, 1825 * DAY);
    struct prov_profile prof = profile_device();
    struct prov_request rq = {
        .serial = "dev-2",
        .san_dns = "dev-2.example.com; *.dev-2.example.com",
        .san_ip = "192.0.2.10;2001:db8::1",
        .san_email = "ops@example.com",
        .san_uri = "urn:dev:2;https://example.com/dev/2",
        .profile = &prof,
    };
    X509_REQ *req = test_pki_csr(device_key, "dev-2", csr_exts);
    X509 *cert = issue(ca, &rq, req, 0);
    GENERAL_NAMES *san = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);

    (void)state;
    assert_non_null(san);
    assert_int_equal(sk_GENERAL_NAME_num(san), 7);
    for (int i = 0; i < sk_GENERAL_NAME_num(san); i++) {
        int type;
        ASN1_STRING *v = GENERAL_NAME_get0_value(sk_GENERAL_NAME_value(san, i), &type);

        if (type == GEN_DNS) {
            assert_null(strstr((const char *)ASN1_STRING_get0_data(v), "evil"));
        }
    }
    assert_int_equal(X509_get_extended_key_usage(cert), XKU_SSL_CLIENT);
    GENERAL_NAMES_free(san);
    X509_free(cert);
    X509_REQ_free(req);
    ca_free(ca);
}

static void test_profile_san_template(void **state)
{
    struct prov_ca *ca = ca_new(-DAY, 1825 * DAY);
    struct prov_profile prof = profile_device();
    struct prov_request rq = {.serial = "dev-3", .profile = &prof};
    X509_REQ *req = test_pki_csr(device_key, "dev-3", NULL);
    X509 *cert;
    GENERAL_NAMES *san;
    int type;
    ASN1_STRING *v;

    (void)state;
    prof.san_dns = "${serial}.devices.example.com";
    cert = issue(ca, &rq, req, 0);
    san = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    assert_int_equal(sk_GENERAL_NAME_num(san), 1);
    v = GENERAL_NAME_get0_value(sk_GENERAL_NAME_value(san, 0), &type);
    assert_int_equal(type, GEN_DNS);
    assert_string_equal((const char *)ASN1_STRING_get0_data(v), "dev-3.devices.example.com");
    GENERAL_NAMES_free(san);
    X509_free(cert);
    X509_REQ_free(req);
    ca_free(ca);
}

static void test_san_validation(void **state)
{
    static const struct {
        const char *dns, *ip, *email, *uri;
        const char *named;
    } bad[] = {
        {"-bad.example.com", NULL, NULL, NULL, "-bad.example.com"},
        {"a..example.com", NULL, NULL, NULL, "a..example.com"},
        {"exa mple.com", NULL, NULL, NULL, "exa mple.com"},
        {"a_b.example.com", NULL, NULL, NULL, "a_b.example.com"},
        {"*.*.example.com", NULL, NULL, NULL, "*.*.example.com"},
        {"ok.example.com;bad-.example.com", NULL, NULL, NULL, "bad-.example.com"},
        {"x\"y", NULL, NULL, NULL, "x\"y"},
        {NULL, "300.1.1.1", NULL, NULL, "300.1.1.1"},
        {NULL, "1.2.3", NULL, NULL, "1.2.3"},
        {NULL, "host.example.com", NULL, NULL, "host.example.com"},
        {NULL, NULL, "a@b@c", NULL, "a@b@c"},
        {NULL, NULL, "nobody", NULL, "nobody"},
        {NULL, NULL, "@example.com", NULL, "@example.com"},
        {NULL, NULL, NULL, "no-scheme", "no-scheme"},
        {NULL, NULL, NULL, "1http://x", "1http://x"},
        {NULL, NULL, NULL, "http://a b", "http://a b"},
    };
    struct prov_ca *ca = ca_new(-DAY, 1825 * DAY);
    struct prov_profile prof = profile_device();
    X509_REQ *req = test_pki_csr(device_key, "dev-4", NULL);
    char label64[80];

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct prov_request rq = {.serial = "dev-4", .profile = &prof, .san_dns = bad[i].dns,
                                  .san_ip = bad[i].ip, .san_email = bad[i].email,
                                  .san_uri = bad[i].uri};

        issue(ca, &rq, req, PROV_ERR_POLICY);
        if (strstr(prov_error_message(), bad[i].named) == NULL) {
            fail_msg("entry %zu: message \"%s\" does not name \"%s\"", i, prov_error_message(),
                     bad[i].named);
        }
    }
    memset(label64, 'a', 64);
    strcpy(label64 + 64, ".example.com");
    {
        struct prov_request rq = {.serial = "dev-4", .profile = &prof, .san_dns = label64};

        issue(ca, &rq, req, PROV_ERR_POLICY);
        strcpy(label64 + 63, ".example.com");
        X509_free(issue(ca, &rq, req, 0));
    }
    X509_REQ_free(req);
    ca_free(ca);
}

static void test_not_after_capped_at_issuer(void **state)
{
    struct prov_ca *ca = ca_new(-DAY, 10 * DAY);
    struct prov_profile prof = profile_device();
    struct prov_request rq = {.serial = "dev-5", .profile = &prof};
    X509_REQ *req = test_pki_csr(device_key, "dev-5", NULL);
    X509 *cert = issue(ca, &rq, req, 0);
    time_t now = time(NULL);
    time_t soon = now - 290;

    (void)state;
    assert_int_equal(ASN1_TIME_compare(X509_get0_notAfter(cert), X509_get0_notAfter(ca->cert)),
                     0);
    /* notBefore is backdated for clock skew, but by minutes, not more. */
    assert_true(X509_cmp_time(X509_get0_notBefore(cert), &soon) < 0);
    soon = now - 400;
    assert_true(X509_cmp_time(X509_get0_notBefore(cert), &soon) > 0);
    X509_free(cert);
    X509_REQ_free(req);
    ca_free(ca);
}

static void test_lifetime_refused_when_issuer_expired(void **state)
{
    struct prov_ca *ca = ca_new(-30 * DAY, -DAY);
    struct prov_profile prof = profile_device();
    struct prov_request rq = {.serial = "dev-6", .profile = &prof};
    X509_REQ *req = test_pki_csr(device_key, "dev-6", NULL);

    (void)state;
    issue(ca, &rq, req, PROV_ERR_POLICY);
    assert_non_null(strstr(prov_error_message(), "lifetime"));
    X509_REQ_free(req);
    ca_free(ca);
}

static void test_csr_ca_true_refused(void **state)
{
    static const char *const ca_true[] = {"basicConstraints", "critical,CA:TRUE", NULL};
    static const char *const ca_false[] = {"basicConstraints", "CA:FALSE", NULL};
    static const char *const other[] = {"crlDistributionPoints", "URI:http://x/crl", NULL};
    struct prov_profile prof = profile_device();
    X509_REQ *req = test_pki_csr(device_key, "dev-7", ca_true);

    (void)state;
    prov_error_clear();
    assert_int_equal(prov_issue_check_csr(&prof, req, NULL), PROV_ERR_POLICY);
    assert_non_null(strstr(prov_error_message(), "CA:true"));
    X509_REQ_free(req);
    req = test_pki_csr(device_key, "dev-7", other);
    prov_error_clear();
    assert_int_equal(prov_issue_check_csr(&prof, req, NULL), PROV_ERR_POLICY);
    assert_non_null(strstr(prov_error_message(), "crlDistributionPoints"));
    X509_REQ_free(req);
    /* CA:FALSE asks for nothing and is tolerated (some CSR tools always add it). */
    req = test_pki_csr(device_key, "dev-7", ca_false);
    assert_int_equal(prov_issue_check_csr(&prof, req, NULL), 0);
    X509_REQ_free(req);
}

static void test_weak_and_disallowed_keys_refused(void **state)
{
    EVP_PKEY *rsa1024 = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
    EVP_PKEY *p384 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    EVP_PKEY *p521 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-521");
    struct prov_profile prof = profile_device();
    enum prov_key_type type = PROV_KEY_RSA_3072;
    X509_REQ *req;

    (void)state;
    req = test_pki_csr(rsa1024, "dev-8", NULL);
    prov_error_clear();
    assert_int_equal(prov_issue_check_csr(&prof, req, &type), PROV_ERR_POLICY);
    assert_non_null(strstr(prov_error_message(), "RSA-1024"));
    assert_int_equal(type, PROV_KEY_NONE);
    X509_REQ_free(req);

    req = test_pki_csr(p384, "dev-8", NULL);
    prov_error_clear();
    assert_int_equal(prov_issue_check_csr(&prof, req, &type), PROV_ERR_POLICY);
    assert_non_null(strstr(prov_error_message(), "ec-p384"));
    prof.allowed_keys |= PROV_KEY_BIT(PROV_KEY_EC_P384);
    assert_int_equal(prov_issue_check_csr(&prof, req, &type), 0);
    assert_int_equal(type, PROV_KEY_EC_P384);
    X509_REQ_free(req);

    req = test_pki_csr(p521, "dev-8", NULL);
    prov_error_clear();
    assert_int_equal(prov_issue_check_csr(&prof, req, &type), PROV_ERR_POLICY);
    assert_non_null(strstr(prov_error_message(), "secp521r1"));
    X509_REQ_free(req);
    EVP_PKEY_free(rsa1024);
    EVP_PKEY_free(p384);
    EVP_PKEY_free(p521);
}

static void test_tampered_csr_refused(void **state)
{
    struct prov_ca *ca = ca_new(-DAY, 1825 * DAY);
    struct prov_profile prof = profile_device();
    struct prov_request rq = {.serial = "dev-9", .profile = &prof};
    X509_REQ *req = test_pki_csr(device_key, "dev-9", NULL);
    EVP_PKEY *other = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");

    (void)state;
    /* Another key swapped in after signing (doc/platform.md). */
    assert_int_equal(X509_REQ_set_pubkey(req, other), 1);
    issue(ca, &rq, req, PROV_ERR_POLICY);
    assert_non_null(strstr(prov_error_message(), "CSR signature does not verify"));
    EVP_PKEY_free(other);
    X509_REQ_free(req);
    ca_free(ca);
}

static void test_profile_extensions_section(void **state)
{
    struct prov_ca *ca = ca_new(-DAY, 1825 * DAY);
    struct prov_profile prof = profile_device();
    struct prov_request rq = {.serial = "dev-10", .san_dns = "dev-10.example.com",
                              .profile = &prof};
    X509_REQ *req = test_pki_csr(device_key, "dev-10", NULL);
    struct prov_config cfg = {0};
    X509 *cert = NULL;
    GENERAL_NAMES *san;

    (void)state;
    cfg.conf = conf_from("[ext_both]\nbasicConstraints = critical, CA:FALSE\n"
                         "keyUsage = critical, digitalSignature\n"
                         "extendedKeyUsage = clientAuth, serverAuth\n"
                         "subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n"
                         "subjectAltName = DNS:from-profile.example.com\n");
    prof.extensions_section = "ext_both";
    assert_int_equal(prov_issue_certificate(&cfg, ca, req, &rq, &cert), 0);
    assert_int_equal(X509_get_extended_key_usage(cert), XKU_SSL_CLIENT | XKU_SSL_SERVER);
    /* The request's SAN replaces the section's, and only one SAN extension exists. */
    assert_int_equal(X509_get_ext_by_NID(cert, NID_subject_alt_name, -1) >= 0, 1);
    assert_int_equal(X509_get_ext_by_NID(cert, NID_subject_alt_name,
                                         X509_get_ext_by_NID(cert, NID_subject_alt_name, -1)),
                     -1);
    san = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    assert_int_equal(sk_GENERAL_NAME_num(san), 1);
    GENERAL_NAMES_free(san);
    X509_free(cert);
    prov_error_clear();
    prof.extensions_section = "missing";
    cert = NULL;
    assert_int_equal(prov_issue_certificate(&cfg, ca, req, &rq, &cert), PROV_ERR_CONFIG);
    assert_null(cert);
    NCONF_free(cfg.conf);
    X509_REQ_free(req);
    ca_free(ca);
}

/*
 * A profile that was never through the config loader (its checks are in test_config) still
 * cannot make the CA sign a leaf the chain rules would refuse: nothing is signed.
 */
static void test_non_end_entity_never_signed(void **state)
{
    static const char *const sections[] = {
        "[ext]\nbasicConstraints = critical, CA:true\nkeyUsage = keyCertSign\n",
        "[ext]\nkeyUsage = critical, digitalSignature, keyCertSign\n"
        "authorityKeyIdentifier = keyid\n",
        "[ext]\nextendedKeyUsage = serverAuth\nauthorityKeyIdentifier = keyid\n",
    };
    struct prov_ca *ca = ca_new(-DAY, 1825 * DAY);
    struct prov_profile prof = profile_device();
    struct prov_request rq = {.serial = "dev-11", .profile = &prof};
    X509_REQ *req = test_pki_csr(device_key, "dev-11", NULL);

    (void)state;
    prof.extensions_section = "ext";
    for (size_t i = 0; i < sizeof(sections) / sizeof(sections[0]); i++) {
        struct prov_config cfg = {0};
        X509 *cert = (X509 *)1;

        cfg.conf = conf_from(sections[i]);
        prov_error_clear();
        assert_int_equal(prov_issue_certificate(&cfg, ca, req, &rq, &cert), PROV_ERR_CONFIG);
        assert_null(cert);
        assert_non_null(strstr(prov_error_message(), "dev-11"));
        assert_non_null(strstr(prov_error_message(), "end entity"));
        NCONF_free(cfg.conf);
    }
    X509_REQ_free(req);
    ca_free(ca);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_serial_random_properties),
        cmocka_unit_test(test_serial_random_every_bit_varies),
        cmocka_unit_test(test_serial_validity),
        cmocka_unit_test(test_subject_injection_stays_one_cn),
        cmocka_unit_test(test_subject_default_cn_is_serial),
        cmocka_unit_test(test_subject_section_templates),
        cmocka_unit_test(test_default_extensions_and_chain),
        cmocka_unit_test(test_request_san_used_not_csr_san),
        cmocka_unit_test(test_csr_names_refused),
        cmocka_unit_test(test_profile_san_template),
        cmocka_unit_test(test_san_validation),
        cmocka_unit_test(test_not_after_capped_at_issuer),
        cmocka_unit_test(test_lifetime_refused_when_issuer_expired),
        cmocka_unit_test(test_csr_ca_true_refused),
        cmocka_unit_test(test_weak_and_disallowed_keys_refused),
        cmocka_unit_test(test_tampered_csr_refused),
        cmocka_unit_test(test_profile_extensions_section),
        cmocka_unit_test(test_non_end_entity_never_signed),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
