/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_SECRET_H
#define PROV_SECRET_H

#include <stddef.h>

/*
 * A PIN or passphrase. data is NUL-terminated; len excludes the NUL. Always released with
 * prov_secret_free(), which wipes before freeing.
 */
struct prov_secret {
    size_t len;
    char data[];
};

enum prov_secret_kind {
    PROV_SECRET_FILE,   /* file:PATH — exactly one trailing "\n" or "\r\n" stripped; what
                           remains must be one line of at most 1 KiB. Opened O_NOFOLLOW; a
                           file readable by group/others works but warns. */
    PROV_SECRET_ENV,    /* env:VAR — the variable's value */
    PROV_SECRET_FD,     /* fd:N — read to EOF (or first newline) from an inherited descriptor */
    PROV_SECRET_PROMPT, /* prompt — asked on /dev/tty without echo */
};

/*
 * Parses a PIN source specification without touching anything. On success *kind is set and
 * *arg points into spec (NULL for prompt). Returns PROV_ERR_CONFIG for anything else — a
 * bare PIN in particular is refused, so that PINs never appear in argv or configs. Records no
 * error text (the caller names where the spec came from, and must not echo it: it may be a PIN).
 */
int prov_secret_parse_source(const char *spec, enum prov_secret_kind *kind, const char **arg);

/*
 * Reads the secret named by spec. what names it in errors and prompts ("CA token PIN").
 * Errors: PROV_ERR_CONFIG (bad spec), PROV_ERR_PIN_SOURCE (cannot read, empty), NOMEM.
 */
int prov_secret_load(const char *spec, const char *what, struct prov_secret **out);

/* Makes a secret from bytes (tests, and PINs handed over by a parent process). */
int prov_secret_from_buf(const char *buf, size_t len, struct prov_secret **out);

void prov_secret_free(struct prov_secret *s);

/* Marks the process non-dumpable while secrets are held (prctl PR_SET_DUMPABLE 0). */
void prov_secret_protect_process(void);

#endif
