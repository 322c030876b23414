/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_CURL_API_H
#define PROV_CURL_API_H

/*
 * libcurl, loaded at the first HTTPS request (lazy_lib.h says why). Include this header
 * instead of <curl/curl.h>: the curl functions the tool calls go through the table below
 * under their own names, with libcurl's own prototypes. Every user calls prov_curl_load()
 * before its first easy handle; curl_easy_cleanup and curl_slist_free_all also take NULL
 * before anything was loaded. libcurl's compile-time type check of curl_easy_setopt's and
 * curl_easy_getinfo's third argument (a macro around the real function) cannot wrap a call
 * through a pointer, so those two calls go unchecked.
 *
 * A function the tool starts to call must be added to the table, or the build fails on its
 * use (libcurl is not linked). tests/integration/batch/test_batch_lot.sh runs a lot where libcurl
 * cannot be loaded: a binary that linked it would not start.
 */
#include <curl/curl.h>

#define PROV_CURL_SONAME "libcurl.so.4"

#define PROV_CURL_FUNCTIONS(X)                                                              \
    X(curl_easy_cleanup) X(curl_easy_getinfo) X(curl_easy_init) X(curl_easy_perform)        \
    X(curl_easy_setopt) X(curl_easy_strerror) X(curl_global_init) X(curl_slist_append)      \
    X(curl_slist_free_all)

#undef curl_easy_setopt
#undef curl_easy_getinfo

struct prov_curl_api {
#define PROV_CURL_SLOT(f) __typeof__(f) *f;
    PROV_CURL_FUNCTIONS(PROV_CURL_SLOT)
#undef PROV_CURL_SLOT
};

extern struct prov_curl_api prov_curl;

/* Loads libcurl and runs curl_global_init once: 0, or -1 with prov_curl_why() saying why. */
int prov_curl_load(void);

/* Why libcurl could not be loaded, on one line ("" when it was). */
const char *prov_curl_why(void);

static inline void prov_curl_easy_cleanup(CURL *c)
{
    if (c != NULL) {
        prov_curl.curl_easy_cleanup(c);
    }
}

static inline void prov_curl_slist_free_all(struct curl_slist *l)
{
    if (l != NULL) {
        prov_curl.curl_slist_free_all(l);
    }
}

#ifndef PROV_CURL_API_TABLE
#define curl_easy_cleanup prov_curl_easy_cleanup
#define curl_easy_getinfo prov_curl.curl_easy_getinfo
#define curl_easy_init prov_curl.curl_easy_init
#define curl_easy_perform prov_curl.curl_easy_perform
#define curl_easy_setopt prov_curl.curl_easy_setopt
#define curl_easy_strerror prov_curl.curl_easy_strerror
#define curl_global_init prov_curl.curl_global_init
#define curl_slist_append prov_curl.curl_slist_append
#define curl_slist_free_all prov_curl_slist_free_all
#endif

#endif
