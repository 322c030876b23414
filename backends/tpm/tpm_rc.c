/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The edge between tpm2-tss and the core: TSS2_RC to PROV_ERR_* (with the decoded text kept in
 * the message), and the tpm2: device string / key.uri syntax. No TPM access here, so that unit
 * tests can cover it.
 */
#include "tpm.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tss2/tss2_tpm2_types.h>

#include "error.h"
#include "tpm_internal.h"

#define HANDLE_ATTR ";handle="

bool tpm_is_persistent(uint32_t handle)
{
    return (handle >> 24) == 0x81; /* TPM2_HT_PERSISTENT */
}

TSS2_RC prov_tpm_rc_base(TSS2_RC rc)
{
    TSS2_RC layer = rc & TSS2_RC_LAYER_MASK;
    TSS2_RC code = rc & ~TSS2_RC_LAYER_MASK;

    if (layer != TSS2_TPM_RC_LAYER && layer != TSS2_RESMGR_TPM_RC_LAYER) {
        return code;
    }
    /* Format 1 adds the number of the failing handle, parameter or session (bits 6..11). */
    if (code & TPM2_RC_FMT1) {
        return code & (TPM2_RC_FMT1 | 0x3f);
    }
    return code;
}

static int tpm_layer_to_err(TSS2_RC base)
{
    switch (base) {
    case TPM2_RC_LOCKOUT: return PROV_ERR_PIN_LOCKED;
    case TPM2_RC_AUTH_FAIL:
    case TPM2_RC_BAD_AUTH: return PROV_ERR_PIN_INCORRECT;
    case TPM2_RC_NV_DEFINED: return PROV_ERR_ALREADY_ISSUED;
    case TPM2_RC_HANDLE: return PROV_ERR_NOT_FOUND;
    case TPM2_RC_ASYMMETRIC:
    case TPM2_RC_CURVE:
    case TPM2_RC_KEY_SIZE:
    case TPM2_RC_HASH:
    case TPM2_RC_SCHEME:
    case TPM2_RC_NV_SIZE: return PROV_ERR_UNSUPPORTED;
    default: return PROV_ERR_DEVICE;
    }
}

int prov_tpm_rc_to_err(uint32_t rc)
{
    TSS2_RC layer = rc & TSS2_RC_LAYER_MASK;
    TSS2_RC base = prov_tpm_rc_base(rc);

    if (rc == TSS2_RC_SUCCESS) {
        return 0;
    }
    if (layer == TSS2_TPM_RC_LAYER || layer == TSS2_RESMGR_TPM_RC_LAYER) {
        return tpm_layer_to_err(base);
    }
    switch (base) {
    case TSS2_BASE_RC_IO_ERROR:
    case TSS2_BASE_RC_NO_CONNECTION:
    case TSS2_BASE_RC_NO_TPM: return PROV_ERR_DEVICE_REMOVED;
    case TSS2_BASE_RC_MEMORY: return PROV_ERR_NOMEM;
    case TSS2_BASE_RC_NOT_SUPPORTED:
    case TSS2_BASE_RC_NOT_IMPLEMENTED: return PROV_ERR_UNSUPPORTED;
    default: return PROV_ERR_DEVICE;
    }
}

int prov_tpm_fail(struct prov_device *dev, const char *what, TSS2_RC rc)
{
    /*
     * The tool calls ESAPI strictly in order; "wrong order" comes back when the transport
     * failed in the middle of a command (seen with the TPM stopped mid-operation, after
     * the TCTI lost the connection): the device is gone, not a failed operation.
     */
    if (rc == TSS2_ESYS_RC_BAD_SEQUENCE) {
        return prov_fail(PROV_ERR_DEVICE_REMOVED,
                         "%s: %s: the TPM stopped answering in the middle of a command (%s, "
                         "TSS2_RC 0x%08x)",
                         dev->name, what, Tss2_RC_Decode(rc), (unsigned)rc);
    }
    return prov_fail(prov_tpm_rc_to_err(rc), "%s: %s: %s (TSS2_RC 0x%08x)", dev->name, what,
                     Tss2_RC_Decode(rc), (unsigned)rc);
}

/* "0x" and 1 to 8 hex digits, nothing else. */
static bool parse_hex32(const char *s, uint32_t *out)
{
    unsigned long v;
    char *end = NULL;
    size_t n;

    if (s[0] != '0' || (s[1] != 'x' && s[1] != 'X')) {
        return false;
    }
    n = strlen(s + 2);
    if (n < 1 || n > 8 || strspn(s + 2, "0123456789abcdefABCDEF") != n) {
        return false;
    }
    v = strtoul(s + 2, &end, 16);
    *out = (uint32_t)v;
    return *end == '\0';
}

/* The last ";handle=" in s, or NULL. */
static const char *last_handle_attr(const char *s)
{
    const char *last = NULL;

    for (const char *p = strstr(s, HANDLE_ATTR); p != NULL; p = strstr(p + 1, HANDLE_ATTR)) {
        last = p;
    }
    return last;
}

int prov_tpm_uri_split(const char *uri, char **tcti, uint32_t *handle)
{
    const char *conf;
    const char *attr;
    size_t conf_len;

    *tcti = NULL;
    *handle = 0;
    if (uri == NULL || strncmp(uri, "tpm2:", 5) != 0) {
        return prov_fail(PROV_ERR_USAGE, "device \"%s\": a TPM is named tpm2:<TCTI>",
                         uri ? uri : "");
    }
    for (const char *p = uri; *p != '\0'; p++) {
        if (iscntrl((unsigned char)*p)) {
            return prov_fail(PROV_ERR_USAGE, "device \"%s\": contains a control character", uri);
        }
    }
    conf = uri + 5;
    conf_len = strlen(conf);
    attr = last_handle_attr(conf);
    if (attr != NULL) {
        if (!parse_hex32(attr + strlen(HANDLE_ATTR), handle) || !tpm_is_persistent(*handle)) {
            *handle = 0;
            return prov_fail(PROV_ERR_USAGE,
                             "key URI \"%s\": handle must be a persistent handle "
                             "0x81000000-0x81ffffff written as 0x<hex>",
                             uri);
        }
        conf_len = (size_t)(attr - conf);
    }
    *tcti = strndup(conf, conf_len);
    if (*tcti == NULL) {
        *handle = 0;
        return PROV_ERR_NOMEM;
    }
    return 0;
}

char *prov_tpm_key_uri(const char *tcti, uint32_t handle)
{
    char *uri = NULL;

    if (asprintf(&uri, "tpm2:%s" HANDLE_ATTR "0x%08x", tcti, (unsigned)handle) < 0) {
        return NULL;
    }
    return uri;
}
