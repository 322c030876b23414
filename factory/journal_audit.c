/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The journal's audit chain: each record carries hash = SHA-256(prev_hash || record)
 * (prov_audit_hash over at, lot, serial, event, detail: provisioner/support/audit_hash.h), the
 * store keeps the newest (seq, hash) as the head, and verification walks the chain and compares the
 * device rows with their newest records (journal.h).
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit_hash.h"
#include "error.h"
#include "journal.h"
#include "journal_internal.h"
#include "journal_store.h"

static int audit_bad(struct prov_journal_audit *out, long long seq, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Appends one audit record inside the caller's transaction. */
int journal_audit_append(struct journal_store *s, const char *lot, const char *serial,
                         const char *event, const char *detail)
{
    char at[32];
    char prev[65];
    char hash[65];
    long long seq;
    const char *text[PROV_AUDIT_FIELDS];
    int r;

    if (s->ops->audit_chain != NULL) {
        journal_now(at, sizeof(at));
        return s->ops->audit_chain(s, at, lot, serial, event, detail);
    }
    r = s->ops->audit_head(s, &seq, prev);
    if (r < 0) {
        return r;
    }
    seq++;
    journal_now(at, sizeof(at));
    text[0] = at;
    text[1] = lot;
    text[2] = serial;
    text[3] = event;
    text[4] = detail;
    r = prov_audit_hash(prev, seq, text, hash);
    if (r < 0) {
        return r;
    }
    return s->ops->audit_append(s, &(struct journal_audit_record){
                                       .seq = seq,
                                       .at = at,
                                       .lot = lot,
                                       .serial = serial,
                                       .event = event,
                                       .detail = detail,
                                       .prev_hash = prev,
                                       .hash = hash,
                                   });
}

static int audit_bad(struct prov_journal_audit *out, long long seq, const char *fmt, ...)
{
    va_list ap;

    out->bad_seq = seq;
    va_start(ap, fmt);
    vsnprintf(out->reason, sizeof(out->reason), fmt, ap);
    va_end(ap);
    if (out->chain[0] != '\0') {
        return prov_fail(PROV_ERR_VERIFY, "audit chain %s record %lld: %s", out->chain, seq,
                         out->reason);
    }
    return prov_fail(PROV_ERR_VERIFY, "audit record %lld: %s", seq, out->reason);
}

/*
 * Walking the chain: the hash before the next record, and the next seq expected. A ledger
 * has one chain per station (journal_store.h): each is walked alone, from the zero hash, and
 * its end compared with that chain's recorded head.
 */
struct chain_walk {
    struct prov_journal_audit *out;
    char prev[65];
    long long expect;
    long long n_before; /* records of the chains walked before this one */
    char chain[128];
    long long head_seq;
    char head_hash[65];
    bool is_chained; /* the store names chains */
    struct journal_store *s;
};

/*
 * An anchor (a ledger's run end): "CHAIN:SEQ:HASH ..." of the other chains' heads then; each
 * of those records must still be what was anchored. The chain's name is all before the last
 * two colons (an imported chain's name has one of its own).
 */
static int anchor_check(struct chain_walk *w, const struct journal_audit_record *a)
{
    char *copy = strdup(a->detail ? a->detail : "");
    char *save = NULL;
    int r = copy ? 0 : PROV_ERR_NOMEM;

    for (char *t = copy ? strtok_r(copy, " ", &save) : NULL; r == 0 && t != NULL;
         t = strtok_r(NULL, " ", &save)) {
        char *h = strrchr(t, ':');
        char *q = NULL;
        char now[65];

        if (h != NULL) {
            *h = '\0';
            q = strrchr(t, ':');
        }
        if (q == NULL) {
            r = audit_bad(w->out, a->seq, "the anchor is malformed");
            break;
        }
        *q = '\0';
        r = w->s->ops->audit_hash(w->s, t, strtoll(q + 1, NULL, 10), now);
        if (r == 0 && strcmp(now, h + 1) != 0) {
            r = audit_bad(w->out, a->seq,
                          "it anchors chain %s record %s, which is no longer what was anchored",
                          t, q + 1);
        }
    }
    free(copy);
    return r;
}

/* The chain walked so far must end at its recorded head. */
static int chain_end(struct chain_walk *w, long long head_seq, const char *head_hash)
{
    if (head_seq != w->expect - 1 || strcmp(head_hash, w->prev) != 0) {
        return audit_bad(w->out, head_seq,
                         "%s%s%sthe recorded head is record %lld but the chain ends at %lld "
                         "(records removed from the end?)",
                         w->is_chained ? "chain " : "", w->is_chained ? w->chain : "",
                         w->is_chained ? ": " : "", head_seq, w->expect - 1);
    }
    return 0;
}

static int chain_step(void *ctx, const struct journal_audit_record *a)
{
    struct chain_walk *w = ctx;
    const char *text[PROV_AUDIT_FIELDS] = {a->at, a->lot, a->serial, a->event, a->detail};
    char hash[65];
    int r;

    for (int i = 0; i < PROV_AUDIT_FIELDS; i++) {
        text[i] = text[i] ? text[i] : "";
    }
    if (a->chain != NULL && (!w->is_chained || strcmp(a->chain, w->chain) != 0)) {
        if (w->is_chained && (r = chain_end(w, w->head_seq, w->head_hash)) < 0) {
            return r;
        }
        w->n_before += w->expect - 1;
        w->is_chained = true;
        snprintf(w->chain, sizeof(w->chain), "%s", a->chain);
        w->head_seq = a->chain_head_seq;
        snprintf(w->head_hash, sizeof(w->head_hash), "%s",
                 a->chain_head_hash ? a->chain_head_hash : "");
        memcpy(w->prev, JOURNAL_ZERO_HASH, sizeof(w->prev));
        w->expect = 1;
    }
    if (w->is_chained) {
        snprintf(w->out->chain, sizeof(w->out->chain), "%s", w->chain);
    }
    if (a->seq != w->expect) {
        return audit_bad(w->out, w->expect, "missing (the next record is %lld)", a->seq);
    }
    if (a->prev_hash == NULL || strcmp(a->prev_hash, w->prev) != 0) {
        return audit_bad(w->out, a->seq, "prev_hash does not match the record before it");
    }
    if (prov_audit_hash(w->prev, a->seq, text, hash) < 0 || a->hash == NULL ||
        strcmp(hash, a->hash) != 0) {
        return audit_bad(w->out, a->seq, "content does not match its hash (altered)");
    }
    memcpy(w->prev, hash, sizeof(w->prev));
    w->expect++;
    if (a->event != NULL && strcmp(a->event, "anchor") == 0 && w->s->ops->audit_hash != NULL) {
        return anchor_check(w, a);
    }
    return 0;
}

/* The chain itself: numbering, links, hashes, and the recorded head. */
static int verify_chain(struct journal_store *s, struct prov_journal_audit *out)
{
    struct chain_walk w = {.out = out, .prev = JOURNAL_ZERO_HASH, .expect = 1, .s = s};
    char head_hash[65];
    long long head_seq;
    int r;

    r = s->ops->audit_head(s, &head_seq, head_hash);
    if (r == 0) {
        r = s->ops->audit_foreach(s, chain_step, &w);
    }
    out->n_records = w.n_before + w.expect - 1;
    memcpy(out->head_hash, w.prev, sizeof(w.prev));
    if (r == 0) {
        r = w.is_chained ? chain_end(&w, w.head_seq, w.head_hash)
                         : chain_end(&w, head_seq, head_hash);
    }
    if (r == 0) {
        out->chain[0] = '\0';
    }
    return r;
}

/*
 * Each device row must be what its newest audit records say it is: its state the newest
 * record that is a state, its certificate the one the newest "issued" record names.
 */
static int row_step(void *ctx, const struct journal_row_audit *a)
{
    struct prov_journal_audit *out = ctx;
    char needle[80];

    if (a->last_event == NULL || a->state == NULL || strcmp(a->last_event, a->state) != 0) {
        return audit_bad(out, 0, "lot %s serial %s: the row says %s, the audit says %s", a->lot,
                         a->serial, a->state ? a->state : "?",
                         a->last_event ? a->last_event : "nothing");
    }
    if (a->sha256 != NULL) {
        snprintf(needle, sizeof(needle), " sha256=%s ", a->sha256);
        if (a->issued_detail == NULL || strstr(a->issued_detail, needle) == NULL) {
            return audit_bad(out, 0,
                             "lot %s serial %s: the certificate is not the one the "
                             "audit recorded as issued",
                             a->lot, a->serial);
        }
    }
    return 0;
}

int prov_journal_verify_audit(struct prov_journal *j, struct prov_journal_audit *out)
{
    int r;

    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&j->lock);
    r = verify_chain(j->store, out);
    if (r == 0) {
        r = j->store->ops->audit_rows(j->store, row_step, out);
    }
    pthread_mutex_unlock(&j->lock);
    return r;
}
