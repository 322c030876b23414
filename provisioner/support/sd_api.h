/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_SD_API_H
#define PROV_SD_API_H

/*
 * libsystemd's readiness and watchdog notifications for `ca serve` under a Type=notify unit
 * (udev/provisioner-ca.service), loaded only when the service manager asks for them
 * (lazy_lib.h says why not at every start: libsystemd brings libgcrypt, liblzma, libzstd,
 * liblz4 and libcap with it, about 2 ms of every start on the benchmark machine,
 * bench/README.md "Start-up"). The manager asks by setting NOTIFY_SOCKET (readiness, status,
 * stopping) or WATCHDOG_USEC (the watchdog); without either, sd_notify would do nothing and
 * nothing is loaded.
 */
#include <stdint.h>

#include <systemd/sd-daemon.h>

#define PROV_SD_SONAME "libsystemd.so.0"

#define PROV_SD_FUNCTIONS(X) X(sd_notify) X(sd_watchdog_enabled)

struct prov_sd_api {
#define PROV_SD_SLOT(f) __typeof__(f) *f;
    PROV_SD_FUNCTIONS(PROV_SD_SLOT)
#undef PROV_SD_SLOT
};

/*
 * Whether the service manager asks for notifications, and if so libsystemd loaded: 0 (asked
 * and loaded, or not asked), or -1 with prov_sd_why() saying why it could not be loaded.
 */
int prov_sd_load_if_asked(void);

/* Why libsystemd could not be loaded, on one line ("" when it was, or was not tried). */
const char *prov_sd_why(void);

/* sd_notify(0, state) once loaded; nothing (0) when no manager asked. */
int prov_sd_notify(const char *state);

/* sd_watchdog_enabled(0, usec) once loaded; 0 (no watchdog) when no manager asked. */
int prov_sd_watchdog_enabled(uint64_t *usec);

#endif
