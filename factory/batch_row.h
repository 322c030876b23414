/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_FACTORY_BATCH_ROW_H
#define PROV_FACTORY_BATCH_ROW_H

/*
 * One manifest row of a batch or station run (batch_row.c), and the run's state a row works
 * in. batch.c (the run) and station.c use it; it uses nothing of theirs.
 */

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "batch_stage.h"
#include "batch_tokens.h"
#include "issue.h"
#include "issuer.h"
#include "journal.h"
#include "manifest.h"
#include "progress.h"
#include "strset.h"

struct prov_batch_opts;

#define BATCH_NO_ROW UINT32_MAX

/*
 * BATCH_ELSEWHERE: another station holds the row's lease in the ledger, or finished the row
 * while this run went on (doc/ledger.md).
 */
enum batch_status { BATCH_PENDING, BATCH_ISSUED, BATCH_ALREADY, BATCH_FAILED, BATCH_ELSEWHERE };

/* What is kept of a row between the passes: where to read it again, 24 bytes. */
struct batch_row {
    unsigned long long offset;
    uint32_t length;
    uint32_t line;
    uint32_t next; /* the next row of the same group, BATCH_NO_ROW at the end */
    uint8_t status;
    bool is_reissue;
};

/*
 * The rows that name one device URI, taken in order by one worker, and on a PKCS#11 token
 * without the ledger by a second one too once no group is left to start (batch.c,
 * "partner"): the token's own work stays one row at a time under its lock (batch_tokens.h),
 * while a row's CA part and journal records overlap the next row's key (batch_row.c,
 * fresh_on_device).
 */
struct batch_group {
    char *device_uri;
    uint32_t first;
    uint32_t last;
    uint32_t count;
    uint32_t cursor;              /* the next row no worker has taken (queue_lock) */
    uint32_t taken;               /* rows taken so far (queue_lock) */
    uint8_t n_workers;            /* workers on it now (queue_lock) */
    bool has_row_pin;             /* a row names its own PIN source: one worker only */
    bool is_unshared;             /* its token takes no second worker (queue_lock) */
    struct batch_token *_Atomic token; /* resolved on first need, by either worker */
};

struct batch {
    const struct prov_config *cfg;
    const struct prov_batch_opts *opts; /* the run's (batch.c) */
    /* what a row needs of opts, copied by batch_init */
    const char *manifest;
    const char *pin_spec;  /* the run's --pin; NULL: [provisioner] device_pin */
    const char *prove_url; /* --prove; NULL: none */
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
    /* a fixture station (station.c): the device in front of it is read back even when
     * another station finished its row (on the ledger) */
    bool is_fixture;
    bool is_ledger; /* the journal is the ledger: other stations work the lot too */

    struct prov_issuer *issuer; /* who issues, records and delivers (issuer.h) */
    struct prov_journal *journal;
    long long lot_id;
    long long run_id;
    long long request_id; /* the reissue request the run serves (journal.h) */

    struct batch_tokens tokens; /* the locks of the physical tokens (batch_tokens.h) */

    pthread_mutex_t queue_lock;
    size_t *order; /* group indices, largest first */
    size_t next_group;

    /* The storage stage (batch_stage.h); NULL: rows are finished in line. */
    struct batch_stage *stage;

    pthread_mutex_t stats_lock;
    unsigned long n_issued;
    unsigned long n_already;
    unsigned long n_elsewhere; /* rows another station held or finished (ledger) */
    unsigned long n_failed;
    unsigned long n_interrupted; /* of n_failed: rows a signal stopped (interrupt.h) */
    struct prov_progress *progress;
};

/*
 * The device a worker keeps open from one row to the next (batch_row.c, open_row_device): a
 * fresh enrollment that went well leaves its device here, and the worker's next row on the
 * same device string with the same PIN source uses it, still open and logged in, instead of
 * finding the token and opening a session again (and SoftHSM2 going through every object
 * handle of the token to close one: a cost that grew with the keys on the token). Kept only
 * on a token that allows a second worker's session beside it (may_share). Closed when the
 * worker leaves the group (batch.c, under the token's lock), when a row fails, and before
 * any other use of a device in a row (a resume or retire path, under the lock that row
 * holds), so a worker never has more than one session of its own on a token.
 */
struct batch_kept_device {
    struct prov_device *dev;
    char *uri; /* the device string it was opened with */
    char *pin; /* the PIN source it was logged in with; NULL: the run's default */
};

/* Closes the kept device, if any (the caller holds the lock of the row it is in). */
void batch_kept_device_close(struct batch_kept_device *k);
/* The same at the end of a worker's group, under the kept device's token lock. */
void batch_kept_device_end(struct batch *b, struct batch_group *g, struct batch_kept_device *k);

/* One row for a worker. */
struct batch_row_job {
    struct batch *b;
    struct batch_group *g;
    uint32_t index;
    struct batch_kept_device *kept; /* the worker's kept device; NULL: none is kept */
    const char *device_uri; /* the device to use instead of the row's (station); NULL: row's */
    int err;                /* out: the PROV_ERR_* the row failed with, 0 when it did not */
    bool is_elsewhere;      /* out: another station held or finished the row (ledger) */
};

/* A row another station holds or finished, counted as such without being worked. */
void batch_row_elsewhere(struct batch *b, uint32_t index);

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

/* <output_dir>/<storage or serial>; malloc'd, NULL on NOMEM. */
char *batch_storage_dir(const struct prov_config *cfg, const struct prov_manifest_row *row);

const char *batch_status_name(enum batch_status st);

/* Starts the storage stage; without it (start failed) rows are finished in line. */
int batch_finisher_start(struct batch *b);

/* Waits until every queued identity is finished, then stops the stage; accepts none. */
void batch_finisher_stop(struct batch *b);

#endif
