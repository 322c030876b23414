/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_ERROR_H
#define PROV_ERROR_H

#include <stdarg.h>

/*
 * Every function returns 0 or a negative PROV_ERR_*. The code says what a station must act
 * on; the text (set once, at the point of failure, with prov_fail()) says which object and
 * why. The text is per thread, so parallel batch workers keep their own.
 */
enum prov_err {
    PROV_OK = 0,
    PROV_ERR_INTERNAL = -1,       /* a bug or an unexpected library failure */
    PROV_ERR_NOMEM = -2,
    PROV_ERR_USAGE = -3,          /* bad command line */
    PROV_ERR_CONFIG = -4,         /* bad config file or value */
    PROV_ERR_INPUT = -5,          /* bad input file (CSR, PEM, manifest): missing, unreadable,
                                     a directory, or not what it should be (exit 2) */
    PROV_ERR_PIN_INCORRECT = -6,  /* the token said the PIN is wrong: never retried */
    PROV_ERR_PIN_LOCKED = -7,     /* locked, final try, or must be changed: login refused */
    PROV_ERR_PIN_SOURCE = -8,     /* the PIN source could not be read */
    PROV_ERR_NOT_FOUND = -9,      /* token, slot, key, TPM not found */
    PROV_ERR_DEVICE_REMOVED = -10,
    PROV_ERR_UNSUPPORTED = -11,   /* mechanism or key type the device cannot do */
    PROV_ERR_POLICY = -12,        /* refused by policy: bad CSR, weak key, lifetime */
    PROV_ERR_ALREADY_ISSUED = -13,/* duplicate serial / key / identity present */
    PROV_ERR_STORAGE = -14,       /* writing the device storage failed */
    PROV_ERR_JOURNAL = -15,
    PROV_ERR_DEVICE = -16,        /* the device or token failed the operation */
    PROV_ERR_CRYPTO = -17,        /* an OpenSSL operation failed */
    PROV_ERR_VERIFY = -18,        /* a chain, signature or proof did not verify */
    PROV_ERR_IO = -19,            /* reading a file failed */
    PROV_ERR_INTERRUPTED = -20,   /* SIGINT/SIGTERM/SIGHUP: stopped at a safe point (exit 1) */
};

/* Process exit codes (doc/exit-codes.md). */
enum prov_exit {
    PROV_EXIT_OK = 0,
    PROV_EXIT_FAILED = 1,
    PROV_EXIT_USAGE = 2,
    PROV_EXIT_AUTH = 3,
    PROV_EXIT_NOT_FOUND = 4,
    PROV_EXIT_POLICY = 5,
    PROV_EXIT_STORAGE = 6,
};

/* Short fixed text for a code ("PIN incorrect"); never NULL. */
const char *prov_strerror(int err);

/* The exit code for an error code (doc/exit-codes.md). */
int prov_exit_code(int err);

/*
 * Records the reason for a failure (printf format, one line, no secrets) in this thread's
 * error slot, unless a reason is already recorded: the deepest, most specific reason wins.
 * Returns err so that callers can write `return prov_fail(PROV_ERR_X, "...")`.
 */
int prov_fail(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* As prov_fail, appending the OpenSSL error queue (and clearing it). */
int prov_fail_ossl(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The recorded reason, or NULL. Valid until the next prov_error_clear() in this thread. */
const char *prov_error_message(void);

/* The code recorded with the message, or 0. */
int prov_error_code(void);

/* Forgets the recorded reason; call at the start of each independent operation. */
void prov_error_clear(void);

#endif
