/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_STATION_IDENTITY_H
#define PROV_STATION_IDENTITY_H

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "config.h"
#include "device.h"

/*
 * What a station shows the CA service it asks (doc/ca-service.md "Stations as clients"),
 * the same for CMP (issuer_cmp.c) and EST (issuer_est.c): its certificate, the key of that
 * certificate in the station's own token, and the root the service's answers must chain to.
 */
struct prov_station_identity {
    X509 *cert;              /* [ca] station_cert */
    X509 *root;              /* [ca] root_cert */
    X509_STORE *trust;       /* root alone */
    struct prov_device *dev; /* the station's token, logged in with [ca] station_pin */
    struct prov_key *key;    /* [ca] station_key in it */
    EVP_PKEY *pkey;          /* key as an EVP_PKEY that signs in the token (signer.h) */
};

/*
 * Reads station_cert and root_cert, opens and logs in to the token of station_key, finds the
 * key and checks that it is station_cert's. A certificate that cannot be read is
 * PROV_ERR_INPUT, a key that is not the certificate's PROV_ERR_CONFIG; otherwise the errors
 * of prov_device_open_login. On failure what was opened stays in id for
 * prov_station_identity_close (id starts zeroed).
 */
int prov_station_identity_open(const struct prov_config *cfg, struct prov_station_identity *id);

/* Frees and closes what open made; id may be zeroed or partly open. */
void prov_station_identity_close(struct prov_station_identity *id);

#endif
