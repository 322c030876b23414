/* SPDX-License-Identifier: Apache-2.0 */
#define PROV_CURL_API_TABLE /* the table itself, under its own names */
#include "curl_api.h"

#include <dlfcn.h>

#include "lazy_lib.h"

struct prov_curl_api prov_curl;

static int fill(void *h, const char **missing)
{
#define PROV_CURL_LOAD(f) PROV_LAZY_SYM(h, prov_curl.f, #f, missing);
    PROV_CURL_FUNCTIONS(PROV_CURL_LOAD)
#undef PROV_CURL_LOAD
    return 0;
}

static struct prov_lazy_lib lib = PROV_LAZY_LIB_INIT(PROV_CURL_SONAME, fill);
static pthread_once_t global_once = PTHREAD_ONCE_INIT;

/* libcurl's global set-up is not thread-safe: once, before any easy handle. */
static void global_init(void)
{
    prov_curl.curl_global_init(CURL_GLOBAL_DEFAULT);
}

int prov_curl_load(void)
{
    if (prov_lazy_lib_load(&lib) < 0) {
        return -1;
    }
    pthread_once(&global_once, global_init);
    return 0;
}

const char *prov_curl_why(void)
{
    return prov_lazy_lib_why(&lib);
}
