/* SPDX-License-Identifier: Apache-2.0 */
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/asn1.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/param_build.h>

#include "error.h"
#include "keytype.h"
#include "pkcs11_internal.h"

/* Public keys between PKCS#11 attributes and OpenSSL 3 EVP_PKEYs (no deprecated APIs). */

int prov_pkcs11_get_attr(struct prov_device *dev, CK_OBJECT_HANDLE h, CK_ATTRIBUTE_TYPE type,
                         unsigned char **out, size_t *out_len)
{
    struct p11_dev *d = dev->priv;
    CK_ATTRIBUTE a = {type, NULL, 0};
    unsigned char *buf = NULL;
    CK_RV rv;

    *out = NULL;
    *out_len = 0;
    rv = d->fl->C_GetAttributeValue(d->session, h, &a, 1);
    /* A missing attribute is the caller's to judge: no message recorded for it. */
    if (rv == CKR_ATTRIBUTE_TYPE_INVALID ||
        (rv == CKR_OK && a.ulValueLen == CK_UNAVAILABLE_INFORMATION)) {
        return PROV_ERR_NOT_FOUND;
    }
    if (rv != CKR_OK) {
        return prov_pkcs11_fail_rv(dev, "C_GetAttributeValue", rv);
    }
    buf = malloc(a.ulValueLen + 1);
    if (buf == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "out of memory reading an attribute");
    }
    a.pValue = buf;
    rv = d->fl->C_GetAttributeValue(d->session, h, &a, 1);
    if (rv != CKR_OK) {
        free(buf);
        return prov_pkcs11_fail_rv(dev, "C_GetAttributeValue", rv);
    }
    buf[a.ulValueLen] = '\0';
    *out = buf;
    *out_len = a.ulValueLen;
    return 0;
}

int prov_pkcs11_ec_params(int nid, unsigned char **out, size_t *out_len)
{
    const ASN1_OBJECT *obj = OBJ_nid2obj(nid);
    unsigned char *buf = NULL, *p;
    int len;

    *out = NULL;
    *out_len = 0;
    len = obj != NULL ? i2d_ASN1_OBJECT(obj, NULL) : -1;
    if (len <= 0) {
        return prov_fail(PROV_ERR_INTERNAL, "no OID for curve %d", nid);
    }
    buf = malloc((size_t)len);
    if (buf == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "out of memory");
    }
    p = buf;
    if (i2d_ASN1_OBJECT(obj, &p) != len) {
        free(buf);
        return prov_fail_ossl(PROV_ERR_INTERNAL, "encoding the curve OID");
    }
    *out = buf;
    *out_len = (size_t)len;
    return 0;
}

/* The curve named by a DER OID (CKA_EC_PARAMS), or NID_undef. */
static int curve_of_params(const unsigned char *der, size_t len)
{
    const unsigned char *p = der;
    ASN1_OBJECT *obj = d2i_ASN1_OBJECT(NULL, &p, (long)len);
    int nid = NID_undef;

    if (obj != NULL && p == der + len) {
        nid = OBJ_obj2nid(obj);
    }
    ASN1_OBJECT_free(obj);
    return nid;
}

/*
 * The EC point from CKA_EC_POINT. PKCS#11 says DER OCTET STRING (SoftHSM2 does so); some
 * tokens return the raw point. The lengths tell them apart: a raw point on a curve of fb-byte
 * field elements is 1 + fb or 1 + 2 fb bytes, its DER wrapping always 2 or 3 bytes more.
 */
static int ec_point_raw(const unsigned char *v, size_t len, size_t fb, const unsigned char **pt,
                        size_t *pt_len)
{
    const unsigned char *p = v;
    ASN1_OCTET_STRING *os = NULL;
    int r = PROV_ERR_DEVICE;

    if (len == 1 + fb || len == 1 + 2 * fb) {
        *pt = v;
        *pt_len = len;
        return 0;
    }
    os = d2i_ASN1_OCTET_STRING(NULL, &p, (long)len);
    if (os != NULL && p == v + len) {
        size_t n = (size_t)ASN1_STRING_length(os);

        if (n == 1 + fb || n == 1 + 2 * fb) {
            /* The content sits at the end of the DER encoding. */
            *pt = v + len - n;
            *pt_len = n;
            r = 0;
        }
    }
    ASN1_OCTET_STRING_free(os);
    return r;
}

/* The curve's field size in bytes; the curve's group is the process's (keytype.h). */
static int field_bytes(int nid, size_t *fb)
{
    const EC_GROUP *g = prov_key_type_ec_group(nid);

    if (g == NULL) {
        return PROV_ERR_UNSUPPORTED;
    }
    *fb = ((size_t)EC_GROUP_get_degree(g) + 7) / 8;
    return 0;
}

