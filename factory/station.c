/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One device at the fixture (the flow is described in station.h): resolve, identify, pick
 * and claim its row, enroll it with the batch row logic, prove, report.
 */
#include "station.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "backend.h"
#include "device.h"
#include "batch_internal.h"
#include "check.h"
#include "connect.h"
#include "error.h"
#include "interrupt.h"
#include "issuer.h"
#include "journal.h"
#include "log.h"
#include "secret.h"

static const char *const status_names[] = {"failed", "issued", "already-issued", "excluded"};

const char *prov_station_status_name(enum prov_station_status st)
{
    return status_names[st <= PROV_STATION_EXCLUDED ? st : PROV_STATION_FAILED];
}

void prov_station_result_clear(struct prov_station_result *res)
{
    free(res->instance);
    free(res->device_uri);
    free(res->identity);
    free(res->serial);
    free(res->cert_serial);
    free(res->sha256);
    free(res->not_after);
    free(res->storage);
    free(res->reason);
    memset(res, 0, sizeof(*res));
}

/* What the run holds; freed by station_free. */
struct station {
    const struct prov_config *cfg;
    const struct prov_station_opts *opts;
    struct prov_station_config sc;
    struct prov_batch_opts bopts;
    struct batch b;
    bool is_batch_init;
    bool is_next_free;
    const char *prove_url;
    char *backend;         /* "pkcs11" / "tpm2" */
    char *ident;           /* the backend's identity string */
    char **serials;        /* every row's serial (next-free), or the one matching row */
    size_t n_serials;
    uint32_t *rows;        /* the row index of serials[i] */
    char *journal;         /* the journal's path, or the ledger's URI */
    char *local;           /* the prefix of the station's own files (PIN markers, CA lock) */
    bool is_ca_stage;      /* opening the CA (a PIN rejected now is the CA's) */
    size_t n_matching;     /* rows naming this device (row-by-identity) */
    struct prov_journal_row_lock *row_lock;
};

static void station_free(struct station *s)
{
    if (s->is_batch_init) {
        batch_free(&s->b);
    }
    prov_journal_row_unlock(s->row_lock);
    for (size_t i = 0; i < s->n_serials; i++) {
        free(s->serials[i]);
    }
    free(s->serials);
    free(s->rows);
    free(s->journal);
    free(s->local);
    free(s->backend);
    free(s->ident);
    prov_station_config_clear(&s->sc);
}

/* ---- identify ---------------------------------------------------------------------------- */

static double seconds_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * Opens the device, waiting up to [station] device_wait seconds for it to show up: udev
 * starts the unit when the USB device appears, which can be before pcscd has attached the
 * reader (or the TPM driver its node), and the oneshot unit would otherwise fail with exit
 * 4 and not run again until the device is plugged in again. Each new attempt asks the
 * backend to look for newly attached devices (rescan). Any other error is not waited out.
 */
static int open_waiting(struct station *s, const char *uri, struct prov_device_params *params,
                        struct prov_device **dev)
{
    double deadline = seconds_now() + (double)s->sc.device_wait;
    char *first = NULL;
    int attempts = 0;
    int r;

    for (;;) {
        params->rescan = attempts++ > 0;
        r = prov_device_open(uri, params, dev);
        if ((r != PROV_ERR_NOT_FOUND && r != PROV_ERR_DEVICE_REMOVED) ||
            seconds_now() >= deadline) {
            break;
        }
        if (first == NULL && prov_error_message() != NULL) {
            first = strdup(prov_error_message());
        }
        prov_debug("station", "%s: not there yet (attempt %d): %s; looking again in 1 s", uri,
                   attempts, prov_error_message() ? prov_error_message() : prov_strerror(r));
        prov_error_clear();
        sleep(1);
    }
    if ((r == PROV_ERR_NOT_FOUND || r == PROV_ERR_DEVICE_REMOVED) && attempts > 1) {
        char *last = strdup(prov_error_message() ? prov_error_message() : prov_strerror(r));

        prov_error_clear();
        r = prov_fail(r, "%s (still after waiting %ld s for it: [station] device_wait)",
                      last ? last : prov_strerror(r), s->sc.device_wait);
        free(last);
    } else if (r == 0 && attempts > 1) {
        prov_info("%s: there after %d attempts (%s)", uri, attempts, first ? first : "");
    }
    free(first);
    return r;
}

