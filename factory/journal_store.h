/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_FACTORY_JOURNAL_STORE_H
#define PROV_FACTORY_JOURNAL_STORE_H

/*
 * The journal's store: where the rows, certificates, runs, claims and audit records live, and
 * how writers exclude each other. journal.c keeps the rules (which transition is legal, what a
 * row becomes, exactly-once, the audit hash chain) and asks a store only to read and write;
 * a store knows no rule. journal_sqlite.c is the first store (one SQLite file, flock beside
 * it); a database server would be another behind the same table, with its own locks.
 *
 * Calling convention: every op returns 0 or a negative PROV_ERR_* with the error recorded
 * (prov_fail) naming the store. The journal calls a store from one thread at a time for
 * everything between begin and end, and for the reads marked "locked" (journal.c holds its
 * mutex); the unlocked reads (foreach_*) may run beside a transaction of another thread.
 */
#include <stdbool.h>
#include <stddef.h>

#include "hex.h"
#include "journal.h"
#include "timestamp.h"

struct journal_store;

enum journal_store_mode {
    JOURNAL_STORE_READ,   /* status, report: no lock, the schema read as it is */
    JOURNAL_STORE_WRITE,  /* a batch run: the one writer of the journal */
    JOURNAL_STORE_SHARED, /* a station: writers side by side, each row locked by its worker */
    JOURNAL_STORE_ADMIN,  /* ledger init/migrate: no writer lock, the schema left as it is */
};

/* A device row as journal.c writes it whole; strings and key id are borrowed. */
struct journal_row {
    long long id; /* 0: a new row; row_put sets it */
    long long lot_id;
    const char *serial;
    const char *device_uri;
    enum prov_journal_state state;
    const unsigned char *key_id; /* NULL: none */
    size_t key_id_len;
    const char *key_uri;
    const char *storage;
    const char *error;
    int attempts;
    long long cert_id; /* the current certificate; 0: none */
    const char *updated;
};

/* A certificate to record, with the facts the uniqueness rules are about; borrowed. */
struct journal_cert {
    long long device_id;
    const char *cert_serial;   /* UNIQUE in the whole journal */
    const char *pubkey_sha256; /* UNIQUE in the whole journal */
    const char *sha256;
    const char *not_after;
    const unsigned char *key_id;
    size_t key_id_len;
    const unsigned char *der;
    size_t der_len;
    const char *issued;
    const char *device_uri; /* where its key was generated */
};

/* Which uniqueness rule a refused certificate broke. */
enum journal_unique {
    JOURNAL_UNIQUE_CERT_SERIAL,
    JOURNAL_UNIQUE_PUBKEY,
    JOURNAL_UNIQUE_CURRENT, /* the device serial has a current certificate of the issuer */
};

/* The hash before the first audit record, and the head of an empty chain. */
#define JOURNAL_ZERO_HASH "0000000000000000000000000000000000000000000000000000000000000000"

/* One audit record as stored; the hash is computed by journal_audit.c. */
struct journal_audit_record {
    long long seq;
    const char *at;
    const char *lot;
    const char *serial;
    const char *event;
    const char *detail;
    const char *prev_hash;
    const char *hash;
    /*
     * A store with one chain per station (the ledger) names the record's chain and that
     * chain's recorded head; NULL for the one chain of a SQLite journal, whose head is
     * audit_head's.
     */
    const char *chain;
    long long chain_head_seq;
    const char *chain_head_hash;
};

/* What the audit says of one device row, for verification (journal_audit.c). */
struct journal_row_audit {
    const char *lot;
    const char *serial;
    const char *state;         /* the row's */
    const char *sha256;        /* its current certificate's, NULL when none */
    const char *last_event;    /* the newest record that is a state, NULL when none */
    const char *issued_detail; /* the detail of the newest "issued" record, NULL when none */
};

/* A row lock (row_lock); released by prov_journal_row_unlock, also after the close. */
struct prov_journal_row_lock {
    void (*release)(struct prov_journal_row_lock *l);
};

/*
 * Called by the store inside the transaction that upgrades a journal with records, so that
 * the upgrade is in the audit chain (journal.c appends the record through this store).
 */
struct journal_upgrade_hook {
    int (*fn)(void *ctx, struct journal_store *s, long long from, long long to);
    void *ctx;
};

struct journal_store_ops {
    void (*close)(struct journal_store *s);

    /* Transactions: begin takes the store's write exclusion (a database's own lock). */
    int (*begin)(struct journal_store *s);
    /* Commits when r is 0, else rolls back; returns the outcome (r when rolled back). */
    int (*end)(struct journal_store *s, int r);
    /*
     * Optional (NULL: begin). A transaction whose commit need not be on disk when end returns:
     * it is whole or absent after a power cut, and on disk once any later transaction of the
     * store has committed durably (or the store is closed). Only for a transition whose loss
     * leaves a state that resumes the same way (journal.c, prov_journal_record_stored_proven).
     */
    int (*begin_deferred)(struct journal_store *s);

