/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The journal's rules: which transition is legal from which state, what a row becomes, that
 * a certificate is recorded once, and the test hooks at state boundaries. Every transition is
 * one store transaction that reads the row, checks that the transition is legal, writes it
 * and appends the audit record (journal_audit.c hashes it); the store (journal_store.h,
 * journal_sqlite.c) makes it durable when it commits. One mutex per journal serializes the
 * transactions of a process: the audit chain needs a total order anyway, and a transition is
 * far cheaper than the key generation it records.
 */
#include "journal.h"
#include "journal_internal.h"
#include "journal_store.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/sha.h>

#include "cert_der.h"
#include "error.h"
#include "keytype.h"
#include "pg_conn.h"
#include "storage.h"

static void crash_hook_init(struct prov_journal *j)
{
    const char *env = getenv("PROVISIONER_TEST_CRASH_AT");
    char name[32];
    long n = 0;

    j->crash_state = PROV_JOURNAL_NONE;
    if (env == NULL || sscanf(env, "%31[a-z]:%ld", name, &n) != 2 || n < 1) {
        return;
    }
    j->is_crash_at_run_end = strcmp(name, "run") == 0 && n == 1;
    j->crash_state = journal_state_parse(name);
    j->crash_after = n;
}

/*
 * Test-only pause hook: PROVISIONER_TEST_PAUSE_AT=<state>:<path> makes a writer, right after
 * each committed transition to <state>, create <path> and wait (up to 120 s) until it has
 * been removed. The station tests use it to remove a device, or hold one station, at an
 * exact instant without timing guesses.
 */
static void pause_hook_init(struct prov_journal *j)
{
    const char *env = getenv("PROVISIONER_TEST_PAUSE_AT");
    const char *colon = env ? strchr(env, ':') : NULL;
    char name[32];

    j->pause_state = PROV_JOURNAL_NONE;
    if (colon == NULL || colon[1] == '\0' || (size_t)(colon - env) >= sizeof(name)) {
        return;
    }
    memcpy(name, env, (size_t)(colon - env));
    name[colon - env] = '\0';
    j->pause_state = journal_state_parse(name);
    j->pause_path = strdup(colon + 1);
}

/* Called after the lock is released: other threads and processes go on meanwhile. */
static void pause_point(struct prov_journal *j, enum prov_journal_state s)
{
    int fd;

    if (j->pause_path == NULL || s == PROV_JOURNAL_NONE || s != j->pause_state) {
        return;
    }
    fd = open(j->pause_path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd >= 0) {
        close(fd);
    }
    for (int i = 0; i < 12000 && access(j->pause_path, F_OK) == 0; i++) {
        usleep(10000);
    }
}

/* Called with j->lock held, after the commit: the transition is durable when we die. */
static void crash_point(struct prov_journal *j, enum prov_journal_state s)
{
    if (j->crash_state != PROV_JOURNAL_NONE && s == j->crash_state &&
        ++j->crash_count == j->crash_after) {
        _exit(137);
    }
}

/* The schema upgrade of a journal with records is in its audit chain. */
static int upgrade_audit(void *ctx, struct journal_store *s, long long from, long long to)
{
    char detail[48];

    (void)ctx;
    snprintf(detail, sizeof(detail), "%lld->%lld", from, to);
    return journal_audit_append(s, "", "", "schema", detail);
}

int journal_open_on(struct journal_store *store, bool writable, struct prov_journal **out)
{
    struct prov_journal *j = calloc(1, sizeof(*j));

    *out = NULL;
    if (j == NULL) {
        store->ops->close(store);
        return prov_fail(PROV_ERR_NOMEM, "journal: out of memory");
    }
    j->store = store;
    pthread_mutex_init(&j->lock, NULL);
    if (writable) {
        crash_hook_init(j);
        pause_hook_init(j);
    }
    *out = j;
    return 0;
}

const struct journal_upgrade_hook journal_upgrade_audit = {.fn = upgrade_audit};

int journal_open_mode(const char *path, const char *password, const char *station,
                      enum journal_store_mode mode, struct prov_journal **out)
{
    const struct journal_upgrade_hook hook = journal_upgrade_audit;
    struct journal_store *store = NULL;
    int r;

    *out = NULL;
    /* a libpq URI is the shared ledger (doc/ledger.md); anything else is a SQLite file */
    r = journal_pg_is_uri(path) ? journal_pg_open(path, password, station, mode, &hook, &store)
                                : journal_sqlite_open(path, mode, &hook, &store);
    return r < 0 ? r : journal_open_on(store, mode != JOURNAL_STORE_READ, out);
}