/*
 * Opens the device read-only and reads its identity. An only-token entry ("pkcs11:" with
 * just the module) is pinned to the token it found: its backend rebuilds the device string
 * with that token's serial ("pkcs11:serial=SERIAL?module-path=...", both values
 * percent-encoded), so every later open names exactly this token.
 */
static int identify(struct station *s, struct prov_station_result *res, bool is_pkcs11_any)
{
    struct prov_device_params params;
    struct prov_device *dev = NULL;
    char ident[512];
    int r;

    prov_device_params_from_config(s->cfg, true, &params);
    r = open_waiting(s, res->device_uri, &params, &dev);
    /* The CA's own token is never a device: refused before a row is claimed for it. */
    if (r == 0) {
        r = prov_issuer_check_device_for(s->cfg, res->device_uri, dev);
    }
    if (r == 0) {
        r = dev->ops->identity(dev, ident, sizeof(ident));
    }
    if (r == 0) {
        s->backend = strdup(dev->ops->name);
        s->ident = strdup(ident);
        if (asprintf(&res->identity, "%s:%s", dev->ops->name, ident) < 0) {
            res->identity = NULL;
        }
        r = s->backend && s->ident && res->identity ? 0 : PROV_ERR_NOMEM;
    }
    if (r == 0 && is_pkcs11_any) {
        char *pinned = NULL;

        r = prov_device_uri_pin(res->device_uri, ident, &pinned);
        if (r == 0) {
            free(res->device_uri);
            res->device_uri = pinned;
        }
    }
    prov_device_close(dev);
    return r;
}

/* ---- pick the row ------------------------------------------------------------------------ */

struct collect_ctx {
    struct station *s;
    uint32_t index;
};

static int add_serial(struct station *s, const char *serial, uint32_t index)
{
    char **a = realloc(s->serials, (s->n_serials + 1) * sizeof(*a));
    uint32_t *rows;

    if (a == NULL) {
        return PROV_ERR_NOMEM;
    }
    s->serials = a;
    rows = realloc(s->rows, (s->n_serials + 1) * sizeof(*rows));
    if (rows == NULL) {
        return PROV_ERR_NOMEM;
    }
    s->rows = rows;
    s->serials[s->n_serials] = strdup(serial);
    s->rows[s->n_serials] = index;
    if (s->serials[s->n_serials] == NULL) {
        return PROV_ERR_NOMEM;
    }
    s->n_serials++;
    return 0;
}

/* Every row in next-free mode; only rows naming this device in row-by-identity mode. */
static int collect_row(void *ctx, struct prov_manifest_parser *p,
                       const struct prov_manifest_row *row)
{
    struct collect_ctx *c = ctx;
    struct station *s = c->s;

    if (s->is_next_free) {
        return add_serial(s, row->value[PROV_COL_SERIAL], c->index);
    }
    if (prov_station_row_names(row->value[PROV_COL_DEVICE], s->backend, s->ident)) {
        s->n_matching++;
        return s->n_matching == 1 ? add_serial(s, row->value[PROV_COL_SERIAL], c->index) : 0;
    }
    return 0;
}

static int collect_rows(struct station *s, const struct prov_station_result *res)
{
    int r = 0;

    for (uint32_t i = 0; i < s->b.n_rows && r == 0; i++) {
        struct collect_ctx c = {.s = s, .index = i};

        r = batch_run_row(&s->b, i, collect_row, &c);
    }
    if (r == 0 && !s->is_next_free && s->n_matching == 0) {
        r = prov_fail(PROV_ERR_POLICY, "device %s: no row of %s names it (mode row-by-identity)",
                      res->identity, s->bopts.manifest);
    } else if (r == 0 && !s->is_next_free && s->n_matching > 1) {
        r = prov_fail(PROV_ERR_CONFIG, "device %s: %zu rows of %s name it", res->identity,
                      s->n_matching, s->bopts.manifest);
    }
    return r;
}

/* ---- prove ------------------------------------------------------------------------------- */

/*
 * The end-of-line check of a written identity: the challenge proof of `check` (the device key
 * signs a fresh challenge that verifies with client.crt, the chain passes doc/chains.md's rules,
 * server-ca.pem holds CA certificates). The mTLS proof (`--prove URL`, doc/storage.md) is the batch
 * row's last step (prov_batch_opts.prove_url), so its outcome is in the journal
 * (proven with mtls=URL, or failed with the side that refused) before this runs.
 */
