/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_CA_INDEX_H
#define PROV_CA_INDEX_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

/*
 * The CA's record of what it issued: <ca dir>/index.sqlite (mode 0600, WAL, synchronous=FULL),
 * or a PostgreSQL database that two CA hosts share ([ca] index, prov_ca_index_open_config).
 * Every certificate the local CA signs is recorded here before it leaves the issuing code
 * (issue.c), whichever command asked for it (enroll, sign, batch, station), in the same
 * transaction as the rules it must pass:
 *   - no public key is certified twice, ever (its SPKI SHA-256 is UNIQUE);
 *   - a device serial with a current certificate (its newest one that is neither superseded
 *     nor abandoned) is refused unless the request is a reissue, which supersedes it. Within
 *     one batch lot the lot's journal is the authority (it issues each (lot, serial) exactly
 *     once): a new certificate for a serial whose current certificate that same lot issued,
 *     through the same journal file, supersedes it (one signed just before a kill, never
 *     recorded in the journal).
 * A certificate is "issued" (signed and recorded), then "delivered" (storage or the output
 * file written), or "superseded" (by a reissue), or "abandoned" (signed under an enroll
 * attempt that was interrupted or failed before delivery; its key was deleted). It stays
 * recorded either way. Any certificate may also be revoked (prov_ca_index_revoke): a row of
 * the revocation table and a hash-chained audit record; the certificate's own columns
 * revoked_at, revocation_reason and invalidity_date are left NULL (the revocation table is the
 * record). Revoking does not change the status: a revoked current certificate still blocks a
 * new one for its serial unless that is a reissue.
 *
 * `enroll` (which has no batch journal) records an attempt before it generates a key: serial,
 * device, key id, storage. A running attempt holds a lock on its own byte (its id) of
 * <ca dir>/index.sqlite.lock; an unfinished attempt whose byte nobody holds was interrupted,
 * and the next enroll of that serial or on that device cleans it up (enroll.c).
 *
 * On first open, an older CA's <ca dir>/issued-keys text file (lines "SPKI-SHA256
 * CERT-SERIAL DEVICE-SERIAL", written by `sign`) is imported into the new index in the same
 * transaction that creates the schema; the file is left in place and no longer written.
 *
 * One connection per open index, prepared statements kept for its life, one short
 * transaction per issuance; a mutex serializes the threads of a batch. Errors are
 * PROV_ERR_JOURNAL (exit 6) naming the index file, unless said otherwise.
 */
struct prov_ca_index;

#define PROV_CA_INDEX_FILE "index.sqlite"
#define PROV_CA_INDEX_KEY_ID_MAX 64

/* Opens (creating and importing on first use) <ca_dir>/index.sqlite. */
int prov_ca_index_open(const char *ca_dir, struct prov_ca_index **out);

/*
 * Opens the index where the CA's config keeps it: [ca] index = postgresql://... (the index a
 * CA pair shares, doc/revocation.md; its password from [ca] index_password, else PGPASSFILE),
 * else <ca dir>/index.sqlite. On PostgreSQL the schema is created (in an empty database) and
 * brought up to date as on SQLite, under the writers' advisory lock; issued-keys of ca_dir is
 * imported the same way. Messages name the URI with its password masked. open_at: the same
 * with the three values given (uri NULL: SQLite).
 */
struct prov_config;
int prov_ca_index_open_config(const struct prov_config *cfg, struct prov_ca_index **out);

/*
 * A reader's open (lot export): the index the config names must exist and have this
 * provisioner's schema; nothing is created, upgraded, locked or written, so an operator who
 * may only read it can. Only the readers (prov_ca_index_revocations, stats, audit_verify)
 * may be used on it. PROV_ERR_JOURNAL naming the index and why.
 */
int prov_ca_index_open_read(const struct prov_config *cfg, struct prov_ca_index **out);
int prov_ca_index_open_at(const char *ca_dir, const char *uri, const char *password_spec,
                          struct prov_ca_index **out);

/* Closes; releases every attempt lock this handle holds. NULL is fine. */
void prov_ca_index_close(struct prov_ca_index *ix);

/*
 * Serializes opening the CA token (the login, or reading its identity) across the processes
 * that use this CA: waits for byte 0 of <ca_dir>/index.sqlite.lock (made 0600 if missing).
 * SoftHSM2 rewrites its token file on every C_Login, and another process reading the token
 * meanwhile finds no token (CKR_GENERAL_ERROR). *fd is -1 when the lock file cannot be
 * opened (no CA directory here, or one this user may not write: a device-side host, where
 * nobody logs in to the CA token); then nothing is locked. unlock closes; -1 is fine.
 */