int prov_journal_open(const char *path, bool writable, struct prov_journal **out)
{
    return journal_open_mode(path, NULL, NULL, writable ? JOURNAL_STORE_WRITE : JOURNAL_STORE_READ, out);
}

int prov_journal_open_shared(const char *path, struct prov_journal **out)
{
    return journal_open_mode(path, NULL, NULL, JOURNAL_STORE_SHARED, out);
}

int prov_journal_open_shared_with(const char *path, const char *password, const char *station,
                                  struct prov_journal **out)
{
    return journal_open_mode(path, password, station, JOURNAL_STORE_SHARED, out);
}

int prov_journal_open_with(const char *path, const char *password, const char *station,
                           bool writable, struct prov_journal **out)
{
    return journal_open_mode(path, password, station, writable ? JOURNAL_STORE_WRITE : JOURNAL_STORE_READ, out);
}

bool prov_journal_is_ledger(const char *path)
{
    return journal_pg_is_uri(path);
}

int prov_journal_lease_claim(struct prov_journal *j, long long lot_id, const char *serial,
                             bool is_reopen, char *holder, size_t cap, enum prov_journal_lease *out)
{
    holder[0] = '\0';
    *out = PROV_JOURNAL_LEASE_MINE;
    int r;

    if (j->store->ops->lease_claim == NULL) {
        return 0;
    }
    /* the store's connection is the journal's: one transaction at a time on it */
    pthread_mutex_lock(&j->lock);
    r = j->store->ops->lease_claim(j->store, lot_id, serial, is_reopen, holder, cap, out);
    pthread_mutex_unlock(&j->lock);
    return r;
}

int prov_journal_lease_scan(struct prov_journal *j, long long lot_id, const char *const *serials,
                            size_t n, bool *is_other)
{
    int r;

    memset(is_other, 0, n * sizeof(*is_other));
    if (j->store->ops->lease_scan == NULL || n == 0) {
        return 0;
    }
    pthread_mutex_lock(&j->lock);
    r = j->store->ops->lease_scan(j->store, lot_id, serials, n, is_other);
    pthread_mutex_unlock(&j->lock);
    return r;
}

int prov_journal_lease_end(struct prov_journal *j, long long lot_id, const char *serial,
                           bool is_done)
{
    int r;

    if (j->store->ops->lease_end == NULL) {
        return 0;
    }
    pthread_mutex_lock(&j->lock);
    r = j->store->ops->lease_end(j->store, lot_id, serial, is_done);
    pthread_mutex_unlock(&j->lock);
    return r;
}

void prov_journal_set_lease(struct prov_journal *j, int seconds)
{
    if (j->store->ops->set_lease != NULL && seconds > 0) {
        j->store->ops->set_lease(j->store, seconds);
    }
}

bool prov_journal_is_away(struct prov_journal *j)
{
    return j != NULL && j->store->ops->is_away != NULL && j->store->ops->is_away(j->store);
}

char *prov_journal_name(const char *path)
{
    return journal_pg_is_uri(path) ? prov_pg_mask_uri(path) : strdup(path);
}

const char *prov_journal_path(const struct prov_journal *j)
{
    return j != NULL ? j->store->name : NULL;
}

void prov_journal_close(struct prov_journal *j)
{
    if (j == NULL) {
        return;
    }
    j->store->ops->close(j->store);
    pthread_mutex_destroy(&j->lock);
    free(j->pause_path);
    free(j);
}

/* What every transition shares: the lock, the transaction, the row before, the lot name. */
struct txn {
    struct journal_store *s;
    struct prov_journal_device d;
    long long dev_id;
    long long cert_id;
    char lot[256];
    char now[32];
};

/* is_deferred: the store's begin_deferred (journal_store.h) when it has one. */
static int txn_begin_as(struct prov_journal *j, long long lot_id, const char *serial,
                        bool is_deferred, struct txn *t)
{
    struct journal_store *s = j->store;
    int r;

    memset(t, 0, sizeof(*t));
    t->s = s;
    pthread_mutex_lock(&j->lock);
    r = is_deferred && s->ops->begin_deferred != NULL ? s->ops->begin_deferred(s)
                                                      : s->ops->begin(s);
    if (r == 0) {
        r = s->ops->lot_name(s, lot_id, t->lot, sizeof(t->lot));
        r = r ? r : s->ops->row_get(s, lot_id, serial, &t->d, &t->dev_id, &t->cert_id);
        if (r < 0) {
            s->ops->end(s, r);
        }
    }
    if (r < 0) {
        pthread_mutex_unlock(&j->lock);
        return r;
    }
    journal_now(t->now, sizeof(t->now));
    return 0;
}

