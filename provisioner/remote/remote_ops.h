/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_REMOTE_OPS_H
#define PROV_REMOTE_OPS_H

#include <openssl/x509.h>

#include "issuer.h"

/*
 * The entries of the issuer ops table (provisioner/pki/issuer.h) that the CMP and the EST
 * issuer fill alike (remote.c): a station that asks the CA service holds no CA token, applies
 * the CSR policy before a CSR goes out (the service applies it again), and keeps no record of
 * what was issued (the CA index is the service's).
 */

/* No device here is the CA's: always 0. */
int prov_remote_check_device(struct prov_issuer *is, const char *uri, struct prov_device *dev);

/* The CSR policy (prov_issue_check_csr) when req is given; the record's rules are the service's. */
int prov_remote_check(struct prov_issuer *is, const struct prov_request *rq, X509_REQ *req);

/* NULL: no CA index on the station. */
struct prov_ca_index *prov_remote_record(struct prov_issuer *is);

#endif
