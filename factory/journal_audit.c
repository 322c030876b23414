/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The journal's audit chain: each record carries hash = SHA-256(prev_hash || record)
 * (prov_audit_hash over at, lot, serial, event, detail: provisioner/support/audit_hash.h), the
 * store keeps the newest (seq, hash) as the head, and verification walks the chain and compares the
 * device rows with their newest records (journal.h).
 */
#include <stdarg.h>
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
    return prov_fail(PROV_ERR_VERIFY, "audit record %lld: %s", seq, out->reason);
}

/* Walking the chain: the hash before the next record, and the next seq expected. */
struct chain_walk {
    struct prov_journal_audit *out;
    char prev[65];
    long long expect;
};

static int chain_step(void *ctx, const struct journal_audit_record *a)
{
    struct chain_walk *w = ctx;
    const char *text[PROV_AUDIT_FIELDS] = {a->at, a->lot, a->serial, a->event, a->detail};
    char hash[65];

    for (int i = 0; i < PROV_AUDIT_FIELDS; i++) {
        text[i] = text[i] ? text[i] : "";
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
    return 0;
}

/* The chain itself: numbering, links, hashes, and the recorded head. */
static int verify_chain(struct journal_store *s, struct prov_journal_audit *out)
{
    struct chain_walk w = {.out = out, .prev = JOURNAL_ZERO_HASH, .expect = 1};
    char head_hash[65];
    long long head_seq;
    int r;

    r = s->ops->audit_head(s, &head_seq, head_hash);
    if (r == 0) {
        r = s->ops->audit_foreach(s, chain_step, &w);
    }
    out->n_records = w.expect - 1;
    memcpy(out->head_hash, w.prev, sizeof(w.prev));
    if (r == 0 && (head_seq != w.expect - 1 || strcmp(head_hash, w.prev) != 0)) {
        r = audit_bad(out, head_seq,
                      "the recorded head is record %lld but the chain ends at "
                      "%lld (records removed from the end?)",
                      head_seq, w.expect - 1);
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
