/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Device keys: created under the SRK, made persistent at the configured handle, found again by
 * key.uri, id or public key, read back, used to sign, evicted. Every transient object is
 * flushed on every path (doc/platform.md, "swtpm has three transient slots").
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/ecdsa.h>
#include <openssl/objects.h>
#include <openssl/x509.h>

#include "error.h"
#include "log.h"
#include "tpm_internal.h"

/* Owner persistent handles (0x818xxxxx belong to the platform). */
#define OWNER_PERSISTENT_FIRST 0x81000000u
#define OWNER_PERSISTENT_LAST 0x817fffffu

static void put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* doc/keys.md: fixedTPM, fixedParent, sensitiveDataOrigin, userWithAuth, sign; noDA (tpm.h). */
static int key_template(struct prov_device *dev, const struct prov_keygen_params *params,
                        TPM2B_PUBLIC *tmpl)
{
    TPMT_PUBLIC *p = &tmpl->publicArea;
    int r;

    memset(tmpl, 0, sizeof(*tmpl));
    p->nameAlg = TPM2_ALG_SHA256;
    p->objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                          TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_USERWITHAUTH |
                          TPMA_OBJECT_NODA | TPMA_OBJECT_SIGN_ENCRYPT;
    r = prov_tpm_id_tag(params->id, params->id ? params->id_len : 0, &p->authPolicy);
    if (r < 0) {
        return r;
    }
    switch (params->type) {
    case PROV_KEY_EC_P256:
    case PROV_KEY_EC_P384:
        p->type = TPM2_ALG_ECC;
        p->parameters.eccDetail.symmetric.algorithm = TPM2_ALG_NULL;
        /* Scheme NULL: the signer picks ECDSA and the hash per signature (CSR, TLS). */
        p->parameters.eccDetail.scheme.scheme = TPM2_ALG_NULL;
        p->parameters.eccDetail.curveID =
            params->type == PROV_KEY_EC_P256 ? TPM2_ECC_NIST_P256 : TPM2_ECC_NIST_P384;
        p->parameters.eccDetail.kdf.scheme = TPM2_ALG_NULL;
        return 0;
    case PROV_KEY_RSA_2048:
    case PROV_KEY_RSA_3072:
        p->type = TPM2_ALG_RSA;
        p->parameters.rsaDetail.symmetric.algorithm = TPM2_ALG_NULL;
        p->parameters.rsaDetail.scheme.scheme = TPM2_ALG_NULL;
        p->parameters.rsaDetail.keyBits = params->type == PROV_KEY_RSA_2048 ? 2048 : 3072;
        p->parameters.rsaDetail.exponent = 0;
        return 0;
    default:
        return prov_fail(PROV_ERR_UNSUPPORTED, "%s: key type %s is not supported on a TPM",
                         dev->name, prov_key_type_name(params->type));
    }
}

void prov_tpm_free_key(struct prov_device *dev, struct prov_key *key)
{
    struct tpm_key *k;

    if (key == NULL) {
        return;
    }
    k = key->priv;
    if (k != NULL && k->tr != ESYS_TR_NONE && dev != NULL && tpm_dev(dev)->esys != NULL) {
        Esys_TR_Close(tpm_dev(dev)->esys, &k->tr);
    }
    free(k);
    EVP_PKEY_free(key->pub);
    free(key->label);
    free(key->uri);
    free(key);
}

int prov_tpm_make_key(struct prov_device *dev, uint32_t handle, ESYS_TR tr, const TPMT_PUBLIC *pub,
                      const char *label, struct prov_key **out)
{
    struct prov_key *key = calloc(1, sizeof(*key));
    struct tpm_key *k = calloc(1, sizeof(*k));
    int r = PROV_ERR_NOMEM;

    *out = NULL;
    if (key == NULL || k == NULL) {
        free(key);
        free(k);
        Esys_TR_Close(tpm_dev(dev)->esys, &tr);
        return PROV_ERR_NOMEM;
    }
    key->dev = dev;
    key->priv = k;
    k->handle = handle;
    k->tr = tr;
    k->public = *pub;
    r = prov_tpm_public_to_pkey(dev, pub, &key->pub, &key->type);
    if (r < 0) {
        goto out;
    }
    if (!prov_tpm_id_from_tag(&pub->authPolicy, key->id, &key->id_len)) {
        put_be32(key->id, handle);
        key->id_len = 4;
    }
    r = PROV_ERR_NOMEM;
    key->uri = prov_tpm_key_uri(tpm_dev(dev)->tcti_conf, handle);
    if (key->uri == NULL || (label != NULL && (key->label = strdup(label)) == NULL)) {
        goto out;
    }
    *out = key;
    key = NULL;
    r = 0;
out:
    prov_tpm_free_key(dev, key);
    return r;
}

