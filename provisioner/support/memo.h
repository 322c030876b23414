/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_MEMO_H
#define PROV_MEMO_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

/*
 * Checks a batch repeats on the same bytes for every device, remembered by the SHA-256 of
 * those bytes: a CA certificate's signature (chain.c), the CSR the token has just signed and
 * that issuing checks again (csr.c), the server CA file copied into every storage directory
 * (storage.c). Only successes are added; anything that differs in one bit has another digest
 * and is checked. A few slots, shared by the process's threads, replaced oldest first.
 */
#define PROV_MEMO_SLOTS 16

struct prov_memo {
    pthread_mutex_t lock;
    size_t n;
    size_t next;
    unsigned char digest[PROV_MEMO_SLOTS][32];
};

#define PROV_MEMO_INIT {PTHREAD_MUTEX_INITIALIZER, 0, 0, {{0}}}

/* SHA-256 of a followed by b (b may be NULL with blen 0); false when it cannot be computed. */
bool prov_memo_digest(unsigned char out[32], const void *a, size_t alen, const void *b,
                      size_t blen);

/* Whether d was added (and not yet replaced). */
bool prov_memo_has(struct prov_memo *m, const unsigned char d[32]);

/* Remembers d, replacing the oldest when the slots are full. */
void prov_memo_add(struct prov_memo *m, const unsigned char d[32]);

#endif
