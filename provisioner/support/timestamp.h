/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_TIMESTAMP_H
#define PROV_TIMESTAMP_H

#include <stddef.h>
#include <time.h>

/*
 * Now as the journal and the CA index record times: RFC 3339 UTC with milliseconds,
 * "2026-12-05T16:34:32.123Z" (25 bytes with the NUL; cap 32 is plenty).
 */
void prov_timestamp_now(char *out, size_t cap);

/* secs seconds before now, in the same form: a bound that compares as text ("issued since"). */
void prov_timestamp_ago(long secs, char *out, size_t cap);

/* The second a time of that form names; -1 for text of another form. */
int prov_timestamp_parse(const char *text, time_t *out);

#endif