static int pkey_fromdata(const char *alg, OSSL_PARAM_BLD *bld, EVP_PKEY **out)
{
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, alg, NULL);
    int r = PROV_ERR_CRYPTO;

    if (params != NULL && ctx != NULL && EVP_PKEY_fromdata_init(ctx) == 1 &&
        EVP_PKEY_fromdata(ctx, out, EVP_PKEY_PUBLIC_KEY, params) == 1) {
        r = 0;
    }
    OSSL_PARAM_free(params);
    EVP_PKEY_CTX_free(ctx);
    return r;
}

/*
 * One public key per curve read before, kept as the template of the next ones: a copy of it
 * with its point replaced (EC_KEY_oct2key, which refuses a point that is not on the curve)
 * shares the curve's group, where EVP_PKEY_fromdata builds it again, about 0.14 M
 * instructions for every device key a batch reads back (bench/README.md, "Profile"). Only
 * uncompressed points take this way: the key's point format follows the encoding it was set
 * from, and a key read from a compressed point stays as EVP_PKEY_fromdata makes it.
 */
#define TEMPLATES_KEPT 8

static pthread_mutex_t templates_lock = PTHREAD_MUTEX_INITIALIZER;
static size_t n_templates;
static struct {
    int nid;
    EVP_PKEY *pkey;
} templates[TEMPLATES_KEPT];

/* A new key on curve nid with the uncompressed point pt, from the curve's template; or NULL. */
static EVP_PKEY *from_template(int nid, const unsigned char *pt, size_t pt_len)
{
    EVP_PKEY *k = NULL;

    if (pt_len == 0 || pt[0] != POINT_CONVERSION_UNCOMPRESSED) {
        return NULL;
    }
    pthread_mutex_lock(&templates_lock);
    for (size_t i = 0; i < n_templates && k == NULL; i++) {
        if (templates[i].nid == nid) {
            k = EVP_PKEY_dup(templates[i].pkey);
        }
    }
    pthread_mutex_unlock(&templates_lock);
    if (k != NULL &&
        EVP_PKEY_set_octet_string_param(k, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, pt, pt_len) != 1) {
        EVP_PKEY_free(k);
        k = NULL;
    }
    ERR_clear_error();
    return k;
}

/* Keeps a copy of pkey, just made from an uncompressed point, as curve nid's template. */
static void keep_template(int nid, const unsigned char *pt, EVP_PKEY *pkey)
{
    bool is_kept = false;

    if (pt[0] != POINT_CONVERSION_UNCOMPRESSED) {
        return;
    }
    pthread_mutex_lock(&templates_lock);
    for (size_t i = 0; i < n_templates && !is_kept; i++) {
        is_kept = templates[i].nid == nid;
    }
    if (!is_kept && n_templates < TEMPLATES_KEPT &&
        (templates[n_templates].pkey = EVP_PKEY_dup(pkey)) != NULL) {
        templates[n_templates++].nid = nid;
    }
    pthread_mutex_unlock(&templates_lock);
    ERR_clear_error();
}

/* The EVP_PKEY of an EC public key from its CKA_EC_PARAMS and CKA_EC_POINT values. */
static int ec_from_attrs(struct prov_device *dev, const unsigned char *params, size_t params_len,
                         const unsigned char *point, size_t point_len, EVP_PKEY **out)
{
    size_t fb = 0, pt_len = 0;
    const unsigned char *pt = NULL;
    OSSL_PARAM_BLD *bld = NULL;
    int nid, r;

    nid = curve_of_params(params, params_len);
    if (nid == NID_undef || field_bytes(nid, &fb) < 0) {
        return prov_fail(PROV_ERR_UNSUPPORTED, "%s: EC key on an unknown curve", dev->name);
    }
    if (ec_point_raw(point, point_len, fb, &pt, &pt_len) < 0) {
        return prov_fail(PROV_ERR_DEVICE, "%s: malformed CKA_EC_POINT (%zu bytes)", dev->name,
                         point_len);
    }
    *out = from_template(nid, pt, pt_len);
    if (*out != NULL) {
        return 0;
    }
    bld = OSSL_PARAM_BLD_new();
    if (bld == NULL ||
        !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, OBJ_nid2sn(nid), 0) ||
        !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pt, pt_len)) {
        r = prov_fail_ossl(PROV_ERR_NOMEM, "%s: building the EC public key", dev->name);
    } else if ((r = pkey_fromdata("EC", bld, out)) < 0) {
        r = prov_fail_ossl(PROV_ERR_DEVICE, "%s: the token's EC point is not on %s", dev->name,
                           OBJ_nid2sn(nid));
    } else {
        keep_template(nid, pt, *out);
    }
    OSSL_PARAM_BLD_free(bld);
    return r;
}

