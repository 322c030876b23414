/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target for an EST request as `ca serve` reads it (service/est_server.h): the path,
 * the method, the Content-Type header and the body (strict base64, then one DER PKCS#10 with
 * nothing after it). Input: the first byte's low bit says POST, then the path up to the first
 * newline, the Content-Type up to the next, and the rest is the body; the body alone also
 * goes through the base64 decoder.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "est_server.h"
#include "fuzz_input.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct prov_est_request rq;
    unsigned char *der = NULL;
    size_t der_len = 0;
    char why[160];
    size_t at = 1;
    char *path;
    char *type;
    bool is_post;

    if (size == 0) {
        return 0;
    }
    is_post = (data[0] & 1) != 0;
    path = fuzz_take_line(data, size, &at);
    type = fuzz_take_line(data, size, &at);
    if (path != NULL && type != NULL && strlen(path) < 4096 &&
        prov_est_parse(path, is_post, type[0] != '\0' ? type : NULL, data + at, size - at, &rq,
                       why, sizeof(why)) == 0) {
        prov_est_request_clear(&rq);
    }
    if (prov_est_base64_decode(data + at, size - at, &der, &der_len) == 0) {
        free(der);
    }
    free(path);
    free(type);
    return 0;
}
