/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_FACTORY_JOURNAL_H
#define PROV_FACTORY_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/x509.h>

/*
 * The batch journal (doc/journal.md): an SQLite file in WAL mode with synchronous=FULL, so that a
 * transition is on disk when its call returns (all but stored+proven, below). Each device
 * row walks
 *
 *     intent --> issued --> stored --> proven
 *       |          |          |          |
 *       +----------+----------+----------+--> failed (the reason; keeps what was reached)
 *     stored/proven --> superseded (--reissue) --> intent ...
 *
 * intent records the key id before the key is generated; issued records the certificate
 * (DER) before anything is written to storage or to the token. The certificate table holds
 * every certificate ever issued, current or superseded, with UNIQUE certificate serial and
 * UNIQUE public-key SHA-256 across the whole journal: issuing a serial or a key twice is a
 * constraint violation, not a convention. Device rows are UNIQUE per (lot, serial).
 *
 * Every change appends to an audit table in the same transaction. An audit record carries
 * hash = SHA-256(prev_hash || record), and the newest (seq, hash) is kept in the meta table,
 * so a deleted, altered or truncated record breaks verification (prov_journal_verify_audit).
 * Triggers refuse UPDATE and DELETE on the audit table.
 *
 * One process writes a journal at a time: a writer holds an exclusive flock on
 * "JOURNAL.lock" for as long as the journal is open. Readers (status, report) take no lock.
 * All calls are safe from several threads; transitions are serialized inside.
 *
 * Test-only crash hook: PROVISIONER_TEST_CRASH_AT=<state>:<n> in the environment of a writer
 * makes the process _exit(137) right after the n-th committed transition to <state> (intent,
 * issued, stored, proven, failed or superseded); "run:1" right after the run's end is
 * committed (prov_journal_run_end). It is read from the environment only, never
 * from a config or the command line, and exists so that the kill test can stop a run exactly
 * at every state boundary.
 */

enum prov_journal_state {
    PROV_JOURNAL_NONE = 0, /* no record yet */
    PROV_JOURNAL_INTENT,
    PROV_JOURNAL_ISSUED,
    PROV_JOURNAL_STORED,
    PROV_JOURNAL_PROVEN,
    PROV_JOURNAL_FAILED,
    PROV_JOURNAL_SUPERSEDED,
    PROV_JOURNAL_STATE_COUNT,
};

/* "intent", ...; "none" for PROV_JOURNAL_NONE. */
const char *prov_journal_state_name(enum prov_journal_state s);

#define PROV_JOURNAL_KEY_ID_MAX 64

/* One device row as read back; owned strings, released by prov_journal_device_clear(). */
struct prov_journal_device {
    char *lot;
    char *serial;
    char *device_uri;
    enum prov_journal_state state;
    unsigned char key_id[PROV_JOURNAL_KEY_ID_MAX];
    size_t key_id_len;       /* 0: no key id recorded */
    char *key_uri;           /* NULL until issued */
    char *storage;           /* the storage directory */
    char *error;             /* the last failure, or NULL */
    int attempts;            /* intents recorded */
    unsigned char *cert_der; /* the current certificate, NULL when none */
    size_t cert_der_len;
    char cert_serial[65];   /* lower-case hex, "" when none */
    char sha256[65];        /* of the DER */
    char pubkey_sha256[65]; /* of the SubjectPublicKeyInfo DER */
    char not_after[32];     /* RFC 3339 */
    int n_superseded;       /* earlier certificates of this row */
    int n_unretired;        /* of those, the ones whose key was not deleted from its device */
    char updated[32];
};

void prov_journal_device_clear(struct prov_journal_device *d);

struct prov_journal;

/*
 * Opens (creating when writable and absent) the journal at path. A writer takes the
 * exclusive lock (PROV_ERR_JOURNAL "in use by another run" when it is held) and reads the
 * crash hook. Errors: PROV_ERR_JOURNAL naming the file, PROV_ERR_NOT_FOUND when a reader
 * finds no file.
 */
