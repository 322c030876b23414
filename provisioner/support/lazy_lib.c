/* SPDX-License-Identifier: Apache-2.0 */
#include "lazy_lib.h"

#include <dlfcn.h>
#include <stdio.h>

/*
 * pthread_once takes no argument, so the library being loaded is handed over in a
 * thread-local: the once routine runs in the thread that called prov_lazy_lib_load.
 */
static _Thread_local struct prov_lazy_lib *loading;

static void load_once(void)
{
    struct prov_lazy_lib *lib = loading;
    const char *missing = NULL;
    void *h;

    /* RTLD_LOCAL: its symbols stay its own; RTLD_NOW: an unresolved one fails here */
    h = dlopen(lib->soname, RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        const char *e = dlerror();

        snprintf(lib->why, sizeof(lib->why), "%s cannot be loaded (%s)", lib->soname,
                 e != NULL ? e : "no reason given");
        return;
    }
    if (lib->fill(h, &missing) < 0) {
        /* the handle stays open: a library whose constructors ran is not unloaded */
        snprintf(lib->why, sizeof(lib->why), "%s has no %s (too old a version?)", lib->soname,
                 missing != NULL ? missing : "function the tool needs");
        return;
    }
    lib->is_loaded = true;
}

int prov_lazy_lib_load(struct prov_lazy_lib *lib)
{
    loading = lib;
    pthread_once(&lib->once, load_once);
    loading = NULL;
    return lib->is_loaded ? 0 : -1;
}

const char *prov_lazy_lib_why(const struct prov_lazy_lib *lib)
{
    return lib->why;
}
