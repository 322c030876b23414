/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_FACTORY_LOT_EXPORT_H
#define PROV_FACTORY_LOT_EXPORT_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "journal.h"
#include "lot_bundle.h"

/*
 * `lot export` (doc/export.md): a lot's identities, read from its batch journal through
 * journal.h only, in the formats a customer loads. Everything is built in memory first and
 * written afterwards (prov_lot_export_write), so a failure leaves no partial output.
 */
enum prov_lot_format {
    PROV_LOT_AWS,       /* directory: AWS IoT bulk registration + RegisterCACertificate input */
    PROV_LOT_AZURE_DPS, /* directory: DPS enrollment group + individual enrollments */
    PROV_LOT_EDGE,      /* file: the CA trust set an edge loads (as `chain export`) */
    PROV_LOT_CSV,       /* file: inventory */
    PROV_LOT_JSON,      /* file: inventory */
    PROV_LOT_RECORD,    /* directory: the lot record and its CMS signature by the lot signer */
    PROV_LOT_FORMAT_COUNT,
};

/* "aws", "azure-dps", "edge", "csv", "json", "record". */
const char *prov_lot_format_name(enum prov_lot_format f);

/* PROV_ERR_USAGE naming the value and the formats there are. */
int prov_lot_format_parse(const char *name, enum prov_lot_format *out);

/* Whether the format is a directory of files (else one file, or stdout). */
bool prov_lot_format_is_dir(enum prov_lot_format f);

/* One bit per journal state: (1u << PROV_JOURNAL_STORED) | ... */
#define PROV_LOT_DEFAULT_STATES ((1u << PROV_JOURNAL_STORED) | (1u << PROV_JOURNAL_PROVEN))

/*
 * A state list as --state takes it: comma-separated names among issued, stored, proven,
 * failed (rows with a current certificate), or "all" for those four. PROV_ERR_USAGE.
 */
int prov_lot_states_parse(const char *list, unsigned *mask);

struct prov_lot_export_opts {
    const char *lot;     /* the lot's name in the journal */
    const char *journal; /* the journal to read */
    enum prov_lot_format format;
    unsigned states;     /* rows exported, by state; 0: PROV_LOT_DEFAULT_STATES */
};

/*
 * Reads the lot and builds the files of the format. Errors: PROV_ERR_POLICY "lot NAME: not in
 * JOURNAL" for an unknown lot (and for a lot with no row to export), the journal's errors,
 * the CA chain's (edge, aws, azure-dps, record), the lot signer's (record: PROV_ERR_NOT_FOUND
 * when there is none). Revocations come from the CA index cfg names, if any (doc/export.md
 * "Revoked devices"); cfg may be NULL for csv and json (no CA: none checked). *out is
 * released with prov_lot_bundle_clear.
 */
int prov_lot_export_build(const struct prov_config *cfg, const struct prov_lot_export_opts *o,
                          struct prov_lot_bundle *out);

/*
 * Writes a built export: a file format's file atomically (storage/durable.h); a directory
 * format's files into a new directory beside output, synced, then renamed to output, which
 * must not exist yet (or be an empty directory). On failure nothing is left at output.
 * PROV_ERR_STORAGE naming the path.
 */
int prov_lot_export_write(const struct prov_lot_bundle *b, bool is_dir, const char *output);

/*
 * Before anything is read: output can be written (a file format: its directory exists; a
 * directory format: it does not exist yet or is an empty directory, and its parent exists).
 * PROV_ERR_STORAGE.
 */
int prov_lot_export_check_output(bool is_dir, const char *output);

#endif
