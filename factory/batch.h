/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_FACTORY_BATCH_H
#define PROV_FACTORY_BATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "config.h"
#include "journal.h"
#include "manifest.h"

/*
 * Batch enrollment of a manifest (factory/README.md, doc/journal.md).
 *
 * The manifest is read twice and never held: a first pass validates every row (syntax,
 * values, the profile and key type against the config, a dry run of the subject, a backend
 * for the device) and keeps 24 bytes per row (where it is in the file, its line, its token
 * group). Nothing is issued and no journal is written unless the whole manifest is valid.
 * Then rows are grouped by device URI; --jobs workers each take a whole group, so one token
 * sees one operation at a time, while different tokens work in parallel. Two URIs that name
 * the same token (same identity: token serial, TPM EK) share one lock. CA signing is
 * serialized with a mutex (the CA's HSM session is not safe for concurrent use).
 *
 * Per row, by its journal state (resume policy, factory/README.md):
 *   none, superseded      intent (new random key id) → the pipeline's steps, with issued
 *                         recorded between issue and install (before storage) → stored →
 *                         proven (the written identity read back and verified; the key
 *                         proved itself before anything was stored): status "issued".
 *   intent, failed with a key id but no certificate
 *                         the key of the recorded id is looked up on the token and deleted,
 *                         then as above with a NEW key id (never reused: an id names one key
 *                         for life, so a half-deleted object can never pass for the new key).
 *   issued, failed with a certificate
 *                         the certificate is in the journal: the key is found by its id,
 *                         proven against it, and storage is written from the journal without
 *                         issuing again: "issued".
 *   stored, proven        storage is compared with the journal and rewritten from it when
 *                         missing or different, then proven: "already-issued".
 * With --prove URL, proven also needs the mTLS proof (prov_connect_prove) to pass; a refused
 * proof fails the row with the reason, keeping its certificate, so that a re-run retries the
 * proof from the journal without issuing again. A row proven earlier is not connected again.
 * --reissue SERIAL supersedes a stored/proven certificate and enrolls anew; the superseded
 * key is deleted from the token. The --reissue list is a request: running the same command
 * again (after a crash, a kill, a signal, or failed rows) continues that request, and a
 * serial it has already reissued is not reissued again. is_again makes a new request
 * (prov_journal_run_begin has the rule).
 */

struct prov_batch_opts {
    const char *manifest;       /* the manifest CSV file */
    const char *journal;        /* NULL: MANIFEST.journal.sqlite (prov_batch_default_path) */
    const char *results;        /* NULL: MANIFEST.results.csv */
    const char *pin_spec;       /* device PIN source; NULL: cfg->device_pin */
    const char *station;        /* this station's name in a ledger; NULL: [station] name, else */
                                /* the host name (prov_batch_station_name) */
    int jobs;                   /* parallel workers; <= 0: the number of online CPUs */
    const char *const *reissue; /* serials to certify again: one request (see below) */
    size_t n_reissue;
    bool is_again;              /* a new reissue request even when one with the list exists */
    const char *prove_url;             /* mTLS proof as each row's last step; NULL: none */
    bool is_check_only;                /* validate the manifest and stop */
    bool show_progress;                /* progress on stderr */
    bool is_tty;                       /* a bar rather than lines */
    prov_manifest_error_fn on_finding; /* each manifest finding; NULL: counted only */
    void *finding_ctx;
};

struct prov_batch_summary {
    unsigned long n_rows;
    unsigned long n_issued;
    unsigned long n_already;
    unsigned long n_elsewhere; /* rows another station held in the ledger */
    unsigned long n_failed;
    unsigned long n_findings; /* manifest findings (validation failed when > 0) */
    double seconds;
    double devices_per_second;
    char *journal; /* owned */
    char *results; /* owned */
};

void prov_batch_summary_clear(struct prov_batch_summary *s);

/*
 * The station's name (doc/ledger.md): opt (--station), else [station] name of cfg, else the
 * host name (and "@" and instance, a station@ unit's instance, when not NULL), into out. It
 * names the station's audit chain and leases in the ledger.
 */
void prov_batch_station_name(const struct prov_config *cfg, const char *opt,
                             const char *instance, char *out, size_t cap);

/*
 * Runs the batch. Returns 0 when the run completed (sum->n_failed says whether rows
 * failed; each failure is in the results, the journal and one stderr line), PROV_ERR_INPUT
 * when the manifest is invalid (nothing issued), PROV_ERR_USAGE for a --reissue serial not in
 * the manifest, or the error that stopped the run as a whole (CA, journal).
 */
int prov_batch_run(const struct prov_config *cfg, const struct prov_batch_opts *opts,
                   struct prov_batch_summary *sum);

/* "DIR/NAME.csv" -> "DIR/NAME<suffix>" (".csv" replaced when present, else appended). */
char *prov_batch_default_path(const char *manifest, const char *suffix);

/* The lot a manifest's rows belong to: cfg->lot, else the manifest's file name without .csv. */
char *prov_batch_lot_name(const struct prov_config *cfg, const char *manifest);

enum prov_report_format { PROV_REPORT_CSV, PROV_REPORT_JSON };

/* What `batch status --tokens` needs to open and log in to the journal's tokens. */
struct prov_status_tokens {
    const struct prov_config *cfg;
    const char *pin_spec; /* NULL: cfg->device_pin; read once for every token */
};

/*
 * Counts per lot and state, the rows not yet proven and the superseded keys not retired;
 * text or JSON. With tokens, also every token the journal names, logged in to, and its
 * objects that no journal row explains (handle, class, CKA_ID, label). A token that is not
 * here is reported as such; a rejected PIN stops the listing (PROV_ERR_PIN_INCORRECT) so
 * that no other token is sent it.
 */
int prov_batch_status(struct prov_journal *j, bool as_json, const struct prov_status_tokens *tokens,
                      FILE *out);

/* Every device row with its certificate facts, as CSV or a JSON array. */
int prov_batch_report(struct prov_journal *j, enum prov_report_format fmt, FILE *out);

/* One CSV field, quoted (RFC 4180) when it holds a comma, quote, CR or LF. */
void prov_csv_field(FILE *f, const char *s, bool is_last);

/*
 * Checks that the manifest can be read (before any device is touched: the station looks at
 * its device first). PROV_ERR_INPUT naming it when it is missing, unreadable or a directory.
 */
int prov_batch_manifest_check(const char *manifest);

#endif
