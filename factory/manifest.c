/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The manifest parser: a strict RFC 4180 state machine written here rather than libcsv.
 * libcsv (Debian libcsv-dev) reports neither the line nor the column of a field or of an
 * error, stops at the first error, and has no notion of UTF-8, NUL bytes or line-ending
 * consistency; wrapping it would mean tracking every position a second time. The machine
 * below is a few states over code points and reports all findings with their position.
 *
 * Layers, from bytes up: UTF-8 decoding (feed_byte) gives code points with their position;
 * the CSV machine (on_char) splits them into fields and records; end_record hands a record
 * to the header or row checks. Only the current record is held (at most
 * PROV_MANIFEST_RECORD_MAX bytes), plus the uniqueness sets.
 */
#include "manifest.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "error.h"
#include "issue.h"
#include "manifest_value.h"
#include "strset.h"

#define COL_X (-1)       /* an x_ column */
#define COL_IGNORED (-2) /* unknown or duplicate column: already reported */

static const char *const col_names[PROV_COL_FIXED_COUNT] = {
    "serial",  "device",  "key",       "profile", "cn",  "san_dns",
    "san_uri", "san_email", "san_ip",  "storage", "pin",
};

struct column {
    int kind; /* enum prov_manifest_col, COL_X or COL_IGNORED */
    char *name;
};

enum csv_state {
    ST_FIELD_START,
    ST_UNQUOTED,
    ST_QUOTED,
    ST_QUOTE_SEEN, /* a quote inside a quoted field: doubled quote or the end of the field */
    ST_CR,         /* a CR outside quotes: a LF must follow */
};

enum eol_style { EOL_NONE, EOL_LF, EOL_CRLF };

struct prov_manifest_parser {
    char *name;
    struct prov_manifest_callbacks cb;
    bool is_record_mode; /* prov_manifest_parse_record: header known, no uniqueness */
    bool is_fatal;       /* the input is not UTF-8 at all: the rest is not examined */

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
    enum csv_state st;
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
    enum eol_style eol;
    unsigned long eol_line; /* the line whose ending decided the style */

    /* The header. */
    bool has_header;
    bool is_header_bad;      /* rows are checked, but none is valid */
    bool is_header_unusable; /* no column list at all: rows are not examined */
    size_t n_cols;
    struct column cols[PROV_MANIFEST_COLUMNS_MAX];
    bool owns_names;
    int fixed_index[PROV_COL_FIXED_COUNT]; /* column index, -1 when absent */
    const char *x_names[PROV_MANIFEST_COLUMNS_MAX];
    size_t n_x;

    /* Value: the line that used it first. Case-folded: a serial names its default storage
     * directory, and devices often read their storage from FAT. */
    struct prov_strset serials;
    struct prov_strset storages;
    unsigned long n_errors;
    unsigned long n_records; /* data records, valid or not */
    unsigned long n_rows;    /* valid data rows */
};

const char *prov_manifest_col_name(enum prov_manifest_col col)
{
    return (unsigned)col < PROV_COL_FIXED_COUNT ? col_names[col] : "?";
}

void prov_manifest_report(struct prov_manifest_parser *p, const struct prov_manifest_pos *pos,
                          const char *fmt, ...)
{
    char reason[768];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    p->n_errors++;
    if (p->cb.error != NULL) {
        p->cb.error(p->cb.ctx, p->name, pos->line, pos->column, reason);
    }
}

static struct prov_manifest_pos here(const struct prov_manifest_parser *p)
{
    return (struct prov_manifest_pos){.line = p->line, .column = p->column};
}

/* A syntax finding in the current record: its values will not be examined. */
static void syntax_error(struct prov_manifest_parser *p, const struct prov_manifest_pos *pos,
                         const char *reason)
{
    prov_manifest_report(p, pos, "%s", reason);
    p->is_rec_bad = true;
}

/* ---- values ---------------------------------------------------------------------------- */

