/* SPDX-License-Identifier: Apache-2.0 */
/* The remote issuers, one row a scheme of [ca] url (remote.h). */
#include "remote.h"

#include <stddef.h>

#include "issuer.h"
#include "issuer_cmp.h"
#include "issuer_est.h"

static const struct prov_issuer_kind remote_kinds[] = {
    {.scheme = "cmp://", .open = prov_issuer_cmp_open},
    {.scheme = "est://", .open = prov_issuer_est_open},
    {.scheme = "https://", .open = prov_issuer_est_open},
};

void prov_remote_register(void)
{
    for (size_t i = 0; i < sizeof(remote_kinds) / sizeof(remote_kinds[0]); i++) {
        prov_issuer_register(&remote_kinds[i]);
    }
}
