/* SPDX-License-Identifier: Apache-2.0 */
/* The audit chains' record hash (audit_hash.h). */
#include "audit_hash.h"

#include <stdint.h>
#include <string.h>

#include <openssl/evp.h>

#include "error.h"
#include "hex.h"

static void put_be(unsigned char *out, uint64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        out[i] = (unsigned char)(v & 0xff);
        v >>= 8;
    }
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

int prov_audit_hash(const char *prev_hex, long long seq, const char *const text[PROV_AUDIT_FIELDS],
                    char out[65])
{
    unsigned char prev[32];
    unsigned char num[8];
    unsigned char md[32];
    unsigned int md_len = 0;
    EVP_MD_CTX *ctx;
    int ok;

    if (prev_hex == NULL || strlen(prev_hex) != 64) {
        return PROV_ERR_VERIFY;
    }
    for (int i = 0; i < 32; i++) {
        int hi = hex_value(prev_hex[2 * i]);
        int lo = hex_value(prev_hex[2 * i + 1]);

        if (hi < 0 || lo < 0) {
            return PROV_ERR_VERIFY;
        }
        prev[i] = (unsigned char)(hi << 4 | lo);
    }
    ctx = EVP_MD_CTX_new();
    put_be(num, (uint64_t)seq, 8);
    ok = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 &&
         EVP_DigestUpdate(ctx, prev, sizeof(prev)) == 1 &&
         EVP_DigestUpdate(ctx, num, sizeof(num)) == 1;
    for (int i = 0; i < PROV_AUDIT_FIELDS && ok; i++) {
        size_t len = strlen(text[i]);

        put_be(num, len, 4);
        ok = EVP_DigestUpdate(ctx, num, 4) == 1 && EVP_DigestUpdate(ctx, text[i], len) == 1;
    }
    ok = ok && EVP_DigestFinal_ex(ctx, md, &md_len) == 1 && md_len == 32;
    EVP_MD_CTX_free(ctx);
    if (!ok) {
        return prov_fail_ossl(PROV_ERR_CRYPTO, "audit record %lld: SHA-256 failed", seq);
    }
    prov_hex_encode(md, sizeof(md), out);
    return 0;
}
