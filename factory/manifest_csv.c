/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The manifest's CSV tokenizer: a strict RFC 4180 state machine written here rather than
 * libcsv. libcsv (Debian libcsv-dev) reports neither the line nor the column of a field or of
 * an error, stops at the first error, and has no notion of UTF-8, NUL bytes or line-ending
 * consistency; wrapping it would mean tracking every position a second time. The machine
 * below is a few states over code points and reports all findings with their position.
 *
 * Layers, from bytes up: UTF-8 decoding (feed_byte) gives code points with their position;
 * the CSV machine (on_char) splits them into fields and records; end_record hands a record
 * to the owner (manifest.c: the header or row checks). Only the current record is held (at
 * most PROV_MANIFEST_RECORD_MAX bytes).
 */
#include "manifest_csv.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void finding(struct manifest_csv *c, const struct prov_manifest_pos *pos, const char *fmt,
                    ...) __attribute__((format(printf, 3, 4)));

static void finding(struct manifest_csv *c, const struct prov_manifest_pos *pos, const char *fmt,
                    ...)
{
    char reason[768];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    c->on_finding(c->ctx, pos, reason);
}

struct prov_manifest_pos manifest_csv_here(const struct manifest_csv *c)
{
    return (struct prov_manifest_pos){.line = c->line, .column = c->column};
}

const char *manifest_csv_field(const struct manifest_csv *c, size_t i)
{
    return c->buf + c->field_off[i];
}

/* A syntax finding in the current record: its values will not be examined. */
static void syntax_error(struct manifest_csv *c, const struct prov_manifest_pos *pos,
                         const char *reason)
{
    finding(c, pos, "%s", reason);
    c->is_rec_bad = true;
}

static void start_field(struct manifest_csv *c, const struct prov_manifest_pos *pos)
{
    c->field_len = 0;
    c->is_field_overlong = false;
    c->is_field_quoted = false;
    if (c->n_fields < PROV_MANIFEST_COLUMNS_MAX) {
        c->field_off[c->n_fields] = c->buf_len;
        c->field_pos[c->n_fields] = *pos;
    } else if (c->n_fields == PROV_MANIFEST_COLUMNS_MAX) {
        c->field_pos[c->n_fields] = *pos;
        if (!c->is_too_many_fields) {
            syntax_error(c, pos, "more than 128 fields in one record");
            c->is_too_many_fields = true;
        }
    }
    c->n_fields++;
}

static void end_field(struct manifest_csv *c)
{
    if (c->n_fields <= PROV_MANIFEST_COLUMNS_MAX) {
        c->buf[c->buf_len++] = '\0';
    }
}

/*
 * Ends the record at eol_pos; the next one starts at byte next (after the line break, or at
 * the character after a bare CR), which also ends this row's extent for a second pass.
 */
static int end_record(struct manifest_csv *c, enum manifest_csv_eol eol,
                      const struct prov_manifest_pos *eol_pos, unsigned long long next)
{
    int r = 0;

    end_field(c);
    c->eol_pos = *eol_pos;
    if (eol != CSV_EOL_NONE && c->eol == CSV_EOL_NONE) {
        c->eol = eol;
        c->eol_line = eol_pos->line;
    } else if (eol != CSV_EOL_NONE && eol != c->eol) {
        finding(c, eol_pos,
                "line ends with %s but line %lu ends with %s (mixed "
                "line endings)",
                eol == CSV_EOL_LF ? "LF" : "CRLF", c->eol_line,
                c->eol == CSV_EOL_LF ? "LF" : "CRLF");
    }
    r = c->on_record(c->ctx, next);
    c->rec_offset = next;
    c->rec_line = c->line;
    c->st = CSV_ST_FIELD_START;
    c->buf_len = 0;
    c->rec_bytes = 0;
    c->n_fields = 0;
    c->is_rec_bad = false;
    c->is_rec_overlong = false;
    c->is_too_many_fields = false;
    c->is_field_quoted = false;
    c->field_len = 0;
    return r;
}

