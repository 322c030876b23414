/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The chain rules of doc/chains.md, each broken on purpose in an otherwise good root →
 * intermediate → device chain built in memory. Every test asserts the exact set of (index,
 * rule) findings, so a finding on the wrong certificate, under the wrong rule, or reported
 * twice fails.
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

#include <openssl/evp.h>
#include <openssl/x509v3.h>

#include "chain.h"
#include "error.h"
#include "test_pki.h"

#define DAY 86400L

static const char *const *const ca_exts = test_pki_ca_exts;
static const char *const *const leaf_exts = test_pki_leaf_exts;

/*
 * Every signature verification chain.c makes (linked with -Wl,--wrap=X509_verify; OpenSSL's
 * own calls inside libcrypto are not seen), and how many were with the key "other".
 */
int __real_X509_verify(X509 *cert, EVP_PKEY *key);
int __wrap_X509_verify(X509 *cert, EVP_PKEY *key);
static int n_verifications;
static int n_with_other;
static EVP_PKEY *other_key;

int __wrap_X509_verify(X509 *cert, EVP_PKEY *key)
{
    n_verifications++;
    n_with_other += other_key != NULL && EVP_PKEY_eq(key, other_key) == 1;
    return __real_X509_verify(cert, key);
}

/* leaf_exts without key identifiers: OpenSSL then finds the issuer by name alone. */
static const char *const leaf_exts_no_akid[] = {
    "basicConstraints", "critical,CA:FALSE",
    "keyUsage", "critical,digitalSignature",
    "extendedKeyUsage", "clientAuth",
    NULL,
};

struct keys {
    EVP_PKEY *root;
    EVP_PKEY *inter;
    EVP_PKEY *leaf;
    EVP_PKEY *other;
};

static struct keys keys;
static time_t now;

/* A certificate for key, issued by issuer/issuer_key (NULL: self-signed), valid [nb, na]. */
static X509 *make_cert(const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key,
                       long nb, long na, const char *const *exts)
{
    static long serial = 1;

    return test_pki_cert(&(struct test_cert_spec){
        .cn = cn,
        .serial = serial++,
        .key = key,
        .issuer = issuer,
        .issuer_key = issuer_key,
        .not_before = nb,
        .not_after = na,
        .now = &now,
        .exts = exts,
    });
}

/* The good chain: leaf (1 year), intermediate (5 years), root (10 years). */
struct chain {
    X509 *root;
    X509 *inter;
    X509 *leaf;
};

static void make_chain(struct chain *c, const char *const *inter_exts,
                       const char *const *leaf_ext_list, long leaf_nb, long leaf_na)
{
    c->root = make_cert("Test Root", keys.root, NULL, NULL, -DAY, 3650 * DAY, ca_exts);
    c->inter = make_cert("Test Intermediate", keys.inter, c->root, keys.root, -DAY, 1825 * DAY,
                         inter_exts ? inter_exts : ca_exts);
    c->leaf = make_cert("device-0001", keys.leaf, c->inter, keys.inter, leaf_nb, leaf_na,
                        leaf_ext_list ? leaf_ext_list : leaf_exts);
}

static void free_chain(struct chain *c)
{
    X509_free(c->root);
    X509_free(c->inter);
    X509_free(c->leaf);
}

static STACK_OF(X509) *stack_of(X509 *a, X509 *b, X509 *c)
{
    STACK_OF(X509) *sk = sk_X509_new_null();
    X509 *certs[] = {a, b, c};

    for (size_t i = 0; i < 3; i++) {
        if (certs[i] != NULL) {
            assert_true(sk_X509_push(sk, certs[i]) > 0);
        }
    }
    return sk;
}

struct expect {
    int index;
    const char *rule;
};

static bool has(const struct prov_chain_report *rep, int index, const char *rule)
{
    for (size_t i = 0; i < rep->n; i++) {
        if (rep->items[i].index == index && strcmp(rep->items[i].rule, rule) == 0) {
            return true;
        }
    }
    return false;
}

