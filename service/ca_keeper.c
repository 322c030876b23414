/* SPDX-License-Identifier: Apache-2.0 */
/* The CA behind the service, closed when its token goes and re-opened (ca_keeper.h). */
#include "ca_keeper.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "ca.h"
#include "cmp_signer.h"
#include "error.h"
#include "text.h"

struct prov_ca_keeper {
    struct prov_ca_keeper_opts o;
    struct prov_ca *ca;
    struct prov_cmp_signer signer;
    struct prov_cmp_server *cmp;
    struct prov_est_server *est;
    X509 *root;                /* kept across re-opens: the TLS client CA */
    enum prov_ca_state state;
    time_t since;              /* when it became unavailable */
    time_t last_try;
    unsigned long reopened;
    char why[300];
};

static void say(struct prov_ca_keeper *k, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void say(struct prov_ca_keeper *k, const char *fmt, ...)
{
    char line[400];
    va_list ap;

    if (k->o.log == NULL) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    k->o.log(k->o.log_arg, line);
}

/* The CA and its signer, opened; nothing is left open on failure. */
static int open_ca(struct prov_ca_keeper *k, struct prov_ca **ca, struct prov_cmp_signer *s)
{
    int r;

    prov_error_clear();
    r = prov_ca_open(k->o.cfg, true, ca);
    if (r == 0) {
        r = prov_cmp_signer_open(k->o.cfg, *ca, s);
        if (r < 0) {
            prov_ca_close(*ca);
            *ca = NULL;
        }
    }
    return r;
}

static void close_ca(struct prov_ca_keeper *k, time_t now)
{
    prov_cmp_server_set_ca(k->cmp, NULL, NULL, NULL, now);
    if (k->est != NULL) {
        prov_est_server_set_ca(k->est, NULL);
    }
    prov_cmp_signer_close(&k->signer);
    prov_ca_close(k->ca);
    k->ca = NULL;
    if (k->o.release_modules != NULL) {
        k->o.release_modules();
    }
}

int prov_ca_keeper_open(const struct prov_ca_keeper_opts *opts, struct prov_ca_keeper **out)
{
    struct prov_ca_keeper *k = calloc(1, sizeof(*k));
    struct prov_cmp_server_opts so = {0};
    int r;

    *out = NULL;
    if (k == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "ca serve: out of memory");
    }
    k->o = *opts;
    r = open_ca(k, &k->ca, &k->signer);
    if (r == 0) {
        so.cfg = opts->cfg;
        so.ca = k->ca;
        so.signer_cert = k->signer.cert;
        so.signer_key = k->signer.key;
        so.profile = opts->profile;
        r = prov_cmp_server_new(&so, &k->cmp);
    }
    if (r == 0 && opts->est) {
        r = prov_est_server_new(opts->cfg, k->ca, opts->profile, &k->est);
    }
    if (r == 0) {
        k->root = k->ca->root;
        r = X509_up_ref(k->root) ? 0 : prov_fail(PROV_ERR_NOMEM, "ca serve: out of memory");
        if (r < 0) {
            k->root = NULL;
        }
    }
    if (r < 0) {
        prov_ca_keeper_free(k);
        return r;
    }
    *out = k;
    return 0;
}

struct prov_cmp_server *prov_ca_keeper_cmp(struct prov_ca_keeper *k)
{
    return k->cmp;
}

struct prov_est_server *prov_ca_keeper_est(struct prov_ca_keeper *k)
{
    return k->est;
}

X509 *prov_ca_keeper_root(const struct prov_ca_keeper *k)
{
    return k->root;
}

static bool is_pin_refusal(int r)
{
    return r == PROV_ERR_PIN_INCORRECT || r == PROV_ERR_PIN_LOCKED;
}

/* One attempt to open the CA again (module, login, keys); the state says how it went. */
static void reopen(struct prov_ca_keeper *k, time_t now)
{
    struct prov_cmp_signer s;
    struct prov_ca *ca = NULL;
    int r;

    k->last_try = now;
    r = open_ca(k, &ca, &s);
    if (r < 0 && k->o.release_modules != NULL) {
        k->o.release_modules(); /* initialized again on the next try */
    }
    if (r < 0) {
        if (is_pin_refusal(r)) {
            k->state = PROV_CA_PIN_REFUSED;
            snprintf(k->why, sizeof(k->why), "the CA token rejected the PIN: %s",
                     prov_error_message());
            say(k, "CA unavailable until restarted: %s (the PIN is not tried again)", k->why);
        }
        return;
    }
    k->ca = ca;
    k->signer = s;
    prov_cmp_server_set_ca(k->cmp, ca, s.cert, s.key, now);
    if (k->est != NULL) {
        prov_est_server_set_ca(k->est, ca);
    }
    k->state = PROV_CA_UP;
    k->reopened++;
    say(k, "CA available again after %lld s: token re-opened, CA key and CMP signer found",
        (long long)(now - k->since));
}