/* Appends a code point to the current field, enforcing the field and record caps. */
static void append(struct manifest_csv *c, uint32_t cp)
{
    unsigned char enc[4];
    size_t n;

    if (cp < 0x80) {
        enc[0] = (unsigned char)cp;
        n = 1;
    } else if (cp < 0x800) {
        enc[0] = (unsigned char)(0xc0 | (cp >> 6));
        enc[1] = (unsigned char)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        enc[0] = (unsigned char)(0xe0 | (cp >> 12));
        enc[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        enc[2] = (unsigned char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        enc[0] = (unsigned char)(0xf0 | (cp >> 18));
        enc[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
        enc[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        enc[3] = (unsigned char)(0x80 | (cp & 0x3f));
        n = 4;
    }
    if (c->n_fields > PROV_MANIFEST_COLUMNS_MAX || c->is_field_overlong || c->is_rec_overlong) {
        return;
    }
    if (c->field_len + n > PROV_MANIFEST_FIELD_MAX) {
        syntax_error(c, &c->field_pos[c->n_fields - 1], "field longer than 4096 bytes");
        c->is_field_overlong = true;
        return;
    }
    if (c->rec_bytes + n > PROV_MANIFEST_RECORD_MAX) {
        struct prov_manifest_pos start = {c->rec_line, 1};

        syntax_error(c, &start, "record longer than 65536 bytes");
        c->is_rec_overlong = true;
        return;
    }
    memcpy(c->buf + c->buf_len, enc, n);
    c->buf_len += n;
    c->field_len += n;
    c->rec_bytes += n;
}

/*
 * Outside quotes, the characters that end something: a comma the field, LF the record, CR
 * waits for its LF. true when cp was one of them (*r: end_record's result), false for data.
 */
static bool on_delimiter(struct manifest_csv *c, uint32_t cp, const struct prov_manifest_pos *pos,
                         int *r)
{
    *r = 0;
    if (cp == ',') {
        end_field(c);
        c->st = CSV_ST_FIELD_START;
    } else if (cp == '\n') {
        *r = end_record(c, CSV_EOL_LF, pos, c->offset);
    } else if (cp == '\r') {
        c->cr_pos = *pos;
        c->st = CSV_ST_CR;
    } else {
        return false;
    }
    return true;
}

/* The CSV machine, one code point at a time; pos is where cp is. */
static int on_char(struct manifest_csv *c, uint32_t cp, const struct prov_manifest_pos *pos)
{
    int r;

    if (c->st == CSV_ST_CR) {
        if (cp == '\n') {
            return end_record(c, CSV_EOL_CRLF, &c->cr_pos, c->offset);
        }
        /* A bare CR ends the record (it is not data), then cp starts the next one. */
        syntax_error(c, &c->cr_pos, "carriage return (CR) not followed by a line feed");
        r = end_record(c, CSV_EOL_NONE, &c->cr_pos, c->char_off);
        if (r < 0) {
            return r;
        }
    }
    r = 0;
    switch (c->st) {
    case CSV_ST_FIELD_START:
        start_field(c, pos);
        if (cp == '"') {
            c->is_field_quoted = true;
            c->quote_pos = *pos;
            c->st = CSV_ST_QUOTED;
        } else if (!on_delimiter(c, cp, pos, &r)) {
            append(c, cp);
            c->st = CSV_ST_UNQUOTED;
        }
        return r;
    case CSV_ST_UNQUOTED:
        if (!on_delimiter(c, cp, pos, &r)) {
            if (cp == '"') {
                syntax_error(c, pos,
                             "quote inside an unquoted field (quote the whole field "
                             "and double the quote: \"a\"\"b\")");
            }
            append(c, cp);
        }
        return r;
    case CSV_ST_QUOTED:
        if (cp == '"') {
            c->st = CSV_ST_QUOTE_SEEN;
        } else {
            append(c, cp);
        }
        return 0;
    case CSV_ST_QUOTE_SEEN:
        if (cp == '"') {
            append(c, cp);
            c->st = CSV_ST_QUOTED;
        } else if (!on_delimiter(c, cp, pos, &r)) {
            syntax_error(c, pos,
                         "character after the closing quote of a field (a quote "
                         "inside a quoted field is written \"\")");
            append(c, cp);
            c->st = CSV_ST_UNQUOTED;
        }
        return r;
    case CSV_ST_CR: break;
    }
    return 0;
}

/* A decoded code point: the file-level checks, then the CSV machine. */
static int on_code_point(struct manifest_csv *c, uint32_t cp,
                         const struct prov_manifest_pos *pos, unsigned long long start_offset)
{
    if (cp == 0xfeff) {
        if (start_offset == 0) {
            return 0; /* the UTF-8 byte-order mark: skipped, and it takes no column */
        }
        c->column++;
        syntax_error(c, pos,
                     "byte-order mark (U+FEFF) inside the file (files joined "
                     "together?)");
        return 0;
    }
    if (cp == '\n') {
        c->line++;
        c->column = 1;
    } else {
        c->column++;
    }
    if (cp == 0) {
        syntax_error(c, pos, "NUL byte");
        return 0;
    }
    c->char_off = start_offset;
    return on_char(c, cp, pos);
}

static void utf8_error(struct manifest_csv *c, const struct prov_manifest_pos *pos,
                       const char *what)
{
    c->column++;
    syntax_error(c, pos, what);
}

static int feed_byte(struct manifest_csv *c, unsigned char b)
{
    struct prov_manifest_pos pos = manifest_csv_here(c);
    unsigned long long off = c->offset++;

    if (c->utf8_need > 0) {
        if ((b & 0xc0) == 0x80) {
            c->utf8_cp = (c->utf8_cp << 6) | (b & 0x3f);
            if (--c->utf8_need > 0) {
                return 0;
            }
            if (c->utf8_cp < c->utf8_min || c->utf8_cp > 0x10ffff ||
                (c->utf8_cp >= 0xd800 && c->utf8_cp <= 0xdfff)) {
                utf8_error(c, &c->utf8_pos,
                           "invalid UTF-8 (overlong form, surrogate or "
                           "beyond U+10FFFF)");
                return 0;
            }
            return on_code_point(c, c->utf8_cp, &c->utf8_pos, c->utf8_off);
        }
        c->utf8_need = 0;
        utf8_error(c, &c->utf8_pos, "invalid UTF-8 (truncated multi-byte sequence)");
        pos = manifest_csv_here(c);
    }
    if (b < 0x80) {
        return on_code_point(c, b, &pos, off);
    }
    if (off == 0 && (b == 0xff || b == 0xfe)) {
        finding(c, &pos,
                "UTF-16 or UTF-32 byte-order mark: the manifest must be "
                "UTF-8 (save as \"CSV UTF-8\")");
        c->is_fatal = true;
        return 0;
    }
    c->utf8_pos = pos;
    c->utf8_off = off;
    if (b >= 0xc2 && b <= 0xdf) {
        c->utf8_need = 1;
        c->utf8_cp = b & 0x1f;
        c->utf8_min = 0x80;
    } else if (b >= 0xe0 && b <= 0xef) {
        c->utf8_need = 2;
        c->utf8_cp = b & 0x0f;
        c->utf8_min = 0x800;
    } else if (b >= 0xf0 && b <= 0xf4) {
        c->utf8_need = 3;
        c->utf8_cp = b & 0x07;
        c->utf8_min = 0x10000;
    } else {
        char what[64];

        snprintf(what, sizeof(what), "invalid UTF-8 (byte 0x%02X)", b);
        utf8_error(c, &pos, what);
    }
    return 0;
}

int manifest_csv_feed(struct manifest_csv *c, const void *buf, size_t len)
{
    const unsigned char *b = buf;

    for (size_t i = 0; i < len && !c->is_fatal; i++) {
        int r = feed_byte(c, b[i]);

        if (r < 0) {
            return r;
        }
    }
    return 0;
}

int manifest_csv_finish(struct manifest_csv *c)
{
    struct prov_manifest_pos pos = manifest_csv_here(c);
    int r = 0;

    if (c->utf8_need > 0) {
        c->utf8_need = 0;
        utf8_error(c, &c->utf8_pos, "invalid UTF-8 (truncated multi-byte sequence)");
    }
    if (c->st == CSV_ST_QUOTED) {
        syntax_error(c, &c->quote_pos,
                     "unterminated quoted field (this quote is never "
                     "closed)");
    }
    if (c->st == CSV_ST_CR) {
        syntax_error(c, &c->cr_pos, "carriage return (CR) not followed by a line feed");
        r = end_record(c, CSV_EOL_NONE, &c->cr_pos, c->offset);
    } else if (c->n_fields > 0) {
        r = end_record(c, CSV_EOL_NONE, &pos, c->offset);
    }
    return r;
}

int manifest_csv_init(struct manifest_csv *c)
{
    /* One record: its bytes plus a NUL per stored field. */
    c->buf = malloc(PROV_MANIFEST_RECORD_MAX + PROV_MANIFEST_COLUMNS_MAX + 1);
    if (c->buf == NULL) {
        return -1;
    }
    c->line = 1;
    c->column = 1;
    c->rec_line = 1;
    return 0;
}

void manifest_csv_free(struct manifest_csv *c)
{
    free(c->buf);
    c->buf = NULL;
}