static void print_report(const struct prov_chain_report *rep)
{
    for (size_t i = 0; i < rep->n; i++) {
        print_message("  finding [%d] %s: %s: %s\n", rep->items[i].index,
                      rep->items[i].subject ? rep->items[i].subject : "-", rep->items[i].rule,
                      rep->items[i].detail);
    }
}

/* Verifies sk and asserts that the findings are exactly want (n entries). */
static void expect_exactly(STACK_OF(X509) *sk, enum prov_chain_purpose purpose,
                           const struct expect *want, size_t n)
{
    struct prov_chain_report rep = {0};
    int r = prov_chain_verify(sk, NULL, purpose, now, &rep);

    print_report(&rep);
    assert_int_equal(r, n == 0 ? 0 : PROV_ERR_VERIFY);
    for (size_t i = 0; i < n; i++) {
        if (!has(&rep, want[i].index, want[i].rule)) {
            fail_msg("missing finding [%d] %s", want[i].index, want[i].rule);
        }
    }
    for (size_t i = 0; i < rep.n; i++) {
        bool is_expected = false;

        for (size_t k = 0; k < n; k++) {
            is_expected = is_expected || (rep.items[i].index == want[k].index &&
                                          strcmp(rep.items[i].rule, want[k].rule) == 0);
        }
        if (!is_expected) {
            fail_msg("unexpected finding [%d] %s: %s", rep.items[i].index, rep.items[i].rule,
                     rep.items[i].detail);
        }
        assert_non_null(rep.items[i].subject);
        assert_non_null(rep.items[i].detail);
    }
    /* Each (index, rule) once: the x509-strict cross-check must not repeat a rule finding. */
    assert_int_equal(rep.n, n);
    prov_chain_report_free(&rep);
}

static int group_setup(void **state)
{
    (void)state;
    now = time(NULL);
    keys.root = test_pki_ec_key("P-256");
    keys.inter = test_pki_ec_key("P-256");
    keys.leaf = test_pki_ec_key("P-256");
    keys.other = test_pki_ec_key("P-256");
    return keys.root && keys.inter && keys.leaf && keys.other ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    EVP_PKEY_free(keys.root);
    EVP_PKEY_free(keys.inter);
    EVP_PKEY_free(keys.leaf);
    EVP_PKEY_free(keys.other);
    return 0;
}

static void test_good_chain(void **state)
{
    struct chain c;
    STACK_OF(X509) *sk;

    (void)state;
    make_chain(&c, NULL, NULL, -60, 365 * DAY);
    sk = stack_of(c.leaf, c.inter, c.root);
    expect_exactly(sk, PROV_PURPOSE_CLIENT, NULL, 0);
    sk_X509_free(sk);
    /* The CA chain alone (intermediate then root) is good too. */
    sk = stack_of(c.inter, c.root, NULL);
    expect_exactly(sk, PROV_PURPOSE_ANY, NULL, 0);
    sk_X509_free(sk);
    free_chain(&c);
}

static void test_out_of_order(void **state)
{
    static const struct expect want[] = {{0, "order"}, {1, "order"}, {2, "order"}};
    struct chain c;
    STACK_OF(X509) *sk;

    (void)state;
    make_chain(&c, NULL, NULL, -60, 365 * DAY);
    sk = stack_of(c.leaf, c.root, c.inter);
    expect_exactly(sk, PROV_PURPOSE_CLIENT, want, 3);
    sk_X509_free(sk);
    free_chain(&c);
}

static void test_wrong_issuer_name(void **state)
{
    static const struct expect want[] = {{0, "issuer-name"}};
    struct chain c;
    X509_NAME *name = X509_NAME_new();
    STACK_OF(X509) *sk;

    (void)state;
    make_chain(&c, NULL, NULL, -60, 365 * DAY);
    /* Signed by the right key, but naming someone else as its issuer. */
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)"Someone Else",
                               -1, -1, 0);
    assert_int_equal(X509_set_issuer_name(c.leaf, name), 1);
    assert_true(X509_sign(c.leaf, keys.inter, EVP_sha256()) > 0);
    sk = stack_of(c.leaf, c.inter, c.root);
    expect_exactly(sk, PROV_PURPOSE_CLIENT, want, 1);
    sk_X509_free(sk);
    X509_NAME_free(name);
    free_chain(&c);
}

