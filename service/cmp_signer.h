/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_CMP_SIGNER_H
#define PROV_CMP_SIGNER_H

#include <openssl/x509.h>

#include "issue.h"

/*
 * The key that signs the CA service's CMP answers: not the intermediate's (a CA certificate
 * has no digitalSignature, and CMP clients refuse it as a protection certificate), but a key of
 * its own in the CA token, labelled "cmp-signer", with an end-entity certificate issued by the
 * intermediate (provisioner/pki/lot_signer.h, prov_ca_signer_issue) with the extended key
 * usage id-kp-cmcCA, which the tool's CMP client requires of whoever signs an answer
 * (provisioner/remote/cmp_asn1.h): <CA dir>/cmp-signer.crt, recorded in the CA index under
 * the name "ca:cmp-signer". Made on the service's first start, and again when the certificate
 * has less than a day to live, is not the intermediate's, lacks id-kp-cmcCA (an older
 * version's), or its key is no longer on the token.
 */
struct prov_cmp_signer {
    X509 *cert;
    EVP_PKEY *key; /* private operations in the CA token */
    struct prov_key *hsm_key;
};

/* ca open with its key. PROV_ERR_* of the token, the CA index or the file. */
int prov_cmp_signer_open(const struct prov_config *cfg, struct prov_ca *ca,
                         struct prov_cmp_signer *out);
void prov_cmp_signer_close(struct prov_cmp_signer *s);

#endif
