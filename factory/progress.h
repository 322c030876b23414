/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_FACTORY_PROGRESS_H
#define PROV_FACTORY_PROGRESS_H

#include <stdbool.h>
#include <stdio.h>

/*
 * Batch progress on stderr. On a terminal: one bar redrawn in place at most ten times a
 * second ("[#####.....] 120/2000 6%  85.3 devices/s  ETA 0:22  1 failed"). Otherwise (a log
 * file, CI): a plain line every 10 seconds or every 5% of the lot, whichever comes first.
 * Messages about single devices go through prov_progress_message so that they do not tear
 * the bar. All calls are thread-safe.
 */
struct prov_progress;

int prov_progress_new(FILE *out, bool is_tty, unsigned long total, struct prov_progress **pr);

/* One more row done (failed or not). */
void prov_progress_step(struct prov_progress *pr, bool is_failed);

/* Prints one line (prefixed "provisioner: "), clearing the bar first. */
void prov_progress_message(struct prov_progress *pr, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The final state, and the bar's line ended. */
void prov_progress_finish(struct prov_progress *pr);

/* Accepts NULL. */
void prov_progress_free(struct prov_progress *pr);

/* Rows per second so far. */
double prov_progress_rate(struct prov_progress *pr);

#endif
