/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/asn1.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/objects.h>
#include <openssl/x509.h>

#include "cert_der.h"
#include "error.h"
#include "keytype.h"
#include "log.h"
#include "pkcs11_internal.h"

/*
 * Keys on a token. Every lookup is one C_FindObjects over an attribute template (class plus
 * CKA_ID, CKA_LABEL or the public key value): the cost per device must not grow with the
 * number of keys on the token (doc/platform.md, "Finding a key by listing the token").
 */

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static CK_BBOOL ck_true = CK_TRUE;
static CK_BBOOL ck_false = CK_FALSE;

/* An id as hex for messages (64 bytes at most: key->id). */
static void hex(const unsigned char *id, size_t len, char *buf, size_t buf_len)
{
    buf[0] = '\0';
    for (size_t i = 0; i < len && 2 * i + 2 < buf_len; i++) {
        snprintf(buf + 2 * i, 3, "%02x", id[i]);
    }
}

/* Up to max objects matching tmpl; *count says how many. Records an error only on failure. */
static int find_objects(struct prov_device *dev, CK_ATTRIBUTE *tmpl, CK_ULONG n,
                        CK_OBJECT_HANDLE *found, CK_ULONG max, CK_ULONG *count)
{
    struct p11_dev *d = dev->priv;
    CK_ULONG got = 0;
    CK_RV rv, rv_final;

    *count = 0;
    rv = d->fl->C_FindObjectsInit(d->session, tmpl, n);
    if (rv != CKR_OK) {
        return prov_pkcs11_fail_rv(dev, "C_FindObjectsInit", rv);
    }
    do {
        rv = d->fl->C_FindObjects(d->session, found + *count, max - *count, &got);
        if (rv == CKR_OK) {
            *count += got;
        }
    } while (rv == CKR_OK && got > 0 && *count < max);
    rv_final = d->fl->C_FindObjectsFinal(d->session);
    if (rv != CKR_OK) {
        return prov_pkcs11_fail_rv(dev, "C_FindObjects", rv);
    }
    if (rv_final != CKR_OK) {
        return prov_pkcs11_fail_rv(dev, "C_FindObjectsFinal", rv_final);
    }
    return 0;
}

static int find_by_id(struct prov_device *dev, CK_OBJECT_CLASS cls, const unsigned char *id,
                      size_t id_len, CK_OBJECT_HANDLE *found, CK_ULONG max, CK_ULONG *count)
{
    CK_ATTRIBUTE tmpl[] = {
        {CKA_CLASS, &cls, sizeof(cls)},
        {CKA_ID, (void *)id, id_len},
    };

    return find_objects(dev, tmpl, ARRAY_LEN(tmpl), found, max, count);
}

/*
 * Destroys every object of class cls with this CKA_ID except the handle keep. Found and
 * destroyed in rounds: no find operation is active while objects are destroyed.
 */
static int destroy_by_id(struct prov_device *dev, CK_OBJECT_CLASS cls, const unsigned char *id,
                         size_t id_len, CK_OBJECT_HANDLE keep)
{
    struct p11_dev *d = dev->priv;
    CK_OBJECT_HANDLE found[16];
    CK_ULONG count, destroyed;
    int r;

    do {
        r = find_by_id(dev, cls, id, id_len, found, ARRAY_LEN(found), &count);
        if (r < 0) {
            return r;
        }
        destroyed = 0;
        for (CK_ULONG i = 0; i < count; i++) {
            CK_RV rv;

            if (found[i] == keep) {
                continue;
            }
            rv = d->fl->C_DestroyObject(d->session, found[i]);
            if (rv != CKR_OK) {
                return prov_pkcs11_fail_rv(dev, "C_DestroyObject", rv);
            }
            destroyed++;
        }
    } while (destroyed > 0);
    return 0;
}

/* key.uri: the token (label, serial, manufacturer, model), id, object, type=private. */
static int key_uri(struct prov_device *dev, const unsigned char *id, size_t id_len,
                   const char *label, char **out)
{
    struct p11_dev *d = dev->priv;
    P11KitUri *uri = p11_kit_uri_new();
    CK_TOKEN_INFO *ti;
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
    CK_ATTRIBUTE a_cls = {CKA_CLASS, &cls, sizeof(cls)};
    CK_ATTRIBUTE a_id = {CKA_ID, (void *)id, id_len};
    CK_ATTRIBUTE a_label = {CKA_LABEL, (void *)label, label ? strlen(label) : 0};
    int r = PROV_ERR_NOMEM;

    *out = NULL;
    if (uri == NULL) {
        goto out;
    }
    ti = p11_kit_uri_get_token_info(uri);
    memcpy(ti->label, d->info.label, sizeof(ti->label));
    memcpy(ti->serialNumber, d->info.serialNumber, sizeof(ti->serialNumber));
    memcpy(ti->manufacturerID, d->info.manufacturerID, sizeof(ti->manufacturerID));
    memcpy(ti->model, d->info.model, sizeof(ti->model));
    if (p11_kit_uri_set_attribute(uri, &a_cls) != P11_KIT_URI_OK ||
        (id_len > 0 && p11_kit_uri_set_attribute(uri, &a_id) != P11_KIT_URI_OK) ||
        (label != NULL && p11_kit_uri_set_attribute(uri, &a_label) != P11_KIT_URI_OK)) {
        goto out;
    }
    /* Only repeat the module when the device URI named one: else config/proxy decide. */
    if (d->is_module_from_uri) {
        p11_kit_uri_set_module_path(uri, d->module_path);
    }
    if (p11_kit_uri_format(uri, P11_KIT_URI_FOR_OBJECT_ON_TOKEN, out) != P11_KIT_URI_OK) {
        *out = NULL;
        goto out;
    }
    r = 0;
out:
    if (r < 0) {
        prov_fail(r, "%s: out of memory formatting a key URI", dev->name);
    }
    p11_kit_uri_free(uri);
    return r;
}

