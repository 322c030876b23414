/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `lot export`: reads a lot from its journal (journal.h), builds the chosen format in memory
 * (inventory and record here, the cloud formats in lot_export_cloud.c) and writes it
 * atomically. doc/export.md describes every format and field.
 */
#include "lot_export.h"

#include <dirent.h>
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "ca_index.h"
#include "cert_facts.h"
#include "chain.h"
#include "crl_names.h"
#include "durable.h"
#include "error.h"
#include "log.h"
#include "lot_bundle.h"
#include "lot_export_cloud.h"
#include "lot_signer.h"

static const char *const format_names[PROV_LOT_FORMAT_COUNT] = {
    [PROV_LOT_AWS] = "aws",   [PROV_LOT_AZURE_DPS] = "azure-dps", [PROV_LOT_EDGE] = "edge",
    [PROV_LOT_CSV] = "csv",   [PROV_LOT_JSON] = "json",           [PROV_LOT_RECORD] = "record",
};

const char *prov_lot_format_name(enum prov_lot_format f)
{
    return f < PROV_LOT_FORMAT_COUNT ? format_names[f] : "?";
}

int prov_lot_format_parse(const char *name, enum prov_lot_format *out)
{
    for (int f = 0; f < PROV_LOT_FORMAT_COUNT; f++) {
        if (strcmp(name, format_names[f]) == 0) {
            *out = (enum prov_lot_format)f;
            return 0;
        }
    }
    return prov_fail(PROV_ERR_USAGE,
                     "--format \"%s\": expected aws, azure-dps, edge, csv, json or record", name);
}

bool prov_lot_format_is_dir(enum prov_lot_format f)
{
    return f == PROV_LOT_AWS || f == PROV_LOT_AZURE_DPS || f == PROV_LOT_RECORD;
}

int prov_lot_states_parse(const char *list, unsigned *mask)
{
    static const enum prov_journal_state allowed[] = {PROV_JOURNAL_ISSUED, PROV_JOURNAL_STORED,
                                                      PROV_JOURNAL_PROVEN, PROV_JOURNAL_FAILED};
    const char *p = list;

    *mask = 0;
    while (*p != '\0') {
        size_t len = strcspn(p, ",");
        bool is_known = false;

        for (size_t k = 0; k < sizeof(allowed) / sizeof(allowed[0]); k++) {
            const char *name = prov_journal_state_name(allowed[k]);
            bool is_all = len == 3 && strncmp(p, "all", 3) == 0;

            if (is_all || (strlen(name) == len && strncmp(p, name, len) == 0)) {
                *mask |= 1u << allowed[k];
                is_known = true;
            }
        }
        if (!is_known) {
            return prov_fail(PROV_ERR_USAGE,
                             "--state \"%s\": expected issued, stored, proven, failed (a "
                             "comma-separated list) or all",
                             list);
        }
        p += len;
        p += *p == ',';
    }
    return *mask != 0 ? 0 : prov_fail(PROV_ERR_USAGE, "--state: no state given");
}

static void devices_free(struct lot_device *d, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(d[i].serial);
        free(d[i].pem);
        X509_free(d[i].cert);
    }
    free(d);
}

struct collect {
    struct lot_input *in;
    size_t n_rows;
};

