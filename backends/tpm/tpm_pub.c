/* SPDX-License-Identifier: Apache-2.0 */
/*
 * TPM public areas as OpenSSL keys (OpenSSL 3 EVP_PKEY_fromdata, no deprecated API), and the
 * key-id tag kept in a key's authPolicy (see tpm.h).
 */
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>

#include "error.h"
#include "tpm_internal.h"

static const unsigned char TAG_MAGIC[4] = {'p', 'r', 'o', 'v'};
#define TAG_SIZE 32 /* the SHA-256 digest size: authPolicy must match the name algorithm */

int prov_tpm_id_tag(const unsigned char *id, size_t id_len, TPM2B_DIGEST *out)
{
    memset(out, 0, sizeof(*out));
    if (id_len == 0) {
        return 0; /* no tag: an empty authPolicy */
    }
    if (id_len > PROV_TPM_KEY_ID_MAX) {
        return prov_fail(PROV_ERR_INTERNAL, "key id of %zu bytes: a TPM key carries at most %d",
                         id_len, PROV_TPM_KEY_ID_MAX);
    }
    out->size = TAG_SIZE;
    memcpy(out->buffer, TAG_MAGIC, sizeof(TAG_MAGIC));
    out->buffer[sizeof(TAG_MAGIC)] = (BYTE)id_len;
    memcpy(out->buffer + sizeof(TAG_MAGIC) + 1, id, id_len);
    return 0;
}

bool prov_tpm_id_from_tag(const TPM2B_DIGEST *policy, unsigned char *id, size_t *id_len)
{
    size_t len;

    if (policy->size != TAG_SIZE || memcmp(policy->buffer, TAG_MAGIC, sizeof(TAG_MAGIC)) != 0) {
        return false;
    }
    len = policy->buffer[sizeof(TAG_MAGIC)];
    if (len == 0 || len > PROV_TPM_KEY_ID_MAX) {
        return false;
    }
    for (size_t i = sizeof(TAG_MAGIC) + 1 + len; i < TAG_SIZE; i++) {
        if (policy->buffer[i] != 0) {
            return false;
        }
    }
    memcpy(id, policy->buffer + sizeof(TAG_MAGIC) + 1, len);
    *id_len = len;
    return true;
}

/* An unsigned big-endian TPM2B into out, left-padded with zeros to len bytes. */
static bool put_padded(unsigned char *out, size_t len, const BYTE *in, size_t in_len)
{
    if (in_len > len) {
        return false;
    }
    memset(out, 0, len - in_len);
    memcpy(out + (len - in_len), in, in_len);
    return true;
}

/* The uncompressed point of the longest supported curve (P-384). */
#define EC_POINT_MAX (1 + 2 * 48)

/*
 * OSSL_PARAM_BLD keeps pointers until OSSL_PARAM_BLD_to_param(): point (owned by the caller)
 * must stay in scope until then.
 */
static int ecc_params(const TPMS_ECC_POINT *pt, TPMI_ECC_CURVE curve, OSSL_PARAM_BLD *bld,
                      unsigned char point[EC_POINT_MAX], enum prov_key_type *type)
{
    const char *group;
    size_t field;

    switch (curve) {
    case TPM2_ECC_NIST_P256:
        group = "P-256";
        field = 32;
        *type = PROV_KEY_EC_P256;
        break;
    case TPM2_ECC_NIST_P384:
        group = "P-384";
        field = 48;
        *type = PROV_KEY_EC_P384;
        break;
    default: return PROV_ERR_UNSUPPORTED;
    }
    point[0] = 0x04; /* uncompressed */
    if (!put_padded(point + 1, field, pt->x.buffer, pt->x.size) ||
        !put_padded(point + 1 + field, field, pt->y.buffer, pt->y.size)) {
        return PROV_ERR_DEVICE;
    }
    if (OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, group, 0) != 1 ||
        OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, 1 + 2 * field) != 1) {
        return PROV_ERR_CRYPTO;
    }
    return 0;
}