/* A struct prov_key taking ownership of pub. */
static int key_new(struct prov_device *dev, CK_OBJECT_HANDLE hpriv, CK_OBJECT_HANDLE hpub,
                   EVP_PKEY *pub, const unsigned char *id, size_t id_len, const char *label,
                   struct prov_key **out)
{
    struct prov_key *key = calloc(1, sizeof(*key));
    struct p11_key *k = calloc(1, sizeof(*k));
    int r = PROV_ERR_NOMEM;

    *out = NULL;
    if (key == NULL || k == NULL) {
        free(k);
        goto out;
    }
    key->dev = dev;
    key->priv = k;
    k->priv = hpriv;
    k->pub = hpub;
    key->type = prov_key_type_of(pub);
    if (key->type == PROV_KEY_NONE) {
        r = prov_fail(PROV_ERR_UNSUPPORTED, "%s: key is not ec-p256, ec-p384, rsa-2048 or rsa-3072",
                      dev->name);
        goto out;
    }
    if (id_len > sizeof(key->id)) {
        r = prov_fail(PROV_ERR_UNSUPPORTED, "%s: CKA_ID longer than %zu bytes", dev->name,
                      sizeof(key->id));
        goto out;
    }
    memcpy(key->id, id, id_len);
    key->id_len = id_len;
    if (label != NULL && (key->label = strdup(label)) == NULL) {
        goto out;
    }
    r = key_uri(dev, id, id_len, label, &key->uri);
    if (r < 0) {
        goto out;
    }
    key->pub = pub;
    pub = NULL;
    *out = key;
    key = NULL;
    r = 0;
out:
    if (r == PROV_ERR_NOMEM) {
        prov_fail(r, "%s: out of memory", dev->name);
    }
    EVP_PKEY_free(pub);
    prov_pkcs11_free_key(dev, key);
    return r;
}

/* The public key from the certificate with this CKA_ID; PROV_ERR_NOT_FOUND without message. */
static int public_from_cert(struct prov_device *dev, const unsigned char *id, size_t id_len,
                            EVP_PKEY **out)
{
    CK_OBJECT_HANDLE h;
    CK_ULONG count;
    unsigned char *der = NULL;
    const unsigned char *p;
    size_t der_len;
    X509 *cert = NULL;
    int r;

    r = find_by_id(dev, CKO_CERTIFICATE, id, id_len, &h, 1, &count);
    if (r < 0) {
        return r;
    }
    if (count == 0) {
        return PROV_ERR_NOT_FOUND;
    }
    r = prov_pkcs11_get_attr(dev, h, CKA_VALUE, &der, &der_len);
    if (r < 0) {
        return r == PROV_ERR_NOT_FOUND ? prov_fail(PROV_ERR_DEVICE,
                                                   "%s: certificate without "
                                                   "CKA_VALUE",
                                                   dev->name)
                                       : r;
    }
    p = der;
    cert = d2i_X509(NULL, &p, (long)der_len);
    *out = cert != NULL ? X509_get_pubkey(cert) : NULL;
    if (*out == NULL) {
        r = prov_fail_ossl(PROV_ERR_DEVICE, "%s: unreadable certificate on the token", dev->name);
    }
    X509_free(cert);
    free(der);
    return r;
}