/* Each ';'-separated entry (blanks around entries trimmed, empty entries skipped, as issue.c). */
static void check_san(struct prov_manifest_parser *p, enum prov_manifest_col col, const char *value,
                      const struct prov_manifest_pos *pos)
{
    static const char *const kinds[] = {"DNS name", "URI", "e-mail address", "IP address"};
    char entry[PROV_MANIFEST_FIELD_MAX + 1];
    const char *s = value;

    while (*s) {
        const char *end = strchr(s, ';');
        size_t len = end ? (size_t)(end - s) : strlen(s);
        bool ok = true;

        while (len > 0 && (*s == ' ' || *s == '\t')) {
            s++;
            len--;
        }
        while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t')) {
            len--;
        }
        memcpy(entry, s, len);
        entry[len] = '\0';
        if (len > 0) {
            ok = prov_manifest_san_entry_is_valid(col, entry);
        }
        if (!ok) {
            prov_manifest_report(p, pos, "%s: \"%.200s\" is not a valid %s", col_names[col], entry,
                                 kinds[col - PROV_COL_SAN_DNS]);
        }
        if (end == NULL) {
            break;
        }
        s = end + 1;
    }
}

static void check_no_control(struct prov_manifest_parser *p, enum prov_manifest_col col,
                             const char *v, const struct prov_manifest_pos *pos)
{
    uint32_t cp = prov_manifest_find_control(v);

    if (cp != 0) {
        prov_manifest_report(p, pos, "%s: control or direction-changing character U+%04X",
                             col_names[col], (unsigned)cp);
    }
}

static int check_unique(struct prov_manifest_parser *p, struct prov_strset *set, const char *key,
                        const char *what, const struct prov_manifest_pos *pos)
{
    unsigned long first = 0;
    bool is_new = false;

    if (p->is_record_mode) {
        return 0;
    }
    if (prov_strset_add(set, key, pos->line, &first, &is_new) < 0) {
        return prov_fail(PROV_ERR_NOMEM, "%s: out of memory", p->name);
    }
    if (!is_new) {
        const char *spelled = prov_strset_key(set, key);

        if (spelled != NULL && strcmp(spelled, key) != 0) {
            prov_manifest_report(p, pos,
                                 "%s \"%.200s\" differs only in letter case from \"%.200s\" on "
                                 "line %lu (one directory on a case-insensitive file system "
                                 "such as FAT)",
                                 what, key, spelled, first);
        } else {
            prov_manifest_report(p, pos, "%s \"%.200s\" is also used on line %lu", what, key,
                                 first);
        }
    }
    return 0;
}

