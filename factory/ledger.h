/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_FACTORY_LEDGER_H
#define PROV_FACTORY_LEDGER_H

/*
 * The shared ledger's administration (doc/ledger.md): its schema, an existing station
 * journal moved into it, and the check of its audit. `provisioner ledger` (cli/cmd_ledger.c)
 * is the command; the journal itself (journal.h) opens the ledger like any journal.
 */
#include <stdbool.h>

#include "config.h"
#include "journal.h"

/* What a schema command did: the version found and the version left. */
struct prov_ledger_schema {
    int from;
    int to;
    int newest; /* what this provisioner knows */
};

/*
 * ledger init (is_init) creates the schema in an empty database and leaves a current one
 * alone; it sends an older one to migrate. ledger migrate upgrades an older schema in one
 * transaction under the schema lock, and refuses an empty database. Both refuse a schema
 * newer than this provisioner's (PROV_ERR_JOURNAL) and are idempotent.
 */
int prov_ledger_schema(const char *uri, const char *password, bool is_init,
                       struct prov_ledger_schema *out);

/* What ledger import moved. */
struct prov_ledger_import {
    long long lots, devices, certificates, audit_records;
    char chain[128]; /* the audit chain the records were filed under */
};

/*
 * Copies the SQLite journal at path (read-only) into the ledger in one transaction: lots,
 * runs, rows, certificates (superseded ones too), station claims, and its audit records
 * unchanged as a chain of their own (named "import:" and the journal's file name), so that
 * the imported chain verifies alone. A lot already in the ledger is refused (nothing is
 * imported): importing twice would count devices twice.
 */
int prov_ledger_import(const char *uri, const char *password, const char *path,
                       struct prov_ledger_import *out);

/*
 * Ends every lease station holds on rows not done (ledger release --station): the rows are
 * claimable at once, and the station's lease tokens are void, so a late write of it is
 * refused. *n: how many.
 */
int prov_ledger_release(const char *uri, const char *password, const char *station,
                        long long *n);

/* The leases enroll --reissue holds on a serial's rows (prov_ledger_hold). */
struct prov_ledger_hold;

/*
 * enroll --reissue on the ledger (cfg's journal a URI; otherwise *out is NULL and nothing is
 * done): takes, as station, the lease of every lot's row of serial that the ledger has
 * (reopening a finished one, as batch --reissue does), so that no station works the device
 * while enroll rewrites it. A row another station holds: PROV_ERR_JOURNAL with one line
 * naming the station, and no lease is kept. Released with prov_ledger_hold_release.
 */
int prov_ledger_hold_serial(const struct prov_config *cfg, const char *station, const char *serial,
                            struct prov_ledger_hold **out);

/* Gives the leases back (a finished row is finished again) and closes the ledger; NULL: no-op. */
void prov_ledger_hold_release(struct prov_ledger_hold *h);

#endif