static int txn_begin(struct prov_journal *j, long long lot_id, const char *serial, struct txn *t)
{
    return txn_begin_as(j, lot_id, serial, false, t);
}

/*
 * Commits (or rolls back when r < 0), then for each of the n states the transaction went
 * through, in order, the crash hook; releases the lock, then the pause hooks.
 */
static int txn_end_through(struct prov_journal *j, struct txn *t, int r,
                           const enum prov_journal_state *to, size_t n)
{
    r = j->store->ops->end(j->store, r);
    for (size_t i = 0; r == 0 && i < n; i++) {
        crash_point(j, to[i]);
    }
    pthread_mutex_unlock(&j->lock);
    for (size_t i = 0; r == 0 && i < n; i++) {
        pause_point(j, to[i]);
    }
    prov_journal_device_clear(&t->d);
    return r;
}

/* Commits (or rolls back when r < 0), the crash hook, releases the lock, the pause hook. */
static int txn_end(struct prov_journal *j, struct txn *t, int r, enum prov_journal_state to)
{
    return txn_end_through(j, t, r, &to, 1);
}

/* The row as it is: what a transition changes before it writes the row back whole. */
static struct journal_row row_of(const struct txn *t, long long lot_id, const char *serial)
{
    struct journal_row w = {
        .id = t->dev_id,
        .lot_id = lot_id,
        .serial = serial,
        .device_uri = t->d.device_uri,
        .state = t->d.state,
        .key_id = t->d.key_id_len ? t->d.key_id : NULL,
        .key_id_len = t->d.key_id_len,
        .key_uri = t->d.key_uri,
        .storage = t->d.storage,
        .error = t->d.error,
        .attempts = t->d.attempts,
        .cert_id = t->cert_id,
        .updated = t->now,
    };

    return w;
}

static int illegal(struct prov_journal *j, const char *serial, enum prov_journal_state from,
                   enum prov_journal_state to)
{
    return prov_fail(PROV_ERR_JOURNAL, "journal %s: serial %s: no transition from %s to %s",
                     j->store->name, serial, prov_journal_state_name(from),
                     prov_journal_state_name(to));
}

int prov_journal_lot(struct prov_journal *j, const char *name, const char *manifest,
                     long long *lot_id)
{
    struct journal_store *s = j->store;
    char now[32];
    int r;

    *lot_id = 0;
    pthread_mutex_lock(&j->lock);
    r = s->ops->begin(s);
    if (r < 0) {
        goto out;
    }
    r = s->ops->lot_find(s, name, lot_id);
    if (r == 0 && *lot_id == 0) {
        journal_now(now, sizeof(now));
        r = s->ops->lot_insert(s, name, manifest, now, lot_id);
        r = r ? r : journal_audit_append(s, name, "", "lot", manifest ? manifest : "");
    }
    r = s->ops->end(s, r);
out:
    pthread_mutex_unlock(&j->lock);
    return r;
}

/* Whether every serial of list (comma-separated) was reissued by request and is proven since. */
static int request_is_complete(struct journal_store *s, long long lot_id, const char *list,
                               long long request, bool *out)
{
    char *copy = strdup(list);
    char *save = NULL;
    int r = copy ? 0 : PROV_ERR_NOMEM;

    *out = true;
    for (char *serial = copy ? strtok_r(copy, ",", &save) : NULL; serial != NULL && r == 0 && *out;
         serial = strtok_r(NULL, ",", &save)) {
        r = s->ops->run_reissued_proven(s, lot_id, serial, request, out);
        *out = r == 0 && *out;
    }
    free(copy);
    return r;
}

/*
 * The newest run of the lot with this reissue list decides (inside the transaction): its
 * request is continued, by taking that run up again when it did not finish, else by a new
 * run of the same request. With is_again a request that has reissued and proven every
 * serial of its list is not continued: a new request begins. Nothing found: a new request.
 */
