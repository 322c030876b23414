/* SPDX-License-Identifier: Apache-2.0 */
/* `batch status` and `batch report`: what the journal holds, for people and for programs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "backend.h"
#include "device.h"
#include "batch.h"
#include "error.h"
#include "journal.h"
#include "secret.h"

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

/* ---- batch status --tokens ------------------------------------------------------------ */

/*
 * `batch status --tokens`: every token the journal names, opened and logged in to, its
 * objects listed through the backend ops table and held against the keys the journal
 * expects there (prov_journal_foreach_key). What no journal row explains is listed by
 * handle, class, CKA_ID and label, so an operator can clean it: an interrupted key generation
 * can leave objects with no CKA_ID and no key material, a key made outside the lot stays
 * behind when the lot takes its serial back. Only on request: a token's private objects
 * are visible only after a login, and a login is a PIN try.
 */

/* A key the journal expects: where, and which id. */
struct expected {
    char *device_uri;
    unsigned char id[PROV_JOURNAL_KEY_ID_MAX];
    size_t id_len;
};

/* A token: the journal's URIs that name it (one identity), and what was found. */
struct token {
    char *identity; /* "backend:identity"; NULL when the token is not here */
    char **uris;
    size_t n_uris;
};

struct tokens_ctx {
    const struct prov_status_tokens *opts;
    struct expected *keys;
    size_t n_keys;
    size_t cap_keys;
    struct token *tokens;
    size_t n_tokens;
    json_object *array; /* JSON output, else text on out */
    FILE *out;
};

static int collect_key(void *ctx, const struct prov_journal_key_ref *k)
{
    struct tokens_ctx *tc = ctx;

    if (k->key_id_len > PROV_JOURNAL_KEY_ID_MAX) {
        return 0;
    }
    if (tc->n_keys == tc->cap_keys) {
        size_t cap = tc->cap_keys ? tc->cap_keys * 2 : 16;
        struct expected *a = realloc(tc->keys, cap * sizeof(*a));

        if (a == NULL) {
            return prov_fail(PROV_ERR_NOMEM, "status: out of memory");
        }
        tc->keys = a;
        tc->cap_keys = cap;
    }
    tc->keys[tc->n_keys].device_uri = strdup(k->device_uri);
    if (tc->keys[tc->n_keys].device_uri == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "status: out of memory");
    }
    memcpy(tc->keys[tc->n_keys].id, k->key_id, k->key_id_len);
    tc->keys[tc->n_keys].id_len = k->key_id_len;
    tc->n_keys++;
    return 0;
}

static struct token *token_for(struct tokens_ctx *tc, const char *identity)
{
    for (size_t i = 0; identity != NULL && i < tc->n_tokens; i++) {
        if (tc->tokens[i].identity != NULL && strcmp(tc->tokens[i].identity, identity) == 0) {
            return &tc->tokens[i];
        }
    }
    return NULL;
}

/*
 * The device's identity ("backend:serial" or "backend:EK digest") without logging in, or
 * NULL in *out when it is not here. Two URIs naming one token are listed once.
 */
static int identify(const struct tokens_ctx *tc, const char *uri, char **out)
{
    const struct prov_config *cfg = tc->opts->cfg;
    struct prov_device_params params;
    struct prov_device *dev = NULL;
    char ident[512];
    int r;

    *out = NULL;
    prov_device_params_from_config(cfg, true, &params);
    r = prov_device_open(uri, &params, &dev);
    if (r == PROV_ERR_NOT_FOUND || r == PROV_ERR_DEVICE_REMOVED) {
        prov_error_clear();
        return 0;
    }
    if (r == 0 && dev->ops->identity(dev, ident, sizeof(ident)) < 0) {
        prov_error_clear();
        snprintf(ident, sizeof(ident), "%s", uri);
    }
    if (r == 0 && asprintf(out, "%s:%s", dev->ops->name, ident) < 0) {
        *out = NULL;
        r = prov_fail(PROV_ERR_NOMEM, "status: out of memory");
    }
    prov_device_close(dev);
    return r;
}

/* Groups the distinct device URIs of the expected keys by token. */
static int group_tokens(struct tokens_ctx *tc)
{
    int r = 0;

    for (size_t i = 0; i < tc->n_keys && r == 0; i++) {
        const char *uri = tc->keys[i].device_uri;
        struct token *t = NULL;
        char *identity = NULL;
        bool is_seen = false;
        char **a;

        for (size_t k = 0; k < tc->n_tokens && !is_seen; k++) {
            for (size_t u = 0; u < tc->tokens[k].n_uris && !is_seen; u++) {
                is_seen = strcmp(tc->tokens[k].uris[u], uri) == 0;
            }
        }
        if (is_seen) {
            continue;
        }
        r = identify(tc, uri, &identity);
        t = r == 0 ? token_for(tc, identity) : NULL;
        if (r == 0 && t == NULL) {
            struct token *grown = realloc(tc->tokens, (tc->n_tokens + 1) * sizeof(*grown));

            if (grown == NULL) {
                free(identity);
                return prov_fail(PROV_ERR_NOMEM, "status: out of memory");
            }
            tc->tokens = grown;
            t = &tc->tokens[tc->n_tokens++];
            memset(t, 0, sizeof(*t));
            t->identity = identity;
            identity = NULL;
        }
        free(identity);
        a = r == 0 ? realloc(t->uris, (t->n_uris + 1) * sizeof(*a)) : NULL;
        if (r == 0 && (a == NULL || (a[t->n_uris] = strdup(uri)) == NULL)) {
            if (a != NULL) {
                t->uris = a;
            }
            return prov_fail(PROV_ERR_NOMEM, "status: out of memory");
        }
        if (r == 0) {
            t->uris = a;
            t->n_uris++;
        }
    }
    return r;
}

