/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_FACTORY_LOT_BUNDLE_H
#define PROV_FACTORY_LOT_BUNDLE_H

/*
 * What `lot export` builds its formats from (the lot's devices, read by lot_export.c) and
 * builds them into (a bundle of files in memory, written by lot_export.c): shared by the
 * inventory and record formats (lot_export.c) and the cloud ones (lot_export_cloud.c).
 */
#include <stddef.h>

#include <openssl/x509.h>

#include <json-c/json.h>

#include "journal.h"

/* A built export: files relative to the output (one unnamed file for a file format). */
struct prov_lot_file {
    char *name; /* "" for a file format's single file; may hold one '/' (a subdirectory) */
    char *data;
    size_t len;
};

struct prov_lot_bundle {
    struct prov_lot_file *files;
    size_t n_files;
    size_t n_devices;   /* devices exported */
    size_t n_left_out;  /* rows of the lot not exported (their state) */
};

void prov_lot_bundle_clear(struct prov_lot_bundle *b);

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
    int revoked_reason;   /* RFC 5280 CRLReason of the certificate's revocation; -1: not revoked */
    char revoked_at[32];  /* when it was revoked, RFC 3339 UTC ("" when not revoked) */
};

/* What every format is built from. */
struct lot_input {
    const char *lot;
    unsigned states;
    struct lot_device *devices;
    size_t n;
    STACK_OF(X509) *chain; /* the CA's chain.pem, verified; NULL for csv and json without
                              a CA index */
    const char *revocations_from; /* the CA index read for revocations; NULL: none read */
};

/* Appends a file (data copied); PROV_ERR_NOMEM. */
int lot_bundle_add(struct prov_lot_bundle *b, const char *name, const char *data, size_t len);

/* Appends o as pretty JSON with a final newline, and releases o. */
int lot_bundle_add_json(struct prov_lot_bundle *b, const char *name, json_object *o);

/* A certificate as PEM (malloc'd string). */
int lot_cert_pem(X509 *cert, char **out);

#endif
