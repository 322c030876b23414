/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The CA service's cache of protection certificates whose chain verified
 * (service/cmp_station_cache.h): the first extraCerts certificate found in a PKIMessage's DER,
 * the chain verified once, the validity period at every look-up, the least recently used one
 * dropped beyond the bound, drop and clear.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include "cmp_station_cache.h"
#include "error.h"
#include "test_pki.h"

/* DER bytes built by hand: enough room for a message with two certificates. */
struct buf {
    unsigned char b[8192];
    size_t n;
};

static void put(struct buf *o, const unsigned char *p, size_t n)
{
    assert_true(o->n + n <= sizeof(o->b));
    memcpy(o->b + o->n, p, n);
    o->n += n;
}

/* One TLV (definite length, long form when needed) with the contents in. */
static void put_tlv(struct buf *o, unsigned char tag, const struct buf *in)
{
    unsigned char h[4] = {tag};
    size_t hl = 2;

    if (in->n < 128) {
        h[1] = (unsigned char)in->n;
    } else {
        assert_true(in->n < 65536);
        h[1] = 0x82;
        h[2] = (unsigned char)(in->n >> 8);
        h[3] = (unsigned char)in->n;
        hl = 4;
    }
    put(o, h, hl);
    put(o, in->b, in->n);
}

static void put_cert(struct buf *o, X509 *cert)
{
    unsigned char *der = NULL;
    int n = i2d_X509(cert, &der);

    assert_true(n > 0);
    put(o, der, (size_t)n);
    OPENSSL_free(der);
}

/*
 * A PKIMessage's shape (RFC 4210 section 5.1): a header and a body (empty SEQUENCEs: only
 * their lengths are read), a [0] protection when asked, [1] extraCerts with first then second
 * (each NULL: left out; both NULL: no extraCerts at all).
 */
static void message(struct buf *msg, bool has_protection, X509 *first, X509 *second)
{
    static const unsigned char empty_seq[] = {0x30, 0x00};
    static const unsigned char protection[] = {0xa0, 0x04, 0x03, 0x02, 0x00, 0x55};
    struct buf in = {.n = 0};
    struct buf certs = {.n = 0};
    struct buf seq = {.n = 0};

    put(&in, empty_seq, sizeof(empty_seq));
    put(&in, empty_seq, sizeof(empty_seq));
    if (has_protection) {
        put(&in, protection, sizeof(protection));
    }
    if (first != NULL || second != NULL) {
        if (first != NULL) {
            put_cert(&certs, first);
        }
        if (second != NULL) {
            put_cert(&certs, second);
        }
        put_tlv(&seq, 0x30, &certs);
        put_tlv(&in, 0xa1, &seq);
    }
    msg->n = 0;
    put_tlv(msg, 0x30, &in);
}

struct fixture {
    struct prov_ca ca;
    X509_STORE *trust;
    X509_STORE *empty; /* trusts nothing: only what is cached is pinned */
    EVP_PKEY *key;
    X509 *leaf[3];
    X509 *short_lived; /* valid for the next hour only */
    time_t now;
};

static X509 *leaf(struct fixture *f, const char *cn, long serial, long not_after)
{
    struct test_cert_spec spec = {
        .cn = cn,
        .serial = serial,
        .key = f->key,
        .issuer = f->ca.cert,
        .issuer_key = f->ca.key,
        .not_before = -3600,
        .not_after = not_after,
        .now = &f->now,
        .exts = test_pki_leaf_exts,
    };

    return test_pki_cert(&spec);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    assert_non_null(f);
    f->now = time(NULL);
    test_pki_small_ca(&f->ca);
    f->key = test_pki_ec_key("P-256");
    f->trust = X509_STORE_new();
    f->empty = X509_STORE_new();
    assert_non_null(f->trust);
    assert_non_null(f->empty);
    /* as cmp_server.c trusts: the root and the intermediate, a partial chain */
    assert_int_equal(X509_STORE_add_cert(f->trust, f->ca.root), 1);
    assert_int_equal(X509_STORE_add_cert(f->trust, f->ca.cert), 1);
    assert_int_equal(X509_STORE_set_flags(f->trust, X509_V_FLAG_PARTIAL_CHAIN), 1);
    for (int i = 0; i < 3; i++) {
        f->leaf[i] = leaf(f, "ST-1", 10 + i, 10 * TEST_PKI_DAY);
    }
    f->short_lived = leaf(f, "ST-2", 20, 3600);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    for (int i = 0; i < 3; i++) {
        X509_free(f->leaf[i]);
    }
    X509_free(f->short_lived);
    EVP_PKEY_free(f->key);
    X509_STORE_free(f->trust);
    X509_STORE_free(f->empty);
    test_pki_small_ca_free(&f->ca);
    free(f);
    return 0;
}