/* Whether the journal expects a key with this id on one of the token's URIs. */
static bool is_explained(const struct tokens_ctx *tc, const struct token *t,
                         const struct prov_device_object *o)
{
    if (o->id == NULL) {
        return false; /* every key this tool makes has a unique CKA_ID */
    }
    for (size_t i = 0; i < tc->n_keys; i++) {
        const struct expected *e = &tc->keys[i];

        if (e->id_len != o->id_len || memcmp(e->id, o->id, o->id_len) != 0) {
            continue;
        }
        for (size_t u = 0; u < t->n_uris; u++) {
            if (strcmp(t->uris[u], e->device_uri) == 0) {
                return true;
            }
        }
    }
    return false;
}

struct listing {
    const struct tokens_ctx *tc;
    const struct token *t;
    long long n_objects;
    long long n_unexplained;
    json_object *unexplained; /* JSON, else printed */
    FILE *out;
};

static void hex_of(const unsigned char *in, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        snprintf(out + 2 * i, 3, "%02x", in[i]);
    }
    out[2 * n] = '\0';
}

static int list_object(void *ctx, const struct prov_device_object *o)
{
    struct listing *l = ctx;
    char id[2 * 256 + 1] = "";

    l->n_objects++;
    if (is_explained(l->tc, l->t, o)) {
        return 0;
    }
    l->n_unexplained++;
    if (o->id != NULL) {
        hex_of(o->id, o->id_len < 256 ? o->id_len : 256, id);
    }
    if (l->unexplained != NULL) {
        json_object *j = json_object_new_object();

        json_object_object_add(j, "handle", json_object_new_int64((int64_t)o->handle));
        json_object_object_add(j, "kind", json_object_new_string(o->kind));
        json_object_object_add(j, "id", o->id ? json_object_new_string(id) : NULL);
        json_object_object_add(j, "label", o->label ? json_object_new_string(o->label) : NULL);
        json_object_array_add(l->unexplained, j);
    } else {
        fprintf(l->out, "    not explained: handle 0x%lx %s id %s label %s%s%s\n", o->handle,
                o->kind, o->id ? id : "(none)", o->label ? "\"" : "",
                o->label ? o->label : "(none)", o->label ? "\"" : "");
    }
    return 0;
}

/* One token: logged in with pin, every object listed, the unexplained ones reported. */
static int report_token(struct tokens_ctx *tc, const struct token *t,
                        const struct prov_secret *pin)
{
    const struct prov_config *cfg = tc->opts->cfg;
    struct prov_device_params params;
    struct listing l = {.tc = tc, .t = t, .out = tc->out};
    struct prov_device *dev = NULL;
    json_object *o = NULL;
    bool is_listed = false;
    int r = 0;

    if (t->identity != NULL) {
        prov_device_params_from_config(cfg, true, &params);
        r = prov_device_open(t->uris[0], &params, &dev);
        r = r ? r : dev->ops->login(dev, pin);
        is_listed = r == 0 && dev->ops->list_objects != NULL;
    }
    if (tc->array != NULL) {
        o = json_object_new_object();
        json_object_object_add(o, "device", json_object_new_string(t->uris[0]));
        json_object_object_add(o, "present", json_object_new_boolean(t->identity != NULL));
        json_object_object_add(o, "listed", json_object_new_boolean(is_listed));
        l.unexplained = json_object_new_array();
    } else if (t->identity == NULL) {
        fprintf(tc->out, "  %s: not here\n", t->uris[0]);
    } else if (r == 0 && !is_listed) {
        fprintf(tc->out, "  %s: objects not listed (the %s backend cannot list them)\n",
                t->uris[0], dev->ops->name);
    } else if (r == 0) {
        fprintf(tc->out, "  %s (%s):\n", t->uris[0], dev->name);
    }
    if (is_listed) {
        r = dev->ops->list_objects(dev, list_object, &l);
    }
    if (o != NULL) {
        json_object_object_add(o, "objects", json_object_new_int64(l.n_objects));
        json_object_object_add(o, "unexplained", l.unexplained);
        json_object_array_add(tc->array, o);
    } else if (is_listed && r == 0) {
        fprintf(tc->out, "    %lld objects, %lld that no journal row explains\n", l.n_objects,
                l.n_unexplained);
    }
    prov_device_close(dev);
    return r;
}

