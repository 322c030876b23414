/* SPDX-License-Identifier: Apache-2.0 */
#include "log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int log_verbosity;
static bool log_quiet;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

void prov_log_init(int verbosity, bool quiet)
{
    log_verbosity = verbosity;
    log_quiet = quiet;
}

bool prov_log_debug_enabled(const char *category)
{
    const char *env;
    size_t n;

    if (log_verbosity >= 2) {
        return true;
    }
    env = getenv("PROVISIONER_DEBUG");
    if (env == NULL || category == NULL) {
        return false;
    }
    n = strlen(category);
    for (const char *p = env; *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);

        if ((len == n && strncmp(p, category, n) == 0) || (len == 3 && !strncmp(p, "all", 3))) {
            return true;
        }
        if (end == NULL) {
            break;
        }
        p = end + 1;
    }
    return false;
}

void prov_log(enum prov_log_level level, const char *category, const char *fmt, ...)
{
    static const char *const prefix[] = {"", "warning: ", "", "debug: "};
    char line[2048];
    va_list ap;

    switch (level) {
    case PROV_LOG_ERR:
        break;
    case PROV_LOG_WARN:
        if (log_quiet) {
            return;
        }
        break;
    case PROV_LOG_INFO:
        if (log_quiet || log_verbosity < 1) {
            return;
        }
        break;
    case PROV_LOG_DEBUG:
        if (!prov_log_debug_enabled(category)) {
            return;
        }
        break;
    }
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    for (char *p = line; *p; p++) {
        if (*p == '\n' || *p == '\r') {
            *p = ' ';
        }
    }
    pthread_mutex_lock(&log_lock);
    /*
     * PROVISIONER_DEBUG=...,clock: each debug line with the monotonic clock, taken under the
     * lock so that the lines' order is the times' (bench/critical.sh reads a batch's token
     * locks from them).
     */
    if (level == PROV_LOG_DEBUG && prov_log_debug_enabled("clock")) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        fprintf(stderr, "provisioner: debug: [%lld.%06ld] %s\n", (long long)ts.tv_sec,
                ts.tv_nsec / 1000, line);
    } else {
        fprintf(stderr, "provisioner: %s%s\n", prefix[level], line);
    }
    pthread_mutex_unlock(&log_lock);
}