/* The checks on one value; empty optional values mean "the default" and are not checked. */
static int check_value(struct prov_manifest_parser *p, enum prov_manifest_col col, const char *v,
                       const struct prov_manifest_pos *pos)
{
    char norm[PROV_MANIFEST_FIELD_MAX + 1];
    const char *why;

    if (v[0] == '\0') {
        if (col == PROV_COL_SERIAL || col == PROV_COL_DEVICE) {
            prov_manifest_report(p, pos, "%s: empty (required)", col_names[col]);
        }
        return 0;
    }
    switch (col) {
    case PROV_COL_SERIAL:
        if (!prov_serial_is_valid(v)) {
            prov_manifest_report(p, pos, "serial \"%.80s\": must match " PROV_SERIAL_RULE,
                                 prov_manifest_find_control(v) ? "(control character)" : v);
            return 0;
        }
        return check_unique(p, &p->serials, v, "serial", pos);
    case PROV_COL_DEVICE:
        if (!prov_backend_scheme_known(v)) {
            char schemes[128];

            prov_manifest_report(p, pos, "device: must start with %s",
                                 prov_backend_schemes(schemes, sizeof(schemes)));
        } else {
            check_no_control(p, col, v, pos);
        }
        return 0;
    case PROV_COL_KEY:
        if (!prov_manifest_is_key_type(v)) {
            prov_manifest_report(p, pos,
                                 "key \"%.40s\": unknown key type (ec-p256, ec-p384, rsa-2048, "
                                 "rsa-3072)",
                                 prov_manifest_find_control(v) ? "(control character)" : v);
        }
        return 0;
    case PROV_COL_PROFILE:
        if (!prov_manifest_is_profile_name(v)) {
            prov_manifest_report(p, pos, "profile: not a profile name ([A-Za-z0-9_.-]{1,64})");
        }
        return 0;
    case PROV_COL_CN:
        /* Any other text is a literal value: the core never parses it as a DN. */
        check_no_control(p, col, v, pos);
        return 0;
    case PROV_COL_SAN_DNS:
    case PROV_COL_SAN_URI:
    case PROV_COL_SAN_EMAIL:
    case PROV_COL_SAN_IP:
        if (prov_manifest_find_control(v) != 0) {
            check_no_control(p, col, v, pos);
        } else {
            check_san(p, col, v, pos);
        }
        return 0;
    case PROV_COL_STORAGE:
        if (prov_manifest_find_control(v) != 0) {
            check_no_control(p, col, v, pos);
        } else if (!prov_manifest_storage_normalize(v, norm, sizeof(norm), &why)) {
            prov_manifest_report(p, pos, "storage \"%.200s\": %s", v, why);
        } else {
            return check_unique(p, &p->storages, norm, "storage directory", pos);
        }
        return 0;
    case PROV_COL_PIN:
        /* Never echoed: a value that is no PIN source may be the PIN itself. */
        why = prov_manifest_pin_source_problem(v);
        if (why != NULL) {
            prov_manifest_report(p, pos, "pin: %s", why);
        }
        return 0;
    default: return 0;
    }
}

/* ---- records --------------------------------------------------------------------------- */

static const char *field(const struct prov_manifest_parser *p, size_t i)
{
    return p->buf + p->field_off[i];
}

static void header_column(struct prov_manifest_parser *p, size_t i)
{
    const char *name = field(p, i);
    const struct prov_manifest_pos *pos = &p->field_pos[i];
    struct column *c = &p->cols[i];

    c->kind = COL_IGNORED;
    c->name = strdup(name);
    if (name[0] == '\0') {
        prov_manifest_report(p, pos, "empty column name");
        return;
    }
    for (int k = 0; k < PROV_COL_FIXED_COUNT; k++) {
        if (strcmp(name, col_names[k]) == 0) {
            if (p->fixed_index[k] >= 0) {
                prov_manifest_report(p, pos, "column \"%s\" appears twice (also column %lu)", name,
                                     p->field_pos[p->fixed_index[k]].column);
            } else {
                p->fixed_index[k] = (int)i;
                c->kind = k;
            }
            return;
        }
    }
    if (strncmp(name, "x_", 2) == 0) {
        bool ok = name[2] != '\0';

        for (const char *s = name + 2; *s; s++) {
            ok = ok && isascii((unsigned char)*s) && (isalnum((unsigned char)*s) || *s == '_');
        }
        if (!ok) {
            prov_manifest_report(p, pos,
                                 "column \"%.64s\": an x_ name is x_ followed by letters, "
                                 "digits and _",
                                 prov_manifest_find_control(name) ? "x_?" : name);
            return;
        }
        for (size_t j = 0; j < p->n_x; j++) {
            if (strcmp(p->x_names[j], name) == 0) {
                prov_manifest_report(p, pos, "column \"%s\" appears twice", name);
                return;
            }
        }
        c->kind = COL_X;
        if (c->name != NULL) {
            p->x_names[p->n_x++] = c->name;
        }
        return;
    }
    for (int k = 0; k < PROV_COL_FIXED_COUNT; k++) {
        if (strcasecmp(name, col_names[k]) == 0) {
            prov_manifest_report(p, pos,
                                 "unknown column \"%s\" (column names are lower case: "
                                 "\"%s\")",
                                 name, col_names[k]);
            return;
        }
    }
    prov_manifest_report(p, pos,
                         "unknown column \"%.64s\" (known: serial, device, key, profile, cn, "
                         "san_dns, san_uri, san_email, san_ip, storage, pin; x_NAME is passed "
                         "through)",
                         prov_manifest_find_control(name) ? "(control character)" : name);
}