/* Keeps a row whose state is asked for and that has a current certificate. */
static int collect_row(void *ctx, const struct prov_journal_device *d)
{
    struct collect *c = ctx;
    struct lot_input *in = c->in;
    struct lot_device *devs;
    struct lot_device *e;
    const unsigned char *p = d->cert_der;

    c->n_rows++;
    if (!(in->states & (1u << d->state)) || d->cert_der == NULL) {
        return 0;
    }
    devs = realloc(in->devices, (in->n + 1) * sizeof(*devs));
    if (devs == NULL) {
        return PROV_ERR_NOMEM;
    }
    in->devices = devs;
    e = &devs[in->n];
    memset(e, 0, sizeof(*e));
    e->serial = strdup(d->serial);
    e->state = d->state;
    e->revoked_reason = -1;
    e->cert = d2i_X509(NULL, &p, (long)d->cert_der_len);
    in->n++;
    if (e->serial == NULL || e->cert == NULL) {
        return e->serial == NULL ? PROV_ERR_NOMEM
                                 : prov_fail_ossl(PROV_ERR_JOURNAL,
                                                  "lot %s, serial %s: the journal's certificate "
                                                  "does not parse",
                                                  in->lot, d->serial);
    }
    if (d->error != NULL && (d->state == PROV_JOURNAL_STORED || d->state == PROV_JOURNAL_PROVEN)) {
        /* prov_journal_record_outside_change: the device may not hold this certificate now */
        prov_warn("lot %s, serial %s: %s; exported with the certificate the lot issued", in->lot,
                  d->serial, d->error);
    }
    memcpy(e->cert_serial, d->cert_serial, sizeof(e->cert_serial));
    memcpy(e->sha256, d->sha256, sizeof(e->sha256));
    memcpy(e->pubkey_sha256, d->pubkey_sha256, sizeof(e->pubkey_sha256));
    memcpy(e->not_after, d->not_after, sizeof(e->not_after));
    return lot_cert_pem(e->cert, &e->pem);
}

/* The lot's rows to export, from the journal; an unknown lot is refused (exit 5). */
static int read_lot(const struct prov_lot_export_opts *o, struct lot_input *in,
                    size_t *n_rows)
{
    struct prov_journal *j = NULL;
    struct collect c = {.in = in};
    long long lot_id = 0;
    int r;

    r = prov_journal_open(o->journal, false, &j);
    if (r == 0) {
        r = prov_journal_find_lot(j, o->lot, &lot_id);
        if (r == PROV_ERR_NOT_FOUND) {
            prov_error_clear();
            r = prov_fail(PROV_ERR_POLICY, "lot %s: not in journal %s", o->lot, o->journal);
        }
    }
    if (r == 0) {
        r = prov_journal_foreach(j, lot_id, collect_row, &c);
    }
    if (r == 0 && in->n == 0) {
        r = prov_fail(PROV_ERR_POLICY,
                      "lot %s: none of its %zu rows is in a state exported (see --state)",
                      o->lot, c.n_rows);
    }
    *n_rows = c.n_rows;
    prov_journal_close(j);
    return r;
}

/* The CA chain as `chain export` writes it: chain.pem, verified by the chain rules. */
static int read_chain(const struct prov_config *cfg, STACK_OF(X509) **out)
{
    char *path = NULL;
    int r;

    if (asprintf(&path, "%s/chain.pem", cfg->ca_dir) < 0) {
        return PROV_ERR_NOMEM;
    }
    r = prov_chain_load_verified(path, out);
    free(path);
    return r;
}

/* Whether the config names a CA index to read: <CA dir>/index.sqlite exists. */
static bool has_ca_index(const struct prov_config *cfg, char **path)
{
    struct stat st;

    *path = NULL;
    if (cfg == NULL || cfg->ca_dir == NULL ||
        asprintf(path, "%s/" PROV_CA_INDEX_FILE, cfg->ca_dir) < 0) {
        *path = NULL;
        return false;
    }
    if (stat(*path, &st) == 0 && S_ISREG(st.st_mode)) {
        return true;
    }
    free(*path);
    *path = NULL;
    return false;
}

/* Marks the lot's certificates the CA revoked (by certificate serial under its intermediate). */
static void mark_revoked(struct lot_input *in, const struct prov_ca_revocation *revs, size_t n)
{
    for (size_t i = 0; i < in->n; i++) {
        struct lot_device *d = &in->devices[i];

        for (size_t k = 0; k < n; k++) {
            if (strcmp(revs[k].cert_serial, d->cert_serial) == 0) {
                d->revoked_reason = revs[k].reason;
                snprintf(d->revoked_at, sizeof(d->revoked_at), "%s", revs[k].revoked_at);
                break;
            }
        }
    }
}

/*
 * The CA's revocations of the lot's certificates (doc/export.md "Revoked devices"): read from
 * the CA index the config names, under the intermediate of its chain.pem; nothing read (and
 * in->revocations_from left NULL) when the config names none, as on a station whose CA is
 * a CA service. The index is only read.
 */
