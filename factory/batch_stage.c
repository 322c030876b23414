/* SPDX-License-Identifier: Apache-2.0 */
/* The storage stage's thread and its bounded queue (batch_stage.h). */
#include "batch_stage.h"

#include <string.h>

#include "error.h"

static void *stage_main(void *arg)
{
    struct batch_stage *s = arg;

    for (;;) {
        void *j;

        pthread_mutex_lock(&s->lock);
        while (s->n == 0 && !s->is_stopping) {
            pthread_cond_wait(&s->changed, &s->lock);
        }
        if (s->n == 0) {
            pthread_mutex_unlock(&s->lock);
            break;
        }
        j = s->jobs[s->head];
        pthread_mutex_unlock(&s->lock);
        s->run(s->ctx, j);
        /* the slot is freed only now: a full queue bounds the identities not yet stored */
        pthread_mutex_lock(&s->lock);
        s->head = (s->head + 1) % BATCH_STAGE_QUEUE;
        s->n--;
        pthread_cond_broadcast(&s->changed);
        pthread_mutex_unlock(&s->lock);
    }
    return NULL;
}

int batch_stage_start(struct batch_stage *s, void (*run)(void *ctx, void *job), void *ctx)
{
    memset(s, 0, sizeof(*s));
    s->run = run;
    s->ctx = ctx;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->changed, NULL);
    if (pthread_create(&s->thread, NULL, stage_main, s) != 0) {
        pthread_cond_destroy(&s->changed);
        pthread_mutex_destroy(&s->lock);
        return prov_fail(PROV_ERR_NOMEM, "batch: cannot start the storage thread");
    }
    return 0;
}

void batch_stage_push(struct batch_stage *s, void *job)
{
    pthread_mutex_lock(&s->lock);
    while (s->n == BATCH_STAGE_QUEUE) {
        pthread_cond_wait(&s->changed, &s->lock);
    }
    s->jobs[(s->head + s->n) % BATCH_STAGE_QUEUE] = job;
    s->n++;
    pthread_cond_broadcast(&s->changed);
    pthread_mutex_unlock(&s->lock);
}

void batch_stage_stop(struct batch_stage *s)
{
    pthread_mutex_lock(&s->lock);
    s->is_stopping = true;
    pthread_cond_broadcast(&s->changed);
    pthread_mutex_unlock(&s->lock);
    pthread_join(s->thread, NULL);
    pthread_cond_destroy(&s->changed);
    pthread_mutex_destroy(&s->lock);
}
