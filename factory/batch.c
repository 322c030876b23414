/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The batch run: validation pass, token groups, workers, results. What happens to one row
 * lives in batch_row.c; the policy is described in batch.h.
 */
#include "batch.h"

#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/conf.h>
#include <openssl/err.h>

#include "backend.h"
#include "error.h"
#include "interrupt.h"
#include "issue.h"
#include "issuer.h"
#include "log.h"
#include "manifest_value.h"
#include "secret.h"
#include "steps.h"
#include "storage.h"
#include "durable.h"
#include "batch_internal.h"

#define READ_CHUNK 65536
#define MAX_JOBS 64

/* ---- validation pass -------------------------------------------------------------------- */

static void on_finding(void *ctx, const char *name, unsigned long line, unsigned long column,
                       const char *reason)
{
    struct batch *b = ctx;

    if (b->opts->on_finding != NULL) {
        b->opts->on_finding(b->opts->finding_ctx, name, line, column, reason);
    }
}

static bool is_bad(const struct prov_manifest_row *row, enum prov_manifest_col col)
{
    return (row->bad_columns & (1u << col)) != 0;
}

/*
 * A row's PIN source must be there before the lot starts: a PIN file that can be opened (it
 * is not read here), a variable that is set. Otherwise the row would fail at its turn, after
 * other rows were issued.
 */
static void check_pin_source(struct batch *b, struct prov_manifest_parser *p,
                             const struct prov_manifest_row *row)
{
    const char *spec = row->value[PROV_COL_PIN];
    char *resolved = NULL;
    struct stat st;
    int fd;

    if (spec == NULL || batch_resolve_pin_spec(b->opts->manifest, spec, &resolved) < 0) {
        return;
    }
    if (strncmp(resolved, "env:", 4) == 0) {
        const char *v = getenv(resolved + 4);

        if (v == NULL || v[0] == '\0') {
            prov_manifest_report(p, &row->pos[PROV_COL_PIN], "pin: %s: not set", spec);
        }
    } else {
        fd = open(resolved + 5, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
            prov_manifest_report(p, &row->pos[PROV_COL_PIN], "pin: %s: cannot read (%s)", spec,
                                 fd < 0 ? strerror(errno) : "not a regular file");
        }
        if (fd >= 0) {
            close(fd);
        }
    }
    free(resolved);
}

/*
 * The config's view of a row: profile, key type, subject, a backend for the device. Called
 * for every row, also one with findings of its own (their columns are skipped), so that one
 * pass reports every problem.
 */
static int validate_against_config(void *ctx, struct prov_manifest_parser *p,
                                   const struct prov_manifest_row *row)
{
    struct batch *b = ctx;
    const char *pname = row->value[PROV_COL_PROFILE] ? row->value[PROV_COL_PROFILE] : "device";
    const struct prov_manifest_pos *at =
        row->value[PROV_COL_PROFILE] ? &row->pos[PROV_COL_PROFILE] : &row->pos[PROV_COL_SERIAL];
    const struct prov_profile *prof = prov_config_profile(b->cfg, pname);
    struct prov_request rq;
    X509_NAME *subject = NULL;

    if (row->value[PROV_COL_DEVICE] != NULL &&
        prov_backend_for(row->value[PROV_COL_DEVICE]) == NULL) {
        prov_manifest_report(p, &row->pos[PROV_COL_DEVICE],
                             "device: no backend for this kind of device in this build");
    } else if (row->value[PROV_COL_DEVICE] != NULL &&
               prov_device_validate(row->value[PROV_COL_DEVICE]) < 0) {
        /* Parsed by its backend now, not at its turn in the lot (after other rows issued). */
        prov_manifest_report(p, &row->pos[PROV_COL_DEVICE], "%s", prov_error_message());
    }
    prov_error_clear();
    check_pin_source(b, p, row);
    if (is_bad(row, PROV_COL_PROFILE)) {
        return 0; /* the profile's own finding says it; nothing below can be judged */
    }
    /* The CA's own token is never a device (its identity is checked again when opened). */
    if (prov_issuer_check_device_for(b->cfg, row->value[PROV_COL_DEVICE], NULL) < 0) {
        prov_manifest_report(p, &row->pos[PROV_COL_DEVICE], "%s", prov_error_message());
        prov_error_clear();
    }
    if (prof == NULL) {
        prov_manifest_report(p, at, "profile \"%s\": not in %s (no [profile_%s] section)", pname,
                             b->cfg->path, pname);
        return 0;
    }
    if (row->value[PROV_COL_KEY] != NULL) {
        enum prov_key_type t = PROV_KEY_NONE;
        unsigned allowed = prof->allowed_keys ? prof->allowed_keys : PROV_KEY_BIT(prof->key_type);

        if (prov_key_type_parse(row->value[PROV_COL_KEY], &t) == 0 &&
            !(allowed & PROV_KEY_BIT(t))) {
            prov_manifest_report(p, &row->pos[PROV_COL_KEY], "key %s: not allowed by profile %s",
                                 row->value[PROV_COL_KEY], prof->name);
        }
        prov_error_clear();
    }
    /* The subject as it will be issued: template variables, lengths, attribute names. */
    if (row->value[PROV_COL_SERIAL] == NULL || is_bad(row, PROV_COL_CN)) {
        return 0; /* built from values that have findings of their own */
    }
    batch_request(b, row, prof, &rq);
    if (prov_issue_subject(b->cfg, &rq, &subject) < 0) {
        const char *msg = prov_error_message();

        prov_manifest_report(p, row->value[PROV_COL_CN] ? &row->pos[PROV_COL_CN] : at,
                             "subject: %s", msg ? msg : "cannot be built");
    }
    prov_error_clear();
    X509_NAME_free(subject);
    return 0;
}

