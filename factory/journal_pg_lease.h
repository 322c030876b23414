/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_FACTORY_JOURNAL_PG_LEASE_H
#define PROV_FACTORY_JOURNAL_PG_LEASE_H

/*
 * Leases on the ledger's rows (journal_pg_lease.c, doc/ledger.md "Work distribution"): the
 * rows this process holds, renewed by a thread on a connection of its own, and the fencing
 * check of a write. Stands on the connection (journal_pg_db.h).
 */
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#include "pq_api.h"

#include "journal_pg_db.h"
#include "journal_store.h"

struct pg_lease;

struct journal_pg_leases {
    struct journal_pg_db *db; /* the store's connection: claims, ends and fencing */
    const char *station;      /* this station's name (the store's) */
    int seconds;              /* a lease's time */
    struct pg_lease *held;
    pthread_mutex_t lock; /* guards held and is_renew_stop */
    pthread_cond_t renew_cond;
    pthread_t renew_thread;
    PGconn *renew_conn; /* the renewal's own connection; NULL until the first claim */
    bool is_renew_stop;
    char since[48]; /* the server's time at this process's first claim ("" before it) */
};

void journal_pg_leases_init(struct journal_pg_leases *l, struct journal_pg_db *db,
                            const char *station, int seconds);

/* Stops the renewal thread and forgets the leases (the close). */
void journal_pg_leases_stop(struct journal_pg_leases *l);

/* The ops of the same names (journal_store.h). */
int journal_pg_lease_claim(struct journal_pg_leases *l, long long lot_id, const char *serial,
                           bool is_reopen, char *holder, size_t cap, enum prov_journal_lease *out);
int journal_pg_lease_scan(struct journal_pg_leases *l, long long lot_id, const char *const *serials,
                          size_t n, bool *is_other);
int journal_pg_lease_end(struct journal_pg_leases *l, long long lot_id, const char *serial,
                         bool is_done);

/*
 * Inside a transaction that finishes the row: its lease's end (done) queued with it, when this
 * process holds one (*is_queued); once that transaction committed, journal_pg_lease_forget
 * takes it off the list, and the lease's end later has nothing left to send.
 */
int journal_pg_lease_end_with(struct journal_pg_leases *l, long long lot_id, const char *serial,
                              bool *is_queued);
void journal_pg_lease_forget(struct journal_pg_leases *l, long long lot_id, const char *serial);

/*
 * Inside a transaction, before a row is written: PROV_ERR_JOURNAL when the row is claimed and
 * its lease token is not the one this process holds (taken over, or released by an operator).
 */
int journal_pg_fence(struct journal_pg_leases *l, long long lot_id, const char *serial);

#endif
