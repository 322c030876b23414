/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_KEYINDEX_H
#define PROV_KEYINDEX_H

#include <openssl/evp.h>

/*
 * The CA's index of certified public keys, for `sign` (a CSR comes from outside, so the same
 * key could be presented twice; batch has its journal for this). A text file
 * <ca dir>/issued-keys, one line per certificate: "SPKI-SHA256 CERT-SERIAL DEVICE-SERIAL",
 * the same key hash as the batch journal's pubkey_sha256. Open holds an exclusive lock on it
 * until close, so two `sign` runs on one station cannot both certify one key.
 */
struct prov_keyindex;

/* Opens (creating it under the umask: 0600, CA-side bookkeeping) and locks. PROV_ERR_STORAGE. */
int prov_keyindex_open(const char *ca_dir, struct prov_keyindex **out);

/* PROV_ERR_ALREADY_ISSUED naming the earlier device serial when pub is in the index. */
int prov_keyindex_check(struct prov_keyindex *ix, EVP_PKEY *pub);

/* Appends pub's line and fsyncs. PROV_ERR_STORAGE / PROV_ERR_CRYPTO. */
int prov_keyindex_add(struct prov_keyindex *ix, EVP_PKEY *pub, const char *cert_serial,
                      const char *serial);

/* Unlocks and frees; NULL is fine. */
void prov_keyindex_close(struct prov_keyindex *ix);

#endif