/* A prov_key for the private key object hpriv: id, label, and its public half. */
static int load_key(struct prov_device *dev, CK_OBJECT_HANDLE hpriv, struct prov_key **out)
{
    unsigned char *id = NULL, *label = NULL;
    size_t id_len = 0, label_len = 0;
    CK_OBJECT_HANDLE hpub = CK_INVALID_HANDLE;
    CK_ULONG count = 0;
    EVP_PKEY *pub = NULL;
    char idhex[132];
    int r;

    r = prov_pkcs11_get_attr(dev, hpriv, CKA_ID, &id, &id_len);
    if (r < 0 && r != PROV_ERR_NOT_FOUND) {
        goto out;
    }
    r = prov_pkcs11_get_attr(dev, hpriv, CKA_LABEL, &label, &label_len);
    if (r < 0 && r != PROV_ERR_NOT_FOUND) {
        goto out;
    }
    if (label != NULL && label_len == 0) {
        free(label);
        label = NULL;
    }
    if (id_len > 0) {
        r = find_by_id(dev, CKO_PUBLIC_KEY, id, id_len, &hpub, 1, &count);
    } else if (label != NULL) {
        /* No CKA_ID: pair by label (never by enumerating). */
        CK_OBJECT_CLASS cls = CKO_PUBLIC_KEY;
        CK_ATTRIBUTE tmpl[] = {
            {CKA_CLASS, &cls, sizeof(cls)},
            {CKA_LABEL, label, label_len},
        };

        r = find_objects(dev, tmpl, ARRAY_LEN(tmpl), &hpub, 1, &count);
    }
    if (r < 0) {
        goto out;
    }
    if (count == 1) {
        r = prov_pkcs11_read_public(dev, hpub, &pub);
    } else {
        hpub = CK_INVALID_HANDLE;
        r = id_len > 0 ? public_from_cert(dev, id, id_len, &pub) : PROV_ERR_NOT_FOUND;
    }
    if (r == PROV_ERR_NOT_FOUND) {
        hex(id, id_len, idhex, sizeof(idhex));
        r = prov_fail(PROV_ERR_NOT_FOUND,
                      "%s: private key id %s has no public key object or certificate", dev->name,
                      idhex);
    }
    if (r < 0) {
        goto out;
    }
    r = key_new(dev, hpriv, hpub, pub, id, id_len, (const char *)label, out);
out:
    free(id);
    free(label);
    return r;
}

/* The one private key found: NOT_FOUND for none, CONFIG for several. */
static int load_found(struct prov_device *dev, const CK_OBJECT_HANDLE *found, CK_ULONG count,
                      const char *what, struct prov_key **out)
{
    if (count == 0) {
        return prov_fail(PROV_ERR_NOT_FOUND, "%s: no private key %s", dev->name, what);
    }
    if (count > 1) {
        return prov_fail(PROV_ERR_CONFIG,
                         "%s: more than one private key %s; name it by id=", dev->name, what);
    }
    return load_key(dev, found[0], out);
}

/* The single private key matching tmpl. */
static int load_single(struct prov_device *dev, CK_ATTRIBUTE *tmpl, CK_ULONG n, const char *what,
                       struct prov_key **out)
{
    CK_OBJECT_HANDLE found[2];
    CK_ULONG count;
    int r;

    r = find_objects(dev, tmpl, n, found, ARRAY_LEN(found), &count);
    if (r < 0) {
        return r;
    }
    return load_found(dev, found, count, what, out);
}

int prov_pkcs11_find_key(struct prov_device *dev, const char *key_uri, struct prov_key **out)
{
    struct p11_dev *d = dev->priv;
    P11KitUri *uri = NULL;
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
    CK_ATTRIBUTE tmpl[3] = {{CKA_CLASS, &cls, sizeof(cls)}};
    CK_ATTRIBUTE *a;
    CK_ULONG n = 1;
    char what[512];
    int r;

    *out = NULL;
    r = prov_pkcs11_parse_uri(key_uri, "key", &uri);
    if (r < 0) {
        goto out;
    }
    if (!p11_kit_uri_match_token_info(uri, &d->info)) {
        r = prov_fail(PROV_ERR_NOT_FOUND, "key %s: not on %s", prov_pkcs11_shown_uri(key_uri),
                      dev->name);
        goto out;
    }
    a = p11_kit_uri_get_attribute(uri, CKA_CLASS);
    if (a != NULL && (a->ulValueLen != sizeof(CK_OBJECT_CLASS) ||
                      *(CK_OBJECT_CLASS *)a->pValue != CKO_PRIVATE_KEY)) {
        r = prov_fail(PROV_ERR_CONFIG, "key %s: names no private key (use type=private)",
                      prov_pkcs11_shown_uri(key_uri));
        goto out;
    }
    if ((a = p11_kit_uri_get_attribute(uri, CKA_ID)) != NULL) {
        tmpl[n++] = *a;
    }
    if ((a = p11_kit_uri_get_attribute(uri, CKA_LABEL)) != NULL) {
        tmpl[n++] = *a;
    }
    if (n == 1) {
        r = prov_fail(PROV_ERR_CONFIG, "key %s: names no key (add id= or object=)",
                      prov_pkcs11_shown_uri(key_uri));
        goto out;
    }
    snprintf(what, sizeof(what), "matches %s", prov_pkcs11_shown_uri(key_uri));
    r = load_single(dev, tmpl, n, what, out);
out:
    p11_kit_uri_free(uri);
    return r;
}

/*
 * The public key and certificates of a key whose private key is gone: what a kill leaves in
 * the middle of C_GenerateKeyPair (SoftHSM2 writes the public object first) or of delete_key
 * (the private key goes first). They can never sign; removing them here keeps "not found by
 * id" meaning "nothing with this id is left", which resume and cleanup rely on.
 */
