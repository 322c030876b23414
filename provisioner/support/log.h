/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_LOG_H
#define PROV_LOG_H

#include <stdbool.h>

/*
 * Diagnostics go to stderr, one line each, prefixed "provisioner: ". stdout is results only
 * and is never written by the library. Debug output is off unless -v was given or
 * PROVISIONER_DEBUG names the category (comma separated: pkcs11,tpm,ca,storage,all).
 */
enum prov_log_level { PROV_LOG_ERR, PROV_LOG_WARN, PROV_LOG_INFO, PROV_LOG_DEBUG };

void prov_log_init(int verbosity, bool quiet);
void prov_log(enum prov_log_level level, const char *category, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
bool prov_log_debug_enabled(const char *category);

#define prov_err(...) prov_log(PROV_LOG_ERR, NULL, __VA_ARGS__)
#define prov_warn(...) prov_log(PROV_LOG_WARN, NULL, __VA_ARGS__)
#define prov_info(...) prov_log(PROV_LOG_INFO, NULL, __VA_ARGS__)
#define prov_debug(cat, ...) prov_log(PROV_LOG_DEBUG, (cat), __VA_ARGS__)

#endif