static int pick_run(struct journal_store *s, long long lot_id, const char *reissue_list,
                    bool is_again, struct prov_journal_run *run)
{
    long long newest = 0;
    long long request = 0;
    bool is_unfinished = false;
    bool is_complete = false;
    int r;

    r = s->ops->run_newest(s, lot_id, reissue_list, &newest, &request, &is_unfinished);
    if (r == 0 && newest != 0 && is_again) {
        r = request_is_complete(s, lot_id, reissue_list, request, &is_complete);
    }
    if (r < 0 || newest == 0 || is_complete) {
        return r;
    }
    run->request = request;
    run->is_resumed = is_unfinished;
    run->is_continued = !is_unfinished;
    run->id = is_unfinished ? newest : 0;
    return 0;
}

int prov_journal_run_begin(struct prov_journal *j, long long lot_id, const char *reissue_list,
                           bool is_again, struct prov_journal_run *run)
{
    struct journal_store *s = j->store;
    char lot[256];
    char detail[128];
    char now[32];
    int r;

    memset(run, 0, sizeof(*run));
    pthread_mutex_lock(&j->lock);
    r = s->ops->begin(s);
    if (r == 0) {
        r = s->ops->lot_name(s, lot_id, lot, sizeof(lot));
    }
    if (r == 0) {
        r = pick_run(s, lot_id, reissue_list, is_again, run);
    }
    if (r == 0 && run->id == 0) {
        journal_now(now, sizeof(now));
        r = s->ops->run_insert(s, lot_id, reissue_list, now, run->request, &run->id);
        run->request = run->request ? run->request : run->id;
    }
    if (r == 0) {
        snprintf(detail, sizeof(detail), "run=%lld request=%lld%s", run->id, run->request,
                 is_again && run->request == run->id ? " again" : "");
        r = journal_audit_append(s, lot, "", run->is_resumed ? "run-resumed" : "run-begin", detail);
    }
    r = s->ops->end(s, r);
    pthread_mutex_unlock(&j->lock);
    return r;
}

int prov_journal_run_end(struct prov_journal *j, long long run_id)
{
    struct journal_store *s = j->store;
    char lot[256] = "";
    char detail[64];
    char now[32];
    int r;

    pthread_mutex_lock(&j->lock);
    r = s->ops->begin(s);
    journal_now(now, sizeof(now));
    if (r == 0) {
        r = s->ops->run_finish(s, run_id, now, lot, sizeof(lot));
    }
    if (r == 0) {
        snprintf(detail, sizeof(detail), "run=%lld", run_id);
        r = journal_audit_append(s, lot, "", "run-end", detail);
    }
    r = s->ops->end(s, r);
    if (r == 0 && j->is_crash_at_run_end) {
        _exit(137);
    }
    pthread_mutex_unlock(&j->lock);
    return r;
}

int prov_journal_record_intent(struct prov_journal *j, long long lot_id, const char *serial,
                               const char *device_uri, const char *storage,
                               const unsigned char *key_id, size_t key_id_len)
{
    char key_hex[2 * PROV_JOURNAL_KEY_ID_MAX + 1];
    char *detail = NULL;
    struct journal_row w;
    struct txn t;
    enum prov_journal_state from;
    int r;

    if (key_id_len == 0 || key_id_len > PROV_JOURNAL_KEY_ID_MAX) {
        return prov_fail(PROV_ERR_INTERNAL, "serial %s: key id of %zu bytes", serial, key_id_len);
    }
    r = txn_begin(j, lot_id, serial, &t);
    if (r < 0) {
        return r;
    }
    from = t.d.state;
    if (!(from == PROV_JOURNAL_NONE || from == PROV_JOURNAL_INTENT ||
          from == PROV_JOURNAL_SUPERSEDED || (from == PROV_JOURNAL_FAILED && t.cert_id == 0))) {
        r = illegal(j, serial, from, PROV_JOURNAL_INTENT);
        goto out;
    }
    /* a new attempt: its key and storage, no key URI or error yet */
    w = row_of(&t, lot_id, serial);
    w.state = PROV_JOURNAL_INTENT;
    w.device_uri = device_uri;
    w.key_id = key_id;
    w.key_id_len = key_id_len;
    w.storage = storage;
    w.key_uri = NULL;
    w.error = NULL;
    w.attempts = from == PROV_JOURNAL_NONE ? 1 : t.d.attempts + 1;
    r = t.s->ops->row_put(t.s, &w);
    if (r < 0) {
        goto out;
    }
    journal_hex(key_id, key_id_len, key_hex);
    if (asprintf(&detail, "key_id=%s device=%s", key_hex, device_uri) < 0) {
        detail = NULL;
        r = PROV_ERR_NOMEM;
        goto out;
    }
    r = journal_audit_append(t.s, t.lot, serial, "intent", detail);
out:
    free(detail);
    return txn_end(j, &t, r, PROV_JOURNAL_INTENT);
}

