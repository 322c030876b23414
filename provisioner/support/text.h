/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_TEXT_H
#define PROV_TEXT_H

#include <stdbool.h>
#include <string.h>

/* Whether two strings that may be absent (NULL) are the same: both absent, or equal. */
static inline bool prov_same_text(const char *a, const char *b)
{
    return a == NULL ? b == NULL : b != NULL && strcmp(a, b) == 0;
}

#endif
