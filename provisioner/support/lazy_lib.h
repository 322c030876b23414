/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_LAZY_LIB_H
#define PROV_LAZY_LIB_H

#include <pthread.h>
#include <stdbool.h>
#include <string.h>

/*
 * A shared library loaded with dlopen at its first use instead of by the dynamic linker at
 * every start. libpq and libcurl bring Kerberos, LDAP, SASL, GnuTLS and a dozen more libraries
 * with them, whose loading and constructors cost every run of the tool about 8 ms on the
 * benchmark machine (bench/README.md, "Start-up"), also the runs that never reach a
 * PostgreSQL server or an HTTPS peer: a batch on SQLite, `check`, a station's one device.
 * pq_api.h and curl_api.h hold the two tables of functions; their callers load them where the
 * first connection is made and report a missing library as that connection's failure.
 * sd_api.h does the same for libsystemd (with libgcrypt, liblzma, libzstd, liblz4 and libcap:
 * about 2 ms of every start), which only `ca serve` under a service manager needs, and
 * backends/tpm/tss2_api.h for tpm2-tss (1.3 ms), which only a TPM needs.
 *
 * fill looks up every function the table holds in the opened library (PROV_LAZY_SYM), and
 * names the first one missing. Loading is done once per process, in the first caller's thread;
 * every later call returns the first outcome.
 */
struct prov_lazy_lib {
    const char *soname; /* the library's SONAME, e.g. "libpq.so.5" */
    int (*fill)(void *handle, const char **missing);
    pthread_once_t once;
    bool is_loaded;
    char why[256]; /* why it could not be loaded, when it could not */
};

#define PROV_LAZY_LIB_INIT(soname, fill) {(soname), (fill), PTHREAD_ONCE_INIT, false, ""}

/*
 * In a fill function: sets the function pointer slot from the symbol of the same name in
 * handle, or names it in *missing and returns -1. (A function pointer is copied from dlsym's
 * void *, which POSIX makes the same size.)
 */
#define PROV_LAZY_SYM(handle, slot, name, missing)                                          \
    do {                                                                                    \
        void *prov_sym_ = dlsym((handle), (name));                                          \
        if (prov_sym_ == NULL) {                                                            \
            *(missing) = (name);                                                            \
            return -1;                                                                      \
        }                                                                                   \
        memcpy(&(slot), &prov_sym_, sizeof(prov_sym_));                                     \
    } while (0)

/*
 * Loads lib and fills its table: 0, or -1 with prov_lazy_lib_why(lib) saying why (the library
 * is missing, or lacks a function). Sets no error text: the caller names its object.
 */
int prov_lazy_lib_load(struct prov_lazy_lib *lib);

/* One line: why lib could not be loaded ("" when it was, or was not tried). */
const char *prov_lazy_lib_why(const struct prov_lazy_lib *lib);

#endif