/* SHA-256 of the certificate's SubjectPublicKeyInfo: the identity of the key pair. */
static int pubkey_sha256(X509 *cert, char out[65])
{
    unsigned char md[32];
    int r = prov_key_type_spki_sha256(X509_get0_pubkey(cert), md);

    if (r == 0) {
        journal_hex(md, sizeof(md), out);
    }
    return r;
}

/* Names which uniqueness rule a refused certificate broke. */
static int refuse_duplicate(struct prov_journal *j, const char *serial,
                            const struct prov_cert_facts *f, const char *pub,
                            enum journal_unique broken)
{
    if (broken == JOURNAL_UNIQUE_PUBKEY) {
        return prov_fail(PROV_ERR_ALREADY_ISSUED,
                         "serial %s: public key %s was already certified (journal %s)", serial, pub,
                         j->store->name);
    }
    if (broken == JOURNAL_UNIQUE_CURRENT) {
        return prov_fail(PROV_ERR_ALREADY_ISSUED,
                         "serial %s: the device serial already has a current certificate of this "
                         "issuer (journal %s); reissue it to replace it",
                         serial, j->store->name);
    }
    return prov_fail(PROV_ERR_ALREADY_ISSUED,
                     "serial %s: certificate serial %s is already in journal %s", serial,
                     f->serial_hex, j->store->name);
}

int prov_journal_record_issued(struct prov_journal *j, long long lot_id, const char *serial,
                               const unsigned char *key_id, size_t key_id_len, X509 *cert,
                               const char *key_uri)
{
    struct prov_cert_facts f;
    unsigned char *der = NULL;
    char pub[65];
    char *detail = NULL;
    enum journal_unique broken = JOURNAL_UNIQUE_CERT_SERIAL;
    long long cert_id = 0;
    struct journal_row w;
    struct txn t;
    size_t der_len = 0;
    int r;

    r = prov_cert_facts(cert, &f);
    if (r == 0) {
        r = pubkey_sha256(cert, pub);
    }
    if (r == 0) {
        r = prov_cert_der(cert, &der, &der_len);
    }
    if (r < 0) {
        return r;
    }
    r = txn_begin(j, lot_id, serial, &t);
    if (r < 0) {
        OPENSSL_free(der);
        return r;
    }
    if (t.d.state != PROV_JOURNAL_INTENT) {
        r = illegal(j, serial, t.d.state, PROV_JOURNAL_ISSUED);
        goto out;
    }
    if (t.d.key_id_len != key_id_len || memcmp(t.d.key_id, key_id, key_id_len) != 0) {
        r = prov_fail(PROV_ERR_JOURNAL,
                      "journal %s: serial %s: the key is not the one the "
                      "intent recorded",
                      j->store->name, serial);
        goto out;
    }
    /* the intent's device: where this key lives, even after a reissue moves the row */
    r = t.s->ops->cert_insert(t.s,
                              &(struct journal_cert){
                                  .device_id = t.dev_id,
                                  .cert_serial = f.serial_hex,
                                  .pubkey_sha256 = pub,
                                  .sha256 = f.sha256_hex,
                                  .not_after = f.not_after,
                                  .key_id = key_id,
                                  .key_id_len = key_id_len,
                                  .der = der,
                                  .der_len = der_len,
                                  .issued = t.now,
                                  .device_uri = t.d.device_uri,
                              },
                              &cert_id, &broken);
    if (r == PROV_ERR_ALREADY_ISSUED) {
        r = refuse_duplicate(j, serial, &f, pub, broken);
        goto out;
    }
    if (r < 0) {
        goto out;
    }
    w = row_of(&t, lot_id, serial);
    w.state = PROV_JOURNAL_ISSUED;
    w.cert_id = cert_id;
    w.key_uri = key_uri;
    w.error = NULL;
    r = t.s->ops->row_put(t.s, &w);
    if (r < 0) {
        goto out;
    }
    if (asprintf(&detail, "cert_serial=%s sha256=%s pubkey_sha256=%s", f.serial_hex, f.sha256_hex,
                 pub) < 0) {
        detail = NULL;
        r = PROV_ERR_NOMEM;
        goto out;
    }
    r = journal_audit_append(t.s, t.lot, serial, "issued", detail);
out:
    free(detail);
    OPENSSL_free(der);
    return txn_end(j, &t, r, PROV_JOURNAL_ISSUED);
}