static int add_group(struct batch *b, const char *uri, uint32_t *index)
{
    unsigned long found = 0;
    bool is_new = false;

    if (prov_strset_add(&b->group_index, uri, b->n_groups, &found, &is_new) < 0) {
        return PROV_ERR_NOMEM;
    }
    if (is_new) {
        if (b->n_groups == b->cap_groups) {
            size_t cap = b->cap_groups ? b->cap_groups * 2 : 16;
            struct batch_group *g = realloc(b->groups, cap * sizeof(*g));

            if (g == NULL) {
                return PROV_ERR_NOMEM;
            }
            b->groups = g;
            b->cap_groups = cap;
        }
        memset(&b->groups[b->n_groups], 0, sizeof(b->groups[0]));
        b->groups[b->n_groups].device_uri = strdup(uri);
        b->groups[b->n_groups].first = BATCH_NO_ROW;
        if (b->groups[b->n_groups].device_uri == NULL) {
            return PROV_ERR_NOMEM;
        }
        b->n_groups++;
    }
    *index = (uint32_t)found;
    return 0;
}

static int take_row_pin_spec(void *ctx, struct prov_manifest_parser *p,
                             const struct prov_manifest_row *row)
{
    struct batch_row_pin *rp = ctx;

    return batch_resolve_pin_spec(rp->manifest, row->value[PROV_COL_PIN], &rp->spec);
}

int batch_row_pin_spec(struct batch *b, uint32_t index, char **out)
{
    struct batch_row_pin rp = {.manifest = b->opts->manifest};
    int r;

    r = batch_run_row(b, index, take_row_pin_spec, &rp);
    *out = r == 0 ? rp.spec : NULL;
    if (r < 0) {
        free(rp.spec);
    }
    return r;
}

static int validate_row(void *ctx, struct prov_manifest_parser *p,
                        const struct prov_manifest_row *row)
{
    struct batch *b = ctx;
    struct batch_row *e;
    struct batch_group *g;
    uint32_t gi;

    if (b->n_rows == b->cap_rows) {
        size_t cap = b->cap_rows ? b->cap_rows * 2 : 1024;
        struct batch_row *rows = realloc(b->rows, cap * sizeof(*rows));

        if (rows == NULL) {
            return prov_fail(PROV_ERR_NOMEM, "%s: out of memory", b->opts->manifest);
        }
        b->rows = rows;
        b->cap_rows = cap;
    }
    if (add_group(b, row->value[PROV_COL_DEVICE], &gi) < 0) {
        return prov_fail(PROV_ERR_NOMEM, "%s: out of memory", b->opts->manifest);
    }
    e = &b->rows[b->n_rows];
    memset(e, 0, sizeof(*e));
    e->offset = row->offset;
    e->length = (uint32_t)row->length;
    e->line = (uint32_t)row->line;
    e->next = BATCH_NO_ROW;
    for (size_t i = 0; i < b->opts->n_reissue; i++) {
        if (strcmp(b->opts->reissue[i], row->value[PROV_COL_SERIAL]) == 0) {
            e->is_reissue = true;
            b->is_reissue_seen[i] = true;
        }
    }
    g = &b->groups[gi];
    g->has_row_pin = g->has_row_pin || row->value[PROV_COL_PIN] != NULL;
    if (g->first == BATCH_NO_ROW) {
        g->first = (uint32_t)b->n_rows;
    } else {
        b->rows[g->last].next = (uint32_t)b->n_rows;
    }
    g->last = (uint32_t)b->n_rows;
    g->count++;
    b->n_rows++;
    return 0;
}

/*
 * The manifest is the operator's input: missing, unreadable or a directory is bad input
 * (exit 2), never "not found" (exit 4 means a device) or a failed operation (exit 1).
 */
static int open_manifest(const char *manifest)
{
    struct stat st;
    int fd = open(manifest, O_RDONLY | O_CLOEXEC);

    if (fd < 0) {
        return prov_fail(PROV_ERR_INPUT, "manifest %s: cannot open: %s", manifest,
                         strerror(errno));
    }
    if (fstat(fd, &st) != 0 || S_ISDIR(st.st_mode)) {
        int e = S_ISDIR(st.st_mode) ? EISDIR : errno;

        close(fd);
        return prov_fail(PROV_ERR_INPUT, "manifest %s: cannot read: %s", manifest, strerror(e));
    }
    return fd;
}

int prov_batch_manifest_check(const char *manifest)
{
    int fd = open_manifest(manifest);

    if (fd < 0) {
        return fd;
    }
    close(fd);
    return 0;
}

int batch_validate(struct batch *b)
{
    struct prov_manifest_callbacks cb = {
        .check = validate_against_config, .row = validate_row, .error = on_finding, .ctx = b};
    unsigned char *buf = NULL;
    int r;

    b->fd = open_manifest(b->opts->manifest);
    if (b->fd < 0) {
        r = b->fd;
        b->fd = -1;
        return r;
    }
    buf = malloc(READ_CHUNK);
    r = buf ? prov_manifest_parser_new(b->opts->manifest, &cb, &b->parser) : PROV_ERR_NOMEM;
    while (r == 0) {
        ssize_t n = read(b->fd, buf, READ_CHUNK);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            r = prov_fail(PROV_ERR_INPUT, "manifest %s: cannot read: %s", b->opts->manifest,
                          strerror(errno));
        } else if (n == 0) {
            r = prov_manifest_parser_finish(b->parser);
            break;
        } else {
            r = prov_manifest_parser_feed(b->parser, buf, (size_t)n);
        }
    }
    free(buf);
    return r;
}