/* Evicts the persistent object tr (at handle); tr is no longer valid afterwards. */
static int evict(struct prov_device *dev, ESYS_TR *tr, uint32_t handle)
{
    struct tpm_dev *t = tpm_dev(dev);
    ESYS_TR none = ESYS_TR_NONE;
    char what[64];
    TSS2_RC rc;

    rc = Esys_EvictControl(t->esys, ESYS_TR_RH_OWNER, *tr, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                           ESYS_TR_NONE, handle, &none);
    if (rc != TSS2_RC_SUCCESS) {
        snprintf(what, sizeof(what), "EvictControl (evict 0x%08x)", (unsigned)handle);
        return prov_tpm_fail(dev, what, rc);
    }
    /* Some tpm2-tss versions release the ESYS_TR of an evicted object, others do not. */
    Esys_TR_Close(t->esys, tr);
    *tr = ESYS_TR_NONE;
    return 0;
}

/*
 * --reissue may evict the key at handle only when it belongs to the identity being certified
 * again: it is params->replaceable_pub (that identity's certificate), or the certificate the
 * NV index holds for it has the subject being issued now (the same name: a reissue whose
 * storage was never written), or no certificate in the NV index names it (an attempt that
 * never became an identity, or a split-flow key still waiting for `install`). A key the NV
 * index certifies for another name stays (PROV_ERR_POLICY): evicting it would silently
 * destroy another device's identity.
 */
static int check_replaceable(struct prov_device *dev, uint32_t handle, const TPMT_PUBLIC *pub,
                             const struct prov_keygen_params *params)
{
    enum prov_key_type type = PROV_KEY_NONE;
    EVP_PKEY *there = NULL;
    X509 *cert = NULL;
    char subject[256];
    int r;

    if (params->replaceable_pub != NULL && prov_tpm_public_matches(pub, params->replaceable_pub)) {
        return 0;
    }
    /* a key of a kind this tool never makes cannot be one its certificates name */
    if (prov_tpm_public_to_pkey(dev, pub, &there, &type) < 0) {
        prov_error_clear();
        return 0;
    }
    r = prov_tpm_nv_cert_of(dev, there, &cert);
    if (r == 0 && cert != NULL &&
        (params->replaceable_subject == NULL ||
         X509_NAME_cmp(X509_get_subject_name(cert), params->replaceable_subject) != 0)) {
        X509_NAME_oneline(X509_get_subject_name(cert), subject, sizeof(subject));
        r = prov_fail(PROV_ERR_POLICY,
                      "%s: persistent handle 0x%08x holds the key of another identity (NV index "
                      "0x%08x certifies it: %s); reissuing serial %s does not evict it",
                      dev->name, (unsigned)handle, (unsigned)tpm_dev(dev)->nv_index, subject,
                      params->label ? params->label : "?");
    }
    X509_free(cert);
    EVP_PKEY_free(there);
    return r;
}

/*
 * The key handle and the NV index must be free for a new identity: without replace this only
 * reads, and refuses; with replace the key there is evicted (if check_replaceable allows),
 * then the NV index undefined.
 */
static int make_room(struct prov_device *dev, uint32_t handle,
                     const struct prov_keygen_params *params, bool replace)
{
    struct tpm_dev *t = tpm_dev(dev);
    TPM2B_PUBLIC *pub = NULL;
    ESYS_TR tr = ESYS_TR_NONE;
    int r;

    r = prov_tpm_open_handle(dev, handle, &tr, replace ? &pub : NULL);
    if (r < 0) {
        return r;
    }
    if (!replace) {
        if (tr != ESYS_TR_NONE) {
            r = prov_fail(PROV_ERR_ALREADY_ISSUED,
                          "%s: persistent handle 0x%08x already holds a key (use --reissue to "
                          "replace it)",
                          dev->name, (unsigned)handle);
        } else {
            r = prov_tpm_nv_check_free(dev);
        }
    } else {
        if (tr != ESYS_TR_NONE) {
            r = check_replaceable(dev, handle, &pub->publicArea, params);
        }
        if (r == 0 && tr != ESYS_TR_NONE) {
            r = evict(dev, &tr, handle);
            if (r == 0) {
                prov_info("%s: evicted the earlier key at 0x%08x", dev->name, (unsigned)handle);
            }
        }
        if (r == 0) {
            r = prov_tpm_nv_clear(dev, NULL);
        }
    }
    if (tr != ESYS_TR_NONE) {
        Esys_TR_Close(t->esys, &tr);
    }
    Esys_Free(pub);
    return r;
}

