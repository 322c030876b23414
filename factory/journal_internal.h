/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_FACTORY_JOURNAL_INTERNAL_H
#define PROV_FACTORY_JOURNAL_INTERNAL_H

/*
 * Shared by journal.c (open, transitions, reads), journal_audit.c (the hash chain) and
 * journal_station.c (claims); not an interface of the layer. The store beneath them is
 * journal_store.h.
 */
#include <pthread.h>
#include <stdbool.h>

#include "journal.h"
#include "journal_store.h"

struct prov_journal {
    struct journal_store *store;
    /*
     * Serializes the transactions (and the locked reads) of this process on the store: the
     * audit chain needs a total order anyway, and a transition is far cheaper than the key
     * generation it records.
     */
    pthread_mutex_t lock;
    /* Test-only crash hook (journal.h). */
    enum prov_journal_state crash_state;
    long crash_after;
    long crash_count;
    bool is_crash_at_run_end; /* "run:1": after the run's end is committed */
    /* Test-only pause hook (journal.c). */
    enum prov_journal_state pause_state;
    char *pause_path;
};

/*
 * A journal on a store that is already open (the unit tests' mock store); takes the store,
 * closing it on failure. Writers read the test hooks from the environment.
 */
int journal_open_on(struct journal_store *store, bool writable, struct prov_journal **out);

/* Opens the journal at path (a file or a ledger URI) in any store mode. */
int journal_open_mode(const char *path, const char *password, const char *station,
                      enum journal_store_mode mode, struct prov_journal **out);

/* The schema upgrade of a journal with records, as an audit record (journal.c). */
extern const struct journal_upgrade_hook journal_upgrade_audit;

/* Appends one audit record inside the caller's transaction (journal_audit.c). */
int journal_audit_append(struct journal_store *s, const char *lot, const char *serial,
                         const char *event, const char *detail);

#endif