static int remove_half_key(struct prov_device *dev, const unsigned char *id, size_t id_len)
{
    struct p11_dev *d = dev->priv;
    CK_OBJECT_HANDLE h;
    CK_ULONG n_pub = 0, n_cert = 0;
    char idhex[132];
    int r;

    r = find_by_id(dev, CKO_PUBLIC_KEY, id, id_len, &h, 1, &n_pub);
    if (r == 0) {
        r = find_by_id(dev, CKO_CERTIFICATE, id, id_len, &h, 1, &n_cert);
    }
    if (r < 0 || (n_pub == 0 && n_cert == 0) || d->is_read_only) {
        return r;
    }
    hex(id, id_len, idhex, sizeof(idhex));
    prov_debug("pkcs11", "%s: id %s has no private key; removing its leftover objects", dev->name,
               idhex);
    r = destroy_by_id(dev, CKO_PUBLIC_KEY, id, id_len, CK_INVALID_HANDLE);
    if (r == 0) {
        r = destroy_by_id(dev, CKO_CERTIFICATE, id, id_len, CK_INVALID_HANDLE);
    }
    return r;
}

int prov_pkcs11_find_key_by_id(struct prov_device *dev, const unsigned char *id, size_t id_len,
                               struct prov_key **out)
{
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
    CK_ATTRIBUTE tmpl[] = {
        {CKA_CLASS, &cls, sizeof(cls)},
        {CKA_ID, (void *)id, id_len},
    };
    CK_OBJECT_HANDLE found[2];
    CK_ULONG count;
    char what[160];
    int r;

    *out = NULL;
    if (id == NULL || id_len == 0) {
        return prov_fail(PROV_ERR_INTERNAL, "%s: find_key_by_id without an id", dev->name);
    }
    memcpy(what, "with id ", 8);
    hex(id, id_len, what + 8, sizeof(what) - 8);
    r = find_objects(dev, tmpl, ARRAY_LEN(tmpl), found, ARRAY_LEN(found), &count);
    if (r == 0 && count == 0) {
        r = remove_half_key(dev, id, id_len);
    }
    if (r < 0) {
        return r;
    }
    return load_found(dev, found, count, what, out);
}

/* DER OCTET STRING around a raw EC point (the PKCS#11 encoding of CKA_EC_POINT). */
static int wrap_octet_string(const unsigned char *pt, size_t len, unsigned char **out,
                             size_t *out_len)
{
    ASN1_OCTET_STRING *os = ASN1_OCTET_STRING_new();
    unsigned char *der = NULL;
    int n = -1;

    if (os != NULL && ASN1_OCTET_STRING_set(os, pt, (int)len) == 1) {
        n = i2d_ASN1_OCTET_STRING(os, &der);
    }
    ASN1_OCTET_STRING_free(os);
    if (n <= 0) {
        return prov_fail_ossl(PROV_ERR_NOMEM, "encoding an EC point");
    }
    *out = der;
    *out_len = (size_t)n;
    return 0;
}

/* The CKO_PUBLIC_KEY holding the EC public key pub: DER-wrapped point first, then raw. */
static int find_ec_public(struct prov_device *dev, EVP_PKEY *pub, CK_OBJECT_HANDLE *h,
                          CK_ULONG *count)
{
    CK_OBJECT_CLASS cls = CKO_PUBLIC_KEY;
    CK_KEY_TYPE kt = CKK_EC;
    unsigned char pt[160], *params = NULL, *wrapped = NULL;
    size_t pt_len = 0, params_len = 0, wrapped_len = 0;
    char group[64];
    int nid, r;

    if (!EVP_PKEY_get_utf8_string_param(pub, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                        NULL) ||
        !EVP_PKEY_get_octet_string_param(pub, OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof(pt), &pt_len)) {
        return prov_fail_ossl(PROV_ERR_INPUT, "%s: cannot read the EC public key", dev->name);
    }
    nid = OBJ_sn2nid(group);
    if (nid == NID_undef) {
        nid = EC_curve_nist2nid(group);
    }
    r = prov_pkcs11_ec_params(nid, &params, &params_len);
    if (r == 0) {
        r = wrap_octet_string(pt, pt_len, &wrapped, &wrapped_len);
    }
    if (r == 0) {
        CK_ATTRIBUTE tmpl[] = {
            {CKA_CLASS, &cls, sizeof(cls)},
            {CKA_KEY_TYPE, &kt, sizeof(kt)},
            {CKA_EC_PARAMS, params, params_len},
            {CKA_EC_POINT, wrapped, wrapped_len},
        };

        r = find_objects(dev, tmpl, ARRAY_LEN(tmpl), h, 1, count);
        if (r == 0 && *count == 0) {
            tmpl[3].pValue = pt;
            tmpl[3].ulValueLen = pt_len;
            r = find_objects(dev, tmpl, ARRAY_LEN(tmpl), h, 1, count);
        }
    }
    free(params);
    OPENSSL_free(wrapped);
    return r;
}