/*
 * pin: the certificate pinned for a message whose first extraCerts entry is cert, at t; a new
 * one is kept as the server keeps it once the message verified (is_verified false: it did not).
 */
static bool pins_verified(struct prov_cmp_station_cache *c, struct fixture *f, X509 *cert,
                          X509_STORE *trust, time_t t, bool is_verified)
{
    struct buf msg;
    X509 *got;
    bool is_same;
    bool is_new = false;

    message(&msg, true, cert, f->ca.cert);
    got = prov_cmp_station_cache_pin(c, msg.b, msg.n, trust, f->ca.chain, t, &is_new);
    is_same = got != NULL && X509_cmp(got, cert) == 0;
    assert_true(got == NULL || is_same);
    if (is_new && is_verified) {
        prov_cmp_station_cache_keep(c, got);
    }
    X509_free(got);
    return is_same;
}

static bool pins(struct prov_cmp_station_cache *c, struct fixture *f, X509 *cert,
                 X509_STORE *trust, time_t t)
{
    return pins_verified(c, f, cert, trust, t, true);
}

/*
 * strip_extra: the message's bytes without its extraCerts, the outer length written anew;
 * nothing for a message without them, or with anything after them.
 */
static void test_strip_extra(void **state)
{
    struct fixture *f = *state;
    unsigned char *out = NULL;
    size_t out_len = 0;
    struct buf with;
    struct buf without;

    for (int with_protection = 0; with_protection < 2; with_protection++) {
        message(&with, with_protection, f->leaf[0], f->leaf[1]);
        message(&without, with_protection, NULL, NULL);
        assert_int_equal(prov_cmp_station_cache_strip_extra(with.b, with.n, &out, &out_len), 0);
        assert_int_equal(out_len, without.n);
        assert_memory_equal(out, without.b, out_len);
        free(out);
        /* none to strip */
        assert_int_equal(
            prov_cmp_station_cache_strip_extra(without.b, without.n, &out, &out_len),
            PROV_ERR_INPUT);
        assert_null(out);
    }
    /* a byte after the message; the message cut short */
    message(&with, true, f->leaf[0], NULL);
    with.b[with.n++] = 0x00;
    assert_int_equal(prov_cmp_station_cache_strip_extra(with.b, with.n, &out, &out_len),
                     PROV_ERR_INPUT);
    assert_int_equal(prov_cmp_station_cache_strip_extra(with.b, with.n - 10, &out, &out_len),
                     PROV_ERR_INPUT);
    assert_null(out);
}

/*
 * A certificate whose message did not verify is not kept: with the cache full, it pushes
 * none out, and the next message with it has its chain checked again.
 */