static void process_header(struct prov_manifest_parser *p)
{
    unsigned long before = p->n_errors;
    struct prov_manifest_pos start = {p->rec_line, 1};

    p->has_header = true;
    if (p->n_fields == 1 && p->field_len == 0 && !p->is_field_quoted) {
        prov_manifest_report(p, &start, "empty line where the header row should be");
        p->is_header_bad = p->is_header_unusable = true;
        return;
    }
    if (p->is_too_many_fields) {
        p->is_header_bad = p->is_header_unusable = true;
        return;
    }
    p->n_cols = p->n_fields;
    for (size_t i = 0; i < p->n_fields; i++) {
        header_column(p, i);
    }
    for (int k = PROV_COL_SERIAL; k <= PROV_COL_DEVICE; k++) {
        if (p->fixed_index[k] < 0) {
            prov_manifest_report(p, &start, "required column \"%s\" is missing from the header",
                                 col_names[k]);
        }
    }
    p->is_header_bad = p->n_errors != before || p->is_rec_bad;
}

static int process_row(struct prov_manifest_parser *p, unsigned long long next)
{
    struct prov_manifest_row row;
    const char *x_values[PROV_MANIFEST_COLUMNS_MAX];
    unsigned long before = p->n_errors;
    size_t n_x = 0;
    int r;

    p->n_records++;
    if (p->is_rec_bad || p->is_header_unusable) {
        return 0;
    }
    if (p->n_fields == 1 && p->field_len == 0 && !p->is_field_quoted && p->n_cols > 1) {
        prov_manifest_report(p, &p->field_pos[0], "empty line (a row has %zu fields)", p->n_cols);
        return 0;
    }
    if (p->n_fields != p->n_cols) {
        /* The first extra field, or the end of the line where a field is missing. */
        const struct prov_manifest_pos *pos =
            p->n_fields > p->n_cols ? &p->field_pos[p->n_cols] : &p->eol_pos;

        prov_manifest_report(p, pos, "row has %zu fields, the header has %zu", p->n_fields,
                             p->n_cols);
        return 0;
    }
    memset(&row, 0, sizeof(row));
    for (size_t i = 0; i < p->n_cols; i++) {
        int kind = p->cols[i].kind;

        if (kind >= 0) {
            const char *v = field(p, i);
            unsigned long found = p->n_errors;

            r = check_value(p, (enum prov_manifest_col)kind, v, &p->field_pos[i]);
            if (r < 0) {
                return r;
            }
            if (p->n_errors != found) {
                row.bad_columns |= 1u << kind;
            } else {
                row.value[kind] = v[0] != '\0' ? v : NULL;
            }
            row.pos[kind] = p->field_pos[i];
        } else if (kind == COL_X) {
            x_values[n_x++] = field(p, i);
        }
    }
    /*
     * Without a storage value the row writes <output_dir>/<serial>: that must be unique too,
     * against the explicit storage values of other rows. Without a storage column there are
     * none, and unique serials already make these unique: the set is not kept (half the
     * memory of a big manifest).
     */
    if (p->n_errors == before && row.value[PROV_COL_STORAGE] == NULL &&
        row.value[PROV_COL_SERIAL] != NULL && p->fixed_index[PROV_COL_STORAGE] >= 0) {
        r = check_unique(p, &p->storages, row.value[PROV_COL_SERIAL], "storage directory",
                         &row.pos[PROV_COL_SERIAL]);
        if (r < 0) {
            return r;
        }
    }
    row.line = p->rec_line;
    row.offset = p->rec_offset;
    row.length = (size_t)(next - p->rec_offset);
    row.n_x = n_x;
    row.x_names = p->x_names;
    row.x_values = x_values;
    row.is_valid = p->n_errors == before && !p->is_header_bad;
    if (p->cb.check != NULL) {
        r = p->cb.check(p->cb.ctx, p, &row);
        if (r < 0) {
            return r;
        }
        row.is_valid = p->n_errors == before && !p->is_header_bad;
    }
    if (!row.is_valid) {
        return 0;
    }
    p->n_rows++;
    if (p->cb.row == NULL) {
        return 0;
    }
    return p->cb.row(p->cb.ctx, p, &row);
}