static int check_reissue_list(struct batch *b)
{
    if (b->opts->is_again && b->opts->n_reissue == 0) {
        return prov_fail(PROV_ERR_USAGE, "--again: only with --reissue SERIAL (it makes those "
                         "reissues a new request)");
    }
    for (size_t i = 0; i < b->opts->n_reissue; i++) {
        if (!b->is_reissue_seen[i]) {
            return prov_fail(PROV_ERR_USAGE, "--reissue %s: serial not in %s", b->opts->reissue[i],
                             b->opts->manifest);
        }
    }
    return 0;
}

/* ---- workers ---------------------------------------------------------------------------- */

/* Reads a row's bytes back and hands it to batch_row_handle through the parser. */
int batch_run_row(struct batch *b, uint32_t index, prov_manifest_row_fn fn, void *ctx)
{
    const struct batch_row *e = &b->rows[index];
    unsigned char *buf = malloc(e->length ? e->length : 1);
    size_t done = 0;
    int r = 0;

    if (buf == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "%s:%u: out of memory", b->opts->manifest, e->line);
    }
    while (done < e->length) {
        ssize_t n = pread(b->fd, buf + done, e->length - done, (off_t)(e->offset + done));

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            r = prov_fail(PROV_ERR_IO, "%s:%u: cannot read the row again: %s", b->opts->manifest,
                          e->line, n < 0 ? strerror(errno) : "the file got shorter");
            break;
        }
        done += (size_t)n;
    }
    if (r == 0) {
        r = prov_manifest_parse_record(b->parser, buf, e->length, e->line, fn, ctx);
    }
    free(buf);
    return r;
}

/* The serial of a row, copied: a scan's question. */
static int take_serial(void *ctx, struct prov_manifest_parser *p,
                       const struct prov_manifest_row *row)
{
    char **out = ctx;
    const char *serial = row->value[PROV_COL_SERIAL];

    *out = strdup(serial ? serial : "");
    return *out ? 0 : prov_fail(PROV_ERR_NOMEM, "batch: out of memory");
}

/*
 * The rows idx[lo..*hi) that another station holds or finished (one question to the ledger
 * for all of them) are counted so and leave the list; the others keep their order. When the
 * question fails the list stays whole: each row's own claim answers for it then.
 */
static void drop_elsewhere(struct batch *b, uint32_t *idx, size_t lo, size_t *hi)
{
    size_t n = *hi - lo;
    char **serials = calloc(n ? n : 1, sizeof(*serials));
    bool *is_other = calloc(n ? n : 1, sizeof(*is_other));
    size_t k = lo;
    int r = serials != NULL && is_other != NULL ? 0 : PROV_ERR_NOMEM;

    for (size_t i = 0; r == 0 && i < n; i++) {
        r = batch_run_row(b, idx[lo + i], take_serial, &serials[i]);
    }
    r = r ? r
          : prov_journal_lease_scan(b->journal, b->lot_id, (const char *const *)serials, n,
                                    is_other);
    for (size_t i = 0; r == 0 && i < n; i++) {
        if (is_other[i]) {
            batch_row_elsewhere(b, idx[lo + i]);
        } else {
            idx[k++] = idx[lo + i];
        }
    }
    if (r == 0) {
        *hi = k;
    }
    prov_error_clear();
    for (size_t i = 0; serials != NULL && i < n; i++) {
        free(serials[i]);
    }
    free(serials);
    free(is_other);
}

/*
 * The rows of group g in order. On the ledger, a row another station holds or finished
 * means that station works this device too: what else of the group is that station's is
 * asked in one question, and those rows are left to it. When it is the group's first row,
 * that station is working the device from its start: the group is left for later (true;
 * when can_defer) so that this station first takes a device nobody works, and when it comes
 * back (is_again) it walks the rest from the end, so that the two meet in the middle instead
 * of one trailing the other and claiming, row by row, what the other just took
 * (doc/ledger.md, "Work distribution"). idx: room for g->count indices, or NULL (out of
 * memory): then in order only.
 */
static bool work_group(struct batch *b, struct batch_group *g, uint32_t *idx, bool can_defer,
                       bool is_again)
{
    uint32_t next = g->first;
    size_t lo = 0;
    size_t hi = 0;
    bool is_back = false;
    struct batch_kept_device kept = {0}; /* batch_row.h: open from one row to the next */

    for (uint32_t i = g->first; idx != NULL && i != BATCH_NO_ROW && hi < g->count;
         i = b->rows[i].next) {
        idx[hi++] = i;
    }
    if (is_again && idx != NULL) {
        /* the first row was concluded the first time; what of the rest is another's now */
        lo = 1;
        is_back = true;
        drop_elsewhere(b, idx, lo, &hi);
    }
    while (idx != NULL ? lo < hi : next != BATCH_NO_ROW) {
        uint32_t i = idx == NULL ? next : is_back ? idx[--hi] : idx[lo++];
        struct batch_row_job job = {.b = b, .g = g, .index = i, .kept = &kept};

        /* SIGINT/SIGTERM: no new row; the rows not started stay pending (interrupt.h) */
        if (prov_interrupt_signal() != 0) {
            break;
        }
        prov_error_clear();
        if (batch_run_row(b, i, batch_row_handle, &job) < 0) {
            batch_row_unreadable(b, i);
        }
        next = b->rows[i].next;
        if (job.is_elsewhere && idx != NULL && b->is_ledger) {
            if (lo == 1 && !is_back && can_defer) {
                batch_kept_device_end(b, g, &kept);
                return true;
            }
            is_back = is_back || lo == 1;
            drop_elsewhere(b, idx, lo, &hi);
        }
    }
    batch_kept_device_end(b, g, &kept);
    return false;
}

