/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_CERT_DER_H
#define PROV_CERT_DER_H

#include <stddef.h>

#include <openssl/x509.h>

/*
 * cert's DER, encoded once per certificate object and kept with it (cert_der.c): *der is the
 * caller's (OPENSSL_free), as i2d_X509's would be. PROV_ERR_INPUT (no certificate),
 * PROV_ERR_NOMEM or PROV_ERR_CRYPTO; *der is then NULL.
 */
int prov_cert_der(X509 *cert, unsigned char **der, size_t *len)
    __attribute__((warn_unused_result));

/* The SHA-256 of cert's DER into out, kept the same way. Errors as prov_cert_der. */
int prov_cert_sha256(X509 *cert, unsigned char out[32]) __attribute__((warn_unused_result));

#endif