int prov_ca_index_token_lock(const char *ca_dir, int *fd);
void prov_ca_index_token_unlock(int fd);

/* Who asks for a certificate, as the index records it and applies its rules (strings borrowed). */
struct prov_ca_record {
    const char *issued_by;  /* "enroll", "sign", "batch"; NULL: "enroll" */
    const char *lot;        /* the batch lot whose journal owns the serial; NULL: enroll/sign */
    const char *journal;    /* that lot's journal file: the same lot name in another journal
                               is another lot (a name may be reused); resolved by realpath */
    const char *device_uri; /* NULL when not known (sign) */
    const char *key_uri;    /* NULL when not known */
    long long attempt_id;   /* the enroll attempt it is issued under; 0: none */
    bool is_reissue;        /* supersede the serial's current certificate */
    bool is_revoke_superseded; /* ...and record what it supersedes as revoked (superseded) */
    const char *pubkey_sha256; /* prov_ca_index_spki_sha256 of the key certified, when the
                                  caller has it already (the CA service hashes a request's
                                  key once for the retry look-up and the rules); NULL: hashed
                                  here */
    /*
     * Written in the issuance's own transaction, before its commit, so that it is on disk
     * exactly when the certificate is (NULL: nothing). The CA service remembers there the
     * CMP transactionID that asked (ca_replay.h). Runs with the index locked for the issue;
     * < 0 rolls the issuance back.
     */
    int (*also)(struct prov_ca_index *ix, void *arg);
    void *also_arg;
};

/*
 * The rules without recording anything, to refuse before a device or the CA token is touched:
 * PROV_ERR_ALREADY_ISSUED (exit 5) naming the earlier certificate serial and where it was
 * issued (enroll, sign or lot NAME), or the device serial a public key was certified for.
 * pub may be NULL (the key is not made yet). The same rules hold again when it is issued.
 */
int prov_ca_index_check(struct prov_ca_index *ix, const char *serial,
                        const struct prov_ca_record *rec, EVP_PKEY *pub);

/*
 * Issuance in one transaction: begin takes the index's write lock and applies the rules
 * (and marks what a reissue supersedes); the caller signs (or has signed before begin:
 * prov_request.is_signed_unlocked in issue.h); record inserts the signed certificate and
 * commits. Until record (or abort) the index stays locked for this thread and
 * every other process, so no two can certify one key or one serial. abort rolls back.
 */
int prov_ca_index_begin(struct prov_ca_index *ix, const char *serial,
                        const struct prov_ca_record *rec, EVP_PKEY *pub);
int prov_ca_index_record(struct prov_ca_index *ix, const char *serial,
                         const struct prov_ca_record *rec, const char *profile, X509 *cert,
                         X509 *issuer);
void prov_ca_index_abort(struct prov_ca_index *ix);

/*
 * A certificate signed outside the index's lock (prov_request.is_signed_unlocked) that the
 * rules then refused (another request certified its key or its serial meanwhile): it is
 * thrown away unsent, and the audit trail says so (event 'discard': the device serial, the
 * certificate's serial, why). PROV_ERR_JOURNAL.
 */
int prov_ca_index_discarded(struct prov_ca_index *ix, const char *serial, X509 *cert,
                            const char *why);

/* cert reached its storage or output file: issued -> delivered. ix NULL: nothing to do. */
int prov_ca_index_delivered(struct prov_ca_index *ix, X509 *cert);

/* An enroll attempt: what to find and clean up if it is interrupted. */
struct prov_ca_attempt {
    long long id;
    char *serial;
    char *device_uri;
    unsigned char key_id[PROV_CA_INDEX_KEY_ID_MAX];
    size_t key_id_len;
    char *storage;
    char *old_key_uri; /* a reissue: the key of the identity it replaces, or NULL */
    char *pin_source;  /* the device PIN source given (never a PIN), or NULL */
};

void prov_ca_attempt_clear(struct prov_ca_attempt *a);

/*
 * Records a->serial, device_uri, key_id, storage, old_key_uri and pin_source as a running
 * attempt and holds its lock (from before the row is visible to others) until
 * prov_ca_index_attempt_finish or close; sets a->id.
 */
int prov_ca_index_attempt_begin(struct prov_ca_index *ix, struct prov_ca_attempt *a);