/*
 * Without the ledger, the rows of a group are taken one by one from its cursor, by the worker
 * that started it and by a partner that joined it (partner_group): each row is the next one
 * no worker has taken.
 */
static void work_group_shared(struct batch *b, struct batch_group *g)
{
    struct batch_kept_device kept = {0}; /* batch_row.h: open from one row to the next */

    for (;;) {
        struct batch_row_job job = {.b = b, .g = g, .kept = &kept};

        /* SIGINT/SIGTERM: no new row; the rows not started stay pending (interrupt.h) */
        if (prov_interrupt_signal() != 0) {
            break;
        }
        pthread_mutex_lock(&b->queue_lock);
        job.index = g->cursor;
        if (job.index != BATCH_NO_ROW) {
            g->cursor = b->rows[job.index].next;
            g->taken++;
        }
        pthread_mutex_unlock(&b->queue_lock);
        if (job.index == BATCH_NO_ROW) {
            break;
        }
        prov_error_clear();
        if (batch_run_row(b, job.index, batch_row_handle, &job) < 0) {
            batch_row_unreadable(b, job.index);
        }
    }
    batch_kept_device_end(b, g, &kept);
}

/*
 * Called with queue_lock held, once no group is left to start: the group a spare worker
 * joins as the second one, NULL when there is none. Only a PKCS#11 token's group without
 * the ledger, with the most rows left: its token's work stays one row at a time under the
 * token's lock, and the partner's row makes its key while the other row's certificate is
 * signed and recorded (batch_row.c, fresh_on_device); a backend without may_share (backend.h)
 * has none. Not a group whose rows name their own
 * PIN sources: which row logs in first (the token stays logged in for the others) would
 * then depend on the two workers' timing, and with it whether a wrong one is noticed; not a
 * token that allows too few sessions (group_may_share). A TPM is not shared: reached
 * through swtpm's socket it serves one connection at a time, and the other row holds one
 * (the TPM backend has no may_share).
 */
static struct batch_group *partner_group(struct batch *b)
{
    struct batch_group *best = NULL;

    if (b->is_ledger) {
        return NULL;
    }
    for (size_t i = 0; i < b->n_groups; i++) {
        struct batch_group *g = &b->groups[i];

        const struct prov_backend_ops *ops = prov_backend_for(g->device_uri);

        if (g->n_workers == 1 && g->cursor != BATCH_NO_ROW && !g->has_row_pin &&
            !g->is_unshared && ops != NULL && ops->may_share != NULL &&
            (best == NULL || g->count - g->taken > best->count - best->taken)) {
            best = g;
        }
    }
    if (best != NULL) {
        best->n_workers++;
    }
    return best;
}

/*
 * Whether g's token takes a second worker (backend.h, may_share), resolved here when its
 * first worker has not yet: a token that allows one read-write session would refuse the
 * partner's. Without queue_lock (the token is opened to ask).
 */
static bool group_may_share(struct batch *b, struct batch_group *g)
{
    struct batch_token *t = NULL;

    if (batch_tokens_resolve_cached(&b->tokens, g->device_uri, &g->token, &t) < 0) {
        prov_error_clear(); /* its own worker meets the reason on its row */
        return false;
    }
    return t->may_share;
}

static void *worker(void *arg)
{
    struct batch *b = arg;
    uint32_t *idx = NULL;
    size_t cap = 0;
    /* the groups another station had begun, taken again once the queue is empty */
    struct batch_group **later = calloc(b->n_groups ? b->n_groups : 1, sizeof(*later));
    size_t n_later = 0;
    size_t k_later = 0;

    for (;;) {
        struct batch_group *g;
        bool is_again = false;
        bool is_partner = false;

        pthread_mutex_lock(&b->queue_lock);
        g = b->next_group < b->n_groups ? &b->groups[b->order[b->next_group++]] : NULL;
        if (g != NULL) {
            g->cursor = g->first;
            g->n_workers = 1;
        } else {
            g = partner_group(b);
            is_partner = g != NULL;
        }
        pthread_mutex_unlock(&b->queue_lock);
        if (is_partner && !group_may_share(b, g)) {
            pthread_mutex_lock(&b->queue_lock);
            g->n_workers--;
            g->is_unshared = true;
            pthread_mutex_unlock(&b->queue_lock);
            continue; /* another group, if one is left */
        }
        if (g != NULL && !b->is_ledger) {
            work_group_shared(b, g);
            continue;
        }
        if (g == NULL && k_later < n_later) {
            g = later[k_later++];
            is_again = true;
        }
        if (g == NULL) {
            break;
        }
        if (g->count > cap) {
            uint32_t *more = realloc(idx, g->count * sizeof(*idx));

            if (more != NULL) {
                idx = more;
                cap = g->count;
            }
        }
        if (work_group(b, g, g->count > cap ? NULL : idx, later != NULL && !is_again, is_again)) {
            later[n_later++] = g;
        }
    }
    free(later);
    free(idx);
    return NULL;
}