    /* Inside a transaction. */
    int (*lot_name)(struct journal_store *s, long long lot_id, char *out, size_t cap);
    /* *id 0 when there is no such lot (not an error); also a locked read. */
    int (*lot_find)(struct journal_store *s, const char *name, long long *id);
    int (*lot_insert)(struct journal_store *s, const char *name, const char *manifest,
                      const char *now, long long *id);
    /*
     * The row with its current certificate; state NONE and *dev_id 0 when there is none. Also
     * a locked read. Inside a transaction the row is about to be written back: a server store
     * reads it with a row lock (SELECT ... FOR UPDATE), SQLite holds the whole file already.
     */
    int (*row_get)(struct journal_store *s, long long lot_id, const char *serial,
                   struct prov_journal_device *d, long long *dev_id, long long *cert_id);
    /*
     * Writes every field of the row (inserts it when row->id is 0, setting row->id, which a
     * server store may set only when the transaction ends: row lives until then).
     */
    int (*row_put)(struct journal_store *s, struct journal_row *row);
    /*
     * Records a certificate; PROV_ERR_ALREADY_ISSUED, with *broken and no error recorded, when
     * its serial or public key is in the journal already.
     */
    int (*cert_insert)(struct journal_store *s, const struct journal_cert *c, long long *cert_id,
                       enum journal_unique *broken);
    int (*cert_supersede)(struct journal_store *s, long long cert_id, const char *now,
                          long long run_id);
    /*
     * The row's superseded certificate cert_serial, not yet retired: its key id (hex into
     * key_hex, "" when none) and device (into device, cap bytes). *found false when none.
     */
    int (*cert_unretired)(struct journal_store *s, long long dev_id, const char *cert_serial,
                          char *key_hex, char *device, size_t cap, bool *found);
    int (*cert_retire)(struct journal_store *s, long long dev_id, const char *cert_serial,
                       const char *now);
    /* The row's certificates whose key was generated at old_uri now name new_uri. */
    int (*cert_move)(struct journal_store *s, long long dev_id, const char *old_uri,
                     const char *new_uri);
    /* The newest run of the lot with this reissue list; *id 0 when none. */
    int (*run_newest)(struct journal_store *s, long long lot_id, const char *list, long long *id,
                      long long *request, bool *is_unfinished);
    /* Whether serial's certificate was superseded by a run of request and the row is proven. */
    int (*run_reissued_proven)(struct journal_store *s, long long lot_id, const char *serial,
                               long long request, bool *out);
    /* A new run; request 0: its own. */
    int (*run_insert)(struct journal_store *s, long long lot_id, const char *list, const char *now,
                      long long request, long long *id);
    /* Marks the run finished; its lot's name into lot ("" when none). */
    int (*run_finish)(struct journal_store *s, long long run_id, const char *now, char *lot,
                      size_t cap);
    /* The newest audit record's seq and hash; seq 0 and the zero hash for an empty chain. */
    int (*audit_head)(struct journal_store *s, long long *seq, char hash[65]);
    /* Appends the record and makes it the head. */
    int (*audit_append)(struct journal_store *s, const struct journal_audit_record *rec);
    /*
     * A store that chains its records itself (the ledger: the server reads the head and
     * computes the same hash, journal_audit.c): appends the next record of this station's
     * chain. NULL: journal_audit_append reads the head and hashes here.
     */
    int (*audit_chain)(struct journal_store *s, const char *at, const char *lot, const char *serial,
                       const char *event, const char *detail);
    /* The serial identity is bound to in the lot ("" when none). */
    int (*claim_of)(struct journal_store *s, long long lot_id, const char *identity, char *out,
                    size_t cap);
    /* Whether serial is claimed by a device, or is a row of the journal already. */
    int (*claim_is_taken)(struct journal_store *s, long long lot_id, const char *serial, bool *out);
    /* *is_claimed when another identity holds serial (the error is recorded then too). */
    int (*claim_insert)(struct journal_store *s, long long lot_id, const char *serial,
                        const char *identity, const char *instance, const char *now,
                        bool *is_claimed);

    /* Outside a transaction. */
    /* The row's exclusive lock, not waiting: PROV_ERR_JOURNAL when another worker holds it. */
    int (*row_lock)(struct journal_store *s, long long lot_id, const char *serial,
                    struct prov_journal_row_lock **out);
    /* The schema version the journal has (readers may see an older one than the newest). */
    int (*schema_version)(const struct journal_store *s);