static void test_kept_only_when_verified(void **state)
{
    struct fixture *f = *state;
    struct prov_cmp_station_cache *c = NULL;

    assert_int_equal(prov_cmp_station_cache_new(2, &c), 0);
    assert_true(pins(c, f, f->leaf[0], f->trust, f->now));
    assert_true(pins(c, f, f->leaf[1], f->trust, f->now));
    assert_true(pins_verified(c, f, f->leaf[2], f->trust, f->now, false));
    assert_int_equal(prov_cmp_station_cache_count(c), 2);
    /* both still remembered (no chain to check against: f->empty) */
    assert_true(pins(c, f, f->leaf[0], f->empty, f->now));
    assert_true(pins(c, f, f->leaf[1], f->empty, f->now));
    assert_false(pins(c, f, f->leaf[2], f->empty, f->now));
    prov_cmp_station_cache_free(c);
}

/*
 * Two workers (service/http.c) each pin a new station before either message verified, then
 * both keep theirs: both are remembered, not only the one pinned last.
 */
static void test_two_pinned_at_once(void **state)
{
    struct fixture *f = *state;
    struct prov_cmp_station_cache *c;
    struct buf m0, m1;
    bool new0 = false, new1 = false;
    X509 *got0, *got1;

    assert_int_equal(prov_cmp_station_cache_new(4, &c), 0);
    message(&m0, true, f->leaf[0], f->ca.cert);
    message(&m1, true, f->leaf[1], f->ca.cert);
    got0 = prov_cmp_station_cache_pin(c, m0.b, m0.n, f->trust, f->ca.chain, f->now, &new0);
    got1 = prov_cmp_station_cache_pin(c, m1.b, m1.n, f->trust, f->ca.chain, f->now, &new1);
    assert_non_null(got0);
    assert_non_null(got1);
    assert_true(new0 && new1);
    prov_cmp_station_cache_keep(c, got0);
    prov_cmp_station_cache_keep(c, got1);
    X509_free(got0);
    X509_free(got1);
    assert_int_equal(prov_cmp_station_cache_count(c), 2);
    /* and found again, as cached, by the bytes the messages carry */
    got0 = prov_cmp_station_cache_pin(c, m0.b, m0.n, f->empty, f->ca.chain, f->now, &new0);
    assert_non_null(got0);
    assert_false(new0);
    X509_free(got0);
    prov_cmp_station_cache_free(c);
}

static void test_first_extra(void **state)
{
    struct fixture *f = *state;
    unsigned char *der = NULL;
    const unsigned char *cert;
    size_t cert_len;
    struct buf msg;
    int n = i2d_X509(f->leaf[0], &der);

    for (int with_protection = 0; with_protection < 2; with_protection++) {
        message(&msg, with_protection, f->leaf[0], f->ca.cert);
        assert_int_equal(prov_cmp_station_cache_first_extra(msg.b, msg.n, &cert, &cert_len), 0);
        assert_int_equal(cert_len, (size_t)n);
        assert_memory_equal(cert, der, cert_len);
    }
    /* no extraCerts; a message cut short; a length beyond the bytes */
    message(&msg, true, NULL, NULL);
    assert_int_equal(prov_cmp_station_cache_first_extra(msg.b, msg.n, &cert, &cert_len),
                     PROV_ERR_INPUT);
    assert_null(cert);
    message(&msg, true, f->leaf[0], NULL);
    for (size_t cut = 0; cut < msg.n; cut += 97) {
        assert_int_equal(prov_cmp_station_cache_first_extra(msg.b, cut, &cert, &cert_len),
                         PROV_ERR_INPUT);
    }
    assert_int_equal(msg.b[1], 0x82);
    msg.b[3]++; /* the PKIMessage claims one byte more than there is */
    assert_int_equal(prov_cmp_station_cache_first_extra(msg.b, msg.n, &cert, &cert_len),
                     PROV_ERR_INPUT);
    OPENSSL_free(der);
}

