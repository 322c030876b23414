/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_FACTORY_MANIFEST_H
#define PROV_FACTORY_MANIFEST_H

#include <stdbool.h>
#include <stddef.h>

/*
 * The manifest CSV, version 1 (factory/README.md): UTF-8, RFC 4180, a header row naming fixed
 * columns.
 *
 * The parser is a push parser: feed it the bytes in chunks of any size, then finish. It keeps
 * one record at a time, so memory is bounded however long the file is, except for the sets
 * that prove uniqueness (one entry per serial and per storage directory, ~100 bytes each).
 * It does no I/O and has no globals, so the fuzz target drives it directly.
 *
 * Every problem is reported through the error callback as (line, column, reason), and
 * parsing goes on so that one run lists all of them. Lines are 1-based; columns are 1-based
 * and count Unicode characters (code points) from the start of the physical line, as editors
 * show them; an invalid UTF-8 byte counts as one column. A value error points at the first
 * character of the field (the opening quote of a quoted field); a syntax error points at the
 * offending character; an unterminated quote points at the quote that opened the field.
 *
 * Decisions (README "Manifest"):
 * - A UTF-8 byte-order mark at the very start is accepted and skipped: spreadsheet programs
 *   write one ("CSV UTF-8"), and it cannot be mistaken for data there. U+FEFF anywhere else,
 *   and a UTF-16/UTF-32 byte-order mark, are errors.
 * - CRLF or LF, but one style per file (the first line decides): mixed line endings mean
 *   the file was spliced together by hand. Line breaks inside quoted fields are data.
 * - No blank lines (an empty record has the wrong number of fields); the last record may
 *   end without a line break.
 * - storage: relative to output_dir only. Absolute paths and ".." components are refused so
 *   that a manifest, often exported by another system, can never direct writes outside the
 *   output directory.
 */

/* The limits (PROV_MANIFEST_FIELD_MAX, _RECORD_MAX, _COLUMNS_MAX) and struct prov_manifest_pos
 * come with the tokenizer. */
#include "manifest_csv.h"

enum prov_manifest_col {
    PROV_COL_SERIAL,
    PROV_COL_DEVICE,
    PROV_COL_KEY,
    PROV_COL_PROFILE,
    PROV_COL_CN,
    PROV_COL_SAN_DNS,
    PROV_COL_SAN_URI,
    PROV_COL_SAN_EMAIL,
    PROV_COL_SAN_IP,
    PROV_COL_STORAGE,
    PROV_COL_PIN,
    PROV_COL_FIXED_COUNT,
};

/* The header name of a fixed column ("san_dns"). */
const char *prov_manifest_col_name(enum prov_manifest_col col);

/* One data row. Everything is borrowed and valid only during the callback. */
struct prov_manifest_row {
    /*
     * No finding so far in this row, nor in the header: the row callback gets only such rows.
     * A check callback also sees the others; a fixed column with a finding of its own has its
     * bit (1u << col) in bad_columns and its value NULL, so the check skips it.
     */
    bool is_valid;
    unsigned bad_columns;
    unsigned long line;                      /* line of the record's first character */
    unsigned long long offset;               /* byte offset of the record in the input */
    size_t length;                           /* bytes of the record, its line break included */
    const char *value[PROV_COL_FIXED_COUNT]; /* NULL when the column is absent or empty */
    struct prov_manifest_pos pos[PROV_COL_FIXED_COUNT]; /* where each field starts */
    size_t n_x;                                         /* x_ columns, in header order */
    const char *const *x_names;
    const char *const *x_values; /* "" when empty, never NULL */
};

struct prov_manifest_parser;

/*
 * A row callback; it may add its own findings with prov_manifest_report(). A negative return
 * stops parsing and is returned by feed/finish.
 */
typedef int (*prov_manifest_row_fn)(void *ctx, struct prov_manifest_parser *p,
                                    const struct prov_manifest_row *row);

/* One finding. name is the manifest name given to the parser. */
typedef void (*prov_manifest_error_fn)(void *ctx, const char *name, unsigned long line,
                                       unsigned long column, const char *reason);

struct prov_manifest_callbacks {
    /*
     * Every row whose record splits into the header's columns, valid or not, before row:
     * checks beyond the parser's own (the config's view of a row) go here, so that one pass
     * reports every problem of every row, whatever else is wrong in the file. May be NULL.
     */
    prov_manifest_row_fn check;
    /* Each row with no finding at all (the parser's nor check's). May be NULL. */
    prov_manifest_row_fn row;
    prov_manifest_error_fn error; /* may be NULL: findings are only counted */
    void *ctx;
};

/* A parser for the manifest called name (used in messages). PROV_ERR_NOMEM. */
int prov_manifest_parser_new(const char *name, const struct prov_manifest_callbacks *cb,
                             struct prov_manifest_parser **out);

/*
 * Parses the next len bytes. Findings go to the error callback and do not fail the call;
 * the return value is negative only for PROV_ERR_NOMEM or a callback's own failure.
 */
int prov_manifest_parser_feed(struct prov_manifest_parser *p, const void *buf, size_t len);

/*
 * Ends the input. Returns 0 when the manifest is valid, PROV_ERR_INPUT (recorded with
 * prov_fail naming the manifest and the count) when anything was reported, or a callback's
 * failure.
 */
int prov_manifest_parser_finish(struct prov_manifest_parser *p);

/* Records a finding at pos (from a row callback), printf-style. */
void prov_manifest_report(struct prov_manifest_parser *p, const struct prov_manifest_pos *pos,
                          const char *fmt, ...) __attribute__((format(printf, 3, 4)));

unsigned long prov_manifest_error_count(const struct prov_manifest_parser *p);
unsigned long prov_manifest_row_count(const struct prov_manifest_parser *p);

/* The x_ column names of the header, in order (valid until the parser is freed). */
size_t prov_manifest_x_columns(const struct prov_manifest_parser *p, const char *const **names);

/*
 * Parses one record again (offset/length from a first pass, read back from the same file)
 * with the header of the finished parser `header`, and calls fn with it. Uniqueness is not
 * checked again. PROV_ERR_INPUT when the bytes are not one valid record (the file changed).
 */
int prov_manifest_parse_record(const struct prov_manifest_parser *header, const void *buf,
                               size_t len, unsigned long line, prov_manifest_row_fn fn, void *ctx);

/* Accepts NULL. */
void prov_manifest_parser_free(struct prov_manifest_parser *p);

/* Convenience: parses a whole buffer; returns as finish. *n_errors (optional) gets the count. */
int prov_manifest_parse(const char *name, const void *buf, size_t len,
                        const struct prov_manifest_callbacks *cb, unsigned long *n_errors);

#endif
