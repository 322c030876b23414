/* SPDX-License-Identifier: Apache-2.0 */
#define PROV_PQ_API_TABLE /* the table itself, under its own names */
#include "pq_api.h"

#include <dlfcn.h>

#include "lazy_lib.h"

struct prov_pq_api prov_pq;

static int fill(void *h, const char **missing)
{
#define PROV_PQ_LOAD(f) PROV_LAZY_SYM(h, prov_pq.f, #f, missing);
    PROV_PQ_FUNCTIONS(PROV_PQ_LOAD)
#undef PROV_PQ_LOAD
    return 0;
}

static struct prov_lazy_lib lib = PROV_LAZY_LIB_INIT(PROV_PQ_SONAME, fill);

int prov_pq_load(void)
{
    return prov_lazy_lib_load(&lib);
}

const char *prov_pq_why(void)
{
    return prov_lazy_lib_why(&lib);
}