static void start_field(struct prov_manifest_parser *p, const struct prov_manifest_pos *pos)
{
    p->field_len = 0;
    p->is_field_overlong = false;
    p->is_field_quoted = false;
    if (p->n_fields < PROV_MANIFEST_COLUMNS_MAX) {
        p->field_off[p->n_fields] = p->buf_len;
        p->field_pos[p->n_fields] = *pos;
    } else if (p->n_fields == PROV_MANIFEST_COLUMNS_MAX) {
        p->field_pos[p->n_fields] = *pos;
        if (!p->is_too_many_fields) {
            syntax_error(p, pos, "more than 128 fields in one record");
            p->is_too_many_fields = true;
        }
    }
    p->n_fields++;
}

static void end_field(struct prov_manifest_parser *p)
{
    if (p->n_fields <= PROV_MANIFEST_COLUMNS_MAX) {
        p->buf[p->buf_len++] = '\0';
    }
}

/*
 * Ends the record at eol_pos; the next one starts at byte next (after the line break, or at
 * the character after a bare CR), which also ends this row's extent for a second pass.
 */
static int end_record(struct prov_manifest_parser *p, enum eol_style eol,
                      const struct prov_manifest_pos *eol_pos, unsigned long long next)
{
    int r = 0;

    end_field(p);
    p->eol_pos = *eol_pos;
    if (eol != EOL_NONE && p->eol == EOL_NONE) {
        p->eol = eol;
        p->eol_line = eol_pos->line;
    } else if (eol != EOL_NONE && eol != p->eol) {
        prov_manifest_report(p, eol_pos,
                             "line ends with %s but line %lu ends with %s (mixed "
                             "line endings)",
                             eol == EOL_LF ? "LF" : "CRLF", p->eol_line,
                             p->eol == EOL_LF ? "LF" : "CRLF");
    }
    if (!p->has_header) {
        process_header(p);
    } else {
        r = process_row(p, next);
    }
    p->rec_offset = next;
    p->rec_line = p->line;
    p->st = ST_FIELD_START;
    p->buf_len = 0;
    p->rec_bytes = 0;
    p->n_fields = 0;
    p->is_rec_bad = false;
    p->is_rec_overlong = false;
    p->is_too_many_fields = false;
    p->is_field_quoted = false;
    p->field_len = 0;
    return r;
}

/* Appends a code point to the current field, enforcing the field and record caps. */
static void append(struct prov_manifest_parser *p, uint32_t cp)
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
    if (p->n_fields > PROV_MANIFEST_COLUMNS_MAX || p->is_field_overlong || p->is_rec_overlong) {
        return;
    }
    if (p->field_len + n > PROV_MANIFEST_FIELD_MAX) {
        syntax_error(p, &p->field_pos[p->n_fields - 1], "field longer than 4096 bytes");
        p->is_field_overlong = true;
        return;
    }
    if (p->rec_bytes + n > PROV_MANIFEST_RECORD_MAX) {
        struct prov_manifest_pos start = {p->rec_line, 1};

        syntax_error(p, &start, "record longer than 65536 bytes");
        p->is_rec_overlong = true;
        return;
    }
    memcpy(p->buf + p->buf_len, enc, n);
    p->buf_len += n;
    p->field_len += n;
    p->rec_bytes += n;
}