static int read_ec(struct prov_device *dev, CK_OBJECT_HANDLE h, EVP_PKEY **out)
{
    unsigned char *params = NULL, *point = NULL;
    size_t params_len, point_len;
    int r;

    r = prov_pkcs11_get_attr(dev, h, CKA_EC_PARAMS, &params, &params_len);
    if (r == 0) {
        r = prov_pkcs11_get_attr(dev, h, CKA_EC_POINT, &point, &point_len);
    }
    if (r < 0) {
        r = prov_fail(r == PROV_ERR_NOT_FOUND ? PROV_ERR_DEVICE : r,
                      "%s: EC public key without CKA_EC_PARAMS/CKA_EC_POINT", dev->name);
    } else {
        r = ec_from_attrs(dev, params, params_len, point, point_len, out);
    }
    free(params);
    free(point);
    return r;
}

static int read_rsa(struct prov_device *dev, CK_OBJECT_HANDLE h, EVP_PKEY **out)
{
    unsigned char *mod = NULL, *exp = NULL;
    size_t mod_len, exp_len;
    BIGNUM *n = NULL, *e = NULL;
    OSSL_PARAM_BLD *bld = NULL;
    int r;

    r = prov_pkcs11_get_attr(dev, h, CKA_MODULUS, &mod, &mod_len);
    if (r == 0) {
        r = prov_pkcs11_get_attr(dev, h, CKA_PUBLIC_EXPONENT, &exp, &exp_len);
    }
    if (r < 0) {
        r = prov_fail(r == PROV_ERR_NOT_FOUND ? PROV_ERR_DEVICE : r,
                      "%s: RSA public key without CKA_MODULUS/CKA_PUBLIC_EXPONENT", dev->name);
        goto out;
    }
    n = BN_bin2bn(mod, (int)mod_len, NULL);
    e = BN_bin2bn(exp, (int)exp_len, NULL);
    bld = OSSL_PARAM_BLD_new();
    if (n == NULL || e == NULL || bld == NULL ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e)) {
        r = prov_fail_ossl(PROV_ERR_NOMEM, "%s: building the RSA public key", dev->name);
        goto out;
    }
    r = pkey_fromdata("RSA", bld, out);
    if (r < 0) {
        r = prov_fail_ossl(PROV_ERR_DEVICE, "%s: unusable RSA public key", dev->name);
    }
out:
    OSSL_PARAM_BLD_free(bld);
    BN_free(n);
    BN_free(e);
    free(mod);
    free(exp);
    return r;
}

/*
 * Room for the EC attributes of any curve the tool knows (P-521: a 9-byte OID, a 133-byte
 * point in a 3-byte DER header), so that an EC key is read in one C_GetAttributeValue: on a
 * smart card each call is a round trip, and on SoftHSM2 each one opens and locks the object's
 * file. A longer value (an unknown curve) makes the token refuse the call, and then the
 * attributes are read one by one, lengths first, as for RSA.
 */
#define EC_PARAMS_ROOM 32
#define EC_POINT_ROOM 160

int prov_pkcs11_read_public(struct prov_device *dev, CK_OBJECT_HANDLE h, EVP_PKEY **out)
{
    struct p11_dev *d = dev->priv;
    CK_KEY_TYPE kt = (CK_KEY_TYPE)-1;
    unsigned char params[EC_PARAMS_ROOM];
    unsigned char point[EC_POINT_ROOM];
    CK_ATTRIBUTE t[] = {
        {CKA_KEY_TYPE, &kt, sizeof(kt)},
        {CKA_EC_PARAMS, params, sizeof(params)},
        {CKA_EC_POINT, point, sizeof(point)},
    };
    CK_RV rv;

    *out = NULL;
    rv = d->fl->C_GetAttributeValue(d->session, h, t, 3);
    if (rv == CKR_OK && kt == CKK_EC && t[1].ulValueLen <= sizeof(params) &&
        t[2].ulValueLen <= sizeof(point)) {
        return ec_from_attrs(dev, params, t[1].ulValueLen, point, t[2].ulValueLen, out);
    }
    /* Not EC, or a value that did not fit: the key type alone, then attribute by attribute. */
    kt = (CK_KEY_TYPE)-1;
    rv = d->fl->C_GetAttributeValue(d->session, h, t, 1);
    if (rv != CKR_OK) {
        return prov_pkcs11_fail_rv(dev, "C_GetAttributeValue(CKA_KEY_TYPE)", rv);
    }
    if (kt == CKK_EC) {
        return read_ec(dev, h, out);
    }
    if (kt == CKK_RSA) {
        return read_rsa(dev, h, out);
    }
    return prov_fail(PROV_ERR_UNSUPPORTED, "%s: key type 0x%lx is neither EC nor RSA", dev->name,
                     (unsigned long)kt);
}
