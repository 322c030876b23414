/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_INTERRUPT_H
#define PROV_INTERRUPT_H

#include <stdbool.h>

/*
 * SIGINT, SIGTERM and SIGHUP (Ctrl-C, `systemctl stop`, a closed terminal) never cut a call
 * into a token or a TPM short. SoftHSM2 2.6.1 rewrites a token's token.object in place on
 * every C_Login (truncate, then write): a process that dies in between leaves an empty file,
 * and the token - the CA token too - is gone. So these signals only record themselves
 * (prov_interrupt_install, the binary's first act), and the work stops at its next safe
 * point, between device operations, where the code asks prov_interrupt_check():
 *
 * - a batch takes no new row; a row in progress is rolled back when its certificate was not
 *   issued yet (prov_enroll deletes the new key) or else finished; the results are written,
 *   the run is left unfinished (the same command resumes it) and the run ends with
 *   PROV_ERR_INTERRUPTED (exit 1);
 * - a station stops before the CA login and before the row, or skips its end-of-line check
 *   when the row is done (the next arrival does it);
 * - enroll and csr roll back before the key is generated or before the CA signs; after that
 *   they finish. Shorter commands (sign, install, ca init, check) finish what they do.
 *
 * SIGKILL cannot be handled: the kill tests repair SoftHSM2's token files after it.
 */

/*
 * Installs the handlers (SA_RESTART: a library call in progress is never failed by EINTR).
 * With is_notice, the first signal also writes one line to stderr saying that the tool stops
 * at the next safe point (an operator at a terminal sees that Ctrl-C was heard).
 */
void prov_interrupt_install(bool is_notice);

/* The first of those signals received, 0 when none. Safe from any thread. */
int prov_interrupt_signal(void);

/* "SIGINT", "SIGTERM", "SIGHUP" (or "signal N") for a signal number. */
const char *prov_interrupt_name(int sig);

/*
 * 0 when no signal asked the process to stop; otherwise PROV_ERR_INTERRUPTED with
 * "WHAT: interrupted by SIGTERM before STEP" recorded (what and step name the object and the
 * point, e.g. "serial SN-1", "its key was generated").
 */
int prov_interrupt_check(const char *what, const char *step);

#endif
