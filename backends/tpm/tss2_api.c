/* SPDX-License-Identifier: Apache-2.0 */
#define PROV_TSS2_API_TABLE /* the table itself, under its own names */
#include "tss2_api.h"

#include <dlfcn.h>
#include <stdatomic.h>

#include "lazy_lib.h"

struct prov_tss2_api prov_tss2;

#define PROV_TSS2_LOAD(f) PROV_LAZY_SYM(h, prov_tss2.f, #f, missing);

static int fill_esys(void *h, const char **missing)
{
    PROV_TSS2_ESYS_FUNCTIONS(PROV_TSS2_LOAD)
    return 0;
}

static int fill_tctildr(void *h, const char **missing)
{
    PROV_TSS2_TCTILDR_FUNCTIONS(PROV_TSS2_LOAD)
    return 0;
}

static int fill_rc(void *h, const char **missing)
{
    PROV_TSS2_RC_FUNCTIONS(PROV_TSS2_LOAD)
    return 0;
}

static struct prov_lazy_lib libs[] = {
    PROV_LAZY_LIB_INIT(PROV_TSS2_ESYS_SONAME, fill_esys),
    PROV_LAZY_LIB_INIT(PROV_TSS2_TCTILDR_SONAME, fill_tctildr),
    PROV_LAZY_LIB_INIT(PROV_TSS2_RC_SONAME, fill_rc),
};
static const char *why = "";
static atomic_bool is_loaded;

int prov_tss2_load(void)
{
    for (size_t i = 0; i < sizeof(libs) / sizeof(libs[0]); i++) {
        if (prov_lazy_lib_load(&libs[i]) < 0) {
            why = prov_lazy_lib_why(&libs[i]);
            return -1;
        }
    }
    atomic_store(&is_loaded, true);
    return 0;
}

const char *prov_tss2_why(void)
{
    return why;
}

bool prov_tss2_is_loaded(void)
{
    return atomic_load(&is_loaded);
}