static void test_bad_signature(void **state)
{
    static const struct expect want[] = {{0, "signature"}};
    struct chain c;
    STACK_OF(X509) *sk;

    (void)state;
    make_chain(&c, NULL, NULL, -60, 365 * DAY);
    assert_true(X509_sign(c.leaf, keys.other, EVP_sha256()) > 0);
    sk = stack_of(c.leaf, c.inter, c.root);
    expect_exactly(sk, PROV_PURPOSE_CLIENT, want, 1);
    sk_X509_free(sk);
    free_chain(&c);
}

/*
 * CA signatures are remembered once verified (chain.c, sig_memo): the memo must never vouch
 * for a CA certificate that changed, so a verified chain's intermediate re-signed by another
 * key fails as before.
 */
static void test_remembered_signature_is_exact(void **state)
{
    static const struct expect want[] = {{1, "signature"}};
    struct chain c;
    STACK_OF(X509) *sk;

    (void)state;
    make_chain(&c, NULL, NULL, -60, 365 * DAY);
    sk = stack_of(c.leaf, c.inter, c.root);
    expect_exactly(sk, PROV_PURPOSE_CLIENT, NULL, 0);
    expect_exactly(sk, PROV_PURPOSE_CLIENT, NULL, 0); /* the second time from the memo */
    assert_true(X509_sign(c.inter, keys.other, EVP_sha256()) > 0);
    expect_exactly(sk, PROV_PURPOSE_CLIENT, want, 1);
    sk_X509_free(sk);
    free_chain(&c);
}

/*
 * What a batch does for every device: the same intermediate and root under a new leaf. Once
 * the CA signatures are known good, a chain costs chain.c one verification, the leaf's, for
 * the rules and the cross-check's signature step together (that the step is the one OpenSSL
 * uses: test_strict_checks_signatures_on_its_own_path).
 */
static void test_each_signature_verified_once(void **state)
{
    struct chain c;
    STACK_OF(X509) *sk;
    X509 *other;
    int first;

    (void)state;
    make_chain(&c, NULL, NULL, -60, 365 * DAY);
    sk = stack_of(c.leaf, c.inter, c.root);
    n_verifications = 0;
    expect_exactly(sk, PROV_PURPOSE_CLIENT, NULL, 0);
    first = n_verifications;
    assert_in_range(first, 3, 4); /* leaf, intermediate, root (self-signed) */
    n_verifications = 0;
    expect_exactly(sk, PROV_PURPOSE_CLIENT, NULL, 0);
    assert_int_equal(n_verifications, 1);
    other = make_cert("device-0002", keys.other, c.inter, keys.inter, -60, 365 * DAY, leaf_exts);
    assert_non_null(sk_X509_set(sk, 0, other));
    n_verifications = 0;
    expect_exactly(sk, PROV_PURPOSE_CLIENT, NULL, 0);
    assert_int_equal(n_verifications, 1);
    X509_free(other);
    sk_X509_free(sk);
    free_chain(&c);
}

/*
 * A certificate the CA has just issued (prov_chain_note_issued) is not verified again: with
 * the CA signatures known good, its chain costs no verification. The note vouches for those
 * exact bytes under that issuer only: the same leaf re-signed by another key, or noted under
 * another issuer, is verified and refused or accepted as before.
 */
