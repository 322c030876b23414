/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The journal's audit chain: each record carries hash = SHA-256(prev_hash || record), the
 * newest (seq, hash) is kept in meta, and verification walks the chain and compares the
 * device rows with their newest records (journal.h).
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <sqlite3.h>

#include "error.h"
#include "journal.h"
#include "journal_internal.h"

#define ZERO_HASH "0000000000000000000000000000000000000000000000000000000000000000"

static int audit_bad(struct prov_journal_audit *out, long long seq, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void put_be(unsigned char *out, uint64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        out[i] = (unsigned char)(v & 0xff);
        v >>= 8;
    }
}

/*
 * hash = SHA-256(prev_hash || seq || at || lot || serial || event || detail), each text
 * prefixed by its 32-bit length so that no two records serialize alike.
 */
static int audit_hash(const char *prev_hex, long long seq, const char *const text[5], char out[65])
{
    unsigned char prev[32];
    unsigned char num[8];
    unsigned char md[32];
    unsigned int md_len = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok;

    for (int i = 0; i < 32; i++) {
        unsigned int b = 0;

        if (sscanf(prev_hex + 2 * i, "%2x", &b) != 1) {
            EVP_MD_CTX_free(ctx);
            return PROV_ERR_VERIFY;
        }
        prev[i] = (unsigned char)b;
    }
    put_be(num, (uint64_t)seq, 8);
    ok = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 &&
         EVP_DigestUpdate(ctx, prev, sizeof(prev)) == 1 &&
         EVP_DigestUpdate(ctx, num, sizeof(num)) == 1;
    for (int i = 0; i < 5 && ok; i++) {
        size_t len = strlen(text[i]);

        put_be(num, len, 4);
        ok = EVP_DigestUpdate(ctx, num, 4) == 1 && EVP_DigestUpdate(ctx, text[i], len) == 1;
    }
    ok = ok && EVP_DigestFinal_ex(ctx, md, &md_len) == 1;
    EVP_MD_CTX_free(ctx);
    if (!ok) {
        return prov_fail_ossl(PROV_ERR_CRYPTO, "audit: SHA-256 failed");
    }
    journal_hex(md, 32, out);
    return 0;
}

/* Reads the head "seq:hash" from meta; an empty chain has seq 0 and the zero hash. */
static int audit_head(struct prov_journal *j, long long *seq, char hash[65])
{
    sqlite3_stmt *st = NULL;
    int r;

    *seq = 0;
    memcpy(hash, ZERO_HASH, 65);
    r = journal_query(j, &st, "SELECT value FROM meta WHERE key = 'audit_head'", "");
    if (r < 0) {
        return r;
    }
    if (sqlite3_step(st) == SQLITE_ROW) {
        const char *v = (const char *)sqlite3_column_text(st, 0);
        const char *colon = v ? strchr(v, ':') : NULL;

        if (colon == NULL || strlen(colon + 1) != 64) {
            journal_release(j, st);
            return prov_fail(PROV_ERR_JOURNAL, "journal %s: audit head is corrupt", j->path);
        }
        *seq = strtoll(v, NULL, 10);
        memcpy(hash, colon + 1, 65);
    }
    journal_release(j, st);
    return 0;
}

