/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_BACKEND_TPM_H
#define PROV_BACKEND_TPM_H

#include <stdint.h>

#include "backend.h"

/*
 * The TPM 2.0 backend, on ESAPI through the TCTI loader (tpm2-tss).
 *
 * Device strings are "tpm2:" followed by a TCTI configuration, exactly as Tss2_TctiLdr takes it:
 *     tpm2:device:/dev/tpmrm0
 *     tpm2:swtpm:host=127.0.0.1,port=2321
 *     tpm2:tabrmd:bus_type=session
 * "tpm2:" alone uses the loader's default (tabrmd, then /dev/tpmrm0, /dev/tpm0, mssim) when
 * opened, but validate() refuses it as a device an operator names (a manifest row, --device):
 * it names no particular TPM. validate() also wants a TCTI whose library loads.
 * The TCTI library of a short name (swtpm, device, tabrmd, ...) is loaded once per process
 * and stays loaded; open() connects and sends TPM2_Startup(CLEAR) (TPM2_RC_INITIALIZE, "already
 * started", is fine). Each device object is one ESAPI context: not for concurrent use.
 *
 * A key is named (key.uri, doc/storage.md) by the device string plus its persistent handle:
 *     tpm2:swtpm:host=127.0.0.1,port=2321;handle=0x81000101
 * The handle is always the LAST ";handle=0x<hex>" of the string, so a TCTI configuration that
 * itself contains ';' (possible for the cmd TCTI) still parses. open() accepts this form and
 * ignores the handle; find_key() uses it (without one: the configured key handle).
 *
 * Persistent objects and the NV index (every one configurable in struct prov_device_params):
 * - Storage root key at 0x81000001, the handle the TCG provisioning guidance reserves for the
 *   SRK. An ECC P-256 restricted decryption primary (AES-128-CFB, noDA) is created there the
 *   first time a key is generated, then reused: a real TPM needs seconds per primary. An
 *   existing storage key at the handle (RSA or ECC, e.g. one the OS made) is used as it is.
 * - Device key at 0x81000101: in the owner's persistent range, outside the SRK (0x81000001)
 *   and EK (0x8101xxxx) handles and the low handles tools and OS stacks use for their own
 *   primaries. Created under the SRK with fixedTPM, fixedParent, sensitiveDataOrigin,
 *   userWithAuth, sign (no decrypt, not restricted) and noDA: its authorization is empty, so
 *   dictionary-attack protection would guard nothing and would only let any process that
 *   puts the TPM into lockout disable the device identity. EC keys and RSA keys have scheme
 *   NULL, so any hash can be used (ECDSA for EC, RSASSA for RSA).
 * - DER certificate in NV index 0x01800101: the owner NV range (0x018xxxxx), not the TCG
 *   EK-certificate range 0x01C0xxxx. Defined with exactly the certificate's size (so that
 *   tpm2_nvread returns the DER and nothing else), written by the owner (empty owner
 *   authorization), readable with the index's empty authorization or the owner's, noDA.
 *
 * The caller's key id (struct prov_keygen_params.id, at most 27 bytes) is kept in the key: its
 * authPolicy holds "prov", the id length, the id, zero padding (32 bytes, the size of the
 * SHA-256 name algorithm). No policy session can reach that value (it is not a policy digest
 * anyone knows a preimage of), so the key is used only through its empty authValue, as with
 * an empty policy; find_key_by_id() matches it, and key->id is that id again after a restart
 * (a journal that recorded the id before the key existed can find the key or its absence).
 * A key without the tag (made by another tool) has key->id = its handle, 4 bytes big-endian.
 *
 * Keys have no PIN: login() accepts any PIN and does not use it, so that a station config
 * with a device_pin for its PKCS#11 devices also works for TPM rows.
 *
 * Signing: ECDSA on the digest the core passes (SHA-1/256/384/512 by length), RSASSA-PKCS1 v1.5
 * (the DigestInfo is unpacked into hash + digest for TPM2_Sign). Raw RSA (RSA-PSS padded by the
 * caller, TLS 1.3) needs a decrypting key and is refused with PROV_ERR_UNSUPPORTED: use EC keys
 * (the default) on TPMs.
 *
 * generate_key() refuses (PROV_ERR_ALREADY_ISSUED) when the key handle holds a key or the NV
 * index holds anything, unless params->replace: then both are cleared first (the earlier
 * identity is gone even if the new enrollment later fails) - provided the key there is
 * params->replaceable_pub, the NV index certifies it under params->replaceable_subject, or no
 * certificate in the NV index names it; the key of another identity is refused
 * (PROV_ERR_POLICY) and nothing is touched. store_certificate() overwrites
 * the NV index only when it is empty, holds a certificate of this very key, or the key was
 * made with replace. delete_key() evicts the key and undefines the NV index if it holds this
 * key's certificate.
 *
 * Errors: every TSS2_RC is kept as a number and Tss2_RC_Decode text in the message. An
 * unreachable TPM is PROV_ERR_NOT_FOUND at open and PROV_ERR_DEVICE_REMOVED afterwards;
 * TPM2_RC_LOCKOUT is PROV_ERR_PIN_LOCKED; a refused owner/endorsement authorization is
 * PROV_ERR_PIN_INCORRECT; see prov_tpm_rc_to_err().
 */
extern const struct prov_backend_ops prov_tpm_ops;

#define PROV_TPM_DEFAULT_SRK_HANDLE 0x81000001u
#define PROV_TPM_DEFAULT_KEY_HANDLE 0x81000101u
#define PROV_TPM_DEFAULT_NV_INDEX 0x01800101u
/* The longest key id a TPM key can carry (see above). */
#define PROV_TPM_KEY_ID_MAX 27

/* The PROV_ERR_* a TSS2_RC maps to (transport: DEVICE_REMOVED; lockout: PIN_LOCKED; ...). */
int prov_tpm_rc_to_err(uint32_t rc);

/*
 * Splits a device string or key.uri ("tpm2:<tcti>[;handle=0x8.......]"). *tcti gets a copy of
 * the TCTI configuration ("" for the default), *handle the persistent handle or 0. Errors:
 * PROV_ERR_USAGE (not tpm2:, control characters, a malformed or non-persistent handle),
 * PROV_ERR_NOMEM.
 */
int prov_tpm_uri_split(const char *uri, char **tcti, uint32_t *handle);

/* The key.uri for a key at handle on the TPM reached through tcti; NULL when out of memory. */
char *prov_tpm_key_uri(const char *tcti, uint32_t handle);

#endif