static void test_issued_leaf_not_verified_again(void **state)
{
    static const struct expect want[] = {{0, "signature"}};
    struct chain c;
    STACK_OF(X509) *sk;

    (void)state;
    make_chain(&c, NULL, NULL, -60, 365 * DAY);
    sk = stack_of(c.leaf, c.inter, c.root);
    expect_exactly(sk, PROV_PURPOSE_CLIENT, NULL, 0); /* the CA signatures, once */
    prov_chain_note_issued(c.leaf, c.inter);
    n_verifications = 0;
    expect_exactly(sk, PROV_PURPOSE_CLIENT, NULL, 0);
    assert_int_equal(n_verifications, 0);

    prov_chain_note_issued(c.inter, c.inter); /* the wrong issuer vouches for nothing */
    assert_true(X509_sign(c.leaf, keys.other, EVP_sha256()) > 0);
    n_verifications = 0;
    expect_exactly(sk, PROV_PURPOSE_CLIENT, want, 1);
    assert_true(n_verifications > 0);
    prov_chain_note_issued(c.leaf, c.root);
    expect_exactly(sk, PROV_PURPOSE_CLIENT, want, 1);
    sk_X509_free(sk);
    free_chain(&c);
}

static void test_ca_basic_constraints_not_critical(void **state)
{
    static const char *const exts[] = {
        "basicConstraints", "CA:TRUE",
        "keyUsage", "critical,keyCertSign,cRLSign",
        "subjectKeyIdentifier", "hash",
        "authorityKeyIdentifier", "keyid",
        NULL,
    };
    static const struct expect want[] = {{1, "basic-constraints"}};
    struct chain c;
    STACK_OF(X509) *sk;

    (void)state;
    make_chain(&c, exts, NULL, -60, 365 * DAY);
    sk = stack_of(c.leaf, c.inter, c.root);
    expect_exactly(sk, PROV_PURPOSE_CLIENT, want, 1);
    sk_X509_free(sk);
    free_chain(&c);
}

static void test_ca_without_key_usage(void **state)
{
    static const char *const exts[] = {
        "basicConstraints", "critical,CA:TRUE",
        "subjectKeyIdentifier", "hash",
        "authorityKeyIdentifier", "keyid",
        NULL,
    };
    static const struct expect want[] = {{1, "key-usage"}};
    struct chain c;
    STACK_OF(X509) *sk;

    (void)state;
    make_chain(&c, exts, NULL, -60, 365 * DAY);
    sk = stack_of(c.leaf, c.inter, c.root);
    expect_exactly(sk, PROV_PURPOSE_CLIENT, want, 1);
    sk_X509_free(sk);
    free_chain(&c);
}

static void test_path_length(void **state)
{
    static const char *const root_exts[] = {
        "basicConstraints", "critical,CA:TRUE,pathlen:0",
        "keyUsage", "critical,keyCertSign,cRLSign",
        "subjectKeyIdentifier", "hash",
        NULL,
    };
    static const struct expect want[] = {{3, "path-length"}};
    X509 *root = make_cert("Test Root", keys.root, NULL, NULL, -DAY, 3650 * DAY, root_exts);
    X509 *i1 = make_cert("Issuing 1", keys.other, root, keys.root, -DAY, 1825 * DAY, ca_exts);
    X509 *i2 = make_cert("Issuing 2", keys.inter, i1, keys.other, -DAY, 1000 * DAY, ca_exts);
    X509 *leaf = make_cert("device-0001", keys.leaf, i2, keys.inter, -60, 365 * DAY, leaf_exts);
    STACK_OF(X509) *sk = stack_of(leaf, i2, i1);

    (void)state;
    assert_true(sk_X509_push(sk, root) > 0);
    expect_exactly(sk, PROV_PURPOSE_CLIENT, want, 1);
    sk_X509_free(sk);
    X509_free(root);
    X509_free(i1);
    X509_free(i2);
    X509_free(leaf);
}

static void test_expired_leaf(void **state)
{
    static const struct expect want[] = {{0, "validity"}};
    struct chain c;
    STACK_OF(X509) *sk;

    (void)state;
    make_chain(&c, NULL, NULL, -10 * DAY, -DAY);
    sk = stack_of(c.leaf, c.inter, c.root);
    expect_exactly(sk, PROV_PURPOSE_CLIENT, want, 1);
    sk_X509_free(sk);
    free_chain(&c);
}