/* Create under the SRK, Load, EvictControl to handle; the transient copy is always flushed. */
static int create_persistent(struct prov_device *dev, const TPM2B_PUBLIC *tmpl, uint32_t handle,
                             ESYS_TR *persistent, TPM2B_PUBLIC **pub)
{
    struct tpm_dev *t = tpm_dev(dev);
    TPM2B_SENSITIVE_CREATE sens;
    TPM2B_DATA outside = {.size = 0};
    TPML_PCR_SELECTION pcrs = {.count = 0};
    TPM2B_PRIVATE *priv = NULL;
    ESYS_TR srk = ESYS_TR_NONE;
    ESYS_TR loaded = ESYS_TR_NONE;
    TSS2_RC rc;
    int r;

    *persistent = ESYS_TR_NONE;
    *pub = NULL;
    memset(&sens, 0, sizeof(sens));
    r = prov_tpm_srk(dev, &srk);
    if (r < 0) {
        return r;
    }
    rc = Esys_Create(t->esys, srk, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &sens, tmpl,
                     &outside, &pcrs, &priv, pub, NULL, NULL, NULL);
    if (rc != TSS2_RC_SUCCESS) {
        r = prov_tpm_fail(dev, "Create (device key under the SRK)", rc);
        goto out;
    }
    rc = Esys_Load(t->esys, srk, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, priv, *pub, &loaded);
    if (rc != TSS2_RC_SUCCESS) {
        r = prov_tpm_fail(dev, "Load (device key)", rc);
        goto out;
    }
    rc = Esys_EvictControl(t->esys, ESYS_TR_RH_OWNER, loaded, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                           ESYS_TR_NONE, handle, persistent);
    if (rc != TSS2_RC_SUCCESS) {
        *persistent = ESYS_TR_NONE;
        if (prov_tpm_rc_base(rc) == TPM2_RC_NV_DEFINED) {
            r = prov_fail(PROV_ERR_ALREADY_ISSUED,
                          "%s: persistent handle 0x%08x already holds a key (use --reissue to "
                          "replace it)",
                          dev->name, (unsigned)handle);
        } else {
            r = prov_tpm_fail(dev, "EvictControl (make the device key persistent)", rc);
        }
        goto out;
    }
    r = 0;
out:
    if (loaded != ESYS_TR_NONE) {
        Esys_FlushContext(t->esys, loaded);
    }
    Esys_Free(priv);
    if (r < 0) {
        Esys_Free(*pub);
        *pub = NULL;
    }
    return r;
}

int prov_tpm_generate_key(struct prov_device *dev, const struct prov_keygen_params *params,
                          struct prov_key **out)
{
    struct tpm_dev *t = tpm_dev(dev);
    uint32_t handle = params->tpm_handle ? params->tpm_handle : t->key_handle;
    TPM2B_PUBLIC tmpl;
    TPM2B_PUBLIC *pub = NULL;
    ESYS_TR persistent = ESYS_TR_NONE;
    ESYS_TR srk = ESYS_TR_NONE;
    int r;