/*
 * Ends an attempt this handle holds (begun or claimed). is_delivered: its certificate is
 * delivered; otherwise any certificate issued under it and still undelivered is abandoned.
 * outcome is recorded ("delivered", "failed", "cleaned"). Releases the lock.
 */
int prov_ca_index_attempt_finish(struct prov_ca_index *ix, long long id, bool is_delivered,
                                 const char *outcome);

/* Releases an attempt's lock without finishing it: it stays to be cleaned up. */
void prov_ca_index_attempt_release(struct prov_ca_index *ix, long long id);

/*
 * The interrupted attempts of serial or on device_uri (unfinished, lock not held by anyone),
 * each claimed (locked) by this handle. *n_busy counts unfinished attempts of that serial
 * that another process is running now. *out is an array of *n (free each with
 * prov_ca_attempt_clear, then the array).
 */
int prov_ca_index_interrupted(struct prov_ca_index *ix, const char *serial,
                              const char *device_uri, struct prov_ca_attempt **out, size_t *n,
                              size_t *n_busy);

/* The certificate issued under an attempt and not yet delivered, or *out NULL. */
int prov_ca_index_attempt_certificate(struct prov_ca_index *ix, long long id, X509 **out);

/*
 * An interrupted reissue left its old identity in place after all: the certificate that the
 * attempt's certificate superseded is current again (delivered). *restored says whether one
 * was.
 */
int prov_ca_index_attempt_restore(struct prov_ca_index *ix, long long id, X509 *stored,
                                  bool *restored);

/* What `ca show` reports. */
struct prov_ca_index_undelivered {
    char serial[72];
    char cert_serial[72];
    char status[16];    /* "issued" (not delivered yet) or "abandoned" (never will be) */
    char issued_at[32];
    char issued_by[64]; /* "enroll", "sign", "lot NAME" */
};

struct prov_ca_index_stats {
    long long issued;     /* signed and recorded, not delivered */
    long long delivered;
    long long superseded;
    long long abandoned;
    long long attempts_open; /* enroll attempts not finished (running or interrupted) */
    struct prov_ca_index_undelivered *undelivered; /* issued and abandoned, oldest first */
    size_t n_undelivered;
};

int prov_ca_index_stats(struct prov_ca_index *ix, struct prov_ca_index_stats *out);
void prov_ca_index_stats_clear(struct prov_ca_index_stats *s);

/* A recorded revocation (RFC 5280 CRLReason code; times RFC 3339 UTC, "" when absent). */
struct prov_ca_revocation {
    char serial[72];          /* the device serial */
    char cert_serial[72];     /* lower-case hex, as the index keeps it */
    int reason;
    char revoked_at[32];
    char invalidity_date[32];
    char revoked_by[64];
};

/*
 * Records the revocation of serial's certificate: cert_serial (hex, any case, colons allowed)
 * or, when NULL, the serial's current certificate. A revocation is final: the same
 * certificate revoked again with the same reason is the same revocation (*is_new false, *out
 * what is recorded); with another reason it is refused (PROV_ERR_ALREADY_ISSUED, exit 5,
 * naming the recorded reason). No such serial or certificate: PROV_ERR_POLICY (exit 5),
 * nothing recorded. invalidity_date: RFC 3339 UTC or NULL. by: who asked (the audit record).
 */
int prov_ca_index_revoke(struct prov_ca_index *ix, const char *serial, const char *cert_serial,
                         int reason, const char *invalidity_date, const char *by,
                         struct prov_ca_revocation *out, bool *is_new);

/*
 * Every revocation of a certificate issued under issuer (by the SHA-256 of its DER; rows
 * imported without an issuer count as this CA's), oldest first. *out: array of *n, free().
 */
int prov_ca_index_revocations(struct prov_ca_index *ix, X509 *issuer,
                              struct prov_ca_revocation **out, size_t *n);

/*
 * The next number of a CRL (RFC 5280 5.2.3): name "crl_number" (the intermediate's) or
 * "root_crl_number"; incremented and committed before it is used, so numbers only grow.
 */
int prov_ca_index_next_crl_number(struct prov_ca_index *ix, const char *name, long long *out);

/*
 * The audit trail: *n records, and whether the hash chain verifies (*is_intact); *bad_seq is
 * the first record that does not (0 when intact).
 */
int prov_ca_index_audit_verify(struct prov_ca_index *ix, long long *n, bool *is_intact,
                               long long *bad_seq);

/* SPKI SHA-256 of pub, lower-case hex (the batch journal's pubkey_sha256 too). */
int prov_ca_index_spki_sha256(EVP_PKEY *pub, char out[65]);

#endif