static void test_not_after_beyond_issuer(void **state)
{
    static const struct expect want[] = {{0, "validity-nesting"}};
    struct chain c;
    STACK_OF(X509) *sk;

    (void)state;
    make_chain(&c, NULL, NULL, -60, 1826 * DAY);
    sk = stack_of(c.leaf, c.inter, c.root);
    expect_exactly(sk, PROV_PURPOSE_CLIENT, want, 1);
    sk_X509_free(sk);
    free_chain(&c);
}

static void test_not_ending_in_root(void **state)
{
    static const struct expect want[] = {{1, "root"}};
    struct prov_chain_report rep = {0};
    STACK_OF(X509) *trust;
    struct chain c;
    STACK_OF(X509) *sk;

    (void)state;
    make_chain(&c, NULL, NULL, -60, 365 * DAY);
    sk = stack_of(c.leaf, c.inter, NULL);
    expect_exactly(sk, PROV_PURPOSE_CLIENT, want, 1);
    /* The same chain is fine when its root is given as a --trust anchor ... */
    trust = stack_of(c.root, NULL, NULL);
    assert_int_equal(prov_chain_verify(sk, trust, PROV_PURPOSE_CLIENT, now, &rep), 0);
    sk_X509_free(trust);
    /* ... and when the intermediate is (a partial chain). */
    trust = stack_of(c.inter, NULL, NULL);
    assert_int_equal(prov_chain_verify(sk, trust, PROV_PURPOSE_CLIENT, now, &rep), 0);
    print_report(&rep);
    assert_int_equal(rep.n, 0);
    sk_X509_free(trust);
    sk_X509_free(sk);
    free_chain(&c);
}

static void test_leaf_without_client_auth(void **state)
{
    static const char *const exts[] = {
        "basicConstraints", "critical,CA:FALSE",
        "keyUsage", "critical,digitalSignature",
        "extendedKeyUsage", "serverAuth",
        "subjectKeyIdentifier", "hash",
        "authorityKeyIdentifier", "keyid",
        NULL,
    };
    static const struct expect want[] = {{0, "purpose"}};
    struct chain c;
    STACK_OF(X509) *sk;

    (void)state;
    make_chain(&c, NULL, exts, -60, 365 * DAY);
    sk = stack_of(c.leaf, c.inter, c.root);
    expect_exactly(sk, PROV_PURPOSE_CLIENT, want, 1);
    /* The same leaf is a fine server certificate. */
    expect_exactly(sk, PROV_PURPOSE_SERVER, NULL, 0);
    sk_X509_free(sk);
    free_chain(&c);
}

/* What only `openssl verify -x509_strict` knows is still reported, under its own rule. */
static void test_strict_only_finding(void **state)
{
    static const char *const exts[] = {
        "basicConstraints", "critical,CA:TRUE",
        "keyUsage", "critical,keyCertSign,cRLSign",
        "authorityKeyIdentifier", "keyid",
        NULL,
    };
    static const struct expect want[] = {{0, "x509-strict"}, {1, "x509-strict"}};
    struct chain c;
    STACK_OF(X509) *sk;

    (void)state;
    /* No subjectKeyIdentifier on the CA, hence no authorityKeyIdentifier on the leaf. */
    make_chain(&c, exts, leaf_exts_no_akid, -60, 365 * DAY);
    sk = stack_of(c.leaf, c.inter, c.root);
    expect_exactly(sk, PROV_PURPOSE_CLIENT, want, 2);
    sk_X509_free(sk);
    free_chain(&c);
}

/*
 * Verifies sk against trust, which must fail with an x509-strict finding at index whose detail
 * names OpenSSL's verify error (err); the findings are printed.
 */
