/* SPDX-License-Identifier: Apache-2.0 */
/* A software device behind the backend ops table (test_mock_device.h). */
#include "test_mock_device.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/x509.h>

#include "error.h"
#include "keytype.h"

struct test_mock_device test_mock;

static void note(const char *what)
{
    size_t n = strlen(test_mock.log);

    snprintf(test_mock.log + n, sizeof(test_mock.log) - n, "%s%s", n > 0 ? " " : "", what);
}

struct mock_key {
    EVP_PKEY *priv;
    EVP_PKEY *other;
};

static bool mock_handles(const char *uri)
{
    return strncmp(uri, "mock:", 5) == 0;
}

static int mock_open(const char *uri, const struct prov_device_params *params,
                     struct prov_device **out)
{
    struct prov_device *d = calloc(1, sizeof(*d));

    d->ops = &test_mock_ops;
    test_mock.n_opens++;
    note("open");
    d->name = strdup(uri);
    *out = d;
    return 0;
}

static void mock_close(struct prov_device *d)
{
    free(d->name);
    free(d);
}

static int mock_login(struct prov_device *d, const struct prov_secret *pin)
{
    test_mock.n_logins++;
    note("login");
    return test_mock.fail_login ? prov_fail(test_mock.fail_login, "mock login") : 0;
}

static int mock_identity(struct prov_device *d, char *buf, size_t len)
{
    snprintf(buf, len, "mock");
    return 0;
}

static struct prov_key *wrap_key(struct prov_device *d, EVP_PKEY *priv, const unsigned char *id,
                                 size_t id_len)
{
    struct prov_key *k = calloc(1, sizeof(*k));
    struct mock_key *mk = calloc(1, sizeof(*mk));
    unsigned char *der = NULL;
    const unsigned char *p;
    int len;

    k->dev = d;
    k->type = prov_key_type_of(priv);
    memcpy(k->id, id, id_len);
    k->id_len = id_len;
    len = i2d_PUBKEY(priv, &der);
    p = der;
    k->pub = d2i_PUBKEY(NULL, &p, len);
    OPENSSL_free(der);
    k->uri = strdup("mock:key");
    mk->priv = priv;
    if (test_mock.sign_with_other_key) {
        mk->other = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    }
    k->priv = mk;
    return k;
}

static int mock_generate(struct prov_device *d, const struct prov_keygen_params *kp,
                         struct prov_key **out)
{
    EVP_PKEY *priv = EVP_PKEY_Q_keygen(NULL, NULL, "EC",
                                       kp->type == PROV_KEY_EC_P384 ? "P-384" : "P-256");

    assert_non_null(priv);
    assert_non_null(kp->id);
    assert_true(kp->id_len > 0);
    test_mock.n_generated++;
    note("generate");
    EVP_PKEY_free(test_mock.last_key);
    EVP_PKEY_up_ref(priv);
    test_mock.last_key = priv;
    *out = wrap_key(d, priv, kp->id, kp->id_len);
    return 0;
}

static int mock_find(struct prov_device *d, const char *uri, struct prov_key **out)
{
    return prov_fail(PROV_ERR_NOT_FOUND, "mock: no key %s", uri);
}

static int mock_find_id(struct prov_device *d, const unsigned char *id, size_t len,
                        struct prov_key **out)
{
    return prov_fail(PROV_ERR_NOT_FOUND, "mock: no key");
}

static int mock_find_pub(struct prov_device *d, EVP_PKEY *pub, struct prov_key **out)
{
    static const unsigned char id[] = {0x01};

    note("find");
    if (test_mock.last_key == NULL || EVP_PKEY_eq(test_mock.last_key, pub) != 1) {
        return prov_fail(PROV_ERR_NOT_FOUND, "mock: no key");
    }
    EVP_PKEY_up_ref(test_mock.last_key);
    *out = wrap_key(d, test_mock.last_key, id, sizeof(id));
    return 0;
}

static int mock_props(struct prov_device *d, struct prov_key *k, struct prov_key_props *pr)
{
    note("props");
    *pr = (struct prov_key_props){
        .is_private_token_object = true,
        .is_sensitive = true,
        .is_extractable = test_mock.is_extractable,
        .is_never_extractable = !test_mock.is_extractable && !test_mock.was_extractable,
        .is_local = !test_mock.is_not_local,
        .can_sign = true,
        .can_decrypt = test_mock.can_decrypt,
    };
    return 0;
}

static int mock_sign(struct prov_device *d, struct prov_key *k, enum prov_sig_mech mech,
                     const unsigned char *in, size_t in_len, unsigned char *sig, size_t *sig_len)
{
    struct mock_key *mk = k->priv;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(mk->other ? mk->other : mk->priv, NULL);
    int ok;

    note("sign");
    assert_int_equal(mech, PROV_SIG_ECDSA);
    ok = ctx && EVP_PKEY_sign_init(ctx) == 1 && EVP_PKEY_sign(ctx, sig, sig_len, in, in_len) == 1;
    EVP_PKEY_CTX_free(ctx);
    return ok ? 0 : PROV_ERR_DEVICE;
}

static int mock_store(struct prov_device *d, struct prov_key *k, X509 *cert)
{
    note("store");
    if (test_mock.fail_store_cert) {
        return prov_fail(test_mock.fail_store_cert, "mock: store_certificate failed");
    }
    test_mock.n_stored++;
    return 0;
}

static int mock_delete(struct prov_device *d, struct prov_key *k)
{
    note("delete");
    test_mock.n_deleted++;
    return 0;
}

static void mock_free_key(struct prov_device *d, struct prov_key *k)
{
    struct mock_key *mk = k->priv;

    EVP_PKEY_free(mk->priv);
    EVP_PKEY_free(mk->other);
    free(mk);
    EVP_PKEY_free(k->pub);
    free(k->uri);
    free(k->label);
    free(k);
}

const struct prov_backend_ops test_mock_ops = {
    .name = "mock",
    .handles = mock_handles,
    .open = mock_open,
    .close = mock_close,
    .login = mock_login,
    .identity = mock_identity,
    .generate_key = mock_generate,
    .find_key = mock_find,
    .find_key_by_id = mock_find_id,
    .find_key_by_public = mock_find_pub,
    .key_props = mock_props,
    .sign = mock_sign,
    .store_certificate = mock_store,
    .delete_key = mock_delete,
    .free_key = mock_free_key,
};

void test_mock_device_reset(void)
{
    EVP_PKEY_free(test_mock.last_key);
    memset(&test_mock, 0, sizeof(test_mock));
    prov_backend_register(&test_mock_ops);
}
