/* SPDX-License-Identifier: Apache-2.0 */
#include "error.h"

#include <stdio.h>
#include <string.h>

#include <openssl/err.h>

/* One message per thread: batch workers fail independently. */
static _Thread_local char err_msg[1024];
static _Thread_local int err_code;

const char *prov_strerror(int err)
{
    switch (err) {
    case PROV_OK: return "success";
    case PROV_ERR_INTERNAL: return "internal error";
    case PROV_ERR_NOMEM: return "out of memory";
    case PROV_ERR_USAGE: return "usage error";
    case PROV_ERR_CONFIG: return "configuration error";
    case PROV_ERR_INPUT: return "bad input";
    case PROV_ERR_PIN_INCORRECT: return "PIN incorrect";
    case PROV_ERR_PIN_LOCKED: return "PIN locked or on its final try";
    case PROV_ERR_PIN_SOURCE: return "PIN source unreadable";
    case PROV_ERR_NOT_FOUND: return "not found";
    case PROV_ERR_DEVICE_REMOVED: return "device removed";
    case PROV_ERR_UNSUPPORTED: return "not supported";
    case PROV_ERR_POLICY: return "refused by policy";
    case PROV_ERR_ALREADY_ISSUED: return "already issued";
    case PROV_ERR_STORAGE: return "storage error";
    case PROV_ERR_JOURNAL: return "journal error";
    case PROV_ERR_DEVICE: return "device error";
    case PROV_ERR_CRYPTO: return "cryptographic operation failed";
    case PROV_ERR_VERIFY: return "verification failed";
    case PROV_ERR_IO: return "I/O error";
    case PROV_ERR_INTERRUPTED: return "interrupted";
    default: return "unknown error";
    }
}

int prov_exit_code(int err)
{
    switch (err) {
    case PROV_OK:
        return PROV_EXIT_OK;
    case PROV_ERR_USAGE:
    case PROV_ERR_CONFIG:
    case PROV_ERR_INPUT: /* an input file given by the operator: missing, unreadable, garbage */
        return PROV_EXIT_USAGE;
    case PROV_ERR_PIN_INCORRECT:
    case PROV_ERR_PIN_LOCKED:
    case PROV_ERR_PIN_SOURCE:
        return PROV_EXIT_AUTH;
    case PROV_ERR_NOT_FOUND:
    case PROV_ERR_DEVICE_REMOVED:
        return PROV_EXIT_NOT_FOUND;
    case PROV_ERR_POLICY:
    case PROV_ERR_ALREADY_ISSUED:
        return PROV_EXIT_POLICY;
    case PROV_ERR_STORAGE:
    case PROV_ERR_JOURNAL:
        return PROV_EXIT_STORAGE;
    default:
        return PROV_EXIT_FAILED;
    }
}

__attribute__((format(printf, 2, 0)))
static void vrecord(int err, const char *fmt, va_list ap)
{
    if (err_msg[0] != '\0') {
        return;
    }
    vsnprintf(err_msg, sizeof(err_msg), fmt, ap);
    /* One line, always: a message is never allowed to break the stderr contract. */
    for (char *p = err_msg; *p; p++) {
        if (*p == '\n' || *p == '\r') {
            *p = ' ';
        }
    }
    err_code = err;
}

int prov_fail(int err, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vrecord(err, fmt, ap);
    va_end(ap);
    return err;
}

int prov_fail_ossl(int err, const char *fmt, ...)
{
    char base[768];
    char ossl[256] = "";
    unsigned long e;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(base, sizeof(base), fmt, ap);
    va_end(ap);
    /* The last queued error is usually the most specific one. */
    while ((e = ERR_get_error()) != 0) {
        ERR_error_string_n(e, ossl, sizeof(ossl));
    }
    if (ossl[0] != '\0') {
        return prov_fail(err, "%s (%s)", base, ossl);
    }
    return prov_fail(err, "%s", base);
}

const char *prov_error_message(void)
{
    return err_msg[0] ? err_msg : NULL;
}

int prov_error_code(void)
{
    return err_code;
}

void prov_error_clear(void)
{
    err_msg[0] = '\0';
    err_code = 0;
    ERR_clear_error();
}
