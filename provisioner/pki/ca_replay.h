/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_PKI_CA_REPLAY_H
#define PROV_PKI_CA_REPLAY_H

#include <stdbool.h>
#include <time.h>

#include "ca_index.h"

/*
 * The CMP transactions the CA service has answered, kept in the CA index (table
 * cmp_transaction, schema step 5 of ca_index.c), so that a message replayed after the service
 * restarted is refused as it is while the service remembers it in memory (service/cmp_server.c,
 * doc/ca-service.md "Who may ask"). A transaction is remembered until the certificate that
 * signed its request expires: a replay after that fails its protection check anyway. Times
 * are seconds since the epoch.
 */

/* Longest transactionID kept, in bytes (RFC 9483 section 3.1 asks for 128 bits). */
#define PROV_CA_REPLAY_TID_MAX 64

/*
 * Whether the transactionID (tid, len bytes) is one the index remembers at now. 0, or
 * PROV_ERR_JOURNAL (*is_known false).
 */
int prov_ca_replay_is_known(struct prov_ca_index *ix, const unsigned char *tid, size_t len,
                            time_t now, bool *is_known);

/*
 * Remembers the transactionID until expires_at, in its own transaction, and drops the ones
 * whose time is over (so the table holds only what can still be replayed). Remembering one
 * twice keeps the first. 0, PROV_ERR_INPUT for an ID longer than PROV_CA_REPLAY_TID_MAX, or
 * PROV_ERR_JOURNAL.
 */
int prov_ca_replay_remember(struct prov_ca_index *ix, const unsigned char *tid, size_t len,
                            time_t now, time_t expires_at);

/*
 * The same rows written in a write transaction the caller holds open (an issuance's:
 * prov_ca_record.also, ca_index.h), so that the transactionID is remembered in the commit
 * that records the certificate it asked for: no crash can come between the two.
 */
int prov_ca_replay_remember_in(struct prov_ca_index *ix, const unsigned char *tid, size_t len,
                               time_t now, time_t expires_at);

#endif