    /* Reads (locked): journal.h describes each. */
    int (*superseded_in_request)(struct journal_store *s, long long lot_id, const char *serial,
                                 long long request, long long *by_run);
    int (*last_superseded)(struct journal_store *s, long long lot_id, const char *serial,
                           unsigned char **der, size_t *len);
    int (*unretired_keys)(struct journal_store *s, long long lot_id, const char *serial,
                          struct prov_journal_old_key **keys, size_t *n);
    int (*row_has_cert)(struct journal_store *s, long long lot_id, const char *serial,
                        const char *sha256, bool *out);
    int (*counts)(struct journal_store *s, long long lot_id,
                  long long counts[PROV_JOURNAL_STATE_COUNT], long long *n_superseded);
    /* prov_journal_rows_of: each row of serials[0..n) there is, with its place in serials */
    int (*rows_of)(struct journal_store *s, long long lot_id, const char *const *serials,
                   size_t n, int (*fn)(void *ctx, size_t i, const struct prov_journal_device *d),
                   void *ctx);
    /* Reads (locked): the audit records by seq, and what the audit says of every row. */
    int (*audit_foreach)(struct journal_store *s,
                         int (*fn)(void *ctx, const struct journal_audit_record *rec), void *ctx);
    int (*audit_rows)(struct journal_store *s,
                      int (*fn)(void *ctx, const struct journal_row_audit *row), void *ctx);

    /* Reads (unlocked). */
    int (*foreach_lot)(struct journal_store *s,
                       int (*fn)(void *ctx, long long lot_id, const char *name,
                                 const char *manifest),
                       void *ctx);
    int (*foreach_device)(struct journal_store *s, long long lot_id,
                          int (*fn)(void *ctx, const struct prov_journal_device *d), void *ctx);
    int (*foreach_key)(struct journal_store *s,
                       int (*fn)(void *ctx, const struct prov_journal_key_ref *k), void *ctx);

    /*
     * Leases (a store shared by processes on several hosts; NULL in a store with one writer):
     * claim takes the row unless another station holds a live lease on it (*out HELD, its
     * name into holder); a finished row is claimed only to be reopened (is_reopen: a
     * reissue), else it is read as finished without a lease (or *out FINISHED when another
     * station finished it after this process's first claim: prov_journal_lease_claim); end
     * gives it back (is_done: the row needs no more work, finished by this station); every
     * row_put of a claimed row checks the lease's token (fencing). Outside a transaction.
     */
    int (*lease_claim)(struct journal_store *s, long long lot_id, const char *serial,
                       bool is_reopen, char *holder, size_t cap, enum prov_journal_lease *out);
    /* prov_journal_lease_scan: is_other[i] of serials[i] (all false on entry) */
    int (*lease_scan)(struct journal_store *s, long long lot_id, const char *const *serials,
                      size_t n, bool *is_other);
    int (*lease_end)(struct journal_store *s, long long lot_id, const char *serial, bool is_done);
    void (*set_lease)(struct journal_store *s, int seconds);
    /* Whether the database went away and stayed away (every op fails since); NULL: never. */
    bool (*is_away)(struct journal_store *s);
    /* The hash of record seq of chain ("" when none), for the anchors; NULL: one chain. */
    int (*audit_hash)(struct journal_store *s, const char *chain, long long seq, char hash[65]);
};

/* A lease's length when the config names none ([provisioner] journal_lease). */
#define JOURNAL_LEASE_DEFAULT 30

/* Every store begins with this. */
struct journal_store {
    const struct journal_store_ops *ops;
    char *name; /* what messages call it: the file's path */
};

/* RFC 3339 UTC with milliseconds, as the CA index writes times too (timestamp.h). */
#define journal_now prov_timestamp_now

/* Lower-case hex of n bytes into out (2n + 1 bytes): the core's one encoder (hex.h). */
#define journal_hex prov_hex_encode

/* A state by name; PROV_JOURNAL_NONE for anything else. */
enum prov_journal_state journal_state_parse(const char *s);

/*
 * The SQLite store (journal_sqlite.c): opens the file at path (creating it for a writer),
 * takes the writer lock beside it ("PATH.lock", exclusive for WRITE, shared for SHARED) and
 * brings the schema up to date (a reader only completes a half-made one), calling hook
 * inside an upgrade of a journal with records.
 */
int journal_sqlite_open(const char *path, enum journal_store_mode mode,
                        const struct journal_upgrade_hook *hook, struct journal_store **out);

/*
 * The PostgreSQL store (journal_pg.c, doc/ledger.md): connects to the libpq URI (its password,
 * when not NULL, read from the PIN-style source password: file:, env:), takes the session's
 * writer lock as the SQLite store does (exclusive for WRITE, shared for SHARED) and checks the
 * schema: a writer creates it in an empty database; an older one wants `ledger migrate`, a
 * newer one is refused. station names this station's audit chain and leases ("" when none).
 */
int journal_pg_open(const char *uri, const char *password, const char *station,
                    enum journal_store_mode mode, const struct journal_upgrade_hook *hook,
                    struct journal_store **out);

/* Whether path is a libpq URI (postgresql:// or postgres://), the ledger, not a file. */
bool journal_pg_is_uri(const char *path);

#endif
