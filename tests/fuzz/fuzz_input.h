/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_FUZZ_INPUT_H
#define PROV_FUZZ_INPUT_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/*
 * For the fuzz targets whose input starts with lines (fuzz_est.c, fuzz_cmp.c): the bytes up to
 * the next newline (or the end) as a string (malloc'd; NULL when out of memory); *at moves
 * past it.
 */
static inline char *fuzz_take_line(const uint8_t *data, size_t size, size_t *at)
{
    const uint8_t *nl = *at < size ? memchr(data + *at, '\n', size - *at) : NULL;
    size_t n = nl != NULL ? (size_t)(nl - (data + *at)) : size - *at;
    char *s = malloc(n + 1);

    if (s != NULL) {
        memcpy(s, data + *at, n);
        s[n] = '\0';
    }
    *at += n + (nl != NULL ? 1 : 0);
    return s;
}

#endif