/* The CSV machine, one code point at a time; pos is where cp is. */
static int on_char(struct prov_manifest_parser *p, uint32_t cp, const struct prov_manifest_pos *pos)
{
    int r;

    if (p->st == ST_CR) {
        if (cp == '\n') {
            return end_record(p, EOL_CRLF, &p->cr_pos, p->offset);
        }
        /* A bare CR ends the record (it is not data), then cp starts the next one. */
        syntax_error(p, &p->cr_pos, "carriage return (CR) not followed by a line feed");
        r = end_record(p, EOL_NONE, &p->cr_pos, p->char_off);
        if (r < 0) {
            return r;
        }
    }
    switch (p->st) {
    case ST_FIELD_START:
        start_field(p, pos);
        if (cp == '"') {
            p->is_field_quoted = true;
            p->quote_pos = *pos;
            p->st = ST_QUOTED;
        } else if (cp == ',') {
            end_field(p);
        } else if (cp == '\n') {
            return end_record(p, EOL_LF, pos, p->offset);
        } else if (cp == '\r') {
            p->cr_pos = *pos;
            p->st = ST_CR;
        } else {
            append(p, cp);
            p->st = ST_UNQUOTED;
        }
        return 0;
    case ST_UNQUOTED:
        if (cp == ',') {
            end_field(p);
            p->st = ST_FIELD_START;
        } else if (cp == '\n') {
            return end_record(p, EOL_LF, pos, p->offset);
        } else if (cp == '\r') {
            p->cr_pos = *pos;
            p->st = ST_CR;
        } else {
            if (cp == '"') {
                syntax_error(p, pos,
                             "quote inside an unquoted field (quote the whole field "
                             "and double the quote: \"a\"\"b\")");
            }
            append(p, cp);
        }
        return 0;
    case ST_QUOTED:
        if (cp == '"') {
            p->st = ST_QUOTE_SEEN;
        } else {
            append(p, cp);
        }
        return 0;
    case ST_QUOTE_SEEN:
        if (cp == '"') {
            append(p, cp);
            p->st = ST_QUOTED;
        } else if (cp == ',') {
            end_field(p);
            p->st = ST_FIELD_START;
        } else if (cp == '\n') {
            return end_record(p, EOL_LF, pos, p->offset);
        } else if (cp == '\r') {
            p->cr_pos = *pos;
            p->st = ST_CR;
        } else {
            syntax_error(p, pos,
                         "character after the closing quote of a field (a quote "
                         "inside a quoted field is written \"\")");
            append(p, cp);
            p->st = ST_UNQUOTED;
        }
        return 0;
    case ST_CR: break;
    }
    return 0;
}

/* A decoded code point: the file-level checks, then the CSV machine. */
static int on_code_point(struct prov_manifest_parser *p, uint32_t cp,
                         const struct prov_manifest_pos *pos, unsigned long long start_offset)
{
    if (cp == 0xfeff) {
        if (start_offset == 0) {
            return 0; /* the UTF-8 byte-order mark: skipped, and it takes no column */
        }
        p->column++;
        syntax_error(p, pos,
                     "byte-order mark (U+FEFF) inside the file (files joined "
                     "together?)");
        return 0;
    }
    if (cp == '\n') {
        p->line++;
        p->column = 1;
    } else {
        p->column++;
    }
    if (cp == 0) {
        syntax_error(p, pos, "NUL byte");
        return 0;
    }
    p->char_off = start_offset;
    return on_char(p, cp, pos);
}

static void utf8_error(struct prov_manifest_parser *p, const struct prov_manifest_pos *pos,
                       const char *what)
{
    p->column++;
    syntax_error(p, pos, what);
}

