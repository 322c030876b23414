/* SPDX-License-Identifier: Apache-2.0 */
#include "memo.h"

#include <string.h>

#include <openssl/evp.h>

bool prov_memo_digest(unsigned char out[32], const void *a, size_t alen, const void *b,
                      size_t blen)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned int n = 0;
    bool ok = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 &&
              EVP_DigestUpdate(ctx, a, alen) == 1 &&
              (blen == 0 || EVP_DigestUpdate(ctx, b, blen) == 1) &&
              EVP_DigestFinal_ex(ctx, out, &n) == 1 && n == 32;

    EVP_MD_CTX_free(ctx);
    return ok;
}

bool prov_memo_has(struct prov_memo *m, const unsigned char d[32])
{
    bool found = false;

    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < m->n && !found; i++) {
        found = memcmp(m->digest[i], d, 32) == 0;
    }
    pthread_mutex_unlock(&m->lock);
    return found;
}

void prov_memo_add(struct prov_memo *m, const unsigned char d[32])
{
    pthread_mutex_lock(&m->lock);
    memcpy(m->digest[m->next], d, 32);
    m->next = (m->next + 1) % PROV_MEMO_SLOTS;
    if (m->n < PROV_MEMO_SLOTS) {
        m->n++;
    }
    pthread_mutex_unlock(&m->lock);
}