/* Storage can be (re)written from any state that holds a certificate, a failed one too. */
static bool may_store(const struct txn *t)
{
    return t->d.state == PROV_JOURNAL_ISSUED || t->d.state == PROV_JOURNAL_STORED ||
           t->d.state == PROV_JOURNAL_PROVEN || (t->d.state == PROV_JOURNAL_FAILED && t->cert_id);
}

static bool may_prove(const struct txn *t)
{
    return t->d.state == PROV_JOURNAL_STORED;
}

/*
 * One state-only step inside an open transaction: the row takes state to (the error cleared)
 * and its audit record is appended; the detail is the certificate serial, followed by note
 * when given. t->d.state follows, so that a next step checks its own legality.
 */
static int state_step(struct prov_journal *j, struct txn *t, long long lot_id, const char *serial,
                      enum prov_journal_state to, bool (*is_legal)(const struct txn *t),
                      const char *note)
{
    char detail[1024];
    struct journal_row w;
    int r;

    if (!is_legal(t)) {
        return illegal(j, serial, t->d.state, to);
    }
    w = row_of(t, lot_id, serial);
    w.state = to;
    w.error = NULL;
    r = t->s->ops->row_put(t->s, &w);
    if (r < 0) {
        return r;
    }
    t->d.state = to;
    snprintf(detail, sizeof(detail), "%s%s%s", t->d.cert_serial, note ? " " : "", note ? note : "");
    return journal_audit_append(t->s, t->lot, serial, prov_journal_state_name(to), detail);
}

/* One state-only step of a transaction: the state it leads to, and from where it may. */
struct state_change {
    enum prov_journal_state to;
    bool (*is_legal)(const struct txn *t);
};

/*
 * The transitions that change only the state (and clear the error): the n (1 or 2) steps of
 * ch in one transaction, the last one's audit detail followed by note when given.
 */
static int simple_transition(struct prov_journal *j, long long lot_id, const char *serial,
                             const struct state_change *ch, size_t n, bool is_deferred,
                             const char *note)
{
    enum prov_journal_state through[2];
    struct txn t;
    int r;

    if (n < 1 || n > 2) {
        return prov_fail(PROV_ERR_INTERNAL, "serial %s: %zu steps in one transition", serial, n);
    }
    for (size_t i = 0; i < n; i++) {
        through[i] = ch[i].to;
    }
    r = txn_begin_as(j, lot_id, serial, is_deferred, &t);
    if (r < 0) {
        return r;
    }
    for (size_t i = 0; r == 0 && i < n; i++) {
        r = state_step(j, &t, lot_id, serial, ch[i].to, ch[i].is_legal, i + 1 == n ? note : NULL);
    }
    return txn_end_through(j, &t, r, through, n);
}

static const struct state_change to_stored = {PROV_JOURNAL_STORED, may_store};
static const struct state_change to_proven = {PROV_JOURNAL_PROVEN, may_prove};

int prov_journal_record_stored(struct prov_journal *j, long long lot_id, const char *serial)
{
    return simple_transition(j, lot_id, serial, &to_stored, 1, false, NULL);
}

int prov_journal_record_proven(struct prov_journal *j, long long lot_id, const char *serial)
{
    return simple_transition(j, lot_id, serial, &to_proven, 1, false, NULL);
}

/*
 * stored then proven in one transaction: both rows of the audit trail, one commit (one sync
 * of the journal's WAL instead of two). Nothing the tool does between the two transitions
 * depends on "stored" being on disk: a crash before this commit leaves the row issued, whose
 * resume (batch_row.c, complete_from_journal) compares or rewrites the storage, records stored
 * and proves exactly as it does for a row left stored. The crash and pause hooks of both
 * states fire after the commit, stored first.
 *
 * For the same reason the commit need not be on disk when it returns, and is not synced
 * (the store's begin_deferred): losing it to a power cut is that same crash before it. It
 * reaches the disk with the journal's next durable commit (the next row's intent, the run's
 * end) or the close. The storage files and the CA index's "delivered" were made durable
 * before it (batch_row.c, finish), so the proven row the disk may hold is never ahead of
 * them; nothing outside the journal waits for this record being on disk.
 */
int prov_journal_record_stored_proven(struct prov_journal *j, long long lot_id, const char *serial)
{
    const struct state_change both[] = {to_stored, to_proven};

    return simple_transition(j, lot_id, serial, both, 2, true, NULL);
}

