/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_CSR_H
#define PROV_CSR_H

#include <openssl/x509.h>

/* CSRs larger than this are refused unread (a sane bound for one device key). */
#define PROV_CSR_MAX_BYTES (64 * 1024)

/* Builds a CSR for subject, signed by signer with md. */
int prov_csr_create(EVP_PKEY *signer, const X509_NAME *subject, const EVP_MD *md,
                    X509_REQ **out);

/*
 * Proof of possession: the CSR's signature verifies with its own public key and, when
 * expected_pub is given, that key equals expected_pub (doc/platform.md, "Keys without a unique
 * CKA_ID"). PROV_ERR_POLICY
 * otherwise, naming what failed.
 */
int prov_csr_verify(X509_REQ *req, EVP_PKEY *expected_pub);

/* Reads a PEM or DER CSR of at most PROV_CSR_MAX_BYTES (larger: PROV_ERR_POLICY, exit 5).
 * PROV_ERR_INPUT / PROV_ERR_IO. */
int prov_csr_read(const char *path, X509_REQ **out);

/* Writes PEM atomically, mode 0644. */
int prov_csr_write(const char *path, X509_REQ *req);

#endif
