/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_STORAGE_H
#define PROV_STORAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <openssl/x509.h>

#include "keytype.h"

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
 * Writes path atomically: a temp file in the same directory (O_EXCL|O_NOFOLLOW, mode),
 * write, fsync, read back and compare, rename over path, fsync of the directory. Errors:
 * PROV_ERR_STORAGE naming the file and errno text; no temp file is left behind.
 */
int prov_atomic_write_file(const char *path, const void *buf, size_t len, mode_t mode);

/*
 * mkdir(path) for a directory of public files (device storage, the CA directory): mode 0755
 * whatever the umask, because the tool runs under umask 077 (secrets) while device firmware
 * and edge servers read these as other users. Returns mkdir's result (0, or -1 with errno).
 */
int prov_mkdir_public(const char *path);

/*
 * mkdir -p with 0755 directories; each directory that gains an entry is fsynced, so that a
 * new storage directory is as durable as the files later written into it.
 */
int prov_storage_mkdirs(const char *dir);

/*
 * Before anything is made: path can be written as a file — its directory exists and accepts
 * new files, and path itself is not a directory. what names it ("results", "--out"). Nothing
 * is created. PROV_ERR_STORAGE naming what and path.
 */
int prov_storage_check_output_file(const char *path, const char *what);

/*
 * Before anything is made: dir is a writable directory, or can be created (its nearest
 * existing ancestor is a writable directory). Nothing is created. PROV_ERR_STORAGE.
 */
int prov_storage_check_output_dir(const char *dir, const char *what);

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

/* Reads dir; PROV_ERR_IO / PROV_ERR_INPUT naming the missing or unparsable file. */
int prov_storage_read(const char *dir, struct prov_stored_identity **out);
/*
 * As prov_storage_read, but file by file, for `check`, which runs each of its checks on its
 * own: what could be read is set, what could not is NULL (serial and backend too when
 * identity.json is bad), and *n_bad counts the files missing or unparsable; the first one's
 * reason is recorded with prov_fail. Returns 0, or PROV_ERR_NOMEM.
 */
int prov_storage_read_each(const char *dir, struct prov_stored_identity **out, int *n_bad);

void prov_stored_identity_free(struct prov_stored_identity *s);

/* Certificate facts used in identity.json, results and --json output. */
struct prov_cert_facts {
    char serial_hex[2 * 32 + 1]; /* lower-case hex, no colons */
    char sha256_hex[65];         /* SHA-256 of the DER, lower-case hex */
    char not_before[32];         /* RFC 3339 UTC, "2026-11-26T19:40:00Z" */
    char not_after[32];
    char issuer[512];            /* RFC 2253 one-line */
    char subject[512];
};
int prov_cert_facts(X509 *cert, struct prov_cert_facts *f);

#endif