static int station_prove(const struct prov_config *cfg, const char *dir, const char *pin_spec)
{
    struct prov_check_result cr;
    int r;

    memset(&cr, 0, sizeof(cr));
    r = prov_check_identity(cfg, dir, pin_spec, &cr);
    if (r == PROV_ERR_VERIFY && prov_error_message() == NULL) {
        r = prov_fail(PROV_ERR_VERIFY, "%s: proof failed: %s", dir, cr.detail);
    }
    prov_check_result_clear(&cr);
    return r;
}

/* ---- enroll ------------------------------------------------------------------------------ */

/*
 * A failure that may be the device leaving: if the device can no longer be opened, the
 * failure is reported as removal (exit 4), whatever error the backend saw first (a pulled
 * USB token, a deleted token directory, a stopped TPM simulator all look different).
 */
static int classify_removal(const struct station *s, const char *device_uri, int err)
{
    struct prov_device_params params;
    struct prov_device *dev = NULL;
    int r;

    if (err == PROV_ERR_DEVICE_REMOVED || err == PROV_ERR_POLICY ||
        err == PROV_ERR_ALREADY_ISSUED || err == PROV_ERR_PIN_INCORRECT ||
        err == PROV_ERR_PIN_LOCKED || err == PROV_ERR_JOURNAL || err == PROV_ERR_INTERRUPTED) {
        return err;
    }
    prov_device_params_from_config(s->cfg, true, &params);
    r = prov_device_open(device_uri, &params, &dev);
    prov_device_close(dev);
    prov_error_clear();
    return r == PROV_ERR_NOT_FOUND || r == PROV_ERR_DEVICE_REMOVED || r == PROV_ERR_DEVICE
               ? PROV_ERR_DEVICE_REMOVED
               : err;
}

static char *dup_or_null(const char *s)
{
    return s != NULL && s[0] != '\0' ? strdup(s) : NULL;
}

/* The journal's view of the row after the run: certificate facts, storage, reason. */
static void fill_from_journal(struct station *s, struct prov_station_result *res)
{
    struct prov_journal_device d;

    if (prov_journal_get(s->b.journal, s->b.lot_id, res->serial, &d) < 0) {
        prov_error_clear();
        return;
    }
    res->storage = dup_or_null(d.storage);
    if (res->status != PROV_STATION_FAILED) {
        res->cert_serial = dup_or_null(d.cert_serial);
        res->sha256 = dup_or_null(d.sha256);
        res->not_after = dup_or_null(d.not_after);
    } else if (res->reason == NULL) {
        res->reason = dup_or_null(d.error);
    }
    prov_journal_device_clear(&d);
}