static void expect_strict_error(STACK_OF(X509) *sk, STACK_OF(X509) *trust, int index, int err)
{
    struct prov_chain_report rep = {0};
    char text[32];
    bool is_found = false;

    snprintf(text, sizeof(text), "(verify error %d)", err);
    assert_int_equal(prov_chain_verify(sk, trust, PROV_PURPOSE_CLIENT, now, &rep),
                     PROV_ERR_VERIFY);
    print_report(&rep);
    for (size_t i = 0; i < rep.n; i++) {
        is_found = is_found || (rep.items[i].index == index &&
                                strcmp(rep.items[i].rule, "x509-strict") == 0 &&
                                strstr(rep.items[i].detail, text) != NULL);
    }
    assert_true(is_found);
    assert_false(has(&rep, index, "signature"));
    prov_chain_report_free(&rep);
}

/*
 * The cross-check verifies signatures on the chain OpenSSL builds, which need not be the
 * file's: with a trusted certificate of the intermediate's name but another key, and a leaf
 * without authorityKeyIdentifier, OpenSSL (trusted first) takes the trusted one as the leaf's
 * issuer. The file's own links all verify; the signature on OpenSSL's path does not, and that
 * is reported (OpenSSL's "certificate signature failure", verify error 7).
 */
static void test_strict_checks_signatures_on_its_own_path(void **state)
{
    STACK_OF(X509) *sk;
    STACK_OF(X509) *trust;
    struct chain c;
    X509 *lookalike;

    (void)state;
    make_chain(&c, NULL, leaf_exts_no_akid, -60, 365 * DAY);
    lookalike = make_cert("Test Intermediate", keys.other, c.root, keys.root, -DAY, 1825 * DAY,
                          ca_exts);
    sk = stack_of(c.leaf, c.inter, c.root);
    trust = stack_of(lookalike, NULL, NULL);
    other_key = keys.other;
    n_with_other = 0;
    expect_strict_error(sk, trust, 0, X509_V_ERR_CERT_SIGNATURE_FAILURE);
    other_key = NULL;
    /* checked by chain.c's own step, which OpenSSL called: the file's links never use it */
    assert_int_equal(n_with_other, 1);
    sk_X509_free(trust);
    sk_X509_free(sk);
    X509_free(lookalike);
    free_chain(&c);
}

/*
 * A --trust root that may not sign certificates (keyUsage without keyCertSign) is refused as
 * OpenSSL refuses it: the anchor is not in the file, so only the cross-check sees it.
 */
static void test_strict_trusted_root_without_cert_sign(void **state)
{
    static const char *const root_exts[] = {
        "basicConstraints", "critical,CA:TRUE",
        "keyUsage", "critical,cRLSign",
        "subjectKeyIdentifier", "hash",
        NULL,
    };
    STACK_OF(X509) *sk;
    STACK_OF(X509) *trust;
    X509 *root;
    X509 *inter;
    X509 *leaf;

    (void)state;
    root = make_cert("Test Root", keys.root, NULL, NULL, -DAY, 3650 * DAY, root_exts);
    inter = make_cert("Test Intermediate", keys.inter, root, keys.root, -DAY, 1825 * DAY, ca_exts);
    leaf = make_cert("device-0001", keys.leaf, inter, keys.inter, -60, 365 * DAY, leaf_exts);
    sk = stack_of(leaf, inter, NULL);
    trust = stack_of(root, NULL, NULL);
    expect_strict_error(sk, trust, -1, X509_V_ERR_KEYUSAGE_NO_CERTSIGN);
    sk_X509_free(trust);
    sk_X509_free(sk);
    X509_free(leaf);
    X509_free(inter);
    X509_free(root);
}

/* The assertion helpers themselves must be able to fail: a wrong index or rule is not found. */
static void test_guard_exact_index_and_rule(void **state)
{
    struct prov_chain_report rep = {0};
    struct chain c;
    STACK_OF(X509) *sk;

    (void)state;
    make_chain(&c, NULL, NULL, -10 * DAY, -DAY);
    sk = stack_of(c.leaf, c.inter, c.root);
    assert_int_equal(prov_chain_verify(sk, NULL, PROV_PURPOSE_CLIENT, now, &rep),
                     PROV_ERR_VERIFY);
    assert_true(has(&rep, 0, "validity"));
    assert_false(has(&rep, 1, "validity"));
    assert_false(has(&rep, 0, "validity-nesting"));
    assert_false(has(&rep, 0, "x509-strict"));
    assert_string_equal(rep.items[0].subject, "CN=device-0001");
    prov_chain_report_free(&rep);
    assert_int_equal(rep.n, 0);
    assert_null(rep.items);
    sk_X509_free(sk);
    free_chain(&c);
}

