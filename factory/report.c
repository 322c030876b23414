/* SPDX-License-Identifier: Apache-2.0 */
/* `batch status` and `batch report`: what the journal holds, for people and for programs. */
#include <stdio.h>
#include <string.h>

#include <json-c/json.h>

#include "batch.h"
#include "error.h"
#include "journal.h"

void prov_csv_field(FILE *f, const char *s, bool is_last)
{
    const char *v = s ? s : "";

    if (strpbrk(v, ",\"\r\n") != NULL) {
        fputc('"', f);
        for (; *v; v++) {
            if (*v == '"') {
                fputc('"', f);
            }
            fputc(*v, f);
        }
        fputc('"', f);
    } else {
        fputs(v, f);
    }
    fputc(is_last ? '\n' : ',', f);
}

static const char *const report_columns[] = {
    "lot",     "serial",  "state",    "device",     "cert_serial", "sha256",  "not_after",
    "storage", "key_uri", "attempts", "superseded", "error",       "updated",
};
#define N_REPORT_COLUMNS (sizeof(report_columns) / sizeof(report_columns[0]))

/* The report fields of a row, in report_columns order; numbers in the two buffers. */
static void report_values(const struct prov_journal_device *d, const char *v[N_REPORT_COLUMNS],
                          char attempts[16], char superseded[16])
{
    snprintf(attempts, 16, "%d", d->attempts);
    snprintf(superseded, 16, "%d", d->n_superseded);
    v[0] = d->lot;
    v[1] = d->serial;
    v[2] = prov_journal_state_name(d->state);
    v[3] = d->device_uri;
    v[4] = d->cert_serial;
    v[5] = d->sha256;
    v[6] = d->not_after;
    v[7] = d->storage ? d->storage : "";
    v[8] = d->key_uri ? d->key_uri : "";
    v[9] = attempts;
    v[10] = superseded;
    v[11] = d->error ? d->error : "";
    v[12] = d->updated;
}

struct report_ctx {
    FILE *out;
    json_object *array;
};

static int report_csv_row(void *ctx, const struct prov_journal_device *d)
{
    struct report_ctx *rc = ctx;
    const char *v[N_REPORT_COLUMNS];
    char attempts[16];
    char superseded[16];

    report_values(d, v, attempts, superseded);
    for (size_t i = 0; i < N_REPORT_COLUMNS; i++) {
        prov_csv_field(rc->out, v[i], i + 1 == N_REPORT_COLUMNS);
    }
    return 0;
}

static int report_json_row(void *ctx, const struct prov_journal_device *d)
{
    struct report_ctx *rc = ctx;
    json_object *o = json_object_new_object();

    if (o == NULL) {
        return PROV_ERR_NOMEM;
    }
    json_object_object_add(o, "lot", json_object_new_string(d->lot));
    json_object_object_add(o, "serial", json_object_new_string(d->serial));
    json_object_object_add(o, "state", json_object_new_string(prov_journal_state_name(d->state)));
    json_object_object_add(o, "device", json_object_new_string(d->device_uri));
    /* Every key is always there (null without a certificate): a stable schema. */
#define CERT_FIELD(k, v) \
    json_object_object_add(o, k, d->cert_der != NULL ? json_object_new_string(v) : NULL)
    CERT_FIELD("cert_serial", d->cert_serial);
    CERT_FIELD("sha256", d->sha256);
    CERT_FIELD("pubkey_sha256", d->pubkey_sha256);
    CERT_FIELD("not_after", d->not_after);
#undef CERT_FIELD
    json_object_object_add(o, "storage", d->storage ? json_object_new_string(d->storage) : NULL);
    json_object_object_add(o, "key_uri", d->key_uri ? json_object_new_string(d->key_uri) : NULL);
    json_object_object_add(o, "attempts", json_object_new_int(d->attempts));
    json_object_object_add(o, "superseded", json_object_new_int(d->n_superseded));
    json_object_object_add(o, "error", d->error ? json_object_new_string(d->error) : NULL);
    json_object_object_add(o, "updated", json_object_new_string(d->updated));
    json_object_array_add(rc->array, o);
    return 0;
}