static int find_rsa_public(struct prov_device *dev, EVP_PKEY *pub, CK_OBJECT_HANDLE *h,
                           CK_ULONG *count)
{
    CK_OBJECT_CLASS cls = CKO_PUBLIC_KEY;
    CK_KEY_TYPE kt = CKK_RSA;
    BIGNUM *n = NULL;
    unsigned char *mod = NULL;
    int mod_len, r;

    if (!EVP_PKEY_get_bn_param(pub, OSSL_PKEY_PARAM_RSA_N, &n)) {
        return prov_fail_ossl(PROV_ERR_INPUT, "%s: cannot read the RSA public key", dev->name);
    }
    mod_len = BN_num_bytes(n);
    mod = malloc((size_t)mod_len + 1);
    if (mod == NULL) {
        r = prov_fail(PROV_ERR_NOMEM, "out of memory");
    } else {
        CK_ATTRIBUTE tmpl[] = {
            {CKA_CLASS, &cls, sizeof(cls)},
            {CKA_KEY_TYPE, &kt, sizeof(kt)},
            {CKA_MODULUS, mod, (CK_ULONG)BN_bn2bin(n, mod)},
        };

        r = find_objects(dev, tmpl, ARRAY_LEN(tmpl), h, 1, count);
    }
    free(mod);
    BN_free(n);
    return r;
}

int prov_pkcs11_find_key_by_public(struct prov_device *dev, EVP_PKEY *pub, struct prov_key **out)
{
    CK_OBJECT_HANDLE hpub;
    CK_ULONG count = 0;
    unsigned char *id = NULL;
    size_t id_len = 0;
    int r;

    *out = NULL;
    if (pub != NULL && EVP_PKEY_is_a(pub, "EC")) {
        r = find_ec_public(dev, pub, &hpub, &count);
    } else if (pub != NULL && EVP_PKEY_is_a(pub, "RSA")) {
        r = find_rsa_public(dev, pub, &hpub, &count);
    } else {
        r = prov_fail(PROV_ERR_UNSUPPORTED, "%s: public key is neither EC nor RSA", dev->name);
    }
    if (r < 0) {
        goto out;
    }
    if (count == 0) {
        r = prov_fail(PROV_ERR_NOT_FOUND, "%s: no public key object matches the certificate's key",
                      dev->name);
        goto out;
    }
    r = prov_pkcs11_get_attr(dev, hpub, CKA_ID, &id, &id_len);
    if (r == PROV_ERR_NOT_FOUND || (r == 0 && id_len == 0)) {
        r = prov_fail(PROV_ERR_NOT_FOUND, "%s: the matching public key has no CKA_ID", dev->name);
    }
    if (r < 0) {
        goto out;
    }
    r = prov_pkcs11_find_key_by_id(dev, id, id_len, out);
    if (r < 0) {
        goto out;
    }
    /* Two keys sharing a CKA_ID would pair the wrong halves (doc/platform.md, "Keys without a
     * unique CKA_ID"). */
    if (EVP_PKEY_eq((*out)->pub, pub) != 1) {
        r = prov_fail(PROV_ERR_CONFIG, "%s: key %s: CKA_ID is shared by more than one key",
                      dev->name, (*out)->uri);
        prov_pkcs11_free_key(dev, *out);
        *out = NULL;
    }
out:
    free(id);
    return r;
}

int prov_pkcs11_generate_key(struct prov_device *dev, const struct prov_keygen_params *params,
                             struct prov_key **out)
{
    struct p11_dev *d = dev->priv;
    CK_MECHANISM mech = {CKM_EC_KEY_PAIR_GEN, NULL, 0};
    CK_OBJECT_HANDLE hpub = CK_INVALID_HANDLE, hpriv = CK_INVALID_HANDLE;
    CK_ULONG bits = (CK_ULONG)prov_key_type_rsa_bits(params->type);
    CK_BYTE exponent[] = {0x01, 0x00, 0x01};
    unsigned char *ec_params = NULL;
    size_t ec_params_len = 0;
    size_t label_len = params->label ? strlen(params->label) : 0;
    CK_ATTRIBUTE pub_tmpl[] = {
        {CKA_TOKEN, &ck_true, sizeof(CK_BBOOL)},
        {CKA_PRIVATE, &ck_false, sizeof(CK_BBOOL)},
        {CKA_VERIFY, &ck_true, sizeof(CK_BBOOL)},
        {CKA_ENCRYPT, &ck_false, sizeof(CK_BBOOL)},
        {CKA_WRAP, &ck_false, sizeof(CK_BBOOL)},
        {CKA_DERIVE, &ck_false, sizeof(CK_BBOOL)},
        {CKA_ID, (void *)params->id, params->id_len},
        {CKA_MODULUS_BITS, &bits, sizeof(bits)}, /* or CKA_EC_PARAMS, below */
        {CKA_PUBLIC_EXPONENT, exponent, sizeof(exponent)},
        {CKA_LABEL, (void *)params->label, label_len}, /* last: left out without a label */
    };
    /* Signing only: decrypt/unwrap/derive are off explicitly (doc/platform.md, "Usage flags a
     * token leaves on"). */
    CK_ATTRIBUTE priv_tmpl[] = {
        {CKA_TOKEN, &ck_true, sizeof(CK_BBOOL)},
        {CKA_PRIVATE, &ck_true, sizeof(CK_BBOOL)},
        {CKA_SENSITIVE, &ck_true, sizeof(CK_BBOOL)},
        {CKA_EXTRACTABLE, &ck_false, sizeof(CK_BBOOL)},
        {CKA_SIGN, &ck_true, sizeof(CK_BBOOL)},
        {CKA_DECRYPT, &ck_false, sizeof(CK_BBOOL)},
        {CKA_UNWRAP, &ck_false, sizeof(CK_BBOOL)},
        {CKA_DERIVE, &ck_false, sizeof(CK_BBOOL)},
        {CKA_ID, (void *)params->id, params->id_len},
        {CKA_LABEL, (void *)params->label, label_len},
    };
    CK_ULONG n_pub = ARRAY_LEN(pub_tmpl), n_priv = ARRAY_LEN(priv_tmpl);
    EVP_PKEY *pub = NULL;
    char idhex[132];
    CK_RV rv;
    int r;

