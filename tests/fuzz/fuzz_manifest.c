/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target for the manifest parser. One input is parsed three ways: whole, in two
 * chunks split where the first byte says (state carried across feeds), and every valid
 * row parsed again from its recorded extent (the batch's second pass). Every checked row
 * must have no value in a column that has a finding. Rows' values are
 * read in full so that a bad pointer or a missing terminator shows up under ASan.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "backend.h"
#include "error.h"
#include "manifest.h"
#include "pkcs11.h"
#include "tpm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fuzz_ctx {
    const uint8_t *data;
    size_t size;
    size_t sink;
    int depth;
};

static void touch_row(struct fuzz_ctx *c, const struct prov_manifest_row *row)
{
    for (int i = 0; i < PROV_COL_FIXED_COUNT; i++) {
        c->sink += row->value[i] ? strlen(row->value[i]) + row->pos[i].column : 0;
    }
    for (size_t i = 0; i < row->n_x; i++) {
        c->sink += strlen(row->x_names[i]) + strlen(row->x_values[i]);
    }
}

static int on_reparsed(void *ctx, struct prov_manifest_parser *p,
                       const struct prov_manifest_row *row)
{
    touch_row(ctx, row);
    return 0;
}

/* Every examinable row, valid or not: a column with a finding of its own has no value. */
static int on_check(void *ctx, struct prov_manifest_parser *p, const struct prov_manifest_row *row)
{
    for (int i = 0; i < PROV_COL_FIXED_COUNT; i++) {
        if ((row->bad_columns & (1u << i)) != 0 && row->value[i] != NULL) {
            __builtin_trap();
        }
    }
    if (row->is_valid && row->bad_columns != 0) {
        __builtin_trap();
    }
    touch_row(ctx, row);
    return 0;
}

static int on_row(void *ctx, struct prov_manifest_parser *p, const struct prov_manifest_row *row)
{
    struct fuzz_ctx *c = ctx;

    touch_row(c, row);
    if (row->offset > c->size || row->length > c->size - row->offset) {
        __builtin_trap(); /* the recorded extent must lie inside the input */
    }
    /* The header is known once a row is delivered: parse this row again on its own. */
    prov_manifest_parse_record(p, c->data + row->offset, row->length, row->line, on_reparsed, c);
    prov_error_clear();
    return 0;
}

static void on_error(void *ctx, const char *name, unsigned long line, unsigned long column,
                     const char *reason)
{
    struct fuzz_ctx *c = ctx;

    if (line == 0 || column == 0 || reason[0] == '\0') {
        __builtin_trap(); /* every finding has a position and a reason */
    }
    c->sink += line + column + strlen(reason);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_ctx c = {.data = data, .size = size};
    struct prov_manifest_callbacks cb = {
        .check = on_check, .row = on_row, .error = on_error, .ctx = &c};
    struct prov_manifest_parser *p = NULL;
    size_t split = size > 0 ? data[0] % (size + 1) : 0;
    unsigned long whole_errors = 0;

    /* a row's device schemes are the registered backends' (registering again changes nothing) */
    prov_backend_register(&prov_pkcs11_ops);
    prov_backend_register(&prov_tpm_ops);
    prov_manifest_parse("fuzz.csv", data, size, &cb, &whole_errors);
    prov_error_clear();
    if (prov_manifest_parser_new("fuzz.csv", &cb, &p) == 0) {
        prov_manifest_parser_feed(p, data, split);
        prov_manifest_parser_feed(p, data + split, size - split);
        prov_manifest_parser_finish(p);
        /* Chunking must not change what is found. */
        if (prov_manifest_error_count(p) != whole_errors) {
            __builtin_trap();
        }
        prov_manifest_parser_free(p);
    }
    prov_error_clear();
    return 0;
}