static int enroll_row(struct station *s, size_t pick, struct prov_station_result *res)
{
    struct batch_group g = {0};
    struct batch_row_job job = {0};
    uint32_t index = s->rows[pick];
    char *row_pin = NULL;
    int r;

    g.device_uri = res->device_uri;
    g.first = g.last = index;
    g.count = 1;
    job.b = &s->b;
    job.g = &g;
    job.index = index;
    job.device_uri = res->device_uri;
    r = batch_run_row(&s->b, index, batch_row_handle, &job);
    if (r < 0) {
        batch_row_unreadable(&s->b, index);
        return r;
    }
    if (s->b.rows[index].status == BATCH_ELSEWHERE) {
        /* on the ledger another station holds the row's lease: nothing was done here */
        res->status = PROV_STATION_FAILED;
        res->err = PROV_ERR_JOURNAL;
        if (asprintf(&res->reason,
                     "serial %s: another station holds the row's lease in the ledger; the "
                     "next arrival resumes it",
                     res->serial) < 0) {
            res->reason = NULL;
        }
        return 0;
    }
    if (s->b.rows[index].status == BATCH_FAILED) {
        int seen = job.err ? job.err : PROV_ERR_INTERNAL;

        res->status = PROV_STATION_FAILED;
        res->err = classify_removal(s, res->device_uri, seen);
        fill_from_journal(s, res);
        /* the batch rules leave a row the signal rolled back to one line for the run */
        if (res->err == PROV_ERR_INTERRUPTED && res->reason != NULL) {
            prov_err("%s", res->reason);
        }
        /* the backend may already have said "removed" (a TPM connection lost mid-command) */
        if (res->err == PROV_ERR_DEVICE_REMOVED && res->reason != NULL &&
            strncmp(res->reason, "device removed", 14) != 0) {
            char *text = NULL;

            if (asprintf(&text, "device removed mid-enrollment: %s", res->reason) >= 0) {
                free(res->reason);
                res->reason = text;
            }
        }
        return 0;
    }
    res->status = s->b.rows[index].status == BATCH_ALREADY ? PROV_STATION_ALREADY
                                                            : PROV_STATION_ISSUED;
    fill_from_journal(s, res);
    prov_error_clear();
    /* enrolled and proven in the journal: a signal skips only the end-of-line check, which
     * the next arrival (already-issued) makes */
    r = prov_interrupt_check("the station", "the end-of-line check; the next arrival makes it");
    if (r < 0) {
        res->status = PROV_STATION_FAILED;
        res->err = r;
        res->reason = strdup(prov_error_message());
        prov_err("serial %s: %s", res->serial, res->reason ? res->reason : "interrupted");
        prov_error_clear();
        return 0;
    }
    /* With the row's own PIN source (manifest column pin), as its enrollment used. */
    r = batch_row_pin_spec(&s->b, index, &row_pin);
    if (r == 0) {
        r = station_prove(s->cfg, res->storage, row_pin ? row_pin : s->bopts.pin_spec);
    }
    free(row_pin);
    if (r < 0) {
        const char *msg = prov_error_message();

        res->status = PROV_STATION_FAILED;
        res->err = classify_removal(s, res->device_uri, r);
        res->reason = strdup(msg ? msg : prov_strerror(r));
        prov_err("serial %s: %s", res->serial, res->reason ? res->reason : "proof failed");
        prov_error_clear();
        if (prov_journal_record_failed(s->b.journal, s->b.lot_id, res->serial, res->device_uri,
                                       res->reason ? res->reason : "proof failed") < 0) {
            prov_err("%s", prov_error_message());
        }
    }
    return 0;
}

/*
 * The prefix of the files the station processes of one host share: the journal's path, or
 * for the ledger (a URI, no file) the manifest's path with ".ledger-" and the first 16 hex
 * digits of the SHA-256 of the ledger's URI, password masked (doc/ledger.md).
 */
static char *local_prefix(const char *journal, const char *manifest)
{
    unsigned char md[32];
    char suffix[8 + 17];
    char *name;
    int ok;

    if (!prov_journal_is_ledger(journal)) {
        return strdup(journal);
    }
    name = prov_journal_name(journal);
    if (name == NULL) {
        return NULL;
    }
    ok = EVP_Digest(name, strlen(name), md, NULL, EVP_sha256(), NULL);
    free(name);
    if (!ok) {
        return NULL;
    }
    memcpy(suffix, ".ledger-", 8);
    for (int i = 0; i < 8; i++) {
        snprintf(suffix + 8 + 2 * i, 3, "%02x", md[i]);
    }
    return prov_batch_default_path(manifest, suffix);
}

/*
 * Never lock a token (doc/keys.md): the backend never sends a rejected PIN twice, but each
 * arrival starts a new process. A PIN rejected in one station run is remembered next to the
 * journal ("JOURNAL.pin-rejected.NAME", NAME = "ca" or the device identity; on the ledger
 * beside the manifest, local_prefix), and later runs refuse to log in (PROV_ERR_PIN_LOCKED)
 * until an operator has fixed the PIN source and removed the file.
 */
static char *pin_marker(const struct station *s, const char *name)
{
    char *path = NULL;

    if (asprintf(&path, "%s.pin-rejected.%s", s->local, name) < 0) {
        return NULL;
    }
    for (char *p = path + strlen(s->local) + 14; *p != '\0'; p++) {
        if (!isalnum((unsigned char)*p) && *p != '.' && *p != '-') {
            *p = '_';
        }
    }
    return path;
}

static int pin_not_rejected_before(const struct station *s, const char *name, const char *what)
{
    char *path = pin_marker(s, name);
    int r = 0;

    if (path == NULL) {
        return PROV_ERR_NOMEM;
    }
    if (access(path, F_OK) == 0) {
        r = prov_fail(PROV_ERR_PIN_LOCKED,
                      "%s was rejected in an earlier station run (%s); not trying it again: fix "
                      "it, then remove that file",
                      what, path);
    }
    free(path);
    return r;
}

