/* SPDX-License-Identifier: Apache-2.0 */
/* Bytes as lower-case hex: key ids, digests and serial numbers in records and messages. */
#include "hex.h"

void prov_hex_encode(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 0x0f];
    }
    out[2 * n] = '\0';
}
