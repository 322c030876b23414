/* SPDX-License-Identifier: Apache-2.0 */
/* Binding a statement's arguments by a type string (sqlite_bind.h). */
#include "sqlite_bind.h"

#include <stddef.h>

int prov_sqlite_bind(sqlite3_stmt *st, const char *types, va_list ap)
{
    int rc = SQLITE_OK;

    for (int i = 0; types[i] != '\0' && rc == SQLITE_OK; i++) {
        if (types[i] == 't') {
            const char *s = va_arg(ap, const char *);

            rc = s ? sqlite3_bind_text(st, i + 1, s, -1, SQLITE_TRANSIENT)
                   : sqlite3_bind_null(st, i + 1);
        } else if (types[i] == 'i') {
            rc = sqlite3_bind_int64(st, i + 1, va_arg(ap, long long));
        } else {
            const void *b = va_arg(ap, const void *);
            size_t n = va_arg(ap, size_t);

            rc = b ? sqlite3_bind_blob(st, i + 1, b, (int)n, SQLITE_TRANSIENT)
                   : sqlite3_bind_null(st, i + 1);
        }
    }
    return rc;
}
