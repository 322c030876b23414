/* SPDX-License-Identifier: Apache-2.0 */
#include "sd_api.h"

#include <dlfcn.h>
#include <stdbool.h>
#include <stdlib.h>

#include "lazy_lib.h"

static struct prov_sd_api api;

static int fill(void *h, const char **missing)
{
#define PROV_SD_LOAD(f) PROV_LAZY_SYM(h, api.f, #f, missing);
    PROV_SD_FUNCTIONS(PROV_SD_LOAD)
#undef PROV_SD_LOAD
    return 0;
}

static struct prov_lazy_lib lib = PROV_LAZY_LIB_INIT(PROV_SD_SONAME, fill);
static bool is_loaded;

int prov_sd_load_if_asked(void)
{
    const char *sock = getenv("NOTIFY_SOCKET");
    const char *watchdog = getenv("WATCHDOG_USEC");

    if ((sock == NULL || *sock == '\0') && (watchdog == NULL || *watchdog == '\0')) {
        return 0;
    }
    if (prov_lazy_lib_load(&lib) < 0) {
        return -1;
    }
    is_loaded = true;
    return 0;
}

const char *prov_sd_why(void)
{
    return prov_lazy_lib_why(&lib);
}

int prov_sd_notify(const char *state)
{
    return is_loaded ? api.sd_notify(0, state) : 0;
}

int prov_sd_watchdog_enabled(uint64_t *usec)
{
    return is_loaded ? api.sd_watchdog_enabled(0, usec) : 0;
}