    *out = NULL;
    if (!tpm_is_persistent(handle) || handle == t->srk_handle) {
        return prov_fail(PROV_ERR_CONFIG,
                         "%s: key handle 0x%08x must be a persistent handle other than the "
                         "SRK's",
                         dev->name, (unsigned)handle);
    }
    /*
     * Refusals come before anything is written: without replace the (read-only) occupancy
     * checks run before the SRK may be created; with replace nothing is evicted before the
     * SRK is known to be usable.
     */
    r = key_template(dev, params, &tmpl);
    if (r == 0 && !params->replace) {
        r = make_room(dev, handle, params, false);
    }
    if (r == 0) {
        r = prov_tpm_srk(dev, &srk);
    }
    if (r == 0 && params->replace) {
        r = make_room(dev, handle, params, true);
    }
    if (r == 0) {
        r = create_persistent(dev, &tmpl, handle, &persistent, &pub);
    }
    if (r < 0) {
        goto out;
    }
    r = prov_tpm_make_key(dev, handle, persistent, &pub->publicArea, params->label, out);
    if (r < 0) {
        /* No orphan: a key the caller never heard of must not stay in the TPM. */
        if (prov_tpm_open_handle(dev, handle, &persistent, NULL) == 0 &&
            persistent != ESYS_TR_NONE) {
            evict(dev, &persistent, handle);
        }
        goto out;
    }
    ((struct tpm_key *)(*out)->priv)->is_replacement = params->replace;
    prov_debug("tpm", "%s: %s key at 0x%08x", dev->name, prov_key_type_name((*out)->type),
               (unsigned)handle);
out:
    Esys_Free(pub);
    return r;
}

/* The key at handle; PROV_ERR_NOT_FOUND (recorded) when there is none. */
static int key_at(struct prov_device *dev, uint32_t handle, struct prov_key **out)
{
    TPM2B_PUBLIC *pub = NULL;
    ESYS_TR tr = ESYS_TR_NONE;
    int r;

    *out = NULL;
    r = prov_tpm_open_handle(dev, handle, &tr, &pub);
    if (r < 0) {
        return r;
    }
    if (tr == ESYS_TR_NONE) {
        return prov_fail(PROV_ERR_NOT_FOUND, "%s: no key at persistent handle 0x%08x", dev->name,
                         (unsigned)handle);
    }
    r = prov_tpm_make_key(dev, handle, tr, &pub->publicArea, NULL, out);
    Esys_Free(pub);
    return r;
}

int prov_tpm_find_key(struct prov_device *dev, const char *key_uri, struct prov_key **out)
{
    char *tcti = NULL;
    uint32_t handle = 0;
    int r;

    *out = NULL;
    r = prov_tpm_uri_split(key_uri, &tcti, &handle);
    free(tcti);
    if (r < 0) {
        return r;
    }
    return key_at(dev, handle ? handle : tpm_dev(dev)->key_handle, out);
}

/*
 * Calls match(pub, ctx) for the configured key handle, then every other owner persistent
 * handle but the SRK's; the first match becomes *out. PROV_ERR_NOT_FOUND when none matches.
 */
static int find_matching(struct prov_device *dev, bool (*match)(const TPMT_PUBLIC *, void *),
                         void *ctx, const char *what, struct prov_key **out)
{
    struct tpm_dev *t = tpm_dev(dev);
    uint32_t *list = NULL;
    size_t n = 0;
    int r;

    *out = NULL;
    r = prov_tpm_list_persistent(dev, OWNER_PERSISTENT_FIRST, OWNER_PERSISTENT_LAST, &list, &n);
    if (r < 0) {
        return r;
    }
    /* The configured handle first: the usual answer costs one ReadPublic. */
    for (size_t i = 0; i < n; i++) {
        if (list[i] == t->key_handle && i > 0) {
            list[i] = list[0];
            list[0] = t->key_handle;
            break;
        }
    }
    for (size_t i = 0; i < n && *out == NULL; i++) {
        TPM2B_PUBLIC *pub = NULL;
        ESYS_TR tr = ESYS_TR_NONE;

        if (list[i] == t->srk_handle) {
            continue;
        }
        r = prov_tpm_open_handle(dev, list[i], &tr, &pub);
        if (r < 0) {
            break;
        }
        if (tr != ESYS_TR_NONE && match(&pub->publicArea, ctx)) {
            r = prov_tpm_make_key(dev, list[i], tr, &pub->publicArea, NULL, out);
            tr = ESYS_TR_NONE;
        }
        if (tr != ESYS_TR_NONE) {
            Esys_TR_Close(t->esys, &tr);
        }
        Esys_Free(pub);
        if (r < 0) {
            break;
        }
    }
    free(list);
    if (r == 0 && *out == NULL) {
        r = prov_fail(PROV_ERR_NOT_FOUND, "%s: no persistent key with %s", dev->name, what);
    }
    return r;
}

struct id_match {
    const unsigned char *id;
    size_t id_len;
};