int prov_journal_open(const char *path, bool writable, struct prov_journal **out);

/*
 * A writer that shares the journal with other station processes (factory/station.c): it
 * takes the lock file shared, so that stations work side by side while a batch run (which
 * takes it exclusively) and stations exclude each other. SQLite serializes the transitions
 * across processes (BEGIN IMMEDIATE, busy timeout); the caller must make sure that no other
 * process works on the same row (the station holds a per-row lock, prov_journal_row_lock).
 */
int prov_journal_open_shared(const char *path, struct prov_journal **out);

/*
 * prov_journal_open_shared where path may be the shared ledger (prov_journal_open_with's
 * password and station): a station process beside the others of the line.
 */
int prov_journal_open_shared_with(const char *path, const char *password, const char *station,
                                  struct prov_journal **out);

/*
 * prov_journal_open where path may be the shared ledger, a libpq URI (doc/ledger.md):
 * password is its PIN-style source (file:, env:; NULL: libpq's own, PGPASSFILE), never
 * the URI in a message (the URI is shown with any password masked). station names the
 * station's audit chain and leases in the ledger (NULL: ""); a SQLite journal ignores it.
 */
int prov_journal_open_with(const char *path, const char *password, const char *station,
                           bool writable, struct prov_journal **out);

/* Whether path names the shared ledger (a postgresql:// URI) rather than a SQLite file. */
bool prov_journal_is_ledger(const char *path);

/* What a claim of a row found (prov_journal_lease_claim). */
enum prov_journal_lease {
    PROV_JOURNAL_LEASE_MINE,     /* leased to this process, or finished and read as such */
    PROV_JOURNAL_LEASE_HELD,     /* another station holds a live lease on it */
    PROV_JOURNAL_LEASE_FINISHED, /* another station finished it while this process ran */
};

/*
 * Work distribution on the ledger (doc/ledger.md): claims the row for this process unless
 * another station holds a live lease on it (*out HELD, its name into holder). A SQLite
 * journal has one writer: every row is its own. The lease is renewed while the process
 * runs, and every write of the row is refused once another station took it over. A
 * finished row is leased only when is_reopen (a reissue works it again); otherwise it is
 * read as finished (*out MINE, no lease), unless another station finished it after this
 * process's first claim (*out FINISHED, that station's name into holder: it recorded the
 * outcome, and this one need not read the row back).
 */
int prov_journal_lease_claim(struct prov_journal *j, long long lot_id, const char *serial,
                             bool is_reopen, char *holder, size_t cap,
                             enum prov_journal_lease *out);

/*
 * The claim's answer for many rows of the lot in one question, without claiming any:
 * is_other[i] when another station holds serials[i] or finished it while this process ran
 * (HELD or FINISHED above), false otherwise. All false on a journal with one writer.
 */
int prov_journal_lease_scan(struct prov_journal *j, long long lot_id, const char *const *serials,
                            size_t n, bool *is_other);

/* Gives the row's lease back (is_done: the row needs no more work); no lease: nothing. */
int prov_journal_lease_end(struct prov_journal *j, long long lot_id, const char *serial,
                           bool is_done);

/* The lease's length in seconds ([provisioner] journal_lease); before the first claim. */
void prov_journal_set_lease(struct prov_journal *j, int seconds);

/*
 * Whether the ledger's database went away and stayed away (reconnecting with backoff failed):
 * every transition fails at once since, so nothing more is done to any device.
 */
bool prov_journal_is_away(struct prov_journal *j);

/* What messages call the journal at path: a copy, with a ledger URI's password masked. */
char *prov_journal_name(const char *path);

/* Accepts NULL. */
void prov_journal_close(struct prov_journal *j);

/* The path it was opened with; NULL for NULL. The CA index names a lot's journal by it. */
const char *prov_journal_path(const struct prov_journal *j);

