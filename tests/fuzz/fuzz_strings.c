/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target for the short strings a user types: a PIN source spec (prov_secret_parse_source)
 * and a PKCS#11 device URI as the backend takes it (prov_pkcs11_parse_uri: RFC 7512 by
 * p11-kit, plus the tool's refusals of PINs, slot, library and unknown attributes, and the
 * shown form used in messages), and a TPM device string or key.uri (prov_tpm_uri_split:
 * "tpm2:<TCTI>" with an optional ";handle=0x8......."; the TCTI configuration itself goes to tpm2-tss's
 * loader, which opening a TPM would exercise with I/O, so it stops at the split). No I/O:
 * nothing is loaded.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "pkcs11_internal.h"
#include "secret.h"
#include "tpm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    enum prov_secret_kind kind;
    const char *arg = NULL;
    P11KitUri *uri = NULL;
    size_t sink = 0;

    if (s == NULL) {
        return 0;
    }
    memcpy(s, data, size);
    s[size] = '\0';
    if (prov_secret_parse_source(s, &kind, &arg) == 0) {
        if (kind != PROV_SECRET_PROMPT && (arg == NULL || arg < s || arg > s + size)) {
            __builtin_trap(); /* the argument points into the spec */
        }
        sink += arg != NULL ? strlen(arg) : 0;
    }
    if (prov_pkcs11_parse_uri(s, "device", &uri) == 0) {
        if (p11_kit_uri_get_pin_value(uri) != NULL || p11_kit_uri_get_pin_source(uri) != NULL) {
            __builtin_trap(); /* a URI carrying a PIN is always refused */
        }
        if (p11_kit_uri_get_slot_id(uri) != (CK_SLOT_ID)-1 ||
            p11_kit_uri_get_module_name(uri) != NULL) {
            __builtin_trap(); /* nothing p11-kit parses is ignored: slots, names refused */
        }
        p11_kit_uri_free(uri);
    } else if (prov_error_message() == NULL) {
        __builtin_trap();
    }
    sink += strlen(prov_pkcs11_shown_uri(s));
    prov_error_clear();
    {
        char *tcti = NULL;
        char *again = NULL;
        char *tcti2 = NULL;
        uint32_t handle = 0;
        uint32_t handle2 = 0;

        if (prov_tpm_uri_split(s, &tcti, &handle) == 0) {
            if (tcti == NULL || (handle != 0 && (handle & 0xff000000u) != 0x81000000u)) {
                __builtin_trap(); /* a split gives a TCTI and 0 or a persistent handle */
            }
            /* what prov_tpm_key_uri writes splits back into the same parts */
            again = prov_tpm_key_uri(tcti, handle ? handle : 0x81000101u);
            if (again == NULL || prov_tpm_uri_split(again, &tcti2, &handle2) != 0 ||
                strcmp(tcti, tcti2) != 0 || handle2 != (handle ? handle : 0x81000101u)) {
                __builtin_trap();
            }
        } else if (tcti != NULL || handle != 0 || prov_error_message() == NULL) {
            __builtin_trap(); /* a refusal leaves nothing behind and says why */
        }
        free(tcti);
        free(tcti2);
        free(again);
        prov_error_clear();
    }
    free(s);
    return sink == (size_t)-1;
}
