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
    bool is_crl_run;       /* --crl was given and the certificates could be read */
    bool is_crl_ok;        /* ...no certificate revoked, the leaf's issuer's CRL given */
    int revoked_reason;    /* RFC 5280 code of the first revoked certificate; -1: none */
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

/*
 * After prov_check_identity*: client.crt and chain.pem of dir against crls (crl.h
 * prov_crl_check_chain). Sets is_crl_run, is_crl_ok and revoked_reason; a revoked certificate
 * or a missing CRL is a failure (res->detail, when no earlier failure is there): returns
 * PROV_ERR_VERIFY; 0 when it passed. Files that cannot be read leave is_crl_run false
 * (prov_check_identity reported them).
 */
struct stack_st_X509_CRL;
int prov_check_revocation(const char *dir, struct stack_st_X509_CRL *crls, const char *crl_path,
                          struct prov_check_result *res);

void prov_check_result_clear(struct prov_check_result *res);

#endif