static bool matches_id(const TPMT_PUBLIC *pub, void *ctx)
{
    const struct id_match *m = ctx;
    unsigned char id[PROV_TPM_KEY_ID_MAX];
    size_t id_len = 0;

    return prov_tpm_id_from_tag(&pub->authPolicy, id, &id_len) && id_len == m->id_len &&
           memcmp(id, m->id, id_len) == 0;
}

/* A key without a tag at the handle an untagged id (4 bytes, big-endian) names, or none. */
static int untagged_key_at(struct prov_device *dev, const unsigned char *id, struct prov_key **out)
{
    uint32_t handle = (uint32_t)id[0] << 24 | (uint32_t)id[1] << 16 | (uint32_t)id[2] << 8 | id[3];
    unsigned char tag_id[PROV_TPM_KEY_ID_MAX];
    size_t tag_id_len;
    TPM2B_PUBLIC *pub = NULL;
    ESYS_TR tr = ESYS_TR_NONE;
    int r;

    *out = NULL;
    if (!tpm_is_persistent(handle) || handle == tpm_dev(dev)->srk_handle) {
        return 0;
    }
    r = prov_tpm_open_handle(dev, handle, &tr, &pub);
    if (r == 0 && tr != ESYS_TR_NONE) {
        if (prov_tpm_id_from_tag(&pub->publicArea.authPolicy, tag_id, &tag_id_len)) {
            Esys_TR_Close(tpm_dev(dev)->esys, &tr);
        } else {
            r = prov_tpm_make_key(dev, handle, tr, &pub->publicArea, NULL, out);
        }
    }
    Esys_Free(pub);
    return r;
}

int prov_tpm_find_key_by_id(struct prov_device *dev, const unsigned char *id, size_t id_len,
                            struct prov_key **out)
{
    struct id_match m = {.id = id, .id_len = id_len};
    int r;

    *out = NULL;
    if (id_len == 4) {
        r = untagged_key_at(dev, id, out);
        if (r < 0 || *out != NULL) {
            return r;
        }
    }
    if (id_len == 0 || id_len > PROV_TPM_KEY_ID_MAX) {
        return prov_fail(PROV_ERR_NOT_FOUND, "%s: no key with an id of %zu bytes", dev->name,
                         id_len);
    }
    return find_matching(dev, matches_id, &m, "that key id", out);
}

static bool matches_public(const TPMT_PUBLIC *pub, void *ctx)
{
    return prov_tpm_public_matches(pub, ctx);
}

int prov_tpm_find_key_by_public(struct prov_device *dev, EVP_PKEY *pub, struct prov_key **out)
{
    *out = NULL;
    if (pub == NULL) {
        return prov_fail(PROV_ERR_INPUT, "%s: no public key to look for", dev->name);
    }
    return find_matching(dev, matches_public, pub, "the certificate's public key", out);
}

/*
 * The attributes as the TPM reported them when this key object was made (the public area
 * returned by TPM2_Create or read with TPM2_ReadPublic in this session), not the template that
 * was asked for: a second ReadPublic would return the same bytes.
 */
int prov_tpm_key_props(struct prov_device *dev, struct prov_key *key, struct prov_key_props *out)
{
    struct tpm_key *k = key->priv;
    TPMA_OBJECT a = k->public.objectAttributes;

    memset(out, 0, sizeof(*out));
    out->is_private_token_object = tpm_is_persistent(k->handle);
    out->is_sensitive = (a & TPMA_OBJECT_FIXEDTPM) && (a & TPMA_OBJECT_SENSITIVEDATAORIGIN);
    out->is_never_extractable = (a & TPMA_OBJECT_FIXEDTPM) && (a & TPMA_OBJECT_FIXEDPARENT);
    out->is_extractable = !out->is_never_extractable;
    out->is_local = (a & TPMA_OBJECT_SENSITIVEDATAORIGIN) != 0;
    out->can_sign = (a & TPMA_OBJECT_SIGN_ENCRYPT) != 0;
    out->can_decrypt = (a & TPMA_OBJECT_DECRYPT) || (a & TPMA_OBJECT_RESTRICTED);
    prov_debug("tpm", "%s: key 0x%08x attributes 0x%08x", dev->name, (unsigned)k->handle,
               (unsigned)a);
    return 0;
}

