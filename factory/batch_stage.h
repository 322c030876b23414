/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_FACTORY_BATCH_STAGE_H
#define PROV_FACTORY_BATCH_STAGE_H

/*
 * The storage stage of a run: a thread that finishes issued identities (storage written, read
 * back, recorded stored and proven) while the device's worker goes on with the next row on the
 * token. Bounded: at most BATCH_STAGE_QUEUE identities wait, and a worker that would queue one
 * more waits for a slot. What finishing means is the row's (batch_row.c); the stage only runs
 * it, one job after the other, in the order queued.
 */

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#define BATCH_STAGE_QUEUE 4

struct batch_stage {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t changed;
    void *jobs[BATCH_STAGE_QUEUE];
    size_t head;
    size_t n;
    bool is_stopping;
    void (*run)(void *ctx, void *job); /* finishes and frees one job */
    void *ctx;
};

/* Starts the thread; PROV_ERR_NOMEM (nothing started) when it cannot. */
int batch_stage_start(struct batch_stage *s, void (*run)(void *ctx, void *job), void *ctx);

/* Queues job (waits while the queue is full); the stage owns it from here. */
void batch_stage_push(struct batch_stage *s, void *job);

/* Waits until every queued job has run, then stops the thread; accepts none after. */
void batch_stage_stop(struct batch_stage *s);

#endif
