/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_SECRET_H
#define PROV_SECRET_H

#include <stdbool.h>
#include <stddef.h>

/*
 * A PIN or passphrase. data is NUL-terminated; len excludes the NUL. Always released with
 * prov_secret_free(), which wipes before freeing.
 */
struct prov_secret {
    char *source; /* the file: or env: source it was read from (not secret), or NULL */
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

/*
 * Never lock a token, across tokens: one PIN source (a lot's device_pin, --pin) often serves
 * many tokens, and a PIN one token rejected would be wrong for the others too. A backend
 * brackets every PIN it sends to a token (token: its name for messages):
 *
 *     r = prov_secret_send_begin(pin, token, &send);     refuses, nothing sent, when a token
 *     ... C_Login ...                                     rejected pin->source in this process
 *     prov_secret_send_end(pin, token, verdict, &send);
 *
 * The refusal is PROV_ERR_PIN_LOCKED ("rejected by token X; not tried on the others"). A
 * source no token has accepted yet is sent by one caller at a time, so that parallel batch
 * workers do not each spend a try on a wrong PIN; once a token accepted it, sends run in
 * parallel. Secrets without a source (fd:, prompt: read afresh each time) pass unchecked.
 */
enum prov_secret_verdict {
    PROV_SECRET_ACCEPTED, /* the token logged in with it */
    PROV_SECRET_REJECTED, /* the token said the PIN is wrong */
    PROV_SECRET_UNKNOWN,  /* no answer about the PIN (device gone, other error) */
};

struct prov_secret_send {
    bool is_exclusive; /* holds the first-send lock */
    int lock_fd;       /* holds PREFIX.pin.lock (persisted rejections), else -1 */
};

int prov_secret_send_begin(const struct prov_secret *pin, const char *token,
                           struct prov_secret_send *send);
void prov_secret_send_end(const struct prov_secret *pin, const char *token,
                          enum prov_secret_verdict verdict, struct prov_secret_send *send);

/*
 * For processes that follow each other on one lot (stations): a rejection is also recorded in
 * "PREFIX.pin-rejected.source-HASH" (HASH: of the source's text; the file names the source
 * and the token, never the PIN) and every send checks for it, under an exclusive flock of
 * "PREFIX.pin.lock" held around the send. An operator fixes the PIN source, then removes the
 * file. prefix is copied; NULL turns it off.
 */
void prov_secret_rejections_persist(const char *prefix);

#endif