/* The marker of a PIN that name's token rejected (reason: the error, never the PIN). */
static void remember_rejected_pin(const struct station *s, const char *name, const char *reason)
{
    char *path;
    FILE *f;

    if (s->local == NULL || name == NULL) {
        return;
    }
    path = pin_marker(s, name);
    f = path ? fopen(path, "wx") : NULL;
    if (f != NULL) {
        fprintf(f, "%s\n", reason ? reason : "PIN rejected");
        fclose(f);
    } else if (path != NULL) {
        prov_warn("%s: cannot record the rejected PIN: %s", path, strerror(errno));
    }
    free(path);
}

/*
 * The CA token is shared by every station of the line. Opening it logs in, and SoftHSM2
 * rewrites its token file on every C_Login (doc/platform.md): the logins of station processes
 * are serialized with "JOURNAL.ca.lock" (local_prefix; waiting, held only while the CA is opened). The
 * rejected-PIN marker is checked again and written under that lock: a station that waited
 * while another one's login was refused must not send the same PIN.
 */
static int open_ca(struct station *s)
{
    char *path = NULL;
    int fd;
    int r;

    if (asprintf(&path, "%s.ca.lock", s->local) < 0) {
        return PROV_ERR_NOMEM;
    }
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0 || flock(fd, LOCK_EX) != 0) {
        r = prov_fail(PROV_ERR_JOURNAL, "%s: %s", path, strerror(errno));
    } else {
        r = pin_not_rejected_before(s, "ca", "[ca] pin");
        r = r ? r : prov_issuer_open(s->cfg, NULL, &s->b.issuer);
        if (r == PROV_ERR_PIN_INCORRECT) {
            remember_rejected_pin(s, "ca", prov_error_message());
        }
    }
    if (fd >= 0) {
        close(fd);
    }
    free(path);
    return r;
}

/* ---- the run ----------------------------------------------------------------------------- */

static int setup(struct station *s, struct prov_station_result *res)
{
    const char *mode;
    bool is_pkcs11_any = false;
    int r;

    r = prov_station_config_load(s->cfg, &s->sc);
    if (r < 0) {
        return r;
    }
    mode = s->opts->mode ? s->opts->mode : s->sc.mode ? s->sc.mode : "row-by-identity";
    if (strcmp(mode, "next-free") == 0) {
        s->is_next_free = true;
    } else if (strcmp(mode, "row-by-identity") != 0) {
        return prov_fail(PROV_ERR_USAGE, "mode %s: use row-by-identity or next-free", mode);
    }
    s->bopts.manifest = s->opts->manifest ? s->opts->manifest : s->sc.manifest;
    s->bopts.journal = s->opts->journal ? s->opts->journal
                       : s->sc.journal  ? s->sc.journal
                                        : s->cfg->journal;
    s->bopts.pin_spec = s->opts->pin_spec;
    s->bopts.on_finding = s->opts->on_finding;
    s->bopts.finding_ctx = s->opts->finding_ctx;
    s->prove_url = s->opts->prove_url ? s->opts->prove_url : s->sc.prove;
    if (s->bopts.manifest == NULL) {
        return prov_fail(PROV_ERR_USAGE, "station: no manifest (--manifest or [station] manifest "
                         "in %s)", s->cfg->path);
    }
    s->journal = s->bopts.journal ? strdup(s->bopts.journal)
                                  : prov_batch_default_path(s->bopts.manifest, ".journal.sqlite");
    s->local = s->journal ? local_prefix(s->journal, s->bopts.manifest) : NULL;
    if (s->local == NULL) {
        return PROV_ERR_NOMEM;
    }
    /* a PIN source one station's token rejected is not sent by the next station of the lot */
    prov_secret_rejections_persist(s->local);
    /* a bad URL or an unreadable manifest is a usage error before any device is touched */
    if (s->prove_url != NULL && (r = prov_connect_url_check(s->prove_url)) < 0) {
        return r;
    }
    r = prov_batch_manifest_check(s->bopts.manifest);
    if (r < 0) {
        return r;
    }
    s->bopts.prove_url = s->prove_url;
    r = prov_station_device_for(s->cfg, &s->sc, s->opts->instance, &res->device_uri,
                                &is_pkcs11_any);
    return r < 0 ? r : identify(s, res, is_pkcs11_any);
}

