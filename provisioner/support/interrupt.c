/* SPDX-License-Identifier: Apache-2.0 */
/* SIGINT/SIGTERM/SIGHUP recorded, and acted on between device operations (interrupt.h). */
#include "interrupt.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "error.h"

static atomic_int first_signal;
static bool is_notice_wanted;

static const char notice[] = "provisioner: stopping at the next safe point (a token or TPM is "
                             "never cut off in the middle of an operation)\n";

/* Async-signal-safe: an atomic store and one write(2). */
static void on_signal(int sig)
{
    int none = 0;

    if (atomic_compare_exchange_strong(&first_signal, &none, sig) && is_notice_wanted) {
        ssize_t n = write(STDERR_FILENO, notice, sizeof(notice) - 1);

        (void)n;
    }
}

void prov_interrupt_install(bool is_notice)
{
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP};
    struct sigaction sa;

    is_notice_wanted = is_notice;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
        sigaction(sigs[i], &sa, NULL);
    }
}

int prov_interrupt_signal(void)
{
    return atomic_load(&first_signal);
}

const char *prov_interrupt_name(int sig)
{
    static char other[32];

    switch (sig) {
    case SIGINT: return "SIGINT";
    case SIGTERM: return "SIGTERM";
    case SIGHUP: return "SIGHUP";
    default: snprintf(other, sizeof(other), "signal %d", sig); return other;
    }
}

int prov_interrupt_check(const char *what, const char *step)
{
    int sig = prov_interrupt_signal();

    if (sig == 0) {
        return 0;
    }
    return prov_fail(PROV_ERR_INTERRUPTED, "%s: interrupted by %s before %s", what,
                     prov_interrupt_name(sig), step);
}