static int feed_byte(struct prov_manifest_parser *p, unsigned char b)
{
    struct prov_manifest_pos pos = here(p);
    unsigned long long off = p->offset++;

    if (p->utf8_need > 0) {
        if ((b & 0xc0) == 0x80) {
            p->utf8_cp = (p->utf8_cp << 6) | (b & 0x3f);
            if (--p->utf8_need > 0) {
                return 0;
            }
            if (p->utf8_cp < p->utf8_min || p->utf8_cp > 0x10ffff ||
                (p->utf8_cp >= 0xd800 && p->utf8_cp <= 0xdfff)) {
                utf8_error(p, &p->utf8_pos,
                           "invalid UTF-8 (overlong form, surrogate or "
                           "beyond U+10FFFF)");
                return 0;
            }
            return on_code_point(p, p->utf8_cp, &p->utf8_pos, p->utf8_off);
        }
        p->utf8_need = 0;
        utf8_error(p, &p->utf8_pos, "invalid UTF-8 (truncated multi-byte sequence)");
        pos = here(p);
    }
    if (b < 0x80) {
        return on_code_point(p, b, &pos, off);
    }
    if (off == 0 && (b == 0xff || b == 0xfe)) {
        prov_manifest_report(p, &pos,
                             "UTF-16 or UTF-32 byte-order mark: the manifest must be "
                             "UTF-8 (save as \"CSV UTF-8\")");
        p->is_fatal = true;
        return 0;
    }
    p->utf8_pos = pos;
    p->utf8_off = off;
    if (b >= 0xc2 && b <= 0xdf) {
        p->utf8_need = 1;
        p->utf8_cp = b & 0x1f;
        p->utf8_min = 0x80;
    } else if (b >= 0xe0 && b <= 0xef) {
        p->utf8_need = 2;
        p->utf8_cp = b & 0x0f;
        p->utf8_min = 0x800;
    } else if (b >= 0xf0 && b <= 0xf4) {
        p->utf8_need = 3;
        p->utf8_cp = b & 0x07;
        p->utf8_min = 0x10000;
    } else {
        char what[64];

        snprintf(what, sizeof(what), "invalid UTF-8 (byte 0x%02X)", b);
        utf8_error(p, &pos, what);
    }
    return 0;
}

int prov_manifest_parser_feed(struct prov_manifest_parser *p, const void *buf, size_t len)
{
    const unsigned char *b = buf;

    for (size_t i = 0; i < len && !p->is_fatal; i++) {
        int r = feed_byte(p, b[i]);

        if (r < 0) {
            return r;
        }
    }
    return 0;
}

int prov_manifest_parser_finish(struct prov_manifest_parser *p)
{
    struct prov_manifest_pos pos = here(p);
    int r = 0;

    if (!p->is_fatal) {
        if (p->utf8_need > 0) {
            p->utf8_need = 0;
            utf8_error(p, &p->utf8_pos, "invalid UTF-8 (truncated multi-byte sequence)");
        }
        if (p->st == ST_QUOTED) {
            syntax_error(p, &p->quote_pos,
                         "unterminated quoted field (this quote is never "
                         "closed)");
        }
        if (p->st == ST_CR) {
            syntax_error(p, &p->cr_pos, "carriage return (CR) not followed by a line feed");
            r = end_record(p, EOL_NONE, &p->cr_pos, p->offset);
        } else if (p->n_fields > 0) {
            r = end_record(p, EOL_NONE, &pos, p->offset);
        }
        if (r < 0) {
            return r;
        }
        pos = here(p);
        if (!p->has_header) {
            prov_manifest_report(p, &pos, "empty manifest: no header row");
        } else if (p->n_records == 0 && !p->is_record_mode) {
            prov_manifest_report(p, &pos, "no device rows after the header");
        }
    }
    if (p->n_errors > 0) {
        return prov_fail(PROV_ERR_INPUT, "%s: %lu problem%s found", p->name, p->n_errors,
                         p->n_errors == 1 ? "" : "s");
    }
    return 0;
}

static struct prov_manifest_parser *parser_alloc(const char *name)
{
    struct prov_manifest_parser *p = calloc(1, sizeof(*p));

    if (p == NULL) {
        return NULL;
    }
    p->name = strdup(name ? name : "manifest");
    /* One record: its bytes plus a NUL per stored field. */
    p->buf = malloc(PROV_MANIFEST_RECORD_MAX + PROV_MANIFEST_COLUMNS_MAX + 1);
    if (p->name == NULL || p->buf == NULL) {
        free(p->name);
        free(p->buf);
        free(p);
        return NULL;
    }
    p->line = 1;
    p->column = 1;
    p->rec_line = 1;
    p->serials.is_case_folded = true;
    p->storages.is_case_folded = true;
    for (int k = 0; k < PROV_COL_FIXED_COUNT; k++) {
        p->fixed_index[k] = -1;
    }
    return p;
}

