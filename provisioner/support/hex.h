/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_HEX_H
#define PROV_HEX_H

#include <stddef.h>

/* Lower-case hex of the n bytes at in, into out (2n + 1 bytes, NUL-terminated). */
void prov_hex_encode(const unsigned char *in, size_t n, char *out);

#endif