/* A group in the sort: bigger groups first, since the lot ends when its longest queue ends. */
struct group_size {
    uint32_t count;
    size_t index;
};

static int by_count_desc(const void *x, const void *y)
{
    const struct group_size *a = x;
    const struct group_size *c = y;

    return a->count < c->count ? 1 : a->count > c->count ? -1 : (a->index > c->index);
}

/*
 * The workers over the groups, largest first. rotate > 0 (a station on the ledger) starts
 * the order at another group for each station, so that stations draining one lot begin on
 * different devices instead of all claiming their way down the same one.
 */
static int run_workers(struct batch *b, size_t rotate)
{
    pthread_t threads[MAX_JOBS];
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    size_t n = b->opts->jobs > 0 ? (size_t)b->opts->jobs : (size_t)(cpus > 0 ? cpus : 1);
    size_t per_group;
    size_t started = 0;

    struct group_size *sizes = calloc(b->n_groups ? b->n_groups : 1, sizeof(*sizes));

    b->order = malloc((b->n_groups ? b->n_groups : 1) * sizeof(*b->order));
    if (b->order == NULL || sizes == NULL) {
        free(sizes);
        return prov_fail(PROV_ERR_NOMEM, "batch: out of memory");
    }
    for (size_t i = 0; i < b->n_groups; i++) {
        sizes[i] = (struct group_size){.count = b->groups[i].count, .index = i};
    }
    qsort(sizes, b->n_groups, sizeof(*sizes), by_count_desc);
    for (size_t i = 0; i < b->n_groups; i++) {
        b->order[i] = sizes[i].index;
    }
    for (size_t i = 0; rotate > 0 && b->n_groups > 1 && i < b->n_groups; i++) {
        b->order[i] = sizes[(i + rotate) % b->n_groups].index;
    }
    free(sizes);
    /* a worker per group, and without the ledger a partner per group (partner_group) */
    per_group = b->is_ledger ? 1 : 2;
    n = n > MAX_JOBS ? MAX_JOBS : n;
    n = n > b->n_groups * per_group ? b->n_groups * per_group : n;
    if (batch_finisher_start(b) < 0) {
        prov_error_clear(); /* rows are then finished by their worker, in line */
    }
    for (size_t i = 0; i < n; i++) {
        if (pthread_create(&threads[i], NULL, worker, b) != 0) {
            break;
        }
        started++;
    }
    if (started == 0 && b->n_groups > 0) {
        worker(b);
    }
    for (size_t i = 0; i < started; i++) {
        pthread_join(threads[i], NULL);
    }
    batch_finisher_stop(b);
    return 0;
}

/* ---- results ---------------------------------------------------------------------------- */

/*
 * The results are written a page of manifest rows at a time: the page's serials are read back
 * from the manifest, their journal rows asked for in one question (prov_journal_rows_of: one
 * round trip per page on the ledger), then the page's lines written. Memory is the page's,
 * whatever the lot's size.
 */
#define RESULTS_PAGE 256

/* What the results say of a journal row. */
struct result_rec {
    bool has_cert;
    char *error;
    char cert_serial[65];
    char sha256[65];
    char not_after[32];
};

struct results_ctx {
    struct batch *b;
    FILE *f;
    uint32_t index;          /* the row being written */
    struct result_rec *page; /* RESULTS_PAGE, by place in the page */
    char **serials;          /* the page's */
    uint32_t first;          /* the page's first row */
};

static int rec_set(void *ctx, size_t i, const struct prov_journal_device *d)
{
    struct results_ctx *rc = ctx;
    struct result_rec *e = &rc->page[i];

    free(e->error);
    memset(e, 0, sizeof(*e));
    e->error = d->error ? strdup(d->error) : NULL;
    if (d->error != NULL && e->error == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "batch: out of memory");
    }
    e->has_cert = d->cert_der != NULL;
    memcpy(e->cert_serial, d->cert_serial, sizeof(e->cert_serial));
    memcpy(e->sha256, d->sha256, sizeof(e->sha256));
    memcpy(e->not_after, d->not_after, sizeof(e->not_after));
    return 0;
}

static void page_clear(struct results_ctx *rc)
{
    for (size_t i = 0; i < RESULTS_PAGE; i++) {
        free(rc->serials[i]);
        free(rc->page[i].error);
        rc->serials[i] = NULL;
        memset(&rc->page[i], 0, sizeof(rc->page[i]));
    }
}