int prov_batch_report(struct prov_journal *j, enum prov_report_format fmt, FILE *out)
{
    struct report_ctx rc = {.out = out};
    int r;

    if (fmt == PROV_REPORT_CSV) {
        for (size_t i = 0; i < N_REPORT_COLUMNS; i++) {
            prov_csv_field(out, report_columns[i], i + 1 == N_REPORT_COLUMNS);
        }
        return prov_journal_foreach(j, 0, report_csv_row, &rc);
    }
    rc.array = json_object_new_array();
    if (rc.array == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "report: out of memory");
    }
    r = prov_journal_foreach(j, 0, report_json_row, &rc);
    if (r == 0) {
        fprintf(out, "%s\n",
                json_object_to_json_string_ext(rc.array, JSON_C_TO_STRING_PRETTY |
                                                             JSON_C_TO_STRING_NOSLASHESCAPE));
    }
    json_object_put(rc.array);
    return r;
}

struct status_ctx {
    struct prov_journal *j;
    FILE *out;
    long long n_lots;
    json_object *lots;    /* JSON: the array of lots */
    json_object *pending; /* JSON: rows of the current lot not proven */
};

static int status_pending_row(void *ctx, const struct prov_journal_device *d)
{
    struct status_ctx *sc = ctx;

    if (d->state == PROV_JOURNAL_PROVEN) {
        return 0;
    }
    if (sc->pending != NULL) {
        json_object *o = json_object_new_object();

        json_object_object_add(o, "serial", json_object_new_string(d->serial));
        json_object_object_add(o, "state",
                               json_object_new_string(prov_journal_state_name(d->state)));
        json_object_object_add(o, "error", d->error ? json_object_new_string(d->error) : NULL);
        json_object_array_add(sc->pending, o);
    } else {
        fprintf(sc->out, "  %-24s %-10s %s\n", d->serial, prov_journal_state_name(d->state),
                d->error ? d->error : "");
    }
    return 0;
}

static int status_lot(void *ctx, long long lot_id, const char *name, const char *manifest)
{
    struct status_ctx *sc = ctx;
    long long counts[PROV_JOURNAL_STATE_COUNT];
    long long superseded = 0;
    long long total = 0;
    int r;

    sc->n_lots++;
    r = prov_journal_counts(sc->j, lot_id, counts, &superseded);
    if (r < 0) {
        return r;
    }
    for (int s = 1; s < PROV_JOURNAL_STATE_COUNT; s++) {
        total += counts[s];
    }
    if (sc->lots != NULL) {
        json_object *o = json_object_new_object();
        json_object *states = json_object_new_object();

        json_object_object_add(o, "lot", json_object_new_string(name));
        json_object_object_add(o, "manifest", json_object_new_string(manifest));
        json_object_object_add(o, "devices", json_object_new_int64(total));
        for (int s = 1; s < PROV_JOURNAL_STATE_COUNT; s++) {
            json_object_object_add(states, prov_journal_state_name((enum prov_journal_state)s),
                                   json_object_new_int64(counts[s]));
        }
        json_object_object_add(o, "states", states);
        json_object_object_add(o, "superseded_certificates", json_object_new_int64(superseded));
        sc->pending = json_object_new_array();
        json_object_object_add(o, "not_proven", sc->pending);
        json_object_array_add(sc->lots, o);
    } else {
        fprintf(sc->out, "lot %s (%s): %lld devices:", name, manifest, total);
        for (int s = 1; s < PROV_JOURNAL_STATE_COUNT; s++) {
            fprintf(sc->out, " %lld %s%s", counts[s],
                    prov_journal_state_name((enum prov_journal_state)s),
                    s + 1 < PROV_JOURNAL_STATE_COUNT ? "," : "");
        }
        fprintf(sc->out, "; %lld superseded certificate%s\n", superseded,
                superseded == 1 ? "" : "s");
    }
    r = prov_journal_foreach(sc->j, lot_id, status_pending_row, sc);
    sc->pending = NULL;
    return r;
}

int prov_batch_status(struct prov_journal *j, bool as_json, FILE *out)
{
    struct status_ctx sc = {.j = j, .out = out};
    int r;

    if (as_json) {
        sc.lots = json_object_new_array();
        if (sc.lots == NULL) {
            return prov_fail(PROV_ERR_NOMEM, "status: out of memory");
        }
    }
    r = prov_journal_foreach_lot(j, status_lot, &sc);
    /* an empty answer would read like a failure, or like a journal that lost its records */
    if (r == 0 && !as_json && sc.n_lots == 0) {
        fprintf(out, "no lot recorded yet\n");
    }
    if (r == 0 && as_json) {
        json_object *o = json_object_new_object();

        json_object_object_add(o, "lots", sc.lots);
        fprintf(out, "%s\n",
                json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
                                                      JSON_C_TO_STRING_NOSLASHESCAPE));
        json_object_put(o);
        sc.lots = NULL;
    }
    json_object_put(sc.lots);
    return r;
}