/* The TPM hash for a digest of this length. */
static TPMI_ALG_HASH hash_for_length(size_t len)
{
    switch (len) {
    case 20: return TPM2_ALG_SHA1;
    case 32: return TPM2_ALG_SHA256;
    case 48: return TPM2_ALG_SHA384;
    case 64: return TPM2_ALG_SHA512;
    default: return TPM2_ALG_NULL;
    }
}

static TPMI_ALG_HASH hash_for_nid(int nid)
{
    switch (nid) {
    case NID_sha1: return TPM2_ALG_SHA1;
    case NID_sha256: return TPM2_ALG_SHA256;
    case NID_sha384: return TPM2_ALG_SHA384;
    case NID_sha512: return TPM2_ALG_SHA512;
    default: return TPM2_ALG_NULL;
    }
}

/* The digest and hash inside a DER DigestInfo (RFC 8017 §9.2); false if it is none. */
static bool unpack_digest_info(const unsigned char *in, size_t in_len, TPM2B_DIGEST *digest,
                               TPMI_ALG_HASH *hash)
{
    const unsigned char *p = in;
    X509_SIG *di = d2i_X509_SIG(NULL, &p, (long)in_len);
    const X509_ALGOR *alg = NULL;
    const ASN1_OCTET_STRING *dig = NULL;
    const ASN1_OBJECT *obj = NULL;
    bool ok = false;

    if (di == NULL || p != in + in_len) {
        goto out;
    }
    X509_SIG_get0(di, &alg, &dig);
    X509_ALGOR_get0(&obj, NULL, NULL, alg);
    *hash = hash_for_nid(OBJ_obj2nid(obj));
    if (*hash == TPM2_ALG_NULL || hash_for_length((size_t)ASN1_STRING_length(dig)) != *hash) {
        goto out;
    }
    digest->size = (UINT16)ASN1_STRING_length(dig);
    memcpy(digest->buffer, ASN1_STRING_get0_data(dig), digest->size);
    ok = true;
out:
    X509_SIG_free(di);
    return ok;
}

/* r and s of a TPM ECDSA signature as a DER ECDSA-Sig-Value. */
static int ecdsa_to_der(struct prov_device *dev, const TPMS_SIGNATURE_ECC *ecc, unsigned char *sig,
                        size_t *sig_len)
{
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *br = BN_bin2bn(ecc->signatureR.buffer, ecc->signatureR.size, NULL);
    BIGNUM *bs = BN_bin2bn(ecc->signatureS.buffer, ecc->signatureS.size, NULL);
    unsigned char *p = sig;
    int len;
    int r = PROV_ERR_CRYPTO;

    if (es == NULL || br == NULL || bs == NULL || ECDSA_SIG_set0(es, br, bs) != 1) {
        BN_free(br);
        BN_free(bs);
        r = prov_fail_ossl(PROV_ERR_CRYPTO, "%s: cannot encode the ECDSA signature", dev->name);
        goto out;
    }
    len = i2d_ECDSA_SIG(es, NULL);
    if (len <= 0 || (size_t)len > *sig_len) {
        r = prov_fail(PROV_ERR_INTERNAL, "%s: signature buffer of %zu bytes is too small",
                      dev->name, *sig_len);
        goto out;
    }
    i2d_ECDSA_SIG(es, &p);
    *sig_len = (size_t)len;
    r = 0;
out:
    ECDSA_SIG_free(es);
    return r;
}