static int results_row(void *ctx, struct prov_manifest_parser *p,
                       const struct prov_manifest_row *row)
{
    struct results_ctx *rc = ctx;
    struct batch *b = rc->b;
    enum batch_status st = b->rows[rc->index].status;
    const struct result_rec *d = &rc->page[rc->index - rc->first]; /* none: never started */
    bool has_cert;
    char *dir = batch_storage_dir(b->cfg, row);

    has_cert = st != BATCH_FAILED && d->has_cert;
    prov_csv_field(rc->f, row->value[PROV_COL_SERIAL], false);
    prov_csv_field(rc->f, batch_status_name(st), false);
    prov_csv_field(rc->f, has_cert ? d->cert_serial : "", false);
    prov_csv_field(rc->f, has_cert ? d->sha256 : "", false);
    prov_csv_field(rc->f, has_cert ? d->not_after : "", false);
    prov_csv_field(rc->f, dir ? dir : "", false);
    prov_csv_field(rc->f,
                   st == BATCH_FAILED    ? (d->error ? d->error : "not processed")
                   : st == BATCH_PENDING ? "not started: the run was interrupted; run the same "
                                           "command to resume"
                                         : "",
                   row->n_x == 0);
    for (size_t i = 0; i < row->n_x; i++) {
        prov_csv_field(rc->f, row->x_values[i], i + 1 == row->n_x);
    }
    free(dir);
    return 0;
}

static const char *const result_columns[7] = {
    "serial", "status", "cert_serial", "sha256", "not_after", "storage", "error",
};

/* Temp files of a results CSV that a killed run was writing ("RESULTS.tmp.XXXXXX"). */
static void remove_stale_results(const char *tmp_template)
{
    char *pattern = strdup(tmp_template);
    glob_t g;

    if (pattern == NULL) {
        return;
    }
    memcpy(pattern + strlen(pattern) - 6, "??????", 6);
    if (glob(pattern, GLOB_NOSORT, NULL, &g) == 0) {
        for (size_t i = 0; i < g.gl_pathc; i++) {
            unlink(g.gl_pathv[i]);
        }
        globfree(&g);
    }
    free(pattern);
}

/* The rows [first, first + n) of the results: their journal rows, then their lines. */
static int results_page(struct results_ctx *rc, uint32_t first, uint32_t n)
{
    struct batch *b = rc->b;
    int r = 0;

    rc->first = first;
    for (uint32_t i = 0; i < n && r == 0; i++) {
        r = batch_run_row(b, first + i, take_serial, &rc->serials[i]);
    }
    r = r ? r
          : prov_journal_rows_of(b->journal, b->lot_id, (const char *const *)rc->serials, n,
                                 rec_set, rc);
    for (uint32_t i = 0; i < n && r == 0; i++) {
        rc->index = first + i;
        r = batch_run_row(b, first + i, results_row, rc);
    }
    page_clear(rc);
    return r;
}

/*
 * The results CSV in manifest order, streamed into a temp file that is synced, read back and
 * renamed into place (prov_durable_stream_open).
 */
static int write_results(struct batch *b, const char *path)
{
    const char *const *x_names = NULL;
    size_t n_x = prov_manifest_x_columns(b->parser, &x_names);
    struct results_ctx rc = {.b = b};
    struct prov_durable_stream *out = NULL;
    char *tmp = NULL;
    int r = 0;

    if (asprintf(&tmp, "%s.tmp.XXXXXX", path) < 0) {
        return prov_fail(PROV_ERR_NOMEM, "%s: out of memory", path);
    }
    remove_stale_results(tmp);
    free(tmp);
    rc.page = calloc(RESULTS_PAGE, sizeof(*rc.page));
    rc.serials = calloc(RESULTS_PAGE, sizeof(*rc.serials));
    if (rc.page == NULL || rc.serials == NULL) {
        r = prov_fail(PROV_ERR_NOMEM, "results %s: out of memory", path);
        goto out;
    }
    r = prov_durable_stream_open(path, 0644, &out);
    if (r < 0) {
        goto out;
    }
    rc.f = prov_durable_stream_file(out);
    for (size_t i = 0; i < 7; i++) {
        prov_csv_field(rc.f, result_columns[i], n_x == 0 && i == 6);
    }
    for (size_t i = 0; i < n_x; i++) {
        prov_csv_field(rc.f, x_names[i], i + 1 == n_x);
    }
    for (uint32_t i = 0; i < b->n_rows && r == 0; i += RESULTS_PAGE) {
        r = results_page(&rc, i, (uint32_t)(b->n_rows - i < RESULTS_PAGE ? b->n_rows - i
                                                                          : RESULTS_PAGE));
    }
    if (r == 0) {
        r = prov_durable_stream_commit(out);
        out = NULL;
    }
out:
    prov_durable_stream_abort(out);
    free(rc.page);
    free(rc.serials);
    return r;
}

/* ---- the run ---------------------------------------------------------------------------- */

char *prov_batch_default_path(const char *manifest, const char *suffix)
{
    size_t len = strlen(manifest);
    char *out = NULL;

    if (len > 4 && strcasecmp(manifest + len - 4, ".csv") == 0) {
        len -= 4;
    }
    if (asprintf(&out, "%.*s%s", (int)len, manifest, suffix) < 0) {
        return NULL;
    }
    return out;
}

char *prov_batch_lot_name(const struct prov_config *cfg, const char *manifest)
{
    const char *base = strrchr(manifest, '/');
    size_t len;

    if (cfg != NULL && cfg->lot != NULL) {
        return strdup(cfg->lot);
    }
    base = base ? base + 1 : manifest;
    len = strlen(base);
    if (len > 4 && strcasecmp(base + len - 4, ".csv") == 0) {
        len -= 4;
    }
    return strndup(base, len);
}

void prov_batch_summary_clear(struct prov_batch_summary *s)
{
    if (s != NULL) {
        free(s->journal);
        free(s->results);
        memset(s, 0, sizeof(*s));
    }
}