bool prov_ca_keeper_available(struct prov_ca_keeper *k, time_t now, const char **why)
{
    if (k->state == PROV_CA_UNAVAILABLE && now != k->last_try) {
        reopen(k, now);
    }
    *why = k->why;
    return k->state == PROV_CA_UP;
}

void prov_ca_keeper_check(struct prov_ca_keeper *k, time_t now)
{
    struct prov_key_props props;
    int r;

    if (k->state != PROV_CA_UP) {
        return;
    }
    prov_error_clear();
    r = k->ca->dev->ops->key_props(k->ca->dev, k->ca->hsm_key, &props);
    if (r == 0) {
        return;
    }
    snprintf(k->why, sizeof(k->why), "the CA token does not answer: %s", prov_error_message());
    say(k, "CA unavailable: %s; re-opened once a second", k->why);
    close_ca(k, now);
    k->state = PROV_CA_UNAVAILABLE;
    k->since = now;
    /* an HSM that restarted answers at once: try now, then once a second */
    reopen(k, now);
}

int prov_ca_keeper_reload(struct prov_ca_keeper *k, const struct prov_config *cfg, char *said,
                          size_t cap)
{
    const struct prov_config *old = k->o.cfg;
    const char *profile = k->o.profile != NULL ? k->o.profile : "device";
    const char *changed = NULL;
    size_t n;
    int r;

    said[0] = '\0';
    if (!prov_same_text(old->pkcs11_module, cfg->pkcs11_module)) {
        changed = "[provisioner] pkcs11_module";
    } else if (!prov_same_text(old->ca_dir, cfg->ca_dir)) {
        changed = "[ca] dir";
    } else if (!prov_same_text(old->ca_key, cfg->ca_key)) {
        changed = "[ca] intermediate_key";
    } else if (!prov_same_text(old->ca_pin, cfg->ca_pin)) {
        changed = "[ca] pin";
    }
    if (changed != NULL) {
        return prov_fail(PROV_ERR_CONFIG, "%s: %s changed: the open CA needs a restart for that",
                         cfg->path, changed);
    }
    if (prov_config_profile(cfg, profile) == NULL) {
        return prov_fail(PROV_ERR_CONFIG, "%s: no [profile_%s], the profile the service issues "
                         "under", cfg->path, profile);
    }
    /* EST first: the one that can still fail (memory); the CMP server then cannot */
    r = k->est != NULL ? prov_est_server_set_config(k->est, cfg) : 0;
    r = r ? r : prov_cmp_server_set_config(k->cmp, cfg);
    if (r < 0) {
        return r;
    }
    k->o.cfg = cfg;
    n = (size_t)snprintf(said, cap, "profiles");
    for (size_t i = 0; i < cfg->n_profiles && n < cap; i++) {
        n += (size_t)snprintf(said + n, cap - n, "%s %s", i == 0 ? "" : ",",
                              cfg->profiles[i].name);
    }
    if (n < cap) {
        snprintf(said + n, cap - n, " (issuing under %s)", profile);
    }
    return 0;
}

enum prov_ca_state prov_ca_keeper_state(const struct prov_ca_keeper *k)
{
    return k->state;
}

const char *prov_ca_state_name(enum prov_ca_state s)
{
    switch (s) {
    case PROV_CA_UP: return "up";
    case PROV_CA_UNAVAILABLE: return "unavailable";
    case PROV_CA_PIN_REFUSED: return "pin-refused";
    }
    return "unknown";
}

unsigned long prov_ca_keeper_reopened(const struct prov_ca_keeper *k)
{
    return k->reopened;
}

void prov_ca_keeper_free(struct prov_ca_keeper *k)
{
    if (k == NULL) {
        return;
    }
    prov_est_server_free(k->est);
    prov_cmp_server_free(k->cmp);
    prov_cmp_signer_close(&k->signer);
    prov_ca_close(k->ca);
    X509_free(k->root);
    free(k);
}
