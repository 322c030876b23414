/* SPDX-License-Identifier: Apache-2.0 */
#include "progress.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"

#define BAR_WIDTH 30
#define TTY_INTERVAL 0.1
#define LINE_INTERVAL 10.0

struct prov_progress {
    FILE *out;
    bool is_tty;
    bool is_bar_drawn;
    int bar_len; /* characters of the bar line on screen, to blank it out */
    unsigned long total;
    unsigned long done;
    unsigned long failed;
    unsigned long last_line_done;
    double start;
    double last_draw;
    pthread_mutex_t lock;
};

static double now_seconds(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int prov_progress_new(FILE *out, bool is_tty, unsigned long total, struct prov_progress **pr)
{
    struct prov_progress *p = calloc(1, sizeof(*p));

    *pr = NULL;
    if (p == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "progress: out of memory");
    }
    p->out = out;
    p->is_tty = is_tty;
    p->total = total;
    p->start = now_seconds();
    p->last_draw = p->start;
    pthread_mutex_init(&p->lock, NULL);
    *pr = p;
    return 0;
}

static double rate_locked(const struct prov_progress *p, double now)
{
    double elapsed = now - p->start;

    return elapsed > 0 ? (double)p->done / elapsed : 0.0;
}

/* "ETA 1:02:03", "ETA 4:05", or "ETA ?" before the first device is done. */
static void format_eta(const struct prov_progress *p, double rate, char *buf, size_t cap)
{
    unsigned long left = p->total > p->done ? p->total - p->done : 0;
    unsigned long s;

    if (rate <= 0) {
        snprintf(buf, cap, "ETA ?");
        return;
    }
    s = (unsigned long)((double)left / rate + 0.5);
    if (s >= 3600) {
        snprintf(buf, cap, "ETA %lu:%02lu:%02lu", s / 3600, s / 60 % 60, s % 60);
    } else {
        snprintf(buf, cap, "ETA %lu:%02lu", s / 60, s % 60);
    }
}

static void draw_locked(struct prov_progress *p, double now)
{
    double rate = rate_locked(p, now);
    unsigned pct = p->total ? (unsigned)(100.0 * (double)p->done / (double)p->total) : 100;
    char eta[32];
    char bar[BAR_WIDTH + 1];
    size_t fill = p->total ? (size_t)(BAR_WIDTH * p->done / p->total) : BAR_WIDTH;

    format_eta(p, rate, eta, sizeof(eta));
    if (p->is_tty) {
        memset(bar, '#', fill);
        memset(bar + fill, '.', BAR_WIDTH - fill);
        bar[BAR_WIDTH] = '\0';
        /* Plain text only, no escape sequences (no colour, no erase-line): a shorter line is
         * padded with spaces over the previous one. */
        int len = fprintf(p->out, "\r[%s] %lu/%lu %3u%%  %.1f devices/s  %s  %lu failed", bar,
                          p->done, p->total, pct, rate, eta, p->failed) - 1;

        fprintf(p->out, "%*s", p->bar_len > len ? p->bar_len - len : 0, "");
        p->bar_len = len > p->bar_len ? len : p->bar_len;
        p->is_bar_drawn = true;
    } else {
        fprintf(p->out, "provisioner: batch: %lu/%lu done (%u%%), %lu failed, %.1f devices/s, %s\n",
                p->done, p->total, pct, p->failed, rate, eta);
        p->last_line_done = p->done;
    }
    fflush(p->out);
    p->last_draw = now;
}

void prov_progress_step(struct prov_progress *pr, bool is_failed)
{
    double now = now_seconds();
    unsigned long every;

    pthread_mutex_lock(&pr->lock);
    pr->done++;
    pr->failed += is_failed;
    every = pr->total / 20 > 0 ? pr->total / 20 : 1;
    if (pr->is_tty
            ? now - pr->last_draw >= TTY_INTERVAL
            : now - pr->last_draw >= LINE_INTERVAL || pr->done - pr->last_line_done >= every) {
        draw_locked(pr, now);
    }
    pthread_mutex_unlock(&pr->lock);
}

void prov_progress_message(struct prov_progress *pr, const char *fmt, ...)
{
    va_list ap;

    pthread_mutex_lock(&pr->lock);
    if (pr->is_bar_drawn) {
        fprintf(pr->out, "\r%*s\r", pr->bar_len, "");
        pr->is_bar_drawn = false;
        pr->bar_len = 0;
    }
    fputs("provisioner: ", pr->out);
    va_start(ap, fmt);
    vfprintf(pr->out, fmt, ap);
    va_end(ap);
    fputc('\n', pr->out);
    fflush(pr->out);
    pthread_mutex_unlock(&pr->lock);
}

void prov_progress_finish(struct prov_progress *pr)
{
    pthread_mutex_lock(&pr->lock);
    if (pr->is_tty || pr->done != pr->last_line_done) {
        draw_locked(pr, now_seconds());
    }
    if (pr->is_tty) {
        fputc('\n', pr->out);
        pr->is_bar_drawn = false;
    }
    fflush(pr->out);
    pthread_mutex_unlock(&pr->lock);
}

double prov_progress_rate(struct prov_progress *pr)
{
    double rate;

    pthread_mutex_lock(&pr->lock);
    rate = rate_locked(pr, now_seconds());
    pthread_mutex_unlock(&pr->lock);
    return rate;
}

void prov_progress_free(struct prov_progress *pr)
{
    if (pr == NULL) {
        return;
    }
    pthread_mutex_destroy(&pr->lock);
    free(pr);
}