static double now_seconds(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * The device PIN is read once per device (each device open loads its source again): a prompt
 * would ask hundreds of times and an fd: source is empty after the first read.
 */
int batch_check_pin_source(const struct batch *b)
{
    const char *spec = b->opts->pin_spec ? b->opts->pin_spec : b->cfg->device_pin;
    enum prov_secret_kind kind;
    const char *arg;

    if (spec == NULL || prov_secret_parse_source(spec, &kind, &arg) < 0) {
        return 0; /* no PIN, or a bad spec: the device login names the problem */
    }
    if (kind == PROV_SECRET_PROMPT || kind == PROV_SECRET_FD) {
        return prov_fail(PROV_ERR_USAGE,
                         "batch: the device PIN source %s is read once per device; use file: or "
                         "env: (--pin or [provisioner] device_pin)",
                         kind == PROV_SECRET_PROMPT ? "\"prompt\"" : "fd:");
    }
    return 0;
}

/*
 * Everything the run will write, before the journal or any key exists: the results file
 * (written last: a bad path would otherwise fail after every device was issued), the
 * journal, and output_dir, under which every row's storage directory is made.
 */
static int check_outputs(const struct prov_config *cfg, const struct prov_batch_summary *sum)
{
    struct stat st;
    int r;

    r = prov_storage_check_output_file(sum->results, "results");
    if (r == 0 && !prov_journal_is_ledger(sum->journal) && stat(sum->journal, &st) != 0) {
        r = prov_storage_check_output_file(sum->journal, "journal");
    }
    if (r == 0) {
        r = prov_storage_check_output_dir(prov_output_dir(cfg), "output_dir");
    }
    return r;
}

static int by_string(const void *x, const void *y)
{
    return strcmp(*(const char *const *)x, *(const char *const *)y);
}

/*
 * The --reissue serials sorted, without repeats, comma-separated: the request's name in the
 * journal, the same however the command line orders them. malloc'd; NULL on NOMEM.
 */
static char *reissue_request_list(const struct prov_batch_opts *o)
{
    const char **sorted = malloc((o->n_reissue + 1) * sizeof(*sorted));
    size_t len = 1;
    char *list = NULL;

    if (sorted == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < o->n_reissue; i++) {
        sorted[i] = o->reissue[i];
        len += strlen(o->reissue[i]) + 1;
    }
    qsort(sorted, o->n_reissue, sizeof(*sorted), by_string);
    list = calloc(1, len);
    for (size_t i = 0; list != NULL && i < o->n_reissue; i++) {
        if (i == 0 || strcmp(sorted[i], sorted[i - 1]) != 0) {
            strcat(list, list[0] ? "," : "");
            strcat(list, sorted[i]);
        }
    }
    free(sorted);
    return list;
}

/*
 * PROV_ERR_INTERRUPTED, one line for the whole run, when a signal left rows not started or
 * rolled back (interrupt.h); 0 when every row was done (a signal during the results is moot).
 */
static int interrupted(struct batch *b)
{
    unsigned long n_pending = 0;

    for (size_t i = 0; i < b->n_rows; i++) {
        n_pending += b->rows[i].status == BATCH_PENDING;
    }
    if (n_pending == 0 && b->n_interrupted == 0) {
        return 0;
    }
    return prov_fail(PROV_ERR_INTERRUPTED,
                     "%s: interrupted by %s: %lu of %zu rows not started, %lu stopped before "
                     "their certificate and rolled back, the others done; run the same command "
                     "to resume",
                     b->opts->manifest, prov_interrupt_name(prov_interrupt_signal()), n_pending,
                     b->n_rows, b->n_interrupted);
}

/* A station's place among the others: FNV-1a of its name (any spread will do). */
static size_t station_spread(const char *station)
{
    uint32_t h = 2166136261u;

    for (const char *p = station; *p != '\0'; p++) {
        h = (h ^ (unsigned char)*p) * 16777619u;
    }
    return h;
}

void prov_batch_station_name(const struct prov_config *cfg, const char *opt,
                             const char *instance, char *out, size_t cap)
{
    const char *v = opt;

    if (v == NULL && cfg != NULL && cfg->conf != NULL) {
        v = NCONF_get_string(cfg->conf, "station", "name");
        ERR_clear_error(); /* no [station] name is no error */
    }
    if (v != NULL && *v != '\0') {
        snprintf(out, cap, "%s", v);
        return;
    }
    if (gethostname(out, cap) != 0 || out[0] == '\0') {
        snprintf(out, cap, "station");
    }
    out[cap - 1] = '\0';
    if (instance != NULL) {
        size_t n = strlen(out);

        snprintf(out + n, cap - n, "@%s", instance);
    }
}

/* Everything after validation: journal, CA, workers, results. */
static int enroll_lot(struct batch *b, struct prov_batch_summary *sum)
{
    struct prov_journal_run run;
    char *reissue_list = NULL;
    char station[256];
    int r;

    prov_batch_station_name(b->cfg, b->opts->station, NULL, station, sizeof(station));
    r = prov_journal_open_with(sum->journal, b->cfg->journal_password, station, true,
                               &b->journal);
    if (r == 0) {
        prov_journal_set_lease(b->journal, b->cfg->journal_lease);
    }
    if (r < 0) {
        return r;
    }
    r = prov_issuer_open(b->cfg, NULL, &b->issuer);
    if (r < 0) {
        return r;
    }
    reissue_list = reissue_request_list(b->opts);
    if (reissue_list == NULL) {
        return PROV_ERR_NOMEM;
    }
    r = prov_journal_lot(b->journal, b->lot, b->opts->manifest, &b->lot_id);
    if (r == 0) {
        r = prov_journal_run_begin(b->journal, b->lot_id, reissue_list, b->opts->is_again, &run);
    }
    free(reissue_list);
    if (r < 0) {
        return r;
    }
    b->run_id = run.id;
    b->request_id = run.request;
    if (run.is_resumed) {
        prov_info("batch: resuming run %lld of lot %s", run.id, b->lot);
    } else if (run.is_continued && b->opts->n_reissue > 0) {
        prov_info("batch: run %lld continues reissue request %lld of lot %s", run.id,
                  run.request, b->lot);
    }
    if (b->opts->show_progress) {
        r = prov_progress_new(stderr, b->opts->is_tty, b->n_rows, &b->progress);
        if (r < 0) {
            return r;
        }
    }
    b->is_ledger = prov_journal_is_ledger(sum->journal);
    r = run_workers(b, b->is_ledger ? station_spread(station) : 0);
    if (b->progress != NULL) {
        prov_progress_finish(b->progress);
    }
    /*
     * Results before the run's end: a run stopped in between has its results but is not
     * finished, so the same command again resumes it. A run a signal stopped has its results
     * too, and stays unfinished.
     */
    if (r == 0 && prov_journal_is_away(b->journal)) {
        /* fail closed: no row went on once the ledger could not record it */
        return prov_fail(PROV_ERR_JOURNAL,
                         "journal %s: the database went away and stayed away: %lu of %zu rows "
                         "not finished (none written to a device the ledger does not hold); "
                         "run the same command when it is back",
                         prov_journal_path(b->journal), b->n_failed, b->n_rows);
    }
    if (r == 0) {
        r = write_results(b, sum->results);
    }
    if (r == 0) {
        r = interrupted(b);
    }
    if (r == 0) {
        r = prov_journal_run_end(b->journal, b->run_id);
    }
    return r;
}

void batch_init(struct batch *b, const struct prov_config *cfg,
                const struct prov_batch_opts *opts)
{
    memset(b, 0, sizeof(*b));
    b->cfg = cfg;
    b->opts = opts;
    b->manifest = opts->manifest;
    b->pin_spec = opts->pin_spec;
    b->prove_url = opts->prove_url;
    b->fd = -1;
    pthread_mutex_init(&b->queue_lock, NULL);
    batch_tokens_init(&b->tokens, cfg);
    pthread_mutex_init(&b->stats_lock, NULL);
}

void batch_free(struct batch *b)
{
    prov_progress_free(b->progress);
    prov_journal_close(b->journal);
    prov_issuer_close(b->issuer);
    prov_manifest_parser_free(b->parser);
    for (size_t i = 0; i < b->n_groups; i++) {
        free(b->groups[i].device_uri);
    }
    batch_tokens_free(&b->tokens);
    free(b->groups);
    free(b->rows);
    free(b->order);
    free(b->is_reissue_seen);
    free(b->lot);
    prov_strset_free(&b->group_index);
    pthread_mutex_destroy(&b->queue_lock);
    pthread_mutex_destroy(&b->stats_lock);
    if (b->fd >= 0) {
        close(b->fd);
    }
}

int prov_batch_run(const struct prov_config *cfg, const struct prov_batch_opts *opts,
                   struct prov_batch_summary *sum)
{
    struct batch b;
    double start = now_seconds();
    int r = PROV_ERR_NOMEM;

    memset(sum, 0, sizeof(*sum));
    batch_init(&b, cfg, opts);
    /* --journal, else [provisioner] journal (a file or the shared ledger), else beside it */
    sum->journal = opts->journal ? strdup(opts->journal)
                   : cfg->journal ? strdup(cfg->journal)
                                  : prov_batch_default_path(opts->manifest, ".journal.sqlite");
    sum->results = opts->results ? strdup(opts->results)
                                 : prov_batch_default_path(opts->manifest, ".results.csv");
    b.lot = prov_batch_lot_name(cfg, opts->manifest);
    b.is_reissue_seen = calloc(opts->n_reissue + 1, sizeof(bool));
    if (sum->journal == NULL || sum->results == NULL || b.lot == NULL ||
        b.is_reissue_seen == NULL) {
        goto out;
    }
    r = batch_validate(&b);
    sum->n_findings = b.parser ? prov_manifest_error_count(b.parser) : 0;
    sum->n_rows = b.n_rows;
    if (r == 0) {
        r = check_reissue_list(&b);
    }
    if (r == 0) {
        r = batch_check_pin_source(&b);
    }
    if (r == 0) {
        r = check_outputs(cfg, sum);
    }
    if (r < 0 || opts->is_check_only) {
        goto out;
    }
    r = enroll_lot(&b, sum);
    sum->n_issued = b.n_issued;
    sum->n_already = b.n_already;
    sum->n_elsewhere = b.n_elsewhere;
    sum->n_failed = b.n_failed;
out:
    sum->seconds = now_seconds() - start;
    sum->devices_per_second = sum->seconds > 0 ? (double)sum->n_rows / sum->seconds : 0;
    batch_free(&b);
    if (sum->journal != NULL && prov_journal_is_ledger(sum->journal)) {
        /* the summary is printed: a password in the ledger's URI must not be */
        char *shown = prov_journal_name(sum->journal);

        free(sum->journal);
        sum->journal = shown;
    }
    return r;
}