static int read_revocations(const struct prov_config *cfg, struct lot_input *in, char **from)
{
    struct prov_ca_index *ix = NULL;
    struct prov_ca_revocation *revs = NULL;
    size_t n = 0;
    int r;

    if (!has_ca_index(cfg, from)) {
        return 0;
    }
    r = in->chain != NULL ? 0 : read_chain(cfg, &in->chain);
    if (r == 0) {
        r = prov_ca_index_open(cfg->ca_dir, &ix);
    }
    if (r == 0) {
        r = prov_ca_index_revocations(ix, sk_X509_value(in->chain, 0), &revs, &n);
    }
    if (r == 0) {
        X509 *inter = sk_X509_value(in->chain, 0);
        size_t other = 0;

        mark_revoked(in, revs, n);
        for (size_t i = 0; i < in->n; i++) {
            other += X509_check_issued(inter, in->devices[i].cert) != X509_V_OK;
        }
        if (other > 0) {
            /* the index is asked by issuer: another intermediate's revocations are not read */
            prov_warn("lot %s: %zu of %zu certificates were not issued by the intermediate of "
                      "%s/chain.pem: their revocations were not checked",
                      in->lot, other, in->n, cfg->ca_dir);
        } else {
            in->revocations_from = *from;
        }
    }
    free(revs);
    prov_ca_index_close(ix);
    return r;
}

/*
 * The cloud formats register identities that work: a revoked certificate is left out, with
 * one warning naming the device, and counted with the rows not exported.
 */
static int leave_out_revoked(struct lot_input *in)
{
    size_t kept = 0;

    for (size_t i = 0; i < in->n; i++) {
        struct lot_device *d = &in->devices[i];

        if (d->revoked_reason < 0) {
            in->devices[kept++] = *d;
            continue;
        }
        prov_warn("lot %s, serial %s: certificate %s revoked (%s, %s): left out", in->lot,
                  d->serial, d->cert_serial, prov_crl_reason_name(d->revoked_reason),
                  d->revoked_at);
        free(d->serial);
        free(d->pem);
        X509_free(d->cert);
    }
    in->n = kept;
    if (kept == 0) {
        return prov_fail(PROV_ERR_POLICY, "lot %s: every certificate exported is revoked",
                         in->lot);
    }
    return 0;
}

static json_object *device_json(const struct lot_device *d, const char *lot)
{
    json_object *o = json_object_new_object();

    json_object_object_add(o, "serial", json_object_new_string(d->serial));
    json_object_object_add(o, "cert_serial", json_object_new_string(d->cert_serial));
    json_object_object_add(o, "sha256", json_object_new_string(d->sha256));
    json_object_object_add(o, "pubkey_sha256", json_object_new_string(d->pubkey_sha256));
    json_object_object_add(o, "state", json_object_new_string(prov_journal_state_name(d->state)));
    json_object_object_add(o, "not_after", json_object_new_string(d->not_after));
    if (d->revoked_reason >= 0) {
        json_object *rv = json_object_new_object();

        json_object_object_add(rv, "reason",
                               json_object_new_string(prov_crl_reason_name(d->revoked_reason)));
        json_object_object_add(rv, "reason_code", json_object_new_int(d->revoked_reason));
        json_object_object_add(rv, "revoked_at", json_object_new_string(d->revoked_at));
        json_object_object_add(o, "revoked", rv);
    }
    if (lot != NULL) {
        json_object_object_add(o, "lot", json_object_new_string(lot));
    }
    return o;
}

static json_object *states_json(unsigned states)
{
    json_object *a = json_object_new_array();

    for (int s = 0; s < PROV_JOURNAL_STATE_COUNT; s++) {
        if (states & (1u << s)) {
            json_object_array_add(a, json_object_new_string(
                                         prov_journal_state_name((enum prov_journal_state)s)));
        }
    }
    return a;
}

/* {"lot", "states", "count", "devices": [...]}: the JSON inventory, and the record's body. */
static json_object *inventory_json(const struct lot_input *in)
{
    json_object *o = json_object_new_object();
    json_object *list = json_object_new_array();

    for (size_t i = 0; i < in->n; i++) {
        json_object_array_add(list, device_json(&in->devices[i], NULL));
    }
    json_object_object_add(o, "lot", json_object_new_string(in->lot));
    json_object_object_add(o, "states", states_json(in->states));
    json_object_object_add(o, "count", json_object_new_int64((int64_t)in->n));
    json_object_object_add(o, "revocations_checked",
                           json_object_new_boolean(in->revocations_from != NULL));
    json_object_object_add(o, "devices", list);
    return o;
}

