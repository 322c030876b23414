/* SPDX-License-Identifier: Apache-2.0 */
/* The station's identity toward the CA service (station_identity.h). */
#include "station_identity.h"

#include "backend.h"
#include "cmp_asn1.h"
#include "error.h"
#include "signer.h"

int prov_station_identity_open(const struct prov_config *cfg, struct prov_station_identity *id)
{
    int r = 0;

    id->cert = prov_cmp_read_cert(cfg->station_cert);
    id->root = prov_cmp_read_cert(cfg->root_cert);
    id->trust = X509_STORE_new();
    if (id->cert == NULL || id->root == NULL) {
        r = prov_fail(PROV_ERR_INPUT, "[ca] %s %s: not a PEM certificate",
                      id->cert == NULL ? "station_cert" : "root_cert",
                      id->cert == NULL ? cfg->station_cert : cfg->root_cert);
    } else if (id->trust == NULL || !X509_STORE_add_cert(id->trust, id->root)) {
        r = prov_fail(PROV_ERR_NOMEM, "issuer: out of memory");
    }
    if (r == 0) {
        r = prov_device_open_login(cfg, cfg->station_key, cfg->station_pin, "station PIN", false,
                                   &id->dev);
    }
    if (r == 0) {
        r = id->dev->ops->find_key(id->dev, cfg->station_key, &id->key);
    }
    if (r == 0 && EVP_PKEY_eq(id->key->pub, X509_get0_pubkey(id->cert)) != 1) {
        r = prov_fail(PROV_ERR_CONFIG, "[ca] station_key %s does not match station_cert %s",
                      cfg->station_key, cfg->station_cert);
    }
    if (r == 0) {
        r = prov_signer_pkey(id->key, &id->pkey);
    }
    return r;
}

void prov_station_identity_close(struct prov_station_identity *id)
{
    EVP_PKEY_free(id->pkey);
    prov_key_free(id->key);
    prov_device_close(id->dev);
    X509_free(id->cert);
    X509_free(id->root);
    X509_STORE_free(id->trust);
}
