/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_SIGNER_H
#define PROV_SIGNER_H

#include <openssl/evp.h>

#include "backend.h"

/*
 * An EVP_PKEY whose public half is key->pub and whose private operations (ECDSA sign, RSA
 * PKCS#1 v1.5 / PSS sign) run on the device through key->dev->ops->sign. This is how a
 * hardware key reaches X509_REQ_sign, X509_sign and SSL_CTX_use_PrivateKey: the CSR,
 * issuance and check code is written once for every backend. The EVP_PKEY borrows key and
 * key->dev: both must outlive it. Errors: PROV_ERR_UNSUPPORTED, PROV_ERR_CRYPTO.
 */
int prov_signer_pkey(struct prov_key *key, EVP_PKEY **out);

#endif