/* The lot called name (created with its manifest path when new); *lot_id gets its id. */
int prov_journal_lot(struct prov_journal *j, const char *name, const char *manifest,
                     long long *lot_id);

/* A batch run, and the reissue request it serves (prov_journal_run_begin). */
struct prov_journal_run {
    long long id;      /* the run */
    long long request; /* the request: the id of its first run */
    bool is_resumed;   /* a run that did not finish (crash, kill, signal), taken up again */
    bool is_continued; /* a new run of an earlier request with the same --reissue list */
};

/*
 * A batch run over a lot. reissue_list is the run's --reissue serials, sorted and
 * comma-separated ("" for none): a request. The same list again continues the newest request
 * with that list: the unfinished run itself is resumed (*is_resumed), or a new run of that
 * request begins (*is_continued), whether the earlier runs finished, failed rows or were
 * killed, so that a serial the request reissued already is not reissued again
 * (prov_journal_superseded_in_request). With is_again a new request begins instead, unless the
 * newest one with this list has not yet reissued and proven every serial of it: then that
 * one is continued, so that running an --again command again resumes it as well.
 */
int prov_journal_run_begin(struct prov_journal *j, long long lot_id, const char *reissue_list,
                           bool is_again, struct prov_journal_run *run);
int prov_journal_run_end(struct prov_journal *j, long long run_id);

/* The row for (lot, serial); state PROV_JOURNAL_NONE when there is none. */
int prov_journal_get(struct prov_journal *j, long long lot_id, const char *serial,
                     struct prov_journal_device *out);

/*
 * The rows of lot_id for a page of serials (a stretch of a manifest): fn gets each row there
 * is, with its place i in serials (in no particular order; a serial without a row is
 * skipped), and d only for the call. One question to the store per page, by the (lot,
 * serial) index: what the batch's results read instead of every row of the lot at once, so
 * that its memory is the page's, whatever the lot's size.
 */
int prov_journal_rows_of(struct prov_journal *j, long long lot_id, const char *const *serials,
                         size_t n,
                         int (*fn)(void *ctx, size_t i, const struct prov_journal_device *d),
                         void *ctx);

/*
 * Transitions. Each is one transaction with its audit record; an illegal transition is
 * refused with PROV_ERR_JOURNAL naming the serial and both states.
 *
 * intent: from none, intent (a retry after a crash; the caller has removed the earlier key),
 * failed without a certificate, or superseded. Records the chosen key id before the key is
 * generated, the device and the storage directory.
 */
int prov_journal_record_intent(struct prov_journal *j, long long lot_id, const char *serial,
                               const char *device_uri, const char *storage,
                               const unsigned char *key_id, size_t key_id_len);

/*
 * issued: from intent with the same key id. Records the certificate; PROV_ERR_ALREADY_ISSUED
 * when its serial or its public key is already in the journal (any lot, current or
 * superseded).
 */
int prov_journal_record_issued(struct prov_journal *j, long long lot_id, const char *serial,
                               const unsigned char *key_id, size_t key_id_len, X509 *cert,
                               const char *key_uri);

/* stored: the storage holds the journal's certificate; from any state with a certificate. */
int prov_journal_record_stored(struct prov_journal *j, long long lot_id, const char *serial);

/* proven: the written identity was re-proven with the device key; from stored. */
int prov_journal_record_proven(struct prov_journal *j, long long lot_id, const char *serial);

/*
 * stored and proven in one transaction (two audit records, one commit): for a writer that
 * checks the identity it has just written and records nothing in between (the batch's
 * storage stage). From any state stored is legal from. Not synced when it returns (doc/journal.md,
 * "Which commits are synced"): lost to a power cut, the row is left as it was, which resumes
 * the same way; the next synced transition or the close puts it on disk.
 */
int prov_journal_record_stored_proven(struct prov_journal *j, long long lot_id, const char *serial);