static void test_empty(void **state)
{
    struct prov_chain_report rep = {0};
    STACK_OF(X509) *sk = sk_X509_new_null();

    (void)state;
    assert_int_equal(prov_chain_verify(sk, NULL, PROV_PURPOSE_ANY, now, &rep), PROV_ERR_VERIFY);
    assert_int_equal(rep.n, 1);
    assert_int_equal(rep.items[0].index, -1);
    assert_string_equal(rep.items[0].rule, "empty");
    prov_chain_report_free(&rep);
    sk_X509_free(sk);
}

static void test_pem_round_trip_and_parse_error(void **state)
{
    struct chain c;
    STACK_OF(X509) *sk;
    STACK_OF(X509) *back = NULL;
    char *pem = NULL;
    char *bad = NULL;
    size_t len = 0;
    const char *key_block = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";

    (void)state;
    make_chain(&c, NULL, NULL, -60, 365 * DAY);
    sk = stack_of(c.leaf, c.inter, c.root);
    assert_int_equal(prov_chain_to_pem(sk, &pem, &len), 0);
    assert_int_equal(strlen(pem), len);
    assert_int_equal(prov_chain_load_pem_buf((const unsigned char *)pem, len, &back), 0);
    assert_int_equal(sk_X509_num(back), 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(X509_cmp(sk_X509_value(back, i), sk_X509_value(sk, i)), 0);
    }
    sk_X509_pop_free(back, X509_free);
    back = NULL;

    /* A key block in second place: refused, naming block 1. */
    assert_true(asprintf(&bad, "%.*s%s", (int)(strstr(pem + 1, "-----BEGIN") - pem), pem,
                         key_block) > 0);
    prov_error_clear();
    assert_int_equal(prov_chain_load_pem_buf((const unsigned char *)bad, strlen(bad), &back),
                     PROV_ERR_INPUT);
    assert_null(back);
    assert_non_null(strstr(prov_error_message(), "block 1"));
    free(bad);
    free(pem);
    sk_X509_free(sk);
    free_chain(&c);
}

/* DER back to back, and what a file without a certificate holds, as a finding on the file. */
static void test_load_any_der_and_nothing(void **state)
{
    struct chain c;
    struct prov_chain_report rep = {0};
    STACK_OF(X509) *back = NULL;
    unsigned char der[8192];
    unsigned char *p = der;
    int n = 0;
    static const struct {
        const char *data;
        const char *rule;
        const char *detail;
    } nothing[] = {
        {"", "empty", "the file is empty (0 bytes)"},
        {" \n\t\n", "empty", "the file holds only whitespace (4 bytes), no certificate"},
        {"hello world\nmore", "parse", "neither PEM nor DER: text starting \"hello world\""},
        {"\x01\x02\x03", "parse", "neither PEM nor DER: 3 bytes of binary data starting 01 02"},
        {"\x30\x03\x02\x01\x05", "parse", "DER data (5 bytes), but not a certificate"},
        {"-----BEGIN X-----\nAAAA\n-----END X-----\n", "parse",
         "PEM block 0 is \"X\", not a certificate"},
    };

    (void)state;
    make_chain(&c, NULL, NULL, -60, 365 * DAY);
    n += i2d_X509(c.leaf, &p);
    n += i2d_X509(c.inter, &p);
    n += i2d_X509(c.root, &p);
    assert_int_equal(prov_chain_load_any_buf(der, (size_t)n, &back, &rep), 0);
    assert_int_equal(rep.n, 0);
    assert_int_equal(sk_X509_num(back), 3);
    assert_int_equal(X509_cmp(sk_X509_value(back, 0), c.leaf), 0);
    assert_int_equal(X509_cmp(sk_X509_value(back, 2), c.root), 0);
    assert_int_equal(prov_chain_verify(back, NULL, PROV_PURPOSE_CLIENT, now, &rep), 0);
    sk_X509_pop_free(back, X509_free);
    back = NULL;

    /* a certificate then bytes that are not one */
    der[n] = 0x30;
    assert_int_equal(prov_chain_load_any_buf(der, (size_t)n + 1, &back, &rep), PROV_ERR_VERIFY);
    assert_null(back);
    assert_int_equal(rep.n, 1);
    assert_int_equal(rep.items[0].index, -1);
    assert_string_equal(rep.items[0].detail,
                        "DER certificate 2 is followed by 1 bytes that are not a certificate");
    prov_chain_report_free(&rep);

    for (size_t i = 0; i < sizeof(nothing) / sizeof(nothing[0]); i++) {
        prov_error_clear();
        assert_int_equal(prov_chain_load_any_buf((const unsigned char *)nothing[i].data,
                                                 strlen(nothing[i].data), &back, &rep),
                         PROV_ERR_VERIFY);
        assert_null(back);
        assert_int_equal(rep.n, 1);
        assert_int_equal(rep.items[0].index, -1);
        assert_null(rep.items[0].subject);
        assert_string_equal(rep.items[0].rule, nothing[i].rule);
        assert_string_equal(rep.items[0].detail, nothing[i].detail);
        prov_chain_report_free(&rep);
    }
    prov_error_clear();
    free_chain(&c);
}