static int rsa_params(const TPMT_PUBLIC *pub, OSSL_PARAM_BLD *bld, BIGNUM **n, BIGNUM **e,
                      enum prov_key_type *type)
{
    /* exponent 0 means the default, 2^16 + 1 (TPM 2.0 Part 2, TPMS_RSA_PARMS). */
    UINT32 exp = pub->parameters.rsaDetail.exponent ? pub->parameters.rsaDetail.exponent : 65537;

    switch (pub->parameters.rsaDetail.keyBits) {
    case 2048: *type = PROV_KEY_RSA_2048; break;
    case 3072: *type = PROV_KEY_RSA_3072; break;
    default: return PROV_ERR_UNSUPPORTED;
    }
    *n = BN_bin2bn(pub->unique.rsa.buffer, pub->unique.rsa.size, NULL);
    *e = BN_new();
    if (*n == NULL || *e == NULL || BN_set_word(*e, exp) != 1 ||
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, *n) != 1 ||
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, *e) != 1) {
        return PROV_ERR_CRYPTO;
    }
    return 0;
}

/* The conversion without recording a reason: callers that scan many objects stay quiet. */
static int pub_to_pkey(const TPMT_PUBLIC *pub, EVP_PKEY **out, enum prov_key_type *type)
{
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    unsigned char point[EC_POINT_MAX];
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    BIGNUM *n = NULL;
    BIGNUM *e = NULL;
    int r = PROV_ERR_CRYPTO;

    *out = NULL;
    *type = PROV_KEY_NONE;
    if (bld == NULL) {
        return PROV_ERR_NOMEM;
    }
    if (pub->type == TPM2_ALG_ECC) {
        r = ecc_params(&pub->unique.ecc, pub->parameters.eccDetail.curveID, bld, point, type);
    } else if (pub->type == TPM2_ALG_RSA) {
        r = rsa_params(pub, bld, &n, &e, type);
    } else {
        r = PROV_ERR_UNSUPPORTED;
    }
    if (r < 0) {
        goto out;
    }
    r = PROV_ERR_CRYPTO;
    params = OSSL_PARAM_BLD_to_param(bld);
    ctx = EVP_PKEY_CTX_new_from_name(NULL, pub->type == TPM2_ALG_ECC ? "EC" : "RSA", NULL);
    if (params == NULL || ctx == NULL || EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, out, EVP_PKEY_PUBLIC_KEY, params) != 1) {
        goto out;
    }
    r = 0;
out:
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(n);
    BN_free(e);
    if (r < 0) {
        *type = PROV_KEY_NONE;
    }
    return r;
}

int prov_tpm_public_to_pkey(struct prov_device *dev, const TPMT_PUBLIC *pub, EVP_PKEY **out,
                            enum prov_key_type *type)
{
    int r = pub_to_pkey(pub, out, type);

    if (r == PROV_ERR_UNSUPPORTED) {
        return prov_fail(r,
                         "%s: the TPM key (algorithm 0x%04x) is none of ec-p256, ec-p384, "
                         "rsa-2048, rsa-3072",
                         dev->name, (unsigned)pub->type);
    }
    if (r < 0) {
        return prov_fail_ossl(r, "%s: the TPM public key is not a valid key", dev->name);
    }
    return 0;
}

bool prov_tpm_public_matches(const TPMT_PUBLIC *pub, EVP_PKEY *pkey)
{
    enum prov_key_type type;
    EVP_PKEY *mine = NULL;
    bool is_same;

    if (pub_to_pkey(pub, &mine, &type) < 0) {
        ERR_clear_error();
        return false;
    }
    is_same = EVP_PKEY_eq(mine, pkey) == 1;
    EVP_PKEY_free(mine);
    ERR_clear_error();
    return is_same;
}
