/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_DURABLE_H
#define PROV_DURABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/types.h>

/* Durable file I/O (durable.c): what storage.c, the CA and the batch's results write with. */

/*
 * Writes path atomically: a temp file in the same directory (O_EXCL|O_NOFOLLOW, mode),
 * write, fsync, read back and compare, rename over path, fsync of the directory. Errors:
 * PROV_ERR_STORAGE naming the file and errno text; no temp file is left behind.
 */
int prov_atomic_write_file(const char *path, const void *buf, size_t len, mode_t mode);

/*
 * A file too big to hold in memory (the batch's results), written as prov_atomic_write_file
 * writes: open creates "path.tmp.XXXXXX" (exclusively, mode whatever the umask) and gives a
 * stdio stream on it; what reaches the file is hashed (SHA-256) as it goes. commit flushes,
 * syncs, reads the file back and compares its length and hash, renames it over path and syncs
 * the directory; abort removes the temp file. Both free s (NULL is accepted by abort); the
 * temp file is gone whatever commit returns, except renamed into place. Memory: the stream's
 * buffer, whatever the size. PROV_ERR_STORAGE naming path and errno text, PROV_ERR_NOMEM.
 */
struct prov_durable_stream;
int prov_durable_stream_open(const char *path, mode_t mode, struct prov_durable_stream **out);
FILE *prov_durable_stream_file(struct prov_durable_stream *s);
int prov_durable_stream_commit(struct prov_durable_stream *s);
void prov_durable_stream_abort(struct prov_durable_stream *s);

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
 * Syncs the directory that holds path: for a storage directory an earlier run made, which
 * may have stopped between its mkdir and that sync (prov_storage_mkdirs), before anything
 * recorded as durable comes to depend on the directory's entry.
 */
int prov_storage_sync_parent(const char *path);

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
 * Writes buf into a new "path.tmp.XXXXXX" (created exclusively, then given mode regardless of
 * the umask), syncs it and reads it back. On success *tmp_out names the temp file (the caller
 * renames or unlinks it, and frees the name); on failure nothing is left behind.
 * PROV_ERR_STORAGE naming path, PROV_ERR_NOMEM.
 */
int prov_write_temp_file(const char *path, const void *buf, size_t len, mode_t mode,
                         char **tmp_out);

/* fsync of a directory, so that the entries it gained or lost last. PROV_ERR_STORAGE. */
int prov_fsync_dir(const char *dir);

/*
 * Reads a whole file of at most 4 MiB into *out (NUL-terminated, *out_len without the NUL,
 * freed by the caller). err is the code for a missing, unreadable or larger file, recorded
 * naming path; PROV_ERR_NOMEM.
 */
int prov_read_small_file(const char *path, int err, unsigned char **out, size_t *out_len);

#endif