/* proven, after an mTLS proof as well: the audit record names the URL it passed against. */
int prov_journal_record_proven_over(struct prov_journal *j, long long lot_id, const char *serial,
                                    const char *url);

/*
 * failed: from any state (the row is created when new, with device_uri); keeps the key id
 * and certificate reached so far, so that a later run resumes from them.
 */
int prov_journal_record_failed(struct prov_journal *j, long long lot_id, const char *serial,
                               const char *device_uri, const char *reason);

/*
 * Not a transition: the row's storage holds an identity the lot never issued for it (replaced
 * outside the lot). The state and certificate stay what the lot did; reason goes into the
 * row's error with an audit record "outside-change". reason NULL clears it (the lot's
 * identity is in the storage again).
 */
int prov_journal_record_outside_change(struct prov_journal *j, long long lot_id, const char *serial,
                                       const char *reason);

/*
 * superseded (--reissue): the current certificate is marked superseded by run_id and the row
 * waits for a new intent. From stored, proven, or failed with a certificate.
 */
int prov_journal_supersede(struct prov_journal *j, long long lot_id, const char *serial,
                           long long run_id);

/*
 * Whether a run of request already superseded a certificate of this row: *by_run is that run,
 * 0 when none did.
 */
int prov_journal_superseded_in_request(struct prov_journal *j, long long lot_id, const char *serial,
                                       long long request, long long *by_run);

/* The DER of this row's newest superseded certificate (malloc'd), *der NULL when none. */
int prov_journal_last_superseded(struct prov_journal *j, long long lot_id, const char *serial,
                                 unsigned char **der, size_t *len);

/*
 * A superseded certificate whose key has not been deleted ("retired") from the device it was
 * generated on. Every certificate records that device (schema version 4): a reissue may have
 * moved the serial to another device since.
 */
struct prov_journal_old_key {
    char *lot;
    char *serial;
    char *device_uri; /* where the key was generated */
    unsigned char key_id[PROV_JOURNAL_KEY_ID_MAX];
    size_t key_id_len;
    char cert_serial[65];
    char pubkey_sha256[65]; /* of the certificate's key: a key found by id must be this one */
    char superseded[32];
};

/*
 * The superseded keys not yet retired: of one row (serial), or of every row of the lot
 * (serial NULL; lot_id 0: every lot), by lot, serial and certificate. *keys is freed with
 * prov_journal_old_keys_free. A journal older than schema version 4 (opened by a reader)
 * records no devices per certificate: none are listed.
 */
int prov_journal_unretired_keys(struct prov_journal *j, long long lot_id, const char *serial,
                                struct prov_journal_old_key **keys, size_t *n);
void prov_journal_old_keys_free(struct prov_journal_old_key *keys, size_t n);

/*
 * The key of the row's superseded certificate cert_serial is gone from its device (deleted,
 * or found replaced by another key): recorded with an audit record "retired". Not a state.
 */
int prov_journal_record_retired(struct prov_journal *j, long long lot_id, const char *serial,
                                const char *cert_serial);

/*
 * Whether the row has (or had: superseded) the certificate whose SHA-256 (of the DER, hex)
 * is sha256: an identity found in the row's storage is the lot's own, or someone else's.
 */
int prov_journal_row_has_cert(struct prov_journal *j, long long lot_id, const char *serial,
                              const char *sha256, bool *out);

/*
 * A key the journal expects on a device: a row's current key ("current"), the key of an
 * attempt interrupted before its certificate ("interrupted": the next run deletes it), or a
 * superseded key not yet retired ("superseded"). Borrowed for the callback.
 */
struct prov_journal_key_ref {
    const char *lot;
    const char *serial;
    const char *device_uri;
    const unsigned char *key_id;
    size_t key_id_len;
    const char *role;
};

/*
 * Calls fn for every key the journal expects on a device, every lot (batch status --tokens:
 * an object on a token whose CKA_ID is none of these is explained by no row). In a journal
 * older than schema version 4 a superseded key is expected on its row's device.
 */