    *out = NULL;
    if (params->id == NULL || params->id_len == 0 || params->id_len > sizeof((*out)->id)) {
        return prov_fail(PROV_ERR_INTERNAL, "%s: a key needs a unique CKA_ID of 1..64 bytes",
                         dev->name);
    }
    hex(params->id, params->id_len, idhex, sizeof(idhex));
    if (prov_key_type_is_ec(params->type)) {
        r = prov_pkcs11_ec_params(prov_key_type_curve_nid(params->type), &ec_params,
                                  &ec_params_len);
        if (r < 0) {
            goto out;
        }
        pub_tmpl[7] = (CK_ATTRIBUTE){CKA_EC_PARAMS, ec_params, ec_params_len};
        pub_tmpl[8] = pub_tmpl[9];
        n_pub--;
    } else if (bits > 0) {
        mech.mechanism = CKM_RSA_PKCS_KEY_PAIR_GEN;
    } else {
        r = prov_fail(PROV_ERR_UNSUPPORTED, "%s: cannot generate a key of type %s", dev->name,
                      prov_key_type_name(params->type));
        goto out;
    }
    if (params->label == NULL) {
        n_pub--;
        n_priv--;
    }
    rv = d->fl->C_GenerateKeyPair(d->session, &mech, pub_tmpl, n_pub, priv_tmpl, n_priv, &hpub,
                                  &hpriv);
    if (rv != CKR_OK) {
        hpub = hpriv = CK_INVALID_HANDLE;
        r = prov_pkcs11_fail_rv(dev, "C_GenerateKeyPair", rv);
        goto out;
    }
    prov_debug("pkcs11", "%s: generated %s key id %s", dev->name, prov_key_type_name(params->type),
               idhex);
    r = prov_pkcs11_read_public(dev, hpub, &pub);
    if (r < 0) {
        goto out;
    }
    if (prov_key_type_of(pub) != params->type) {
        r = prov_fail(PROV_ERR_DEVICE, "%s: asked for a %s key, the token made another kind",
                      dev->name, prov_key_type_name(params->type));
        goto out;
    }
    r = key_new(dev, hpriv, hpub, pub, params->id, params->id_len, params->label, out);
    pub = NULL;
    if (r == 0) {
        ((struct p11_key *)(*out)->priv)->has_no_cert = true;
    }
out:
    if (r < 0 && hpriv != CK_INVALID_HANDLE) {
        /* Never leave half a key behind: the caller records nothing for it. */
        d->fl->C_DestroyObject(d->session, hpriv);
        d->fl->C_DestroyObject(d->session, hpub);
    }
    EVP_PKEY_free(pub);
    free(ec_params);
    return r;
}

int prov_pkcs11_key_props(struct prov_device *dev, struct prov_key *key, struct prov_key_props *out)
{
    struct p11_dev *d = dev->priv;
    struct p11_key *k = key->priv;
    enum {
        TOKEN,
        PRIVATE,
        SENSITIVE,
        EXTRACTABLE,
        NEVER_EXTRACTABLE,
        LOCAL,
        SIGN,
        DECRYPT,
        UNWRAP,
        DERIVE,
        N_PROPS
    };
    static const CK_ATTRIBUTE_TYPE types[N_PROPS] = {
        CKA_TOKEN, CKA_PRIVATE, CKA_SENSITIVE, CKA_EXTRACTABLE, CKA_NEVER_EXTRACTABLE,
        CKA_LOCAL, CKA_SIGN,    CKA_DECRYPT,   CKA_UNWRAP,      CKA_DERIVE,
    };
    CK_BBOOL v[N_PROPS];
    CK_ATTRIBUTE tmpl[N_PROPS];
    CK_SESSION_HANDLE session;
    CK_RV rv;

    memset(out, 0, sizeof(*out));
    for (int i = 0; i < N_PROPS; i++) {
        v[i] = CK_FALSE;
        tmpl[i] = (CK_ATTRIBUTE){types[i], &v[i], sizeof(CK_BBOOL)};
    }
    /* the CA service looks at its CA key this way while workers sign (struct p11_dev) */
    session = prov_pkcs11_session_take(d);
    rv = d->fl->C_GetAttributeValue(session, k->priv, tmpl, N_PROPS);
    prov_pkcs11_session_put(d, session, rv);
    /* An attribute the key type lacks comes back unavailable and counts as false. */
    if (rv != CKR_OK && rv != CKR_ATTRIBUTE_TYPE_INVALID && rv != CKR_ATTRIBUTE_SENSITIVE) {
        return prov_pkcs11_fail_rv(dev, "C_GetAttributeValue", rv);
    }
    for (int i = 0; i < N_PROPS; i++) {
        if (tmpl[i].ulValueLen != sizeof(CK_BBOOL)) {
            v[i] = CK_FALSE;
        }
    }
    out->is_private_token_object = v[TOKEN] && v[PRIVATE];
    out->is_sensitive = v[SENSITIVE];
    out->is_extractable = v[EXTRACTABLE];
    out->is_never_extractable = v[NEVER_EXTRACTABLE];
    out->is_local = v[LOCAL];
    out->can_sign = v[SIGN];
    out->can_decrypt = v[DECRYPT] || v[UNWRAP] || v[DERIVE];
    return 0;
}

