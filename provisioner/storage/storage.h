/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_STORAGE_H
#define PROV_STORAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <openssl/x509.h>

#include "cert_facts.h"
#include "durable.h"
#include "keytype.h"

/*
 * A device's storage directory, the identity in it (storage.c). It builds on durable file
 * I/O (durable.h) and certificate facts (cert_facts.h), which come with this header.
 */

/* What goes into a device's storage directory (doc/storage.md). Strings borrowed. */
struct prov_identity {
    const char *serial;
    X509 *cert;
    STACK_OF(X509) *chain;      /* intermediate(s) then root */
    const char *server_ca_path; /* copied verbatim into server-ca.pem after checking it parses */
    const char *key_uri;        /* the content of key.uri */
    enum prov_key_type key_type;
    const char *backend;        /* "pkcs11" | "tpm2" */
    const char *profile;
    const char *lot;            /* may be NULL */
};

/*
 * Writes every file of doc/storage.md into dir (created 0755 if absent, parents too). All files are
 * prepared in temp files first (each synced and read back byte for byte) and renamed only
 * when all are written; client.crt is renamed last and commits the identity, and an old
 * client.crt is removed (durably) before the first rename. A failure while preparing leaves
 * the previous identity untouched; a stop or failure between the renames leaves no identity
 * (no client.crt) — never an old certificate beside new files.
 */
int prov_storage_write(const char *dir, const struct prov_identity *id);

/*
 * Removes the temp files a stopped write or probe left in dir ("NAME.tmp.XXXXXX",
 * ".provisioner-probe.XXXXXX"): never part of an identity. Returns how many; a missing dir
 * has none. Only for a directory no running write uses.
 */
int prov_storage_remove_temp_files(const char *dir);

/* true when dir already holds an identity (client.crt exists). */
bool prov_storage_has_identity(const char *dir);

/* A written identity read back (check, install verification). */
struct prov_stored_identity {
    X509 *cert;                 /* client.crt */
    STACK_OF(X509) *fullchain;  /* fullchain.pem */
    STACK_OF(X509) *chain;      /* chain.pem */
    STACK_OF(X509) *server_ca;  /* server-ca.pem */
    char *key_uri;              /* key.uri, trailing newline stripped */
    char *serial;               /* from identity.json */
    char *backend;              /* from identity.json */
};

/*
 * Reads dir; PROV_ERR_IO / PROV_ERR_INPUT naming the missing or unparsable file (the first,
 * in the order prov_storage_read_each reads them).
 */
int prov_storage_read(const char *dir, struct prov_stored_identity **out);
/*
 * As prov_storage_read, but file by file, for `check`, which runs each of its checks on its
 * own: what could be read is set, what could not is NULL (serial and backend too when
 * identity.json is bad), and *n_bad counts the files missing or unparsable; the first one's
 * reason is recorded with prov_fail. Returns 0, or PROV_ERR_NOMEM.
 */
int prov_storage_read_each(const char *dir, struct prov_stored_identity **out, int *n_bad);

void prov_stored_identity_free(struct prov_stored_identity *s);

#endif
