/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_REMOTE_H
#define PROV_REMOTE_H

/*
 * The issuers of a station that asks the CA service (`provisioner ca serve`,
 * doc/ca-service.md) instead of holding a CA token: CMP (issuer_cmp.h) and EST
 * (issuer_est.h). They sit above the PKI library, which knows them only through its registry
 * of issuer kinds (provisioner/pki/issuer.h); the binary calls this once at start-up
 * (cli/main.c), so prov_issuer_open finds them by the scheme of [ca] url.
 */
void prov_remote_register(void);

#endif
