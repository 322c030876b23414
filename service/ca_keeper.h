/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_SERVICE_CA_KEEPER_H
#define PROV_SERVICE_CA_KEEPER_H

#include <stdbool.h>
#include <time.h>

#include <openssl/x509.h>

#include "cmp_server.h"
#include "config.h"
#include "est_server.h"

/*
 * The open CA behind `provisioner ca serve` (doc/ca-service.md, "The CA token comes and
 * goes"): the CA with its key, the CMP signer, and the CMP and EST servers that use them.
 *
 * The CA token may go away (pulled, the HSM restarting): a request that fails is followed by
 * a look at the token (the CA key's attributes read on its session); when that fails the CA
 * is closed (the PKCS#11 module finalized with it) and the service is "unavailable": it
 * answers so without touching the token, and re-opens the CA (the module initialized again,
 * the login, the CA key and the CMP signer's key found again by URI and certificate) at most
 * once a second until that works. A PIN the token rejects is never sent again: the service
 * stays unavailable until it is restarted with the right one.
 */
struct prov_ca_keeper;

enum prov_ca_state {
    PROV_CA_UP,
    PROV_CA_UNAVAILABLE,  /* re-opened once a second */
    PROV_CA_PIN_REFUSED,  /* the token rejected the PIN: not tried again */
};

struct prov_ca_keeper_opts {
    const struct prov_config *cfg; /* borrowed */
    const char *profile;           /* NULL: "device" */
    bool est;                      /* EST too (over TLS only) */
    /*
     * Finalizes and unloads the token modules no open device uses (the CLI gives the
     * backends' own: prov_pkcs11_unload_all), so that the next open initializes the module
     * again: a token module keeps its slots and sessions from its C_Initialize. May be NULL.
     */
    void (*release_modules)(void);
    /* one log line (no newline) on every change of state; arg is log_arg */
    void (*log)(void *arg, const char *line);
    void *log_arg;
};

/* Opens the CA and the servers: a CA that cannot be opened at start ends the service. */
int prov_ca_keeper_open(const struct prov_ca_keeper_opts *opts, struct prov_ca_keeper **out);

struct prov_cmp_server *prov_ca_keeper_cmp(struct prov_ca_keeper *k);
struct prov_est_server *prov_ca_keeper_est(struct prov_ca_keeper *k); /* NULL without EST */
X509 *prov_ca_keeper_root(const struct prov_ca_keeper *k);            /* borrowed */

/*
 * Whether the CA can serve now; when it has been unavailable for a second or more it is
 * re-opened first. *why: the reason when not (borrowed until the next call).
 */
bool prov_ca_keeper_available(struct prov_ca_keeper *k, time_t now, const char **why);

/* After a request that failed: when the CA token no longer answers, the CA is closed. */
void prov_ca_keeper_check(struct prov_ca_keeper *k, time_t now);

/*
 * The configuration read again (SIGHUP): cfg (borrowed from now on; the caller keeps the old
 * one alive until the keeper is freed) gives the profiles and the CA service's settings that
 * can change while it runs: the served profile's subject, extensions, lifetime and key rules
 * (the CSR policy), and the other profiles. What the open CA was opened with cannot
 * change without a restart: the PKCS#11 module, [ca] dir, intermediate_key and pin; nor may
 * the served profile go. Either refuses the reload, PROV_ERR_CONFIG with the reason, and
 * nothing changes. said gets what was reloaded, for the log line.
 */
int prov_ca_keeper_reload(struct prov_ca_keeper *k, const struct prov_config *cfg, char *said,
                          size_t cap);

enum prov_ca_state prov_ca_keeper_state(const struct prov_ca_keeper *k);
const char *prov_ca_state_name(enum prov_ca_state s); /* "up", "unavailable", "pin-refused" */
unsigned long prov_ca_keeper_reopened(const struct prov_ca_keeper *k); /* times re-opened */

void prov_ca_keeper_free(struct prov_ca_keeper *k);

#endif