/* RFC 4180: quoted when it holds a comma, a quote or a line break. */
static void csv_field(FILE *f, const char *s, bool is_last)
{
    if (strpbrk(s, ",\"\r\n") == NULL) {
        fputs(s, f);
    } else {
        fputc('"', f);
        for (; *s != '\0'; s++) {
            if (*s == '"') {
                fputc('"', f);
            }
            fputc(*s, f);
        }
        fputc('"', f);
    }
    fputc(is_last ? '\n' : ',', f);
}

static int build_csv(const struct lot_input *in, struct prov_lot_bundle *b)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    int r;

    if (f == NULL) {
        return PROV_ERR_NOMEM;
    }
    fputs("serial,cert_serial,sha256,pubkey_sha256,state,not_after,lot,revoked,revoked_at\n", f);
    for (size_t i = 0; i < in->n; i++) {
        const struct lot_device *d = &in->devices[i];

        csv_field(f, d->serial, false);
        csv_field(f, d->cert_serial, false);
        csv_field(f, d->sha256, false);
        csv_field(f, d->pubkey_sha256, false);
        csv_field(f, prov_journal_state_name(d->state), false);
        csv_field(f, d->not_after, false);
        csv_field(f, in->lot, false);
        csv_field(f, d->revoked_reason >= 0 ? prov_crl_reason_name(d->revoked_reason) : "",
                  false);
        csv_field(f, d->revoked_at, true);
    }
    r = fclose(f) == 0 ? lot_bundle_add(b, "", buf, len) : PROV_ERR_NOMEM;
    free(buf);
    return r;
}

static int build_edge(const struct lot_input *in, struct prov_lot_bundle *b)
{
    char *pem = NULL;
    size_t len = 0;
    int r = prov_chain_to_pem(in->chain, &pem, &len);

    if (r == 0) {
        r = lot_bundle_add(b, "", pem, len);
    }
    free(pem);
    return r;
}