/* r || s (each half the length) from the token as a DER ECDSA-Sig-Value. */
static int ecdsa_der(struct prov_device *dev, const unsigned char *rs, size_t len,
                     unsigned char *sig, size_t *sig_len)
{
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *r_bn = BN_bin2bn(rs, (int)(len / 2), NULL);
    BIGNUM *s_bn = BN_bin2bn(rs + len / 2, (int)(len / 2), NULL);
    unsigned char *p = sig;
    int need, r = PROV_ERR_CRYPTO;

    if (es == NULL || r_bn == NULL || s_bn == NULL || len % 2 != 0 ||
        ECDSA_SIG_set0(es, r_bn, s_bn) != 1) {
        BN_free(r_bn);
        BN_free(s_bn);
        r = prov_fail_ossl(PROV_ERR_CRYPTO, "%s: cannot encode the ECDSA signature", dev->name);
        goto out;
    }
    need = i2d_ECDSA_SIG(es, NULL);
    if (need <= 0 || (size_t)need > *sig_len) {
        r = prov_fail(PROV_ERR_INTERNAL, "%s: signature buffer too small (%zu < %d)", dev->name,
                      *sig_len, need);
        goto out;
    }
    *sig_len = (size_t)i2d_ECDSA_SIG(es, &p);
    r = 0;
out:
    ECDSA_SIG_free(es);
    return r;
}

int prov_pkcs11_sign(struct prov_device *dev, struct prov_key *key, enum prov_sig_mech mech,
                     const unsigned char *in, size_t in_len, unsigned char *sig, size_t *sig_len)
{
    struct p11_dev *d = dev->priv;
    struct p11_key *k = key->priv;
    CK_MECHANISM m = {CKM_ECDSA, NULL, 0};
    /* Room for RSA-8192; a buffer too small would leave the operation active. */
    unsigned char buf[1024];
    CK_ULONG len = sizeof(buf);
    CK_SESSION_HANDLE session;
    CK_RV rv;

    switch (mech) {
    case PROV_SIG_ECDSA: m.mechanism = CKM_ECDSA; break;
    case PROV_SIG_RSA_PKCS1: m.mechanism = CKM_RSA_PKCS; break;
    case PROV_SIG_RSA_RAW: m.mechanism = CKM_RSA_X_509; break;
    default: return prov_fail(PROV_ERR_INTERNAL, "%s: unknown signature mechanism", dev->name);
    }
    session = prov_pkcs11_session_take(d);
    rv = d->fl->C_SignInit(session, &m, k->priv);
    if (rv != CKR_OK) {
        prov_pkcs11_session_put(d, session, rv);
        return prov_pkcs11_fail_rv(dev, "C_SignInit", rv);
    }
    rv = d->fl->C_Sign(session, (CK_BYTE_PTR)in, in_len, buf, &len);
    prov_pkcs11_session_put(d, session, rv);
    if (rv != CKR_OK) {
        return prov_pkcs11_fail_rv(dev, "C_Sign", rv);
    }
    if (mech == PROV_SIG_ECDSA) {
        return ecdsa_der(dev, buf, len, sig, sig_len);
    }
    if (len > *sig_len) {
        return prov_fail(PROV_ERR_INTERNAL, "%s: signature buffer too small (%zu < %lu)", dev->name,
                         *sig_len, (unsigned long)len);
    }
    memcpy(sig, buf, len);
    *sig_len = len;
    return 0;
}

