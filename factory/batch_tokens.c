/* SPDX-License-Identifier: Apache-2.0 */
/* The locks of a run's tokens, by identity (batch_tokens.h). */
#include "batch_tokens.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "device.h"
#include "error.h"
#include "log.h"

void batch_tokens_init(struct batch_tokens *t, const struct prov_config *cfg)
{
    memset(t, 0, sizeof(*t));
    t->cfg = cfg;
    pthread_mutex_init(&t->lock, NULL);
}

void batch_tokens_free(struct batch_tokens *t)
{
    for (size_t i = 0; i < t->n; i++) {
        pthread_mutex_destroy(&t->v[i]->lock);
        free(t->v[i]->identity);
        free(t->v[i]);
    }
    free(t->v);
    prov_strset_free(&t->index);
    pthread_mutex_destroy(&t->lock);
    t->v = NULL;
    t->n = 0;
    t->cap = 0;
}

int batch_tokens_resolve(struct batch_tokens *t, const char *uri, struct batch_token **out)
{
    struct prov_device_params params;
    struct prov_device *dev = NULL;
    char ident[512];
    char *key = NULL;
    unsigned long index = 0;
    bool is_new = false;
    bool may_share;
    int r;

    prov_device_params_from_config(t->cfg, true, &params);
    r = prov_device_open(uri, &params, &dev);
    if (r < 0) {
        return r;
    }
    if (dev->ops->identity(dev, ident, sizeof(ident)) < 0) {
        /* No identity: the URI is the best name we have. */
        prov_error_clear();
        snprintf(ident, sizeof(ident), "%s", uri);
    }
    if (asprintf(&key, "%s:%s", dev->ops->name, ident) < 0) {
        key = NULL;
    }
    may_share = dev->ops->may_share != NULL && dev->ops->may_share(dev);
    prov_device_close(dev);
    if (key == NULL) {
        return PROV_ERR_NOMEM;
    }
    pthread_mutex_lock(&t->lock);
    /*
     * Room and the entry first, the index last: an index entry always names a token that
     * exists, even when memory runs out half way.
     */
    if (!prov_strset_get(&t->index, key, &index)) {
        struct batch_token *tok = NULL;

        if (t->n == t->cap) {
            size_t cap = t->cap ? t->cap * 2 : 16;
            struct batch_token **a = realloc(t->v, cap * sizeof(*a));

            if (a != NULL) {
                t->v = a;
                t->cap = cap;
            }
        }
        if (t->n < t->cap) {
            tok = calloc(1, sizeof(*tok));
        }
        r = tok != NULL ? prov_strset_add(&t->index, key, t->n, &index, &is_new)
                        : PROV_ERR_NOMEM;
        if (r == 0) {
            tok->identity = key;
            tok->may_share = may_share;
            key = NULL;
            pthread_mutex_init(&tok->lock, NULL);
            t->v[t->n++] = tok;
        } else {
            free(tok);
        }
    }
    if (r == 0) {
        *out = t->v[index];
    }
    pthread_mutex_unlock(&t->lock);
    free(key);
    return r;
}

int batch_tokens_resolve_cached(struct batch_tokens *t, const char *uri,
                                struct batch_token *_Atomic *cache, struct batch_token **out)
{
    int r = 0;

    *out = atomic_load(cache);
    if (*out == NULL && (r = batch_tokens_resolve(t, uri, out)) == 0) {
        atomic_store(cache, *out);
    }
    return r;
}

void batch_release_token(struct batch_hold *h)
{
    if (h->token != NULL) {
        prov_debug("batch", "serial %s: released the lock of %s", h->serial, h->token->identity);
        pthread_mutex_unlock(&h->token->lock);
        h->token = NULL;
    }
}

int batch_hold_token(struct batch_hold *h, const char *uri)
{
    struct batch_token *t = NULL;
    int r;

    if (h->group_token != NULL && strcmp(uri, h->group_uri) == 0) {
        r = batch_tokens_resolve_cached(h->tokens, uri, h->group_token, &t);
    } else {
        r = batch_tokens_resolve(h->tokens, uri, &t);
    }
    if (r < 0 || h->token == t) {
        return r;
    }
    batch_release_token(h);
    pthread_mutex_lock(&t->lock);
    h->token = t;
    prov_debug("batch", "serial %s: holding the lock of %s", h->serial, t->identity);
    return 0;
}