/* Appends one audit record inside the caller's transaction. */
int journal_audit_append(struct prov_journal *j, const char *lot, const char *serial,
                         const char *event, const char *detail)
{
    char at[32];
    char prev[65];
    char hash[65];
    char head[96];
    long long seq;
    const char *text[5];
    int r;

    r = audit_head(j, &seq, prev);
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
    r = audit_hash(prev, seq, text, hash);
    if (r < 0) {
        return r;
    }
    snprintf(head, sizeof(head), "%lld:%s", seq, hash);
    if (journal_exec(j,
                     "INSERT INTO audit(seq, at, lot, serial, event, detail, prev_hash, hash) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     "ittttttt", seq, at, lot, serial, event, detail, prev, hash) != SQLITE_DONE ||
        journal_exec(j, "INSERT OR REPLACE INTO meta(key, value) VALUES ('audit_head', ?)", "t",
                     head) != SQLITE_DONE) {
        return journal_db_fail(j, "audit");
    }
    return 0;
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

/* The chain itself: numbering, links, hashes, and the recorded head. */
static int verify_chain(struct prov_journal *j, struct prov_journal_audit *out)
{
    sqlite3_stmt *st = NULL;
    char prev[65] = ZERO_HASH;
    char hash[65];
    char head_hash[65];
    long long head_seq;
    long long expect = 1;
    int r;

    r = audit_head(j, &head_seq, head_hash);
    if (r == 0) {
        r = journal_query(j, &st,
                          "SELECT seq, at, lot, serial, event, detail, prev_hash, hash "
                          "FROM audit ORDER BY seq",
                          "");
    }
    while (r == 0 && sqlite3_step(st) == SQLITE_ROW) {
        long long seq = sqlite3_column_int64(st, 0);
        const char *text[5];
        const char *stored_prev = (const char *)sqlite3_column_text(st, 6);
        const char *stored = (const char *)sqlite3_column_text(st, 7);

        for (int i = 0; i < 5; i++) {
            const char *s = (const char *)sqlite3_column_text(st, i + 1);

            text[i] = s ? s : "";
        }
        if (seq != expect) {
            r = audit_bad(out, expect, "missing (the next record is %lld)", seq);
        } else if (stored_prev == NULL || strcmp(stored_prev, prev) != 0) {
            r = audit_bad(out, seq, "prev_hash does not match the record before it");
        } else if (audit_hash(prev, seq, text, hash) < 0 || stored == NULL ||
                   strcmp(hash, stored) != 0) {
            r = audit_bad(out, seq, "content does not match its hash (altered)");
        } else {
            memcpy(prev, hash, sizeof(prev));
            expect++;
        }
    }
    journal_release(j, st);
    out->n_records = expect - 1;
    memcpy(out->head_hash, prev, sizeof(prev));
    if (r == 0 && (head_seq != expect - 1 || strcmp(head_hash, prev) != 0)) {
        r = audit_bad(out, head_seq,
                      "the recorded head is record %lld but the chain ends at "
                      "%lld (records removed from the end?)",
                      head_seq, expect - 1);
    }
    return r;
}

/*
 * Each device row must be what its newest audit records say it is (a station's claim, a
 * device found under a new name, a retired superseded key and an identity seen replaced
 * outside the lot are not states).
 */
static int verify_rows(struct prov_journal *j, struct prov_journal_audit *out)
{
    sqlite3_stmt *st = NULL;
    int r;

    r = journal_query(j, &st,
                      "SELECT l.name, d.serial, d.state, c.sha256,"
                      " (SELECT a.event FROM audit a WHERE a.lot = l.name AND a.serial = d.serial"
                      "  AND a.event NOT IN ('claim', 'device-moved', 'retired', 'outside-change')"
                      "  ORDER BY a.seq DESC LIMIT 1),"
                      " (SELECT a.detail FROM audit a WHERE a.lot = l.name AND a.serial = d.serial"
                      "  AND a.event = 'issued' ORDER BY a.seq DESC LIMIT 1)"
                      " FROM device d JOIN lot l ON l.id = d.lot_id"
                      " LEFT JOIN certificate c ON c.id = d.cert_id",
                      "");
    while (r == 0 && sqlite3_step(st) == SQLITE_ROW) {
        const char *lot = (const char *)sqlite3_column_text(st, 0);
        const char *serial = (const char *)sqlite3_column_text(st, 1);
        const char *state = (const char *)sqlite3_column_text(st, 2);
        const char *sha = (const char *)sqlite3_column_text(st, 3);
        const char *event = (const char *)sqlite3_column_text(st, 4);
        const char *issued = (const char *)sqlite3_column_text(st, 5);
        char needle[80];

        if (event == NULL || state == NULL || strcmp(event, state) != 0) {
            r = audit_bad(out, 0, "lot %s serial %s: the row says %s, the audit says %s", lot,
                          serial, state ? state : "?", event ? event : "nothing");
        } else if (sha != NULL) {
            snprintf(needle, sizeof(needle), " sha256=%s ", sha);
            if (issued == NULL || strstr(issued, needle) == NULL) {
                r = audit_bad(out, 0,
                              "lot %s serial %s: the certificate is not the one the "
                              "audit recorded as issued",
                              lot, serial);
            }
        }
    }
    journal_release(j, st);
    return r;
}

int prov_journal_verify_audit(struct prov_journal *j, struct prov_journal_audit *out)
{
    int r;

    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&j->lock);
    r = verify_chain(j, out);
    if (r == 0) {
        r = verify_rows(j, out);
    }
    pthread_mutex_unlock(&j->lock);
    return r;
}