int prov_pkcs11_store_certificate(struct prov_device *dev, struct prov_key *key, X509 *cert)
{
    struct p11_dev *d = dev->priv;
    struct p11_key *k = key->priv;
    unsigned char *value = NULL, *subject = NULL, *issuer = NULL, *serial = NULL;
    int value_len, subject_len, issuer_len, serial_len;
    size_t der_len = 0;
    CK_OBJECT_CLASS cls = CKO_CERTIFICATE;
    CK_CERTIFICATE_TYPE ct = CKC_X_509;
    CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
    CK_RV rv;
    int r;

    if (key->id_len == 0) {
        return prov_fail(PROV_ERR_CONFIG, "%s: key %s has no CKA_ID to store a certificate under",
                         dev->name, key->uri);
    }
    /* Stored under the key's CKA_ID, it would replace the key's own certificate. */
    if (key->pub != NULL && !prov_key_type_spki_holds(X509_get_X509_PUBKEY(cert), key->pub)) {
        return prov_fail(PROV_ERR_INPUT, "%s: the certificate is not for key %s", dev->name,
                         key->uri);
    }
    /* i2d with a NULL output pointer allocates (OPENSSL_malloc); the DER is kept with the
     * certificate object (provisioner/support/cert_der.h). */
    value_len = prov_cert_der(cert, &value, &der_len) == 0 ? (int)der_len : -1;
    subject_len = i2d_X509_NAME(X509_get_subject_name(cert), &subject);
    issuer_len = i2d_X509_NAME(X509_get_issuer_name(cert), &issuer);
    serial_len = i2d_ASN1_INTEGER(X509_get0_serialNumber(cert), &serial);
    if (value_len <= 0 || subject_len <= 0 || issuer_len <= 0 || serial_len <= 0) {
        r = prov_fail_ossl(PROV_ERR_CRYPTO, "%s: cannot encode the certificate", dev->name);
        goto out;
    }
    {
        CK_ATTRIBUTE tmpl[] = {
            {CKA_CLASS, &cls, sizeof(cls)},
            {CKA_CERTIFICATE_TYPE, &ct, sizeof(ct)},
            {CKA_TOKEN, &ck_true, sizeof(CK_BBOOL)},
            {CKA_PRIVATE, &ck_false, sizeof(CK_BBOOL)},
            {CKA_ID, key->id, key->id_len},
            {CKA_SUBJECT, subject, (CK_ULONG)subject_len},
            {CKA_ISSUER, issuer, (CK_ULONG)issuer_len},
            {CKA_SERIAL_NUMBER, serial, (CK_ULONG)serial_len},
            {CKA_VALUE, value, (CK_ULONG)value_len},
            {CKA_LABEL, key->label, key->label ? strlen(key->label) : 0},
        };

        /* Created before the old one goes: a failure never leaves the key without one. */
        rv = d->fl->C_CreateObject(d->session, tmpl, ARRAY_LEN(tmpl) - (key->label ? 0 : 1), &h);
    }
    if (rv != CKR_OK) {
        r = prov_pkcs11_fail_rv(dev, "C_CreateObject(certificate)", rv);
        goto out;
    }
    r = k->has_no_cert ? 0 : destroy_by_id(dev, CKO_CERTIFICATE, key->id, key->id_len, h);
    if (r == 0) {
        k->has_no_cert = false;
        prov_debug("pkcs11", "%s: certificate stored for %s", dev->name, key->uri);
    }
out:
    OPENSSL_free(value);
    OPENSSL_free(subject);
    OPENSSL_free(issuer);
    OPENSSL_free(serial);
    return r;
}

int prov_pkcs11_delete_key(struct prov_device *dev, struct prov_key *key)
{
    struct p11_dev *d = dev->priv;
    struct p11_key *k = key->priv;
    CK_RV rv;
    int r;

    if (k->priv != CK_INVALID_HANDLE) {
        rv = d->fl->C_DestroyObject(d->session, k->priv);
        if (rv != CKR_OK && rv != CKR_OBJECT_HANDLE_INVALID) {
            return prov_pkcs11_fail_rv(dev, "C_DestroyObject(private key)", rv);
        }
        k->priv = CK_INVALID_HANDLE;
    }
    if (key->id_len == 0) {
        if (k->pub != CK_INVALID_HANDLE) {
            rv = d->fl->C_DestroyObject(d->session, k->pub);
            if (rv != CKR_OK && rv != CKR_OBJECT_HANDLE_INVALID) {
                return prov_pkcs11_fail_rv(dev, "C_DestroyObject(public key)", rv);
            }
        }
        k->pub = CK_INVALID_HANDLE;
        return 0;
    }
    r = destroy_by_id(dev, CKO_PUBLIC_KEY, key->id, key->id_len, CK_INVALID_HANDLE);
    if (r == 0) {
        r = destroy_by_id(dev, CKO_CERTIFICATE, key->id, key->id_len, CK_INVALID_HANDLE);
    }
    k->pub = CK_INVALID_HANDLE;
    if (r == 0) {
        prov_debug("pkcs11", "%s: deleted %s", dev->name, key->uri);
    }
    return r;
}

void prov_pkcs11_free_key(struct prov_device *dev, struct prov_key *key)
{
    if (key == NULL) {
        return;
    }
    EVP_PKEY_free(key->pub);
    free(key->label);
    free(key->uri);
    free(key->priv);
    free(key);
}
