/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_TIMESTAMP_H
#define PROV_TIMESTAMP_H

#include <stddef.h>

/*
 * Now as the journal and the CA index record times: RFC 3339 UTC with milliseconds,
 * "2026-12-05T16:34:32.123Z" (25 bytes with the NUL; cap 32 is plenty).
 */
void prov_timestamp_now(char *out, size_t cap);

/*
 * The time seconds ago in the same format: text comparisons of such times order them, so a
 * window ("the last minute") is one comparison in any SQL store (provisioner/pki/ca_registry.c).
 */
void prov_timestamp_ago(long seconds, char *out, size_t cap);

/* Seconds since the epoch of a time in that format (milliseconds optional); -1 if not one. */
double prov_timestamp_seconds(const char *text);

#endif