static void rfc3339_now(char *buf, size_t len)
{
    time_t now = time(NULL);
    struct tm tm;

    gmtime_r(&now, &tm);
    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/*
 * The lot record: the inventory with what it is and who signs it, and a detached CMS
 * signature over exactly those bytes by the lot signer (lot_signer.h).
 */
static int build_record(const struct prov_config *cfg, const struct lot_input *in,
                        struct prov_lot_bundle *b)
{
    struct prov_lot_signer *s = NULL;
    struct prov_cert_facts signer;
    struct prov_cert_facts inter;
    json_object *o = NULL;
    json_object *inv = NULL;
    unsigned char *sig = NULL;
    size_t sig_len = 0;
    char created[32];
    int r;

    r = prov_lot_signer_open(cfg, &s);
    if (r < 0) {
        return r;
    }
    r = prov_cert_facts(prov_lot_signer_cert(s), &signer);
    if (r == 0) {
        r = prov_cert_facts(sk_X509_value(in->chain, 0), &inter);
    }
    if (r < 0) {
        prov_lot_signer_close(s);
        return r;
    }
    rfc3339_now(created, sizeof(created));
    o = json_object_new_object();
    json_object_object_add(o, "format", json_object_new_string("provisioner-lot-record/1"));
    json_object_object_add(o, "created", json_object_new_string(created));
    json_object_object_add(o, "issuer", json_object_new_string(inter.subject));
    json_object_object_add(o, "issuer_sha256", json_object_new_string(inter.sha256_hex));
    json_object_object_add(o, "signer", json_object_new_string(signer.subject));
    json_object_object_add(o, "signer_sha256", json_object_new_string(signer.sha256_hex));
    inv = inventory_json(in);
    json_object_object_foreach(inv, key, val)
    {
        json_object_object_add(o, key, json_object_get(val));
    }
    json_object_put(inv);
    r = lot_bundle_add_json(b, "lot-record.json", o);
    if (r == 0) {
        const struct prov_lot_file *f = &b->files[b->n_files - 1];

        r = prov_lot_signer_sign(s, f->data, f->len, &sig, &sig_len);
    }
    if (r == 0) {
        r = lot_bundle_add(b, "lot-record.json.p7s", (const char *)sig, sig_len);
    }
    OPENSSL_free(sig);
    prov_lot_signer_close(s);
    return r;
}

int prov_lot_export_build(const struct prov_config *cfg, const struct prov_lot_export_opts *o,
                          struct prov_lot_bundle *out)
{
    struct lot_input in = {.lot = o->lot, .states = o->states ? o->states : PROV_LOT_DEFAULT_STATES};
    size_t n_rows = 0;
    char *index_path = NULL;
    int r;

    memset(out, 0, sizeof(*out));
    r = read_lot(o, &in, &n_rows);
    if (r == 0 && o->format != PROV_LOT_CSV && o->format != PROV_LOT_JSON) {
        r = read_chain(cfg, &in.chain);
    }
    if (r == 0 && o->format != PROV_LOT_EDGE) {
        r = read_revocations(cfg, &in, &index_path);
    }
    if (r == 0 && (o->format == PROV_LOT_AWS || o->format == PROV_LOT_AZURE_DPS)) {
        r = leave_out_revoked(&in);
    }
    if (r < 0) {
        goto out;
    }
    switch (o->format) {
    case PROV_LOT_AWS: r = lot_build_aws(&in, out); break;
    case PROV_LOT_AZURE_DPS: r = lot_build_azure_dps(&in, out); break;
    case PROV_LOT_EDGE: r = build_edge(&in, out); break;
    case PROV_LOT_CSV: r = build_csv(&in, out); break;
    case PROV_LOT_JSON: r = lot_bundle_add_json(out, "", inventory_json(&in)); break;
    case PROV_LOT_RECORD: r = build_record(cfg, &in, out); break;
    default: r = PROV_ERR_INTERNAL; break;
    }
    out->n_devices = in.n;
    out->n_left_out = n_rows - in.n;
out:
    if (r < 0) {
        prov_lot_bundle_clear(out);
    }
    devices_free(in.devices, in.n);
    sk_X509_pop_free(in.chain, X509_free);
    free(index_path);
    return r;
}

/* An existing directory with nothing in it (rename(2) may replace it). */
static bool is_empty_dir(const char *path)
{
    DIR *d = opendir(path);
    struct dirent *e;
    bool is_empty = d != NULL;

    while (d != NULL && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            is_empty = false;
            break;
        }
    }
    if (d != NULL) {
        closedir(d);
    }
    return is_empty;
}

int prov_lot_export_check_output(bool is_dir, const char *output)
{
    struct stat st;

    if (!is_dir) {
        return prov_storage_check_output_file(output, "--output");
    }
    if (lstat(output, &st) == 0 && !(S_ISDIR(st.st_mode) && is_empty_dir(output))) {
        return prov_fail(PROV_ERR_STORAGE,
                         "--output %s: already exists; a directory export goes to a new "
                         "directory",
                         output);
    }
    return prov_storage_check_output_dir(output, "--output");
}

/* Removes what a failed directory export wrote into its temp directory. */
static void remove_tree(const char *dir, const struct prov_lot_bundle *b)
{
    char *path = NULL;

    for (size_t i = 0; i < b->n_files; i++) {
        if (asprintf(&path, "%s/%s", dir, b->files[i].name) >= 0) {
            unlink(path);
            free(path);
        }
    }
    for (size_t i = 0; i < b->n_files; i++) {
        const char *slash = strchr(b->files[i].name, '/');

        if (slash != NULL &&
            asprintf(&path, "%s/%.*s", dir, (int)(slash - b->files[i].name), b->files[i].name) >= 0) {
            rmdir(path);
            free(path);
        }
    }
    rmdir(dir);
}

