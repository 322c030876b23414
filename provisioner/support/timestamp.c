/* SPDX-License-Identifier: Apache-2.0 */
#include "timestamp.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

/* ts - secs_back in the one form (timestamp.h) */
static void format(const struct timespec *ts, long secs_back, char *out, size_t cap)
{
    time_t t = ts->tv_sec - (time_t)secs_back;
    struct tm tm;
    size_t n;

    gmtime_r(&t, &tm);
    n = strftime(out, cap, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, cap - n, ".%03ldZ", ts->tv_nsec / 1000000);
}

void prov_timestamp_now(char *out, size_t cap)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    format(&ts, 0, out, cap);
}

void prov_timestamp_ago(long secs, char *out, size_t cap)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    format(&ts, secs, out, cap);
}

int prov_timestamp_parse(const char *text, time_t *out)
{
    struct tm tm;
    char z = '\0';

    memset(&tm, 0, sizeof(tm));
    if (text == NULL || sscanf(text, "%4d-%2d-%2dT%2d:%2d:%2d.%*3d%c", &tm.tm_year, &tm.tm_mon,
                               &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &z) != 7 ||
        z != 'Z') {
        return -1;
    }
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    *out = timegm(&tm);
    return 0;
}
