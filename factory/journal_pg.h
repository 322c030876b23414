/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_FACTORY_JOURNAL_PG_H
#define PROV_FACTORY_JOURNAL_PG_H

/*
 * The PostgreSQL store's insides (doc/ledger.md), shared by its files, each standing on the
 * ones below: journal_pg_db.c (connection, statements), journal_pg_lease.c (leases),
 * journal_pg.c (schema, transactions, writes), journal_pg_reads.c (reads); the journal
 * itself sees the store through journal_store.h.
 */
#include <stdbool.h>
#include <stddef.h>

#include "pq_api.h"

#include "journal_pg_db.h"
#include "journal_pg_lease.h"
#include "journal_store.h"

struct journal_pg {
    struct journal_store base; /* base.name: the URI with any password masked */
    struct journal_pg_db db;
    struct journal_pg_leases leases;
    char *station;    /* this station's name: its audit chain, its leases */
    size_t step_at;   /* the queue's length after a row's fenced update (0: none) */
    char *fin_serial; /* the row this transaction finishes (proven), its lease ended with it */
    long long fin_lot;
    long long lot_id; /* the lot whose name is lot_name (0: none yet) */
    char lot_name[256];
    int schema_version;
};

static inline struct journal_pg *journal_pg_of(struct journal_store *s)
{
    return (struct journal_pg *)s;
}

/* The SHA-256 of a certificate's DER issuer name, hex: what "per issuer" compares. */
int journal_pg_issuer(const unsigned char *der, size_t len, char hex[65]);

/* The hash of a chain's record seq ("" when there is none): an anchor's check. */
int journal_pg_audit_hash(struct journal_store *s, const char *chain, long long seq, char hash[65]);

/* The newest schema version this provisioner knows (journal_pg.c). */
int journal_pg_schema_newest(void);

/*
 * Brings the ledger's schema up to date in one transaction under the schema lock; *from and
 * *to say what it did (equal when nothing). A newer schema is refused.
 */
int journal_pg_migrate(struct journal_store *s, const struct journal_upgrade_hook *hook, int *from,
                       int *to);

/* The reads (journal_pg_reads.c): the ops of the same names (journal_store.h). */
int journal_pg_row_get(struct journal_store *s, long long lot_id, const char *serial,
                       struct prov_journal_device *d, long long *dev_id, long long *cert_id);
int journal_pg_audit_foreach(struct journal_store *s,
                             int (*fn)(void *ctx, const struct journal_audit_record *rec),
                             void *ctx);
int journal_pg_audit_rows(struct journal_store *s,
                          int (*fn)(void *ctx, const struct journal_row_audit *row), void *ctx);
int journal_pg_foreach_lot(struct journal_store *s,
                           int (*fn)(void *ctx, long long lot_id, const char *name,
                                     const char *manifest),
                           void *ctx);
int journal_pg_superseded_in_request(struct journal_store *s, long long lot_id, const char *serial,
                                     long long request, long long *by_run);
int journal_pg_last_superseded(struct journal_store *s, long long lot_id, const char *serial,
                               unsigned char **der, size_t *len);
int journal_pg_unretired_keys(struct journal_store *s, long long lot_id, const char *serial,
                              struct prov_journal_old_key **keys, size_t *n);
int journal_pg_row_has_cert(struct journal_store *s, long long lot_id, const char *serial,
                            const char *sha256, bool *out);
int journal_pg_foreach_key(struct journal_store *s,
                           int (*fn)(void *ctx, const struct prov_journal_key_ref *k), void *ctx);
int journal_pg_foreach_device(struct journal_store *s, long long lot_id,
                              int (*fn)(void *ctx, const struct prov_journal_device *d), void *ctx);
int journal_pg_rows_of(struct journal_store *s, long long lot_id, const char *const *serials,
                       size_t n,
                       int (*fn)(void *ctx, size_t i, const struct prov_journal_device *d),
                       void *ctx);
int journal_pg_counts(struct journal_store *s, long long lot_id,
                      long long counts[PROV_JOURNAL_STATE_COUNT], long long *n_superseded);

#endif