/* The TPM2_Sign input for mech, or PROV_ERR_UNSUPPORTED (recorded). */
static int sign_input(struct prov_device *dev, struct prov_key *key, enum prov_sig_mech mech,
                      const unsigned char *in, size_t in_len, TPM2B_DIGEST *digest,
                      TPMT_SIG_SCHEME *scheme)
{
    bool is_ec = prov_key_type_is_ec(key->type);

    memset(digest, 0, sizeof(*digest));
    memset(scheme, 0, sizeof(*scheme));
    if (mech == PROV_SIG_ECDSA && is_ec) {
        scheme->scheme = TPM2_ALG_ECDSA;
        scheme->details.ecdsa.hashAlg = hash_for_length(in_len);
        if (scheme->details.ecdsa.hashAlg == TPM2_ALG_NULL) {
            return prov_fail(PROV_ERR_UNSUPPORTED,
                             "%s: ECDSA over a %zu-byte digest (not SHA-1/256/384/512)", dev->name,
                             in_len);
        }
        digest->size = (UINT16)in_len;
        memcpy(digest->buffer, in, in_len);
        return 0;
    }
    if (mech == PROV_SIG_RSA_PKCS1 && !is_ec) {
        /* TPM2_Sign with RSASSA builds the DigestInfo itself from hash + digest. */
        scheme->scheme = TPM2_ALG_RSASSA;
        if (!unpack_digest_info(in, in_len, digest, &scheme->details.rsassa.hashAlg)) {
            return prov_fail(PROV_ERR_UNSUPPORTED,
                             "%s: RSA PKCS#1 v1.5 needs a SHA-1/256/384/512 DigestInfo on a TPM",
                             dev->name);
        }
        return 0;
    }
    if (mech == PROV_SIG_RSA_RAW && !is_ec) {
        return prov_fail(PROV_ERR_UNSUPPORTED,
                         "%s: raw RSA (RSA-PSS as in TLS 1.3) would need a decrypting key; "
                         "TPM device keys only sign (use an EC key)",
                         dev->name);
    }
    return prov_fail(PROV_ERR_UNSUPPORTED, "%s: mechanism %d does not fit a %s key", dev->name,
                     (int)mech, prov_key_type_name(key->type));
}

int prov_tpm_sign(struct prov_device *dev, struct prov_key *key, enum prov_sig_mech mech,
                  const unsigned char *in, size_t in_len, unsigned char *sig, size_t *sig_len)
{
    struct tpm_dev *t = tpm_dev(dev);
    struct tpm_key *k = key->priv;
    TPMT_TK_HASHCHECK validation = {.tag = TPM2_ST_HASHCHECK, .hierarchy = TPM2_RH_NULL};
    TPMT_SIGNATURE *out = NULL;
    TPMT_SIG_SCHEME scheme;
    TPM2B_DIGEST digest;
    TSS2_RC rc;
    int r;

    if (in_len > sizeof(digest.buffer) && mech == PROV_SIG_ECDSA) {
        return prov_fail(PROV_ERR_UNSUPPORTED, "%s: digest of %zu bytes", dev->name, in_len);
    }
    r = sign_input(dev, key, mech, in, in_len, &digest, &scheme);
    if (r < 0) {
        return r;
    }
    /* Unrestricted key: a NULL ticket is enough (the TPM did not have to hash the data). */
    rc = Esys_Sign(t->esys, k->tr, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &digest, &scheme,
                   &validation, &out);
    if (rc != TSS2_RC_SUCCESS) {
        return prov_tpm_fail(dev, "Sign", rc);
    }
    if (scheme.scheme == TPM2_ALG_ECDSA) {
        r = ecdsa_to_der(dev, &out->signature.ecdsa, sig, sig_len);
    } else if (out->signature.rsassa.sig.size > *sig_len) {
        r = prov_fail(PROV_ERR_INTERNAL, "%s: signature buffer of %zu bytes is too small",
                      dev->name, *sig_len);
    } else {
        memcpy(sig, out->signature.rsassa.sig.buffer, out->signature.rsassa.sig.size);
        *sig_len = out->signature.rsassa.sig.size;
    }
    Esys_Free(out);
    return r;
}

int prov_tpm_delete_key(struct prov_device *dev, struct prov_key *key)
{
    struct tpm_dev *t = tpm_dev(dev);
    struct tpm_key *k = key->priv;
    TPM2B_PUBLIC *pub = NULL;
    ESYS_TR tr = ESYS_TR_NONE;
    int r;

    r = prov_tpm_open_handle(dev, k->handle, &tr, &pub);
    if (r < 0) {
        return r;
    }
    if (tr != ESYS_TR_NONE && prov_tpm_public_matches(&pub->publicArea, key->pub)) {
        r = evict(dev, &tr, k->handle);
        if (r == 0 && k->tr != ESYS_TR_NONE) {
            Esys_TR_Close(t->esys, &k->tr); /* the object it named is gone */
        }
    } else {
        /* Already gone, or the handle was taken over by another key: leave that one alone. */
        prov_debug("tpm", "%s: key no longer at 0x%08x; nothing evicted", dev->name,
                   (unsigned)k->handle);
    }
    if (tr != ESYS_TR_NONE) {
        Esys_TR_Close(t->esys, &tr);
    }
    Esys_Free(pub);
    if (r == 0) {
        r = prov_tpm_nv_clear(dev, key->pub);
    }
    return r;
}