/* The chain is verified on the way in; another CA's certificate is not pinned. */
static void test_chain_once(void **state)
{
    struct fixture *f = *state;
    struct prov_cmp_station_cache *c = NULL;
    struct prov_ca other;
    X509 *foreign;
    struct test_cert_spec spec = {
        .cn = "ST-1",
        .serial = 10,
        .not_before = -3600,
        .not_after = TEST_PKI_DAY,
        .exts = test_pki_leaf_exts,
    };

    assert_int_equal(prov_cmp_station_cache_new(4, &c), 0);
    assert_false(pins(c, f, f->leaf[0], f->empty, f->now));
    assert_int_equal(prov_cmp_station_cache_count(c), 0);
    assert_true(pins(c, f, f->leaf[0], f->trust, f->now));
    assert_int_equal(prov_cmp_station_cache_count(c), 1);
    /* cached: found without a trust anchor, not added twice */
    assert_true(pins(c, f, f->leaf[0], f->empty, f->now));
    assert_int_equal(prov_cmp_station_cache_count(c), 1);

    test_pki_small_ca(&other);
    spec.key = f->key;
    spec.issuer = other.cert;
    spec.issuer_key = other.key;
    foreign = test_pki_cert(&spec);
    assert_false(pins(c, f, foreign, f->trust, f->now));
    assert_int_equal(prov_cmp_station_cache_count(c), 1);
    X509_free(foreign);
    test_pki_small_ca_free(&other);
    prov_cmp_station_cache_free(c);
}

/* A certificate that expires while cached is pinned no more (and dropped). */
static void test_expires_while_cached(void **state)
{
    struct fixture *f = *state;
    struct prov_cmp_station_cache *c = NULL;

    assert_int_equal(prov_cmp_station_cache_new(4, &c), 0);
    assert_true(pins(c, f, f->short_lived, f->trust, f->now));
    assert_true(pins(c, f, f->short_lived, f->empty, f->now + 1800));
    assert_false(pins(c, f, f->short_lived, f->empty, f->now + 7200));
    assert_false(pins(c, f, f->short_lived, f->trust, f->now + 7200));
    assert_int_equal(prov_cmp_station_cache_count(c), 0);
    /* not yet valid: its notBefore is an hour before f->now */
    assert_false(pins(c, f, f->leaf[0], f->trust, f->now - 7200));
    prov_cmp_station_cache_free(c);
}

/* Beyond the bound the least recently used goes; drop and clear forget. */
static void test_lru_drop_clear(void **state)
{
    struct fixture *f = *state;
    struct prov_cmp_station_cache *c = NULL;
    struct buf msg;
    X509 *got;
    bool is_new = true;

    assert_int_equal(prov_cmp_station_cache_new(2, &c), 0);
    assert_true(pins(c, f, f->leaf[0], f->trust, f->now));
    assert_true(pins(c, f, f->leaf[1], f->trust, f->now));
    assert_true(pins(c, f, f->leaf[0], f->empty, f->now)); /* leaf 1 is now the oldest used */
    assert_true(pins(c, f, f->leaf[2], f->trust, f->now));
    assert_int_equal(prov_cmp_station_cache_count(c), 2);
    assert_true(pins(c, f, f->leaf[0], f->empty, f->now));
    assert_false(pins(c, f, f->leaf[1], f->empty, f->now));
    assert_true(pins(c, f, f->leaf[2], f->empty, f->now));

    message(&msg, true, f->leaf[2], NULL);
    got = prov_cmp_station_cache_pin(c, msg.b, msg.n, f->empty, f->ca.chain, f->now, &is_new);
    assert_false(is_new);
    assert_non_null(got);
    prov_cmp_station_cache_drop(c, got);
    X509_free(got);
    assert_false(pins(c, f, f->leaf[2], f->empty, f->now));
    assert_int_equal(prov_cmp_station_cache_count(c), 1);

    prov_cmp_station_cache_clear(c);
    assert_int_equal(prov_cmp_station_cache_count(c), 0);
    assert_false(pins(c, f, f->leaf[0], f->empty, f->now));
    prov_cmp_station_cache_free(c);
    prov_cmp_station_cache_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_first_extra, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_pinned_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chain_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expires_while_cached, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lru_drop_clear, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kept_only_when_verified, setup, teardown),
        cmocka_unit_test_setup_teardown(test_strip_extra, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