int prov_journal_foreach_key(struct prov_journal *j,
                             int (*fn)(void *ctx, const struct prov_journal_key_ref *k), void *ctx);

/* The schema version of the open journal (meta "schema"); writers migrate to the newest. */
int prov_journal_schema_version(const struct prov_journal *j);

/* Calls fn for every device row of the lot (lot_id 0: every lot), by lot then serial. */
int prov_journal_foreach(struct prov_journal *j, long long lot_id,
                         int (*fn)(void *ctx, const struct prov_journal_device *d), void *ctx);

/* Rows per state, and the superseded certificates, of a lot (0: all lots). */
int prov_journal_counts(struct prov_journal *j, long long lot_id,
                        long long counts[PROV_JOURNAL_STATE_COUNT], long long *n_superseded);

/* Calls fn for every lot, by name. */
int prov_journal_foreach_lot(struct prov_journal *j,
                             int (*fn)(void *ctx, long long lot_id, const char *name,
                                       const char *manifest),
                             void *ctx);

/* The lot id for a name; PROV_ERR_NOT_FOUND when the journal has no such lot. */
int prov_journal_find_lot(struct prov_journal *j, const char *name, long long *lot_id);

/*
 * Station claims (journal_station.c): binds a device identity to a manifest row of the lot,
 * once, in one transaction with a "claim" audit record. A device already bound goes back
 * to its row (*index = its position in serials). Otherwise, with is_next_free, the first of
 * serials (manifest order) that no device claimed and no batch run touched is claimed;
 * without it serials holds the one row whose device names this identity and that row is
 * claimed. Errors: PROV_ERR_POLICY when no row is free, PROV_ERR_ALREADY_ISSUED when the
 * row belongs to another device or the bound row left the manifest.
 */
int prov_journal_station_claim(struct prov_journal *j, long long lot_id, const char *identity,
                               const char *instance, const char *const *serials, size_t n,
                               bool is_next_free, size_t *index);

/*
 * The device with identity, which holds the claim of serial, now answers at device_uri: when
 * the row names it by another URI (a TPM back on another /dev/tpmrmN), the row's device URI,
 * and the key URI under it, move to device_uri in one transaction with a "device-moved"
 * audit record. Nothing when the row is not in the journal yet or already names device_uri.
 * PROV_ERR_ALREADY_ISSUED when the identity does not hold the claim of serial.
 */
int prov_journal_station_follow(struct prov_journal *j, long long lot_id, const char *serial,
                                const char *identity, const char *device_uri);

/*
 * Takes the exclusive lock of one row (the SQLite journal: a flock on
 * "JOURNAL.row-LOT-SERIAL.lock", not waiting), so that no two stations work on one row; *out
 * holds it until prov_journal_row_unlock, which may come after the journal's close.
 * PROV_ERR_JOURNAL when another process holds it.
 */
struct prov_journal_row_lock;
int prov_journal_row_lock(struct prov_journal *j, long long lot_id, const char *serial,
                          struct prov_journal_row_lock **out);

/* Lets the row lock go; accepts NULL. */
void prov_journal_row_unlock(struct prov_journal_row_lock *l);

struct prov_journal_audit {
    long long n_records;
    char head_hash[65]; /* hex of the newest record's hash: keep it outside to anchor */
    long long bad_seq;  /* the first record that fails, 0 when none */
    char chain[128];    /* its chain in a ledger (a station's name), "" otherwise */
    char reason[256];
};

/*
 * Walks the audit chain: consecutive sequence numbers, each prev_hash equal to the hash
 * before it, each hash recomputed, the newest record equal to the recorded head, and every
 * device row's state and certificate equal to what its newest audit records say.
 * Returns 0, or PROV_ERR_VERIFY with out->reason and out->bad_seq.
 */
int prov_journal_verify_audit(struct prov_journal *j, struct prov_journal_audit *out);

#endif