static int write_files(const char *tmp, const struct prov_lot_bundle *b)
{
    char *path = NULL;
    int r = 0;

    for (size_t i = 0; r == 0 && i < b->n_files; i++) {
        const char *slash = strchr(b->files[i].name, '/');

        if (slash != NULL) {
            if (asprintf(&path, "%s/%.*s", tmp, (int)(slash - b->files[i].name),
                         b->files[i].name) < 0) {
                return PROV_ERR_NOMEM;
            }
            if (prov_mkdir_public(path) != 0 && errno != EEXIST) {
                r = prov_fail(PROV_ERR_STORAGE, "%s: %s", path, strerror(errno));
            }
            free(path);
        }
        if (r == 0 && asprintf(&path, "%s/%s", tmp, b->files[i].name) < 0) {
            return PROV_ERR_NOMEM;
        }
        if (r == 0) {
            r = prov_atomic_write_file(path, b->files[i].data, b->files[i].len, 0644);
            free(path);
        }
    }
    return r;
}

/* The directory path without its trailing slashes ("out/" names "out"); malloc'd. */
static char *without_slashes(const char *path)
{
    char *p = strdup(path);
    size_t n = p ? strlen(p) : 0;

    while (n > 1 && p[n - 1] == '/') {
        p[--n] = '\0';
    }
    return p;
}

/* The topmost of dir and its ancestors that does not exist yet (malloc'd), NULL if dir does. */
static char *first_missing(const char *dir)
{
    char *top = NULL;
    char *p = strdup(dir);
    struct stat st;

    while (p != NULL && p[0] != '\0' && stat(p, &st) != 0 && errno == ENOENT) {
        char *slash = strrchr(p, '/');

        free(top);
        top = strdup(p);
        if (slash == NULL || slash == p) {
            break;
        }
        *slash = '\0';
    }
    free(p);
    return top;
}

/* Removes dir and its ancestors up to top, which a failed export made (empty by then). */
static void remove_made(const char *dir, const char *top)
{
    char *p = strdup(dir);
    size_t n = top != NULL ? strlen(top) : 0;

    while (top != NULL && p != NULL && strncmp(p, top, n) == 0 && strlen(p) >= n) {
        char *slash = strrchr(p, '/');

        rmdir(p);
        if (strlen(p) == n || slash == NULL) {
            break;
        }
        *slash = '\0';
    }
    free(p);
}

static int write_dir(const struct prov_lot_bundle *b, const char *dir)
{
    char *output = without_slashes(dir);
    char *parent_buf = output ? strdup(output) : NULL;
    const char *parent;
    char *made = NULL;
    char *tmp = NULL;
    int r;

    if (parent_buf == NULL || asprintf(&tmp, "%s.tmp.XXXXXX", output) < 0) {
        free(parent_buf);
        free(output);
        return PROV_ERR_NOMEM;
    }
    parent = dirname(parent_buf);
    /* The directory it goes into may be new, as a storage directory's parents may be; a
     * failure removes those it made (doc/export.md, "How it is written"). */
    made = first_missing(parent);
    r = prov_storage_mkdirs(parent);
    if (r < 0) {
        goto out;
    }
    if (mkdtemp(tmp) == NULL) {
        r = prov_fail(PROV_ERR_STORAGE, "--output %s: %s", output, strerror(errno));
        goto out;
    }
    r = chmod(tmp, 0755) == 0 ? 0 : prov_fail(PROV_ERR_STORAGE, "%s: %s", tmp, strerror(errno));
    if (r == 0) {
        r = write_files(tmp, b);
    }
    if (r == 0) {
        r = prov_fsync_dir(tmp);
    }
    if (r == 0 && rename(tmp, output) != 0) {
        r = prov_fail(PROV_ERR_STORAGE, "--output %s: %s", output, strerror(errno));
    }
    if (r == 0) {
        r = prov_fsync_dir(parent);
    } else {
        remove_tree(tmp, b);
    }
out:
    if (r < 0) {
        remove_made(parent, made);
    }
    free(made);
    free(tmp);
    free(parent_buf);
    free(output);
    return r;
}

int prov_lot_export_write(const struct prov_lot_bundle *b, bool is_dir, const char *output)
{
    if (!is_dir) {
        return b->n_files == 1 ? prov_atomic_write_file(output, b->files[0].data, b->files[0].len,
                                                        0644)
                               : PROV_ERR_INTERNAL;
    }
    return write_dir(b, output);
}
