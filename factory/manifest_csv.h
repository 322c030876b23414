/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_FACTORY_MANIFEST_CSV_H
#define PROV_FACTORY_MANIFEST_CSV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * The manifest's CSV tokenizer: bytes in, records of fields out, every position kept. It
 * knows UTF-8, RFC 4180 and the limits below, and nothing of columns or values: the manifest
 * schema (manifest.c) owns one, gets each finished record through on_record and each finding
 * through on_finding. It does no I/O and has no globals.
 */

/* Limits: a longer field, record or header is an error, never a bigger allocation. */
#define PROV_MANIFEST_FIELD_MAX 4096
#define PROV_MANIFEST_RECORD_MAX (64 * 1024)
#define PROV_MANIFEST_COLUMNS_MAX 128

/* Lines and columns are 1-based; columns count code points (manifest.h). */
struct prov_manifest_pos {
    unsigned long line;
    unsigned long column;
};

enum manifest_csv_state {
    CSV_ST_FIELD_START,
    CSV_ST_UNQUOTED,
    CSV_ST_QUOTED,
    CSV_ST_QUOTE_SEEN, /* a quote inside a quoted field: doubled quote or the end of the field */
    CSV_ST_CR,         /* a CR outside quotes: a LF must follow */
};

enum manifest_csv_eol { CSV_EOL_NONE, CSV_EOL_LF, CSV_EOL_CRLF };

struct manifest_csv {
    /* Set by the owner before the first byte. */
    /* A finding at pos; the tokenizer goes on. */
    void (*on_finding)(void *ctx, const struct prov_manifest_pos *pos, const char *reason);
    /* A record ended (its fields below are readable until the call returns); the next one
     * starts at byte next. A negative return stops the tokenizer and is returned. */
    int (*on_record)(void *ctx, unsigned long long next);
    void *ctx;

    bool is_fatal; /* the input is not UTF-8 at all: the rest is not examined */

    /* Position of the next byte. */
    unsigned long long offset;
    unsigned long line;
    unsigned long column;
    unsigned long long char_off; /* where the code point being handled starts */

    /* UTF-8 decoding of a multi-byte sequence in progress. */
    unsigned utf8_need;
    uint32_t utf8_cp;
    uint32_t utf8_min;
    struct prov_manifest_pos utf8_pos;
    unsigned long long utf8_off;

    /* The record being read. */
    enum manifest_csv_state st;
    unsigned long long rec_offset;
    unsigned long rec_line;
    bool is_rec_bad; /* a syntax finding: the values are not examined */
    bool is_rec_overlong;
    bool is_field_overlong;
    bool is_field_quoted;
    bool is_too_many_fields;
    struct prov_manifest_pos quote_pos;
    struct prov_manifest_pos cr_pos;
    struct prov_manifest_pos eol_pos; /* where the record ended */
    char *buf;                        /* the fields, each NUL-terminated */
    size_t buf_len;
    size_t rec_bytes; /* content bytes of the record, against the record cap */
    size_t field_len;
    size_t n_fields; /* fields seen, may exceed what is stored */
    size_t field_off[PROV_MANIFEST_COLUMNS_MAX];
    struct prov_manifest_pos field_pos[PROV_MANIFEST_COLUMNS_MAX + 1];
    enum manifest_csv_eol eol;
    unsigned long eol_line; /* the line whose ending decided the style */
};

/* Starts at line 1, column 1, with the record buffer allocated; -1 when out of memory. */
int manifest_csv_init(struct manifest_csv *c);

/* Frees the record buffer. */
void manifest_csv_free(struct manifest_csv *c);

/* The next len bytes; negative only when on_record failed. */
int manifest_csv_feed(struct manifest_csv *c, const void *buf, size_t len);

/* The end of the input: an unfinished sequence, quote or line break is a finding, and a
 * record in progress is ended. Negative only when on_record failed. Not after is_fatal. */
int manifest_csv_finish(struct manifest_csv *c);

/* Field i (< PROV_MANIFEST_COLUMNS_MAX) of the current record. */
const char *manifest_csv_field(const struct manifest_csv *c, size_t i);

/* The position of the next byte. */
struct prov_manifest_pos manifest_csv_here(const struct manifest_csv *c);

#endif