/* Without a named purpose: a chain that starts with a CA is checked as CAs, others as clients. */
static void test_purpose_of_first_certificate(void **state)
{
    struct chain c;
    struct prov_chain_report rep = {0};
    STACK_OF(X509) *device;
    STACK_OF(X509) *ca;

    (void)state;
    make_chain(&c, NULL, NULL, -60, 365 * DAY);
    device = stack_of(c.leaf, c.inter, c.root);
    ca = stack_of(c.inter, c.root, NULL);
    assert_int_equal(prov_chain_purpose_of(device), PROV_PURPOSE_CLIENT);
    assert_int_equal(prov_chain_purpose_of(ca), PROV_PURPOSE_ANY);
    assert_int_equal(prov_chain_verify(ca, NULL, prov_chain_purpose_of(ca), now, &rep), 0);
    /* as a client chain the CA fails: it has no digitalSignature to offer */
    assert_int_equal(prov_chain_verify(ca, NULL, PROV_PURPOSE_CLIENT, now, &rep),
                     PROV_ERR_VERIFY);
    assert_true(has(&rep, 0, "purpose"));
    prov_chain_report_free(&rep);
    sk_X509_free(device);
    sk_X509_free(ca);
    free_chain(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_chain),
        cmocka_unit_test(test_out_of_order),
        cmocka_unit_test(test_wrong_issuer_name),
        cmocka_unit_test(test_bad_signature),
        cmocka_unit_test(test_remembered_signature_is_exact),
        cmocka_unit_test(test_each_signature_verified_once),
        cmocka_unit_test(test_issued_leaf_not_verified_again),
        cmocka_unit_test(test_ca_basic_constraints_not_critical),
        cmocka_unit_test(test_ca_without_key_usage),
        cmocka_unit_test(test_path_length),
        cmocka_unit_test(test_expired_leaf),
        cmocka_unit_test(test_not_after_beyond_issuer),
        cmocka_unit_test(test_not_ending_in_root),
        cmocka_unit_test(test_leaf_without_client_auth),
        cmocka_unit_test(test_strict_only_finding),
        cmocka_unit_test(test_strict_checks_signatures_on_its_own_path),
        cmocka_unit_test(test_strict_trusted_root_without_cert_sign),
        cmocka_unit_test(test_guard_exact_index_and_rule),
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_pem_round_trip_and_parse_error),
        cmocka_unit_test(test_load_any_der_and_nothing),
        cmocka_unit_test(test_purpose_of_first_certificate),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
