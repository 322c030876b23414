/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_BACKEND_TPM_INTERNAL_H
#define PROV_BACKEND_TPM_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "tss2_api.h"

#include "backend.h"
#include "tpm.h"

/* Shared between tpm.c (device), tpm_key.c (keys), tpm_nv.c (certificate), tpm_pub.c. */

/* dev->priv */
struct tpm_dev {
    TSS2_TCTI_CONTEXT *tcti;
    ESYS_CONTEXT *esys;
    char *tcti_conf; /* "" for the loader's default */
    uint32_t srk_handle;
    uint32_t key_handle;
    uint32_t nv_index;
    ESYS_TR srk;            /* ESYS_TR_NONE until the first key is generated */
    uint16_t nv_buffer_max; /* TPM2_PT_NV_BUFFER_MAX; 0 until read */
    uint16_t nv_index_max;  /* TPM2_PT_NV_INDEX_MAX; 0 until read */
    char *identity;         /* cached EK digest */
};

/* key->priv */
struct tpm_key {
    uint32_t handle;
    ESYS_TR tr;          /* the persistent object; closed by free_key */
    bool is_replacement; /* made with replace: may take over the NV index */
    TPMT_PUBLIC public;  /* as the TPM returned it (Create or ReadPublic) */
};

static inline struct tpm_dev *tpm_dev(struct prov_device *dev)
{
    return dev->priv;
}

/* tpm_rc.c, beside the handle syntax of a device string: is handle a persistent one? */
bool tpm_is_persistent(uint32_t handle);

/* Records "<dev>: <what>: <decoded> (TSS2_RC 0x...)" with the mapped code; returns it. */
int prov_tpm_fail(struct prov_device *dev, const char *what, TSS2_RC rc);

/* The TPM error without its handle/parameter/session number (format 1), for comparisons. */
TSS2_RC prov_tpm_rc_base(TSS2_RC rc);

/*
 * Opens the persistent object or NV index at handle. Absent is not an error: *tr = ESYS_TR_NONE and
 * *pub = NULL. Otherwise *tr must be closed (Esys_TR_Close) and *pub freed (Esys_Free) by the
 * caller; pub may be NULL when the caller does not want it.
 */
int prov_tpm_open_handle(struct prov_device *dev, uint32_t handle, ESYS_TR *tr, TPM2B_PUBLIC **pub);

/* The SRK, created and made persistent the first time (see tpm.h); owned by the device. */
int prov_tpm_srk(struct prov_device *dev, ESYS_TR *out);

/* The persistent handles in [first, last], ascending; *out freed by the caller. */
int prov_tpm_list_persistent(struct prov_device *dev, uint32_t first, uint32_t last, uint32_t **out,
                             size_t *n);

/* tpm_pub.c: the public key of a TPM object, and its type (PROV_ERR_UNSUPPORTED if none). */
int prov_tpm_public_to_pkey(struct prov_device *dev, const TPMT_PUBLIC *pub, EVP_PKEY **out,
                            enum prov_key_type *type);

/* tpm_pub.c: does the TPM public area hold pkey? Records nothing. */
bool prov_tpm_public_matches(const TPMT_PUBLIC *pub, EVP_PKEY *pkey);

/* tpm_pub.c: the key-id tag kept in authPolicy (tpm.h). */
int prov_tpm_id_tag(const unsigned char *id, size_t id_len, TPM2B_DIGEST *out);
/* The id in a tagged authPolicy, or false when the policy is not a tag. */
bool prov_tpm_id_from_tag(const TPM2B_DIGEST *policy, unsigned char *id, size_t *id_len);

/* tpm_key.c: a prov_key for the persistent object (takes over tr; closes it on failure). */
int prov_tpm_make_key(struct prov_device *dev, uint32_t handle, ESYS_TR tr, const TPMT_PUBLIC *pub,
                      const char *label, struct prov_key **out);

/*
 * tpm_nv.c: is the NV index free for a new identity? 0 when undefined or a leftover of ours
 * (defined with our attributes, never written); PROV_ERR_ALREADY_ISSUED otherwise, naming
 * what it holds.
 */
int prov_tpm_nv_check_free(struct prov_device *dev);

/*
 * tpm_nv.c: undefines the NV index if it holds a certificate for pub or is a leftover of
 * ours; pub NULL undefines it whatever it holds. Undefined already is fine.
 */
int prov_tpm_nv_clear(struct prov_device *dev, EVP_PKEY *pub);

/* tpm_nv.c: ops->store_certificate. */
int prov_tpm_store_certificate(struct prov_device *dev, struct prov_key *key, X509 *cert);

/* tpm_nv.c: the certificate of pub in the NV index, *out NULL when it holds none. */
int prov_tpm_nv_cert_of(struct prov_device *dev, EVP_PKEY *pub, X509 **out);

/* tpm_key.c: the key operations of the ops table. */
int prov_tpm_generate_key(struct prov_device *dev, const struct prov_keygen_params *params,
                          struct prov_key **out);
int prov_tpm_find_key(struct prov_device *dev, const char *key_uri, struct prov_key **out);
int prov_tpm_find_key_by_id(struct prov_device *dev, const unsigned char *id, size_t id_len,
                            struct prov_key **out);
int prov_tpm_find_key_by_public(struct prov_device *dev, EVP_PKEY *pub, struct prov_key **out);
int prov_tpm_key_props(struct prov_device *dev, struct prov_key *key, struct prov_key_props *out);
int prov_tpm_sign(struct prov_device *dev, struct prov_key *key, enum prov_sig_mech mech,
                  const unsigned char *in, size_t in_len, unsigned char *sig, size_t *sig_len);
int prov_tpm_delete_key(struct prov_device *dev, struct prov_key *key);
void prov_tpm_free_key(struct prov_device *dev, struct prov_key *key);

/* Device strings without a TPM (tpm_uri.c): the entries of struct prov_backend_ops. */
int prov_tpm_parse_name(const char *device_uri, struct prov_device_name *out);
int prov_tpm_build_uri(const struct prov_device_name *name, char **out);
bool prov_tpm_names_identity(const char *device_uri, const char *identity);

#endif
