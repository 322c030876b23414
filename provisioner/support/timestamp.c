/* SPDX-License-Identifier: Apache-2.0 */
#include "timestamp.h"

#include <stdio.h>
#include <time.h>

static void format_at(const struct timespec *ts, char *out, size_t cap)
{
    struct tm tm;
    size_t n;

    gmtime_r(&ts->tv_sec, &tm);
    n = strftime(out, cap, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, cap - n, ".%03ldZ", ts->tv_nsec / 1000000);
}

void prov_timestamp_now(char *out, size_t cap)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    format_at(&ts, out, cap);
}

void prov_timestamp_ago(long seconds, char *out, size_t cap)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec -= seconds;
    format_at(&ts, out, cap);
}

double prov_timestamp_seconds(const char *text)
{
    struct tm tm = {0};
    int ms = 0;
    int n = 0;

    if (text == NULL ||
        sscanf(text, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
               &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &n) != 6) {
        return -1;
    }
    if (text[n] == '.') {
        sscanf(text + n + 1, "%3d", &ms);
    }
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (double)timegm(&tm) + ms / 1000.0;
}
