/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_CA_INDEX_INTERNAL_H
#define PROV_CA_INDEX_INTERNAL_H

/*
 * What the index's other files (ca_index_revoke.c: revocations, CRL numbers, the audit trail;
 * ca_registry.c: stations and lots) use of ca_index.c. Not for callers outside
 * provisioner/pki/ca_index*.c and provisioner/pki/ca_registry.c.
 */
#include <stddef.h>

#include <sqlite3.h>

#include "ca_index.h"

/* The connection and the index file's path; the caller holds the lock for the connection. */
sqlite3 *prov_ca_index_db(struct prov_ca_index *ix);
const char *prov_ca_index_path(const struct prov_ca_index *ix);

/* The mutex that serializes the connection's transactions (ca_index.h). */
void prov_ca_index_lock(struct prov_ca_index *ix);
void prov_ca_index_unlock(struct prov_ca_index *ix);

/* Now as the index writes times: RFC 3339 UTC with milliseconds. */
void prov_ca_index_now_text(char *out, size_t cap);

/*
 * Inside the issuing transaction (prov_ca_index_record): every certificate that the new
 * certificate new_id superseded is recorded as revoked with reason superseded, with its
 * audit record. PROV_ERR_JOURNAL; the caller rolls back.
 */
int prov_ca_index_revoke_superseded(struct prov_ca_index *ix, long long new_id, const char *serial);

/*
 * Appends one record to the index's hash-chained audit trail (ca_index_revoke.c), inside the
 * caller's transaction. PROV_ERR_JOURNAL.
 */
int prov_ca_index_audit_append(struct prov_ca_index *ix, const char *at, const char *event,
                               const char *serial, const char *cert_serial, const char *detail);

#endif