int prov_journal_record_proven_over(struct prov_journal *j, long long lot_id, const char *serial,
                                    const char *url)
{
    char note[600];

    snprintf(note, sizeof(note), "mtls=%s", url);
    return simple_transition(j, lot_id, serial, &to_proven, 1, false, note);
}

int prov_journal_record_failed(struct prov_journal *j, long long lot_id, const char *serial,
                               const char *device_uri, const char *reason)
{
    struct journal_row w;
    struct txn t;
    int r;

    r = txn_begin(j, lot_id, serial, &t);
    if (r < 0) {
        return r;
    }
    /* a new row has only its device; any other keeps what it reached */
    w = row_of(&t, lot_id, serial);
    if (t.d.state == PROV_JOURNAL_NONE) {
        w.device_uri = device_uri;
    }
    w.state = PROV_JOURNAL_FAILED;
    w.error = reason;
    r = t.s->ops->row_put(t.s, &w);
    if (r < 0) {
        goto out;
    }
    r = journal_audit_append(t.s, t.lot, serial, "failed", reason);
out:
    return txn_end(j, &t, r, PROV_JOURNAL_FAILED);
}

int prov_journal_record_outside_change(struct prov_journal *j, long long lot_id, const char *serial,
                                       const char *reason)
{
    struct journal_row w;
    struct txn t;
    int r;

    r = txn_begin(j, lot_id, serial, &t);
    if (r < 0) {
        return r;
    }
    if (t.cert_id == 0) {
        r = prov_fail(PROV_ERR_JOURNAL, "journal %s: serial %s: no certificate to compare with",
                      j->store->name, serial);
        goto out;
    }
    w = row_of(&t, lot_id, serial);
    w.error = reason;
    r = t.s->ops->row_put(t.s, &w);
    if (r < 0) {
        goto out;
    }
    r = journal_audit_append(t.s, t.lot, serial, "outside-change",
                             reason ? reason : "storage holds the lot's identity again");
out:
    /* not a state: neither the crash nor the pause hook stops here */
    return txn_end(j, &t, r, PROV_JOURNAL_NONE);
}

int prov_journal_supersede(struct prov_journal *j, long long lot_id, const char *serial,
                           long long run_id)
{
    char detail[160];
    struct journal_row w;
    struct txn t;
    int r;

    r = txn_begin(j, lot_id, serial, &t);
    if (r < 0) {
        return r;
    }
    if (t.cert_id == 0 || !(t.d.state == PROV_JOURNAL_STORED || t.d.state == PROV_JOURNAL_PROVEN ||
                            t.d.state == PROV_JOURNAL_FAILED)) {
        r = illegal(j, serial, t.d.state, PROV_JOURNAL_SUPERSEDED);
        goto out;
    }
    w = row_of(&t, lot_id, serial);
    w.state = PROV_JOURNAL_SUPERSEDED;
    w.cert_id = 0;
    w.error = NULL;
    r = t.s->ops->cert_supersede(t.s, t.cert_id, t.now, run_id);
    r = r ? r : t.s->ops->row_put(t.s, &w);
    if (r < 0) {
        goto out;
    }
    snprintf(detail, sizeof(detail), "cert_serial=%s run=%lld", t.d.cert_serial, run_id);
    r = journal_audit_append(t.s, t.lot, serial, "superseded", detail);
out:
    return txn_end(j, &t, r, PROV_JOURNAL_SUPERSEDED);
}

int prov_journal_record_retired(struct prov_journal *j, long long lot_id, const char *serial,
                                const char *cert_serial)
{
    char *detail = NULL;
    char key_hex[2 * PROV_JOURNAL_KEY_ID_MAX + 1] = "";
    char device[4096];
    bool found = false;
    struct txn t;
    int r;

    r = txn_begin(j, lot_id, serial, &t);
    if (r < 0) {
        return r;
    }
    r = t.s->ops->cert_unretired(t.s, t.dev_id, cert_serial, key_hex, device, sizeof(device),
                                 &found);
    if (r == 0 && !found) {
        r = prov_fail(PROV_ERR_JOURNAL,
                      "journal %s: serial %s: no superseded certificate %s waiting to be retired",
                      j->store->name, serial, cert_serial);
    }
    if (r == 0 &&
        asprintf(&detail, "cert_serial=%s key_id=%s device=%s", cert_serial, key_hex, device) < 0) {
        detail = NULL;
        r = PROV_ERR_NOMEM;
    }
    r = r ? r : t.s->ops->cert_retire(t.s, t.dev_id, cert_serial, t.now);
    r = r ? r : journal_audit_append(t.s, t.lot, serial, "retired", detail);
    free(detail);
    /* not a state: neither the crash nor the pause hook stops here */
    return txn_end(j, &t, r, PROV_JOURNAL_NONE);
}

