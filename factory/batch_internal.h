/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_FACTORY_BATCH_INTERNAL_H
#define PROV_FACTORY_BATCH_INTERNAL_H

/* The run's pieces batch.c shares with station.c; not an interface of the layer. */

#include "batch.h"
#include "batch_row.h"

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

/* The resolved PIN source of row index, read back from the manifest (station: its check). */
struct batch_row_pin {
    const char *manifest;
    char *spec;
};
int batch_row_pin_spec(struct batch *b, uint32_t index, char **out);

#endif
