/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_FACTORY_BATCH_TOKENS_H
#define PROV_FACTORY_BATCH_TOKENS_H

/*
 * The locks of a run's physical tokens (and TPMs), by identity (token serial, TPM EK): two
 * URIs naming one token share its lock, so every operation on a token runs under that
 * token's own lock whichever URI a row names it by. One question is asked without it: a
 * worker's check that the session it kept from its last row still answers (backend.h,
 * is_open; factory/batch_row.c, kept_device_serves), which only reads.
 */

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "strset.h"

struct batch_token {
    char *identity;
    pthread_mutex_t lock;
    bool may_share; /* a second worker's session fits beside one's (backend.h, may_share) */
};

struct batch_tokens {
    const struct prov_config *cfg; /* how the devices are opened to read their identity */
    pthread_mutex_t lock;          /* guards index and v */
    struct prov_strset index;      /* identity -> v[] */
    struct batch_token **v;
    size_t n;
    size_t cap;
};

void batch_tokens_init(struct batch_tokens *t, const struct prov_config *cfg);
void batch_tokens_free(struct batch_tokens *t);

/*
 * The token behind uri, found by its identity: the device is opened once, read-only,
 * without logging in. Two URIs for one token get one lock.
 */
int batch_tokens_resolve(struct batch_tokens *t, const char *uri, struct batch_token **out);

/*
 * batch_tokens_resolve through a group's cache (struct batch_group.token): resolved on the
 * first call and stored there; the group's two workers may both resolve it, and both find
 * the same token (by identity).
 */
int batch_tokens_resolve_cached(struct batch_tokens *t, const char *uri,
                                struct batch_token *_Atomic *cache, struct batch_token **out);

/*
 * The token lock one row holds, at most one at a time. A row that works on two tokens (a key
 * left on the device the manifest named before, a superseded key on the old device of a
 * reissue) takes them one after the other, so two workers can never each hold a token the
 * other waits for.
 */
struct batch_hold {
    struct batch_tokens *tokens;
    const char *group_uri;             /* the row's group's device, whose token is cached: */
    /* resolved on first need; NULL: no group. Two workers may share a group: both may
       resolve it, and both find the same token (by identity) */
    struct batch_token *_Atomic *group_token;
    const char *serial;                /* named in the debug lines */
    struct batch_token *token;         /* held while set */
};

/* Holds the lock of the token behind uri, and only that one: one held before is released. */
int batch_hold_token(struct batch_hold *h, const char *uri);

/* Releases the lock held, if any. */
void batch_release_token(struct batch_hold *h);

#endif