static void tokens_free(struct tokens_ctx *tc)
{
    for (size_t i = 0; i < tc->n_keys; i++) {
        free(tc->keys[i].device_uri);
    }
    free(tc->keys);
    for (size_t i = 0; i < tc->n_tokens; i++) {
        for (size_t u = 0; u < tc->tokens[i].n_uris; u++) {
            free(tc->tokens[i].uris[u]);
        }
        free(tc->tokens[i].uris);
        free(tc->tokens[i].identity);
    }
    free(tc->tokens);
}

/* The --tokens part of batch status: into array (JSON) or as text on out. */
static int status_tokens(struct prov_journal *j, const struct prov_status_tokens *opts,
                         json_object *array, FILE *out)
{
    struct tokens_ctx tc = {.opts = opts, .array = array, .out = out};
    const char *pin_spec = opts->pin_spec ? opts->pin_spec : opts->cfg->device_pin;
    struct prov_secret *pin = NULL;
    int r;

    r = prov_journal_foreach_key(j, collect_key, &tc);
    r = r ? r : group_tokens(&tc);
    /* read once: a prompt asks once, and no token sees a PIN another one rejected */
    if (r == 0 && pin_spec != NULL && tc.n_tokens > 0) {
        r = prov_secret_load(pin_spec, "device PIN", &pin);
    }
    if (r == 0 && array == NULL) {
        fprintf(out, "tokens: %zu\n", tc.n_tokens);
    }
    for (size_t i = 0; i < tc.n_tokens && r == 0; i++) {
        r = report_token(&tc, &tc.tokens[i], pin);
    }
    prov_secret_free(pin);
    tokens_free(&tc);
    return r;
}

/* ---- batch status ----------------------------------------------------------------------- */

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

/*
 * The superseded keys of the lot still on the device they were generated on (it was not
 * there when their row was finished): an operator plugs it in and runs the batch again, or
 * deletes the key by hand.
 */
static int status_not_retired(struct status_ctx *sc, long long lot_id, json_object *array)
{
    struct prov_journal_old_key *keys = NULL;
    char hex[2 * PROV_JOURNAL_KEY_ID_MAX + 1];
    size_t n = 0;
    int r;

    r = prov_journal_unretired_keys(sc->j, lot_id, NULL, &keys, &n);
    for (size_t i = 0; i < n && r == 0; i++) {
        for (size_t b = 0; b < keys[i].key_id_len; b++) {
            snprintf(hex + 2 * b, 3, "%02x", keys[i].key_id[b]);
        }
        hex[2 * keys[i].key_id_len] = '\0';
        if (array != NULL) {
            json_object *o = json_object_new_object();

            json_object_object_add(o, "serial", json_object_new_string(keys[i].serial));
            json_object_object_add(o, "cert_serial", json_object_new_string(keys[i].cert_serial));
            json_object_object_add(o, "device", json_object_new_string(keys[i].device_uri));
            json_object_object_add(o, "key_id", json_object_new_string(hex));
            json_object_object_add(o, "superseded", json_object_new_string(keys[i].superseded));
            json_object_array_add(array, o);
        } else {
            fprintf(sc->out, "  %-24s not retired: key id %s of superseded certificate %s on %s\n",
                    keys[i].serial, hex, keys[i].cert_serial, keys[i].device_uri);
        }
    }
    prov_journal_old_keys_free(keys, n);
    return r;
}

static int status_lot(void *ctx, long long lot_id, const char *name, const char *manifest)
{
    json_object *not_retired = NULL;
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
        not_retired = json_object_new_array();
        json_object_object_add(o, "not_retired", not_retired);
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
    return r < 0 ? r : status_not_retired(sc, lot_id, not_retired);
}

int prov_batch_status(struct prov_journal *j, bool as_json, const struct prov_status_tokens *tokens,
                      FILE *out)
{
    struct status_ctx sc = {.j = j, .out = out};
    json_object *token_array = NULL;
    int r;

    if (as_json) {
        sc.lots = json_object_new_array();
        if (sc.lots == NULL) {
            return prov_fail(PROV_ERR_NOMEM, "status: out of memory");
        }
        token_array = tokens != NULL ? json_object_new_array() : NULL;
    }
    r = prov_journal_foreach_lot(j, status_lot, &sc);
    if (r == 0 && tokens != NULL) {
        r = status_tokens(j, tokens, token_array, out);
    }
    /* an empty answer would read like a failure, or like a journal that lost its records */
    if (r == 0 && !as_json && sc.n_lots == 0) {
        fprintf(out, "no lot recorded yet\n");
    }
    if (r == 0 && as_json) {
        json_object *o = json_object_new_object();

        json_object_object_add(o, "lots", sc.lots);
        json_object_object_add(o, "tokens", token_array); /* null without --tokens */
        token_array = NULL;
        /* as when the journal cannot be read (cmd_batch.c): the same shape, carrying it */
        json_object_object_add(o, "error", NULL);
        json_object_object_add(o, "exit", json_object_new_int(0));
        fprintf(out, "%s\n",
                json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
                                                      JSON_C_TO_STRING_NOSLASHESCAPE));
        json_object_put(o);
        sc.lots = NULL;
    }
    json_object_put(token_array);
    json_object_put(sc.lots);
    return r;
}
