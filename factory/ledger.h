/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_FACTORY_LEDGER_H
#define PROV_FACTORY_LEDGER_H

/*
 * The shared ledger's administration (doc/ledger.md): its schema, an existing station
 * journal moved into it, and the check of its audit. `provisioner ledger` (cli/cmd_ledger.c)
 * is the command; the journal itself (journal.h) opens the ledger like any journal.
 */
#include <stdbool.h>

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

#endif
