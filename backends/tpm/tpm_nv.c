/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The device certificate in an NV index (doc/storage.md): defined with exactly the DER's size,
 * written in chunks no larger than TPM2_PT_NV_BUFFER_MAX, read back and compared. What an
 * occupied index may be overwritten with is decided here (see tpm.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/x509.h>

#include "error.h"
#include "log.h"
#include "tpm_internal.h"

/*
 * Owner writes (the identity changes only with owner authorization), anyone reads with the
 * index's empty authorization (device firmware) or the owner's; no DA: the authorization is
 * empty, there is nothing to guess.
 */
#define OUR_NV_ATTRS (TPMA_NV_OWNERWRITE | TPMA_NV_OWNERREAD | TPMA_NV_AUTHREAD | TPMA_NV_NO_DA)
/* State bits the TPM sets on its own; not part of what was defined. */
#define NV_STATE_BITS (TPMA_NV_WRITTEN | TPMA_NV_READLOCKED | TPMA_NV_WRITELOCKED)

/* What the NV index holds. */
struct nv_state {
    ESYS_TR tr; /* ESYS_TR_NONE when the index is not defined */
    TPMA_NV attrs;
    uint16_t size;
    bool is_written;
    unsigned char *data; /* size bytes when written and readable, else NULL */
};

static void nv_state_clear(struct prov_device *dev, struct nv_state *st)
{
    if (st->tr != ESYS_TR_NONE) {
        Esys_TR_Close(tpm_dev(dev)->esys, &st->tr);
    }
    free(st->data);
    memset(st, 0, sizeof(*st));
    st->tr = ESYS_TR_NONE;
}

static uint16_t clamp16(UINT32 v)
{
    return v > UINT16_MAX ? UINT16_MAX : (uint16_t)v;
}

/* TPM2_PT_NV_INDEX_MAX and TPM2_PT_NV_BUFFER_MAX, with one GetCapability; cached. */
static int nv_limits(struct prov_device *dev)
{
    struct tpm_dev *t = tpm_dev(dev);
    TPMS_CAPABILITY_DATA *cap = NULL;
    TPMI_YES_NO more = TPM2_NO;
    TSS2_RC rc;

    if (t->nv_buffer_max != 0 && t->nv_index_max != 0) {
        return 0;
    }
    rc = Esys_GetCapability(t->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                            TPM2_CAP_TPM_PROPERTIES, TPM2_PT_NV_INDEX_MAX,
                            TPM2_PT_NV_BUFFER_MAX - TPM2_PT_NV_INDEX_MAX + 1, &more, &cap);
    if (rc != TSS2_RC_SUCCESS) {
        return prov_tpm_fail(dev, "GetCapability(TPM2_PT_NV_INDEX_MAX..TPM2_PT_NV_BUFFER_MAX)", rc);
    }
    for (UINT32 i = 0; i < cap->data.tpmProperties.count; i++) {
        const TPMS_TAGGED_PROPERTY *p = &cap->data.tpmProperties.tpmProperty[i];

        if (p->property == TPM2_PT_NV_INDEX_MAX) {
            t->nv_index_max = clamp16(p->value);
        } else if (p->property == TPM2_PT_NV_BUFFER_MAX) {
            t->nv_buffer_max = clamp16(p->value);
        }
    }
    Esys_Free(cap);
    if (t->nv_buffer_max == 0 || t->nv_index_max == 0) {
        return prov_fail(PROV_ERR_DEVICE,
                         "%s: the TPM does not report TPM2_PT_NV_BUFFER_MAX and "
                         "TPM2_PT_NV_INDEX_MAX",
                         dev->name);
    }
    return 0;
}

/* The largest chunk one NV_Read / NV_Write may carry. */
static uint16_t nv_chunk(struct prov_device *dev)
{
    uint16_t max = tpm_dev(dev)->nv_buffer_max;

    return max < sizeof(((TPM2B_MAX_NV_BUFFER *)0)->buffer)
               ? max
               : (uint16_t)sizeof(((TPM2B_MAX_NV_BUFFER *)0)->buffer);
}

/* Reads size bytes of the index (its own authorization when allowed, else the owner's). */
static int nv_read(struct prov_device *dev, ESYS_TR tr, TPMA_NV attrs, uint16_t size,
                   unsigned char *out)
{
    struct tpm_dev *t = tpm_dev(dev);
    ESYS_TR auth = (attrs & TPMA_NV_AUTHREAD) ? tr : ESYS_TR_RH_OWNER;
    uint16_t chunk;
    TSS2_RC rc;
    int r;

    r = nv_limits(dev);
    if (r < 0) {
        return r;
    }
    chunk = nv_chunk(dev);
    for (uint16_t off = 0; off < size;) {
        TPM2B_MAX_NV_BUFFER *data = NULL;
        uint16_t n = (uint16_t)(size - off) < chunk ? (uint16_t)(size - off) : chunk;

        rc = Esys_NV_Read(t->esys, auth, tr, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, n, off,
                          &data);
        if (rc != TSS2_RC_SUCCESS) {
            return prov_tpm_fail(dev, "NV_Read", rc);
        }
        if (data->size != n) {
            Esys_Free(data);
            return prov_fail(PROV_ERR_DEVICE, "%s: NV_Read returned %u bytes, asked for %u",
                             dev->name, (unsigned)data->size, (unsigned)n);
        }
        memcpy(out + off, data->buffer, n);
        Esys_Free(data);
        off = (uint16_t)(off + n);
    }
    return 0;
}

static int nv_state_read(struct prov_device *dev, struct nv_state *st)
{
    struct tpm_dev *t = tpm_dev(dev);
    TPM2B_NV_PUBLIC *pub = NULL;
    TSS2_RC rc;
    int r;

    memset(st, 0, sizeof(*st));
    st->tr = ESYS_TR_NONE;
    r = prov_tpm_open_handle(dev, t->nv_index, &st->tr, NULL);
    if (r < 0 || st->tr == ESYS_TR_NONE) {
        return r;
    }
    rc = Esys_NV_ReadPublic(t->esys, st->tr, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &pub, NULL);
    if (rc != TSS2_RC_SUCCESS) {
        return prov_tpm_fail(dev, "NV_ReadPublic", rc);
    }
    st->attrs = pub->nvPublic.attributes;
    st->size = pub->nvPublic.dataSize;
    st->is_written = (st->attrs & TPMA_NV_WRITTEN) != 0;
    Esys_Free(pub);
    if (!st->is_written || st->size == 0 ||
        (st->attrs & TPMA_NV_TPM2_NT_MASK) != (TPM2_NT_ORDINARY << TPMA_NV_TPM2_NT_SHIFT) ||
        !(st->attrs & (TPMA_NV_AUTHREAD | TPMA_NV_OWNERREAD))) {
        return 0; /* nothing this tool can read: judged by its attributes alone */
    }
    st->data = malloc(st->size);
    if (st->data == NULL) {
        return PROV_ERR_NOMEM;
    }
    return nv_read(dev, st->tr, st->attrs, st->size, st->data);
}

/* Defined by this tool and never written: what a define-then-crash leaves. */
static bool is_our_leftover(const struct nv_state *st)
{
    return st->tr != ESYS_TR_NONE && !st->is_written &&
           (st->attrs & ~(TPMA_NV)NV_STATE_BITS) == OUR_NV_ATTRS;
}

/* The index holds a DER certificate (and nothing else) whose key is pub. */
static bool holds_cert_of(const struct nv_state *st, EVP_PKEY *pub)
{
    const unsigned char *p = st->data;
    X509 *cert;
    bool is_ours;

    if (st->data == NULL || pub == NULL) {
        return false;
    }
    cert = d2i_X509(NULL, &p, st->size);
    is_ours =
        cert != NULL && p == st->data + st->size && EVP_PKEY_eq(X509_get0_pubkey(cert), pub) == 1;
    X509_free(cert);
    return is_ours;
}

/* For messages: what the occupied index holds. */
static void describe(const struct nv_state *st, char *buf, size_t len)
{
    const unsigned char *p = st->data;
    X509 *cert = st->data ? d2i_X509(NULL, &p, st->size) : NULL;
    char subject[160] = "";

    if (cert != NULL) {
        X509_NAME_oneline(X509_get_subject_name(cert), subject, sizeof(subject));
        snprintf(buf, len, "a certificate for another key (%s)", subject);
    } else if (!st->is_written) {
        snprintf(buf, len, "an index of %u bytes that was never written (attributes 0x%08x)",
                 (unsigned)st->size, (unsigned)st->attrs);
    } else {
        snprintf(buf, len, "%u bytes that are not a certificate", (unsigned)st->size);
    }
    X509_free(cert);
}

static int nv_undefine(struct prov_device *dev, struct nv_state *st)
{
    TSS2_RC rc;

    rc = Esys_NV_UndefineSpace(tpm_dev(dev)->esys, ESYS_TR_RH_OWNER, st->tr, ESYS_TR_PASSWORD,
                               ESYS_TR_NONE, ESYS_TR_NONE);
    if (rc != TSS2_RC_SUCCESS) {
        return prov_tpm_fail(dev, "NV_UndefineSpace", rc);
    }
    st->tr = ESYS_TR_NONE; /* ESAPI released it with the index */
    free(st->data);
    st->data = NULL;
    return 0;
}

int prov_tpm_nv_check_free(struct prov_device *dev)
{
    struct nv_state st;
    char what[256];
    int r;

    r = nv_state_read(dev, &st);
    if (r == 0 && st.tr != ESYS_TR_NONE && !is_our_leftover(&st)) {
        describe(&st, what, sizeof(what));
        r = prov_fail(PROV_ERR_ALREADY_ISSUED,
                      "%s: NV index 0x%08x already holds %s (use --reissue to replace it)",
                      dev->name, (unsigned)tpm_dev(dev)->nv_index, what);
    }
    nv_state_clear(dev, &st);
    return r;
}

int prov_tpm_nv_clear(struct prov_device *dev, EVP_PKEY *pub)
{
    struct nv_state st;
    int r;

    r = nv_state_read(dev, &st);
    if (r == 0 && st.tr != ESYS_TR_NONE &&
        (pub == NULL || is_our_leftover(&st) || holds_cert_of(&st, pub))) {
        r = nv_undefine(dev, &st);
        if (r == 0) {
            prov_debug("tpm", "%s: NV index 0x%08x undefined", dev->name,
                       (unsigned)tpm_dev(dev)->nv_index);
        }
    }
    nv_state_clear(dev, &st);
    return r;
}

int prov_tpm_nv_cert_of(struct prov_device *dev, EVP_PKEY *pub, X509 **out)
{
    struct nv_state st;
    int r;

    *out = NULL;
    r = nv_state_read(dev, &st);
    if (r == 0 && holds_cert_of(&st, pub)) {
        const unsigned char *p = st.data;

        *out = d2i_X509(NULL, &p, st.size);
        r = *out != NULL ? 0 : PROV_ERR_NOMEM;
    }
    nv_state_clear(dev, &st);
    return r;
}

static int nv_define(struct prov_device *dev, uint16_t size, ESYS_TR *tr)
{
    struct tpm_dev *t = tpm_dev(dev);
    TPM2B_AUTH auth = {.size = 0};
    TPM2B_NV_PUBLIC pub;
    TSS2_RC rc;

    memset(&pub, 0, sizeof(pub));
    pub.nvPublic.nvIndex = t->nv_index;
    pub.nvPublic.nameAlg = TPM2_ALG_SHA256;
    pub.nvPublic.attributes = OUR_NV_ATTRS;
    pub.nvPublic.dataSize = size;
    rc = Esys_NV_DefineSpace(t->esys, ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                             ESYS_TR_NONE, &auth, &pub, tr);
    if (rc == TSS2_RC_SUCCESS) {
        return 0;
    }
    *tr = ESYS_TR_NONE;
    if (prov_tpm_rc_base(rc) == TPM2_RC_NV_SPACE) {
        return prov_fail(PROV_ERR_DEVICE,
                         "%s: no NV space left for a %u-byte certificate at 0x%08x (%s, "
                         "TSS2_RC 0x%08x)",
                         dev->name, (unsigned)size, (unsigned)t->nv_index, Tss2_RC_Decode(rc),
                         (unsigned)rc);
    }
    return prov_tpm_fail(dev, "NV_DefineSpace", rc);
}

static int nv_write(struct prov_device *dev, ESYS_TR tr, const unsigned char *der, uint16_t len)
{
    struct tpm_dev *t = tpm_dev(dev);
    uint16_t chunk;
    TPM2B_MAX_NV_BUFFER buf;
    TSS2_RC rc;
    int r;

    r = nv_limits(dev);
    if (r < 0) {
        return r;
    }
    chunk = nv_chunk(dev);

    for (uint16_t off = 0; off < len;) {
        uint16_t n = (uint16_t)(len - off) < chunk ? (uint16_t)(len - off) : chunk;

        buf.size = n;
        memcpy(buf.buffer, der + off, n);
        rc = Esys_NV_Write(t->esys, ESYS_TR_RH_OWNER, tr, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                           ESYS_TR_NONE, &buf, off);
        if (rc != TSS2_RC_SUCCESS) {
            return prov_tpm_fail(dev, "NV_Write", rc);
        }
        off = (uint16_t)(off + n);
    }
    return 0;
}

/* Checks that the index may take this key's certificate; prepares st for writing der_len. */
static int take_index(struct prov_device *dev, struct prov_key *key, struct nv_state *st,
                      uint16_t der_len)
{
    struct tpm_key *k = key->priv;
    char what[256];
    int r;

    if (st->tr != ESYS_TR_NONE) {
        if (!is_our_leftover(st) && !holds_cert_of(st, key->pub) && !k->is_replacement) {
            describe(st, what, sizeof(what));
            return prov_fail(PROV_ERR_ALREADY_ISSUED,
                             "%s: NV index 0x%08x already holds %s (use --reissue to replace "
                             "it)",
                             dev->name, (unsigned)tpm_dev(dev)->nv_index, what);
        }
        /* Redefined unless it is exactly the index this certificate needs. */
        if (st->size != der_len || (st->attrs & ~(TPMA_NV)NV_STATE_BITS) != OUR_NV_ATTRS) {
            r = nv_undefine(dev, st);
            if (r < 0) {
                return r;
            }
        }
    }
    if (st->tr == ESYS_TR_NONE) {
        return nv_define(dev, der_len, &st->tr);
    }
    return 0;
}

int prov_tpm_store_certificate(struct prov_device *dev, struct prov_key *key, X509 *cert)
{
    struct tpm_dev *t = tpm_dev(dev);
    struct nv_state st = {.tr = ESYS_TR_NONE};
    unsigned char *der = NULL;
    unsigned char *back = NULL;
    int der_len = i2d_X509(cert, &der);
    int r;

    if (der_len <= 0) {
        return prov_fail_ossl(PROV_ERR_CRYPTO, "%s: cannot encode the certificate", dev->name);
    }
    if (EVP_PKEY_eq(X509_get0_pubkey(cert), key->pub) != 1) {
        r = prov_fail(PROV_ERR_INPUT, "%s: the certificate is not for the key at 0x%08x", dev->name,
                      (unsigned)((struct tpm_key *)key->priv)->handle);
        goto out;
    }
    r = nv_limits(dev);
    if (r < 0) {
        goto out;
    }
    if (der_len > t->nv_index_max) {
        r = prov_fail(PROV_ERR_UNSUPPORTED,
                      "%s: the %d-byte certificate is larger than the TPM's largest NV index "
                      "(TPM2_PT_NV_INDEX_MAX = %u bytes)",
                      dev->name, der_len, (unsigned)t->nv_index_max);
        goto out;
    }
    r = nv_state_read(dev, &st);
    if (r < 0) {
        goto out;
    }
    if (st.data != NULL && st.size == der_len && memcmp(st.data, der, (size_t)der_len) == 0 &&
        (st.attrs & ~(TPMA_NV)NV_STATE_BITS) == OUR_NV_ATTRS) {
        goto out; /* already there, read back just now */
    }
    r = take_index(dev, key, &st, (uint16_t)der_len);
    if (r == 0) {
        r = nv_write(dev, st.tr, der, (uint16_t)der_len);
    }
    if (r < 0) {
        goto out;
    }
    back = malloc((size_t)der_len);
    if (back == NULL) {
        r = PROV_ERR_NOMEM;
        goto out;
    }
    r = nv_read(dev, st.tr, OUR_NV_ATTRS, (uint16_t)der_len, back);
    if (r == 0 && memcmp(back, der, (size_t)der_len) != 0) {
        r = prov_fail(PROV_ERR_DEVICE, "%s: NV index 0x%08x reads back different bytes", dev->name,
                      (unsigned)t->nv_index);
    }
    if (r == 0) {
        prov_debug("tpm", "%s: certificate (%d bytes, chunks of %u) in NV index 0x%08x", dev->name,
                   der_len, (unsigned)nv_chunk(dev), (unsigned)t->nv_index);
    }
out:
    nv_state_clear(dev, &st);
    free(back);
    OPENSSL_free(der);
    return r;
}
