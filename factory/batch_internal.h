/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_FACTORY_BATCH_INTERNAL_H
#define PROV_FACTORY_BATCH_INTERNAL_H

/* Shared by batch.c (the run) and batch_row.c (one row); not an interface of the layer. */

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "batch.h"
#include "issue.h"
#include "journal.h"
#include "manifest.h"
#include "progress.h"
#include "strset.h"

#define BATCH_NO_ROW UINT32_MAX

enum batch_status { BATCH_PENDING, BATCH_ISSUED, BATCH_ALREADY, BATCH_FAILED };

/* What is kept of a row between the passes: where to read it again, 24 bytes. */
struct batch_row {
    unsigned long long offset;
    uint32_t length;
    uint32_t line;
    uint32_t next; /* the next row of the same group, BATCH_NO_ROW at the end */
    uint8_t status;
    bool is_reissue;
};

/* A physical token (or TPM), by identity: two URIs naming one token share its lock. */
struct batch_token {
    char *identity;
    pthread_mutex_t lock;
};

/* The rows that name one device URI, processed in order by one worker. */
struct batch_group {
    char *device_uri;
    uint32_t first;
    uint32_t last;
    uint32_t count;
    struct batch_token *token; /* resolved on first need */
};

struct batch {
    const struct prov_config *cfg;
    const struct prov_batch_opts *opts;
    char *lot;
    int fd; /* the manifest, kept open so that every pass reads the same file */
    struct prov_manifest_parser *parser; /* the validated header, to parse rows again */

    struct batch_row *rows;
    size_t n_rows;
    size_t cap_rows;
    struct batch_group *groups;
    size_t n_groups;
    size_t cap_groups;
    struct prov_strset group_index; /* device URI -> group */
    bool *is_reissue_seen;

    struct prov_ca *ca;
    pthread_mutex_t ca_lock;
    struct prov_journal *journal;
    long long lot_id;
    long long run_id;
    long long request_id; /* the reissue request the run serves (journal.h) */

    pthread_mutex_t tokens_lock;
    struct prov_strset token_index; /* identity -> tokens[] */
    struct batch_token **tokens;
    size_t n_tokens;
    size_t cap_tokens;

    pthread_mutex_t queue_lock;
    size_t *order; /* group indices, largest first */
    size_t next_group;

    /*
     * The storage stage (batch_row.c): a thread that writes the storage of an issued device,
     * reads it back and records stored and proven, while the device's worker goes on with the
     * next row on the token. Bounded, so at most FINISH_QUEUE identities wait.
     */
    struct batch_finisher *finisher;

    pthread_mutex_t stats_lock;
    unsigned long n_issued;
    unsigned long n_already;
    unsigned long n_failed;
    unsigned long n_interrupted; /* of n_failed: rows a signal stopped (interrupt.h) */
    struct prov_progress *progress;
};

/* One row for a worker. */
struct batch_row_job {
    struct batch *b;
    struct batch_group *g;
    uint32_t index;
    const char *device_uri; /* the device to use instead of the row's (station); NULL: row's */
    int err;                /* out: the PROV_ERR_* the row failed with, 0 when it did not */
};

/*
 * The run's pieces, shared with the station (station.c), which enrolls one row of a
 * validated manifest: init (zeroes b, sets up the locks), the validation pass over
 * opts->manifest (every row kept as in a batch run), the PIN source check, reading one row
 * back into a row callback, and freeing everything b holds (journal and CA included).
 */
void batch_init(struct batch *b, const struct prov_config *cfg,
                const struct prov_batch_opts *opts);
int batch_validate(struct batch *b);
int batch_check_pin_source(const struct batch *b);
int batch_run_row(struct batch *b, uint32_t index, prov_manifest_row_fn fn, void *ctx);
void batch_free(struct batch *b);

/* The row callback that enrolls (batch_row.c); never fails the parse for a row's failure. */
int batch_row_handle(void *ctx, struct prov_manifest_parser *p,
                     const struct prov_manifest_row *row);

/* A row that could not be read back or parsed again: failed, with the recorded reason. */
void batch_row_unreadable(struct batch *b, uint32_t index);

/* The request for a row (strings borrowed from row and prof). */
void batch_request(const struct batch *b, const struct prov_manifest_row *row,
                   const struct prov_profile *prof, struct prov_request *rq);

/*
 * A row's PIN source as the run uses it (batch.c): a relative file: path is taken relative to
 * the manifest's directory, anything else is copied. *out is NULL when spec is NULL (the row
 * has none: the run's --pin, then [provisioner] device_pin). PROV_ERR_NOMEM.
 */
int batch_resolve_pin_spec(const char *manifest, const char *spec, char **out);

/* The resolved PIN source of row index, read back from the manifest (station: its check). */
struct batch_row_pin {
    const char *manifest;
    char *spec;
};
int batch_row_pin_spec(struct batch *b, uint32_t index, char **out);

/* <output_dir>/<storage or serial>; malloc'd, NULL on NOMEM. */
char *batch_storage_dir(const struct prov_config *cfg, const struct prov_manifest_row *row);

const char *batch_status_name(enum batch_status st);

void batch_tokens_free(struct batch *b);

/* Starts the storage stage; without it (start failed) rows are finished in line. */
int batch_finisher_start(struct batch *b);

/* Waits until every queued identity is finished, then stops the stage; accepts none. */
void batch_finisher_stop(struct batch *b);

#endif