/* The reads: the store's, under the journal's lock where a transaction could interleave. */
int prov_journal_get(struct prov_journal *j, long long lot_id, const char *serial,
                     struct prov_journal_device *out)
{
    long long dev_id;
    long long cert_id;
    int r;

    pthread_mutex_lock(&j->lock);
    r = j->store->ops->row_get(j->store, lot_id, serial, out, &dev_id, &cert_id);
    pthread_mutex_unlock(&j->lock);
    return r;
}

int prov_journal_rows_of(struct prov_journal *j, long long lot_id, const char *const *serials,
                         size_t n,
                         int (*fn)(void *ctx, size_t i, const struct prov_journal_device *d),
                         void *ctx)
{
    int r;

    pthread_mutex_lock(&j->lock);
    r = n == 0 ? 0 : j->store->ops->rows_of(j->store, lot_id, serials, n, fn, ctx);
    pthread_mutex_unlock(&j->lock);
    return r;
}

int prov_journal_find_lot(struct prov_journal *j, const char *name, long long *lot_id)
{
    int r;

    pthread_mutex_lock(&j->lock);
    r = j->store->ops->lot_find(j->store, name, lot_id);
    pthread_mutex_unlock(&j->lock);
    if (r == 0 && *lot_id == 0) {
        r = prov_fail(PROV_ERR_NOT_FOUND, "journal %s: no lot \"%s\"", j->store->name, name);
    }
    return r;
}

int prov_journal_superseded_in_request(struct prov_journal *j, long long lot_id, const char *serial,
                                       long long request, long long *by_run)
{
    int r;

    pthread_mutex_lock(&j->lock);
    r = j->store->ops->superseded_in_request(j->store, lot_id, serial, request, by_run);
    pthread_mutex_unlock(&j->lock);
    return r;
}

int prov_journal_last_superseded(struct prov_journal *j, long long lot_id, const char *serial,
                                 unsigned char **der, size_t *len)
{
    int r;

    pthread_mutex_lock(&j->lock);
    r = j->store->ops->last_superseded(j->store, lot_id, serial, der, len);
    pthread_mutex_unlock(&j->lock);
    return r;
}

int prov_journal_unretired_keys(struct prov_journal *j, long long lot_id, const char *serial,
                                struct prov_journal_old_key **keys, size_t *n)
{
    int r;

    pthread_mutex_lock(&j->lock);
    r = j->store->ops->unretired_keys(j->store, lot_id, serial, keys, n);
    pthread_mutex_unlock(&j->lock);
    return r;
}

int prov_journal_row_has_cert(struct prov_journal *j, long long lot_id, const char *serial,
                              const char *sha256, bool *out)
{
    int r;

    pthread_mutex_lock(&j->lock);
    r = j->store->ops->row_has_cert(j->store, lot_id, serial, sha256, out);
    pthread_mutex_unlock(&j->lock);
    return r;
}

int prov_journal_counts(struct prov_journal *j, long long lot_id,
                        long long counts[PROV_JOURNAL_STATE_COUNT], long long *n_superseded)
{
    int r;

    pthread_mutex_lock(&j->lock);
    r = j->store->ops->counts(j->store, lot_id, counts, n_superseded);
    pthread_mutex_unlock(&j->lock);
    return r;
}

int prov_journal_schema_version(const struct prov_journal *j)
{
    return j->store->ops->schema_version(j->store);
}

/* No lock held across the callbacks: a reader's statement sees one snapshot anyway. */
int prov_journal_foreach_lot(struct prov_journal *j,
                             int (*fn)(void *ctx, long long lot_id, const char *name,
                                       const char *manifest),
                             void *ctx)
{
    return j->store->ops->foreach_lot(j->store, fn, ctx);
}

int prov_journal_foreach(struct prov_journal *j, long long lot_id,
                         int (*fn)(void *ctx, const struct prov_journal_device *d), void *ctx)
{
    return j->store->ops->foreach_device(j->store, lot_id, fn, ctx);
}

int prov_journal_foreach_key(struct prov_journal *j,
                             int (*fn)(void *ctx, const struct prov_journal_key_ref *k), void *ctx)
{
    return j->store->ops->foreach_key(j->store, fn, ctx);
}