static int pick_and_enroll(struct station *s, struct prov_station_result *res)
{
    char station[256];
    size_t pick = 0;
    int r;

    batch_init(&s->b, s->cfg, &s->bopts);
    s->is_batch_init = true;
    s->b.is_fixture = true;
    s->b.lot = prov_batch_lot_name(s->cfg, s->bopts.manifest);
    if (s->b.lot == NULL) {
        return PROV_ERR_NOMEM;
    }
    r = batch_validate(&s->b);
    res->n_findings = s->b.parser ? prov_manifest_error_count(s->b.parser) : 0;
    r = r ? r : batch_check_pin_source(&s->b);
    r = r ? r : collect_rows(s, res);
    if (r < 0) {
        return r;
    }
    r = pin_not_rejected_before(s, "ca", "[ca] pin");
    r = r ? r : pin_not_rejected_before(s, res->identity, "the device PIN");
    if (r < 0) {
        return r;
    }
    /* station@ units of one host are stations of their own: each its chain, its leases */
    prov_batch_station_name(s->cfg, s->opts->station, s->opts->instance, station,
                            sizeof(station));
    r = prov_journal_open_shared_with(s->journal, s->cfg->journal_password, station,
                                      &s->b.journal);
    if (r == 0) {
        /* the row's lease and its fencing are the batch row's (batch_row.c, do_row) */
        prov_journal_set_lease(s->b.journal, s->cfg->journal_lease);
    }
    r = r ? r : prov_journal_lot(s->b.journal, s->b.lot, s->bopts.manifest, &s->b.lot_id);
    r = r ? r : prov_journal_station_claim(s->b.journal, s->b.lot_id, res->identity,
                                           s->opts->instance, (const char *const *)s->serials,
                                           s->n_serials, s->is_next_free, &pick);
    res->serial = r == 0 ? strdup(s->serials[pick]) : NULL;
    if (r == 0 && res->serial == NULL) {
        r = PROV_ERR_NOMEM;
    }
    r = r ? r : prov_journal_row_lock(s->b.journal, s->b.lot_id, res->serial, &s->row_lock);
    /* the claim is by identity: a device found under a new name is still this row's */
    r = r ? r : prov_journal_station_follow(s->b.journal, s->b.lot_id, res->serial,
                                            res->identity, res->device_uri);
    r = r ? r : prov_interrupt_check("the station", "the CA login; the next arrival resumes");
    if (r == 0) {
        s->is_ca_stage = true;
        r = open_ca(s);
        s->is_ca_stage = r < 0;
    }
    r = r ? r : prov_interrupt_check("the station",
                                      "the row's enrollment; the next arrival resumes");
    return r ? r : enroll_row(s, pick, res);
}

int prov_station_run(const struct prov_config *cfg, const struct prov_station_opts *opts,
                     struct prov_station_result *res)
{
    struct station s;
    int r;

    memset(res, 0, sizeof(*res));
    memset(&s, 0, sizeof(s));
    s.cfg = cfg;
    s.opts = opts;
    res->instance = strdup(opts->instance ? opts->instance : "");
    if (res->instance == NULL) {
        return PROV_ERR_NOMEM;
    }
    r = setup(&s, res);
    if (r == 0 && prov_station_is_excluded(&s.sc, res->identity)) {
        /* the station PC's own TPM (or any device listed): no row, no journal, no PIN */
        res->status = PROV_STATION_EXCLUDED;
        res->reason = strdup("[station] exclude lists this device; not served");
        station_free(&s);
        return res->reason != NULL ? 0 : PROV_ERR_NOMEM;
    }
    if (r == 0) {
        r = pick_and_enroll(&s, res);
    }
    if (r < 0) {
        const char *msg = prov_error_message();

        res->status = PROV_STATION_FAILED;
        res->err = r;
        if (res->reason == NULL) {
            res->reason = strdup(msg ? msg : prov_strerror(r));
        }
        if (res->device_uri != NULL && r != PROV_ERR_USAGE && r != PROV_ERR_CONFIG &&
            r != PROV_ERR_INPUT && r != PROV_ERR_JOURNAL) {
            res->err = classify_removal(&s, res->device_uri, r);
        }
    }
    /* the CA's marker is written by open_ca, under the CA lock */
    if (res->err == PROV_ERR_PIN_INCORRECT && !s.is_ca_stage) {
        remember_rejected_pin(&s, res->identity, res->reason);
    }
    station_free(&s);
    return r;
}
