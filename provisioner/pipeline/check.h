/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_CHECK_H
#define PROV_CHECK_H

#include <stdbool.h>

#include "config.h"
#include "connect.h"
#include "storage.h"

/* The outcome of each re-proof step of `check DIR` (doc/storage.md). */
struct prov_check_result {
    bool is_storage_ok;    /* every file present and parsable, fullchain = cert + chain */
    bool is_key_proven;    /* the device key signed a fresh challenge that verified */
    bool is_chain_ok;      /* client.crt + chain.pem pass doc/chains.md, clientAuth */
    bool is_server_ca_ok;  /* server-ca.pem holds CA certificates that parse */
    char detail[1024];     /* the first failure, one line; empty when all passed */
    struct prov_cert_facts facts;
    char *serial;          /* owned */
    char *key_uri;         /* owned */
    bool is_connect_run;   /* a --connect URL was given and the key proof let it run */
    struct prov_connect_result connect; /* the mTLS proof, when is_connect_run */
};

/*
 * Re-proves the identity written in dir. Opens the device named by key.uri (logging in with
 * pin_spec, NULL: cfg->device_pin) and makes it sign a fresh random challenge. Returns 0 when
 * every step passed, PROV_ERR_VERIFY when a step failed (see res), another error when the
 * check could not be carried out (device missing, PIN).
 */
int prov_check_identity(const struct prov_config *cfg, const char *dir, const char *pin_spec,
                        struct prov_check_result *res);

/*
 * As prov_check_identity, then, when every step passed and url is not NULL, the mTLS proof
 * with the same device key (prov_connect_prove): res->connect says which side refused and
 * why. Returns PROV_ERR_VERIFY when the proof was refused, PROV_ERR_USAGE for a bad URL.
 */
int prov_check_identity_connect(const struct prov_config *cfg, const char *dir,
                                const char *pin_spec, const char *url,
                                struct prov_check_result *res);

void prov_check_result_clear(struct prov_check_result *res);

#endif
