/* SPDX-License-Identifier: Apache-2.0 */
/*
 * TPM device strings without a TPM: "tpm2:" and a TCTI configuration, or "tpm2:ek-sha256=HEX"
 * (a TPM by its identity, a station's manifest row). A TCTI configuration has no escaping of
 * its own and is written as the TCTI loader takes it, so a string is built only when it splits
 * back into the same parts (prov_tpm_uri_split).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "error.h"
#include "tpm_internal.h"

#define EK_ATTR "ek-sha256="

int prov_tpm_parse_name(const char *device_uri, struct prov_device_name *out)
{
    uint32_t handle = 0;
    char *tcti = NULL;
    int r;

    memset(out, 0, sizeof(*out));
    r = prov_tpm_uri_split(device_uri, &tcti, &handle);
    if (r < 0) {
        return r == PROV_ERR_NOMEM ? prov_fail(r, "out of memory") : r;
    }
    if (strncmp(tcti, EK_ATTR, strlen(EK_ATTR)) == 0) {
        out->identity = strdup(tcti + strlen(EK_ATTR));
        free(tcti);
        return out->identity != NULL ? 0 : prov_fail(PROV_ERR_NOMEM, "out of memory");
    }
    out->tcti = tcti;
    return 0;
}

int prov_tpm_build_uri(const struct prov_device_name *name, char **out)
{
    const char *want = name->tcti ? name->tcti : name->identity;
    struct prov_device_name back;
    const char *got;
    char *s = NULL;
    int r;

    *out = NULL;
    if (name->module_path != NULL || (name->identity != NULL) == (name->tcti != NULL)) {
        return prov_fail(PROV_ERR_USAGE, "a TPM is named by its TCTI or by its EK digest, one of "
                                         "the two");
    }
    if (asprintf(&s, "tpm2:%s%s", name->tcti ? "" : EK_ATTR, want) < 0) {
        return prov_fail(PROV_ERR_NOMEM, "out of memory");
    }
    r = prov_tpm_parse_name(s, &back);
    got = name->tcti ? back.tcti : back.identity;
    if (r == 0 && (got == NULL || strcmp(got, want) != 0)) {
        r = prov_fail(PROV_ERR_USAGE, "device \"%s\": \"%s\" does not read back as itself", s,
                      want);
    }
    prov_device_name_clear(&back);
    if (r < 0) {
        free(s);
        return r;
    }
    *out = s;
    return 0;
}

bool prov_tpm_names_identity(const char *device_uri, const char *identity)
{
    const size_t prefix = strlen("tpm2:" EK_ATTR);

    return device_uri != NULL && identity != NULL &&
           strncmp(device_uri, "tpm2:" EK_ATTR, prefix) == 0 &&
           strcasecmp(device_uri + prefix, identity) == 0;
}
