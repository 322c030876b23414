/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The manifest schema: the header's columns, the checks on each value, uniqueness of serials
 * and storage directories, and the rows handed to the callbacks. The bytes are split into
 * records and fields by the CSV tokenizer (manifest_csv.c), which reports its findings here.
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
#include "manifest_csv.h"
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

struct prov_manifest_parser {
    char *name;
    struct prov_manifest_callbacks cb;
    bool is_record_mode; /* prov_manifest_parse_record: header known, no uniqueness */
    struct manifest_csv csv; /* the bytes, records and fields */

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

/* The tokenizer's findings are the parser's. */
static void on_finding(void *ctx, const struct prov_manifest_pos *pos, const char *reason)
{
    prov_manifest_report(ctx, pos, "%s", reason);
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

static void header_column(struct prov_manifest_parser *p, size_t i)
{
    const char *name = manifest_csv_field(&p->csv, i);
    const struct prov_manifest_pos *pos = &p->csv.field_pos[i];
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
                                     p->csv.field_pos[p->fixed_index[k]].column);
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
    struct prov_manifest_pos start = {p->csv.rec_line, 1};

    p->has_header = true;
    if (p->csv.n_fields == 1 && p->csv.field_len == 0 && !p->csv.is_field_quoted) {
        prov_manifest_report(p, &start, "empty line where the header row should be");
        p->is_header_bad = p->is_header_unusable = true;
        return;
    }
    if (p->csv.is_too_many_fields) {
        p->is_header_bad = p->is_header_unusable = true;
        return;
    }
    p->n_cols = p->csv.n_fields;
    for (size_t i = 0; i < p->csv.n_fields; i++) {
        header_column(p, i);
    }
    for (int k = PROV_COL_SERIAL; k <= PROV_COL_DEVICE; k++) {
        if (p->fixed_index[k] < 0) {
            prov_manifest_report(p, &start, "required column \"%s\" is missing from the header",
                                 col_names[k]);
        }
    }
    p->is_header_bad = p->n_errors != before || p->csv.is_rec_bad;
}

static int process_row(struct prov_manifest_parser *p, unsigned long long next)
{
    struct prov_manifest_row row;
    const char *x_values[PROV_MANIFEST_COLUMNS_MAX];
    unsigned long before = p->n_errors;
    size_t n_x = 0;
    int r;

    p->n_records++;
    if (p->csv.is_rec_bad || p->is_header_unusable) {
        return 0;
    }
    if (p->csv.n_fields == 1 && p->csv.field_len == 0 && !p->csv.is_field_quoted &&
        p->n_cols > 1) {
        prov_manifest_report(p, &p->csv.field_pos[0], "empty line (a row has %zu fields)",
                             p->n_cols);
        return 0;
    }
    if (p->csv.n_fields != p->n_cols) {
        /* The first extra field, or the end of the line where a field is missing. */
        const struct prov_manifest_pos *pos =
            p->csv.n_fields > p->n_cols ? &p->csv.field_pos[p->n_cols] : &p->csv.eol_pos;

        prov_manifest_report(p, pos, "row has %zu fields, the header has %zu",
                             p->csv.n_fields, p->n_cols);
        return 0;
    }
    memset(&row, 0, sizeof(row));
    for (size_t i = 0; i < p->n_cols; i++) {
        int kind = p->cols[i].kind;

        if (kind >= 0) {
            const char *v = manifest_csv_field(&p->csv, i);
            unsigned long found = p->n_errors;

            r = check_value(p, (enum prov_manifest_col)kind, v, &p->csv.field_pos[i]);
            if (r < 0) {
                return r;
            }
            if (p->n_errors != found) {
                row.bad_columns |= 1u << kind;
            } else {
                row.value[kind] = v[0] != '\0' ? v : NULL;
            }
            row.pos[kind] = p->csv.field_pos[i];
        } else if (kind == COL_X) {
            x_values[n_x++] = manifest_csv_field(&p->csv, i);
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
    row.line = p->csv.rec_line;
    row.offset = p->csv.rec_offset;
    row.length = (size_t)(next - p->csv.rec_offset);
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

/* A record from the tokenizer: the header first, then the rows. */
static int on_record(void *ctx, unsigned long long next)
{
    struct prov_manifest_parser *p = ctx;

    if (!p->has_header) {
        process_header(p);
        return 0;
    }
    return process_row(p, next);
}

int prov_manifest_parser_feed(struct prov_manifest_parser *p, const void *buf, size_t len)
{
    return manifest_csv_feed(&p->csv, buf, len);
}

int prov_manifest_parser_finish(struct prov_manifest_parser *p)
{
    struct prov_manifest_pos pos;
    int r;

    if (!p->csv.is_fatal) {
        r = manifest_csv_finish(&p->csv);
        if (r < 0) {
            return r;
        }
        pos = manifest_csv_here(&p->csv);
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
    if (p->name == NULL || manifest_csv_init(&p->csv) < 0) {
        free(p->name);
        manifest_csv_free(&p->csv);
        free(p);
        return NULL;
    }
    p->csv.on_finding = on_finding;
    p->csv.on_record = on_record;
    p->csv.ctx = p;
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
    p->csv.eol = header->csv.eol;
    p->csv.eol_line = header->csv.eol_line;
    p->csv.line = line;
    p->csv.rec_line = line;
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
    manifest_csv_free(&p->csv);
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
