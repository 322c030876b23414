/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_FACTORY_LOT_EXPORT_INTERNAL_H
#define PROV_FACTORY_LOT_EXPORT_INTERNAL_H

#include <openssl/x509.h>

#include <json-c/json.h>

#include "lot_export.h"

/* One exported device, as the journal has it (lot_export.c reads them). */
struct lot_device {
    char *serial;
    enum prov_journal_state state;
    X509 *cert;
    char *pem; /* the certificate, PEM */
    char cert_serial[65];
    char sha256[65];
    char pubkey_sha256[65];
    char not_after[32];
};

/* What every format is built from. */
struct lot_input {
    const char *lot;
    unsigned states;
    struct lot_device *devices;
    size_t n;
    STACK_OF(X509) *chain; /* the CA's chain.pem, verified; NULL for csv and json */
};

/* Appends a file (data copied); PROV_ERR_NOMEM. */
int lot_bundle_add(struct prov_lot_bundle *b, const char *name, const char *data, size_t len);

/* Appends o as pretty JSON with a final newline, and releases o. */
int lot_bundle_add_json(struct prov_lot_bundle *b, const char *name, json_object *o);

/* A certificate as PEM (malloc'd string). */
int lot_cert_pem(X509 *cert, char **out);

/* lot_export_cloud.c */
int lot_build_aws(const struct lot_input *in, struct prov_lot_bundle *b);
int lot_build_azure_dps(const struct lot_input *in, struct prov_lot_bundle *b);

#endif