int prov_manifest_parser_new(const char *name, const struct prov_manifest_callbacks *cb,
                             struct prov_manifest_parser **out)
{
    struct prov_manifest_parser *p;

    *out = NULL;
    p = parser_alloc(name);
    if (p == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "%s: out of memory", name ? name : "manifest");
    }
    if (cb != NULL) {
        p->cb = *cb;
    }
    p->owns_names = true;
    *out = p;
    return 0;
}

unsigned long prov_manifest_error_count(const struct prov_manifest_parser *p)
{
    return p->n_errors;
}

unsigned long prov_manifest_row_count(const struct prov_manifest_parser *p)
{
    return p->n_rows;
}

size_t prov_manifest_x_columns(const struct prov_manifest_parser *p, const char *const **names)
{
    *names = p->x_names;
    return p->n_x;
}

/* A record-mode parser keeps the header's findings to itself: they were reported before. */
static void ignore_error(void *ctx, const char *name, unsigned long line, unsigned long column,
                         const char *reason)
{
}

int prov_manifest_parse_record(const struct prov_manifest_parser *header, const void *buf,
                               size_t len, unsigned long line, prov_manifest_row_fn fn, void *ctx)
{
    struct prov_manifest_parser *p = parser_alloc(header->name);
    int r;

    if (p == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "%s: out of memory", header->name);
    }
    p->cb = (struct prov_manifest_callbacks){.row = fn, .error = ignore_error, .ctx = ctx};
    p->is_record_mode = true;
    p->has_header = true;
    p->is_header_bad = header->is_header_bad;
    p->n_cols = header->n_cols;
    memcpy(p->cols, header->cols, sizeof(p->cols));
    memcpy(p->fixed_index, header->fixed_index, sizeof(p->fixed_index));
    memcpy(p->x_names, header->x_names, sizeof(p->x_names));
    p->n_x = header->n_x;
    p->eol = header->eol;
    p->eol_line = header->eol_line;
    p->line = line;
    p->rec_line = line;
    r = prov_manifest_parser_feed(p, buf, len);
    if (r == 0) {
        r = prov_manifest_parser_finish(p);
    }
    if (r == 0 && (p->n_records != 1 || p->n_rows != 1)) {
        r = PROV_ERR_INPUT;
    }
    if (r == PROV_ERR_INPUT) {
        prov_error_clear();
        r = prov_fail(PROV_ERR_INPUT, "%s:%lu: the row changed since it was validated",
                      header->name, line);
    }
    prov_manifest_parser_free(p);
    return r;
}

void prov_manifest_parser_free(struct prov_manifest_parser *p)
{
    if (p == NULL) {
        return;
    }
    if (p->owns_names) {
        for (size_t i = 0; i < PROV_MANIFEST_COLUMNS_MAX; i++) {
            free(p->cols[i].name);
        }
    }
    prov_strset_free(&p->serials);
    prov_strset_free(&p->storages);
    free(p->buf);
    free(p->name);
    free(p);
}

int prov_manifest_parse(const char *name, const void *buf, size_t len,
                        const struct prov_manifest_callbacks *cb, unsigned long *n_errors)
{
    struct prov_manifest_parser *p = NULL;
    int r;

    if (n_errors != NULL) {
        *n_errors = 0;
    }
    r = prov_manifest_parser_new(name, cb, &p);
    if (r < 0) {
        return r;
    }
    r = prov_manifest_parser_feed(p, buf, len);
    if (r == 0) {
        r = prov_manifest_parser_finish(p);
    }
    if (n_errors != NULL) {
        *n_errors = p->n_errors;
    }
    prov_manifest_parser_free(p);
    return r;
}
