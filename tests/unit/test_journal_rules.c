/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The journal's rules over a mock store (journal_store.h), without SQLite: each transition is
 * one transaction that reads the row, writes it once and appends one audit record; a refused
 * transition or a store error writes nothing and rolls back; a certificate the store reports
 * as a duplicate is refused naming the rule it broke; failed keeps what was reached; the run
 * bookkeeping resumes an unfinished run and continues a finished request. The mock records
 * the ops it is asked for, so the tests also pin down what a store must offer.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "error.h"
#include "journal.h"
#include "journal_internal.h"
#include "journal_store.h"

#define MOCK_MAX 16

struct mock_row {
    long long id;
    long long lot_id;
    char *serial;
    char *device_uri;
    char *key_uri;
    char *storage;
    char *error;
    enum prov_journal_state state;
    unsigned char key_id[PROV_JOURNAL_KEY_ID_MAX];
    size_t key_id_len;
    int attempts;
    long long cert_id;
};

struct mock_cert {
    long long id;
    long long device_id;
    char cert_serial[65];
    char pubkey_sha256[65];
    char sha256[65];
    long long superseded_run; /* 0: current */
};

struct mock_audit {
    long long seq;
    char *text[5]; /* at, lot, serial, event, detail */
    char prev_hash[65];
    char hash[65];
};

struct mock_run {
    long long id;
    long long request;
    char *list;
    bool is_finished;
};

struct mock {
    struct journal_store base;
    struct mock_row rows[MOCK_MAX];
    size_t n_rows;
    struct mock_cert certs[MOCK_MAX];
    size_t n_certs;
    struct mock_audit audit[4 * MOCK_MAX];
    size_t n_audit;
    struct mock_run runs[MOCK_MAX];
    size_t n_runs;
    bool is_in_txn;
    bool is_put_failing; /* row_put fails as a full disk would */
    char log[512];       /* the ops asked for since the last mock_log_clear */
};

static void mock_log(struct journal_store *s, const char *op)
{
    struct mock *m = (struct mock *)s;
    size_t n = strlen(m->log);

    snprintf(m->log + n, sizeof(m->log) - n, "%s%s", n ? " " : "", op);
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static void replace(char **field, const char *value)
{
    char *copy = dup_or_null(value);

    free(*field);
    *field = copy;
}

static struct mock_row *row_by_serial(struct mock *m, long long lot_id, const char *serial)
{
    for (size_t i = 0; i < m->n_rows; i++) {
        if (m->rows[i].lot_id == lot_id && strcmp(m->rows[i].serial, serial) == 0) {
            return &m->rows[i];
        }
    }
    return NULL;
}

static struct mock_cert *cert_by_id(struct mock *m, long long id)
{
    return id > 0 && (size_t)id <= m->n_certs ? &m->certs[id - 1] : NULL;
}

static int mock_begin(struct journal_store *s)
{
    struct mock *m = (struct mock *)s;

    assert_false(m->is_in_txn);
    m->is_in_txn = true;
    mock_log(s, "begin");
    return 0;
}

static int mock_end(struct journal_store *s, int r)
{
    struct mock *m = (struct mock *)s;

    assert_true(m->is_in_txn);
    m->is_in_txn = false;
    mock_log(s, r == 0 ? "commit" : "rollback");
    return r;
}

static int mock_lot_name(struct journal_store *s, long long lot_id, char *out, size_t cap)
{
    mock_log(s, "lot_name");
    if (lot_id != 1) {
        return prov_fail(PROV_ERR_JOURNAL, "journal %s: no lot %lld", s->name, lot_id);
    }
    snprintf(out, cap, "lot-a");
    return 0;
}

static int mock_row_get(struct journal_store *s, long long lot_id, const char *serial,
                        struct prov_journal_device *d, long long *dev_id, long long *cert_id)
{
    struct mock *m = (struct mock *)s;
    struct mock_row *w = row_by_serial(m, lot_id, serial);
    struct mock_cert *c = w ? cert_by_id(m, w->cert_id) : NULL;

    mock_log(s, "row_get");
    memset(d, 0, sizeof(*d));
    *dev_id = w ? w->id : 0;
    *cert_id = w ? w->cert_id : 0;
    if (w == NULL) {
        return 0;
    }
    d->lot = strdup("lot-a");
    d->serial = strdup(w->serial);
    d->device_uri = strdup(w->device_uri);
    d->key_uri = dup_or_null(w->key_uri);
    d->storage = dup_or_null(w->storage);
    d->error = dup_or_null(w->error);
    d->state = w->state;
    memcpy(d->key_id, w->key_id, w->key_id_len);
    d->key_id_len = w->key_id_len;
    d->attempts = w->attempts;
    if (c != NULL) {
        memcpy(d->cert_serial, c->cert_serial, sizeof(d->cert_serial));
        memcpy(d->sha256, c->sha256, sizeof(d->sha256));
        memcpy(d->pubkey_sha256, c->pubkey_sha256, sizeof(d->pubkey_sha256));
    }
    for (size_t i = 0; i < m->n_certs; i++) {
        d->n_superseded += m->certs[i].device_id == w->id && m->certs[i].superseded_run != 0;
    }
    return 0;
}

static int mock_row_put(struct journal_store *s, struct journal_row *put)
{
    struct mock *m = (struct mock *)s;
    struct mock_row *w;

    mock_log(s, "row_put");
    assert_true(m->is_in_txn);
    if (m->is_put_failing) {
        return prov_fail(PROV_ERR_JOURNAL, "journal %s: %s: disk full", s->name, put->serial);
    }
    if (put->id == 0) {
        assert_true(m->n_rows < MOCK_MAX);
        w = &m->rows[m->n_rows++];
        w->id = (long long)m->n_rows;
        w->lot_id = put->lot_id;
        w->serial = strdup(put->serial);
        put->id = w->id;
    } else {
        assert_true(put->id > 0 && (size_t)put->id <= m->n_rows);
        w = &m->rows[put->id - 1];
    }
    assert_non_null(put->device_uri);
    replace(&w->device_uri, put->device_uri);
    replace(&w->key_uri, put->key_uri);
    replace(&w->storage, put->storage);
    replace(&w->error, put->error);
    w->state = put->state;
    w->key_id_len = put->key_id ? put->key_id_len : 0;
    memcpy(w->key_id, put->key_id ? put->key_id : w->key_id, w->key_id_len);
    w->attempts = put->attempts;
    w->cert_id = put->cert_id;
    return 0;
}

static int mock_cert_insert(struct journal_store *s, const struct journal_cert *c,
                            long long *cert_id, enum journal_unique *broken)
{
    struct mock *m = (struct mock *)s;
    struct mock_cert *n;

    mock_log(s, "cert_insert");
    for (size_t i = 0; i < m->n_certs; i++) {
        if (strcmp(m->certs[i].cert_serial, c->cert_serial) == 0) {
            *broken = JOURNAL_UNIQUE_CERT_SERIAL;
            return PROV_ERR_ALREADY_ISSUED;
        }
        if (strcmp(m->certs[i].pubkey_sha256, c->pubkey_sha256) == 0) {
            *broken = JOURNAL_UNIQUE_PUBKEY;
            return PROV_ERR_ALREADY_ISSUED;
        }
    }
    assert_true(m->n_certs < MOCK_MAX);
    assert_non_null(c->der);
    n = &m->certs[m->n_certs++];
    n->id = (long long)m->n_certs;
    n->device_id = c->device_id;
    snprintf(n->cert_serial, sizeof(n->cert_serial), "%s", c->cert_serial);
    snprintf(n->pubkey_sha256, sizeof(n->pubkey_sha256), "%s", c->pubkey_sha256);
    snprintf(n->sha256, sizeof(n->sha256), "%s", c->sha256);
    *cert_id = n->id;
    return 0;
}

static int mock_cert_supersede(struct journal_store *s, long long cert_id, const char *now,
                               long long run_id)
{
    struct mock_cert *c = cert_by_id((struct mock *)s, cert_id);

    mock_log(s, "cert_supersede");
    assert_non_null(c);
    c->superseded_run = run_id;
    return 0;
}

static int mock_run_newest(struct journal_store *s, long long lot_id, const char *list,
                           long long *id, long long *request, bool *is_unfinished)
{
    struct mock *m = (struct mock *)s;

    mock_log(s, "run_newest");
    *id = 0;
    for (size_t i = m->n_runs; i > 0 && *id == 0; i--) {
        if (strcmp(m->runs[i - 1].list, list) == 0) {
            *id = m->runs[i - 1].id;
            *request = m->runs[i - 1].request;
            *is_unfinished = !m->runs[i - 1].is_finished;
        }
    }
    return 0;
}

static int mock_run_insert(struct journal_store *s, long long lot_id, const char *list,
                           const char *now, long long request, long long *id)
{
    struct mock *m = (struct mock *)s;
    struct mock_run *run = &m->runs[m->n_runs++];

    mock_log(s, "run_insert");
    run->id = (long long)m->n_runs;
    run->request = request ? request : run->id;
    run->list = strdup(list);
    *id = run->id;
    return 0;
}

static int mock_run_finish(struct journal_store *s, long long run_id, const char *now, char *lot,
                           size_t cap)
{
    struct mock *m = (struct mock *)s;

    mock_log(s, "run_finish");
    assert_true(run_id > 0 && (size_t)run_id <= m->n_runs);
    m->runs[run_id - 1].is_finished = true;
    snprintf(lot, cap, "lot-a");
    return 0;
}

static int mock_audit_head(struct journal_store *s, long long *seq, char hash[65])
{
    struct mock *m = (struct mock *)s;

    mock_log(s, "audit_head");
    *seq = (long long)m->n_audit;
    memcpy(hash, m->n_audit ? m->audit[m->n_audit - 1].hash : JOURNAL_ZERO_HASH, 65);
    return 0;
}

static int mock_audit_append(struct journal_store *s, const struct journal_audit_record *a)
{
    struct mock *m = (struct mock *)s;
    struct mock_audit *n = &m->audit[m->n_audit++];
    const char *text[5] = {a->at, a->lot, a->serial, a->event, a->detail};

    mock_log(s, "audit_append");
    assert_true(m->is_in_txn);
    n->seq = a->seq;
    for (int i = 0; i < 5; i++) {
        n->text[i] = strdup(text[i]);
    }
    snprintf(n->prev_hash, sizeof(n->prev_hash), "%s", a->prev_hash);
    snprintf(n->hash, sizeof(n->hash), "%s", a->hash);
    return 0;
}

static int mock_audit_foreach(struct journal_store *s,
                              int (*fn)(void *ctx, const struct journal_audit_record *rec),
                              void *ctx)
{
    struct mock *m = (struct mock *)s;
    int r = 0;

    for (size_t i = 0; i < m->n_audit && r == 0; i++) {
        const struct mock_audit *a = &m->audit[i];

        r = fn(ctx, &(struct journal_audit_record){.seq = a->seq,
                                                   .at = a->text[0],
                                                   .lot = a->text[1],
                                                   .serial = a->text[2],
                                                   .event = a->text[3],
                                                   .detail = a->text[4],
                                                   .prev_hash = a->prev_hash,
                                                   .hash = a->hash});
    }
    return r;
}

/* The newest record of serial whose event is a state, and the newest "issued" detail. */
static int mock_audit_rows(struct journal_store *s,
                           int (*fn)(void *ctx, const struct journal_row_audit *row), void *ctx)
{
    struct mock *m = (struct mock *)s;
    int r = 0;

    for (size_t i = 0; i < m->n_rows && r == 0; i++) {
        const struct mock_row *w = &m->rows[i];
        const struct mock_cert *c = cert_by_id(m, w->cert_id);
        struct journal_row_audit a = {.lot = "lot-a",
                                      .serial = w->serial,
                                      .state = prov_journal_state_name(w->state),
                                      .sha256 = c ? c->sha256 : NULL};

        for (size_t k = 0; k < m->n_audit; k++) {
            char **t = m->audit[k].text;

            if (strcmp(t[2], w->serial) != 0) {
                continue;
            }
            if (journal_state_parse(t[3]) != PROV_JOURNAL_NONE) {
                a.last_event = t[3];
            }
            if (strcmp(t[3], "issued") == 0) {
                a.issued_detail = t[4];
            }
        }
        r = fn(ctx, &a);
    }
    return r;
}

static int mock_schema_version(const struct journal_store *s)
{
    return 5;
}

static void mock_close(struct journal_store *s)
{
    struct mock *m = (struct mock *)s;

    for (size_t i = 0; i < m->n_rows; i++) {
        free(m->rows[i].serial);
        free(m->rows[i].device_uri);
        free(m->rows[i].key_uri);
        free(m->rows[i].storage);
        free(m->rows[i].error);
    }
    for (size_t i = 0; i < m->n_audit; i++) {
        for (int k = 0; k < 5; k++) {
            free(m->audit[i].text[k]);
        }
    }
    for (size_t i = 0; i < m->n_runs; i++) {
        free(m->runs[i].list);
    }
    free(m);
}

static const struct journal_store_ops mock_ops = {
    .close = mock_close,
    .begin = mock_begin,
    .end = mock_end,
    .lot_name = mock_lot_name,
    .row_get = mock_row_get,
    .row_put = mock_row_put,
    .cert_insert = mock_cert_insert,
    .cert_supersede = mock_cert_supersede,
    .run_newest = mock_run_newest,
    .run_insert = mock_run_insert,
    .run_finish = mock_run_finish,
    .audit_head = mock_audit_head,
    .audit_append = mock_audit_append,
    .audit_foreach = mock_audit_foreach,
    .audit_rows = mock_audit_rows,
    .schema_version = mock_schema_version,
};

struct fixture {
    struct mock *m; /* owned by j */
    struct prov_journal *j;
    EVP_PKEY *keys[2];
};

static const unsigned char id1[16] = {1};
static const unsigned char id2[16] = {2};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    assert_non_null(f);
    f->m = calloc(1, sizeof(*f->m));
    assert_non_null(f->m);
    f->m->base.ops = &mock_ops;
    f->m->base.name = "mock";
    unsetenv("PROVISIONER_TEST_CRASH_AT");
    unsetenv("PROVISIONER_TEST_PAUSE_AT");
    assert_int_equal(journal_open_on(&f->m->base, true, &f->j), 0);
    for (int i = 0; i < 2; i++) {
        f->keys[i] = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
        assert_non_null(f->keys[i]);
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    prov_journal_close(f->j);
    for (int i = 0; i < 2; i++) {
        EVP_PKEY_free(f->keys[i]);
    }
    free(f);
    return 0;
}

/* A self-signed certificate numbered serial for key. */
static X509 *cert_for(long serial, EVP_PKEY *key)
{
    X509 *c = X509_new();
    X509_NAME *name = X509_NAME_new();

    assert_non_null(c);
    assert_non_null(name);
    ASN1_INTEGER_set(X509_get_serialNumber(c), serial);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)"rules", -1, -1,
                               0);
    X509_set_subject_name(c, name);
    X509_set_issuer_name(c, name);
    X509_set_pubkey(c, key);
    X509_gmtime_adj(X509_getm_notBefore(c), 0);
    X509_gmtime_adj(X509_getm_notAfter(c), 3600);
    assert_true(X509_sign(c, key, EVP_sha256()) > 0);
    X509_NAME_free(name);
    return c;
}

static void log_clear(struct fixture *f)
{
    f->m->log[0] = '\0';
}

static int issue(struct fixture *f, const char *serial, const unsigned char *id, long cert_serial,
                 EVP_PKEY *key)
{
    X509 *c = cert_for(cert_serial, key);
    int r = prov_journal_record_issued(f->j, 1, serial, id, 16, c, "pkcs11:token=t;id=%01");

    X509_free(c);
    return r;
}

/*
 * Each transition is one transaction: the lot's name, the row, one write of the row (and the
 * certificate for issued), one audit record linked to the one before it, one commit.
 */
static void test_one_transaction_each(void **state)
{
    struct fixture *f = *state;
    struct prov_journal_audit audit;

    assert_int_equal(prov_journal_record_intent(f->j, 1, "A", "pkcs11:token=t", "out/A", id1, 16),
                     0);
    assert_string_equal(f->m->log, "begin lot_name row_get row_put audit_head audit_append commit");
    assert_int_equal(f->m->rows[0].state, PROV_JOURNAL_INTENT);
    assert_int_equal(f->m->rows[0].attempts, 1);
    assert_string_equal(f->m->rows[0].storage, "out/A");

    log_clear(f);
    assert_int_equal(issue(f, "A", id1, 100, f->keys[0]), 0);
    assert_string_equal(
        f->m->log, "begin lot_name row_get cert_insert row_put audit_head audit_append commit");
    assert_int_equal(f->m->rows[0].cert_id, 1);
    assert_string_equal(f->m->rows[0].key_uri, "pkcs11:token=t;id=%01");

    log_clear(f);
    assert_int_equal(prov_journal_record_stored(f->j, 1, "A"), 0);
    assert_int_equal(prov_journal_record_proven_over(f->j, 1, "A", "https://h/"), 0);
    assert_string_equal(f->m->log, "begin lot_name row_get row_put audit_head audit_append commit "
                                   "begin lot_name row_get row_put audit_head audit_append commit");
    assert_int_equal(f->m->rows[0].state, PROV_JOURNAL_PROVEN);
    assert_string_equal(f->m->rows[0].key_uri, "pkcs11:token=t;id=%01"); /* kept */

    assert_int_equal(f->m->n_audit, 4);
    assert_string_equal(f->m->audit[0].text[3], "intent");
    assert_string_equal(f->m->audit[0].text[4],
                        "key_id=01000000000000000000000000000000 device=pkcs11:token=t");
    assert_string_equal(f->m->audit[0].prev_hash, JOURNAL_ZERO_HASH);
    assert_string_equal(f->m->audit[3].text[4], "64 mtls=https://h/");
    for (size_t i = 1; i < f->m->n_audit; i++) {
        assert_int_equal(f->m->audit[i].seq, (long long)i + 1);
        assert_string_equal(f->m->audit[i].prev_hash, f->m->audit[i - 1].hash);
    }
    assert_int_equal(prov_journal_verify_audit(f->j, &audit), 0);
    assert_int_equal(audit.n_records, 4);
    assert_string_equal(audit.head_hash, f->m->audit[3].hash);
}

/* A refused transition asks the store for nothing but the row, and rolls back. */
static void test_refused_writes_nothing(void **state)
{
    struct fixture *f = *state;

    prov_error_clear();
    assert_int_equal(prov_journal_record_stored(f->j, 1, "A"), PROV_ERR_JOURNAL);
    assert_non_null(strstr(prov_error_message(), "journal mock: serial A: no transition from "
                                                 "none to stored"));
    assert_string_equal(f->m->log, "begin lot_name row_get rollback");
    assert_int_equal(f->m->n_rows, 0);
    assert_int_equal(f->m->n_audit, 0);

    assert_int_equal(prov_journal_record_intent(f->j, 1, "A", "pkcs11:token=t", "d", id1, 16), 0);
    log_clear(f);
    /* issued needs the key the intent recorded */
    prov_error_clear();
    assert_int_equal(issue(f, "A", id2, 100, f->keys[0]), PROV_ERR_JOURNAL);
    assert_non_null(strstr(prov_error_message(), "the key is not the one the intent recorded"));
    assert_string_equal(f->m->log, "begin lot_name row_get rollback");
    assert_int_equal(issue(f, "A", id1, 100, f->keys[0]), 0);
    /* no new attempt over a certificate, no proof before storage, no supersede before it */
    assert_int_equal(prov_journal_record_intent(f->j, 1, "A", "pkcs11:token=t", "d", id2, 16),
                     PROV_ERR_JOURNAL);
    assert_int_equal(prov_journal_record_proven(f->j, 1, "A"), PROV_ERR_JOURNAL);
    assert_int_equal(prov_journal_supersede(f->j, 1, "A", 1), PROV_ERR_JOURNAL);
    assert_int_equal(f->m->rows[0].state, PROV_JOURNAL_ISSUED);
    assert_int_equal(f->m->n_audit, 2);
    /* a key id the journal cannot hold is refused before any transaction */
    log_clear(f);
    assert_int_equal(prov_journal_record_intent(f->j, 1, "B", "pkcs11:token=t", "d", id1, 0),
                     PROV_ERR_INTERNAL);
    assert_string_equal(f->m->log, "");
}

/*
 * The store says which uniqueness rule a certificate broke; the rules name it, record
 * nothing and leave the row where it was.
 */
static void test_duplicate_certificate(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(prov_journal_record_intent(f->j, 1, "A", "pkcs11:token=t", "d", id1, 16), 0);
    assert_int_equal(issue(f, "A", id1, 100, f->keys[0]), 0);
    assert_int_equal(prov_journal_record_intent(f->j, 1, "B", "pkcs11:token=u", "e", id2, 16), 0);

    log_clear(f);
    prov_error_clear();
    assert_int_equal(issue(f, "B", id2, 101, f->keys[0]), PROV_ERR_ALREADY_ISSUED);
    assert_non_null(strstr(prov_error_message(), "serial B: public key "));
    assert_non_null(strstr(prov_error_message(), " was already certified (journal mock)"));
    assert_string_equal(f->m->log, "begin lot_name row_get cert_insert rollback");

    prov_error_clear();
    assert_int_equal(issue(f, "B", id2, 100, f->keys[1]), PROV_ERR_ALREADY_ISSUED);
    assert_non_null(
        strstr(prov_error_message(), "serial B: certificate serial 64 is already in journal mock"));
    assert_int_equal(f->m->rows[1].state, PROV_JOURNAL_INTENT);
    assert_int_equal(f->m->rows[1].cert_id, 0);
    assert_int_equal(f->m->n_certs, 1);
    assert_int_equal(f->m->n_audit, 3);

    assert_int_equal(issue(f, "B", id2, 101, f->keys[1]), 0);
}

/* failed keeps the key and certificate reached, so that the next run resumes from them. */
static void test_failed_keeps_progress(void **state)
{
    struct fixture *f = *state;
    struct prov_journal_device d;

    /* a row that fails before anything is recorded is created with its device only */
    assert_int_equal(prov_journal_record_failed(f->j, 1, "N", "pkcs11:token=n", "no token"), 0);
    assert_int_equal(f->m->rows[0].state, PROV_JOURNAL_FAILED);
    assert_string_equal(f->m->rows[0].device_uri, "pkcs11:token=n");
    assert_int_equal(f->m->rows[0].attempts, 0);
    assert_int_equal(f->m->rows[0].key_id_len, 0);
    /* without a certificate, a new attempt may start */
    assert_int_equal(prov_journal_record_intent(f->j, 1, "N", "pkcs11:token=n", "d", id2, 16), 0);
    assert_int_equal(f->m->rows[0].attempts, 1);
    assert_null(f->m->rows[0].error);

    assert_int_equal(prov_journal_record_intent(f->j, 1, "A", "pkcs11:token=t", "d", id1, 16), 0);
    assert_int_equal(issue(f, "A", id1, 100, f->keys[0]), 0);
    assert_int_equal(prov_journal_record_failed(f->j, 1, "A", "pkcs11:token=other", "disk full"),
                     0);
    assert_int_equal(prov_journal_get(f->j, 1, "A", &d), 0);
    assert_int_equal(d.state, PROV_JOURNAL_FAILED);
    assert_string_equal(d.device_uri, "pkcs11:token=t"); /* the row's device stays */
    assert_string_equal(d.error, "disk full");
    assert_string_equal(d.cert_serial, "64");
    assert_memory_equal(d.key_id, id1, 16);
    prov_journal_device_clear(&d);
    /* with a certificate: no new key, but storage may be written again */
    assert_int_equal(prov_journal_record_intent(f->j, 1, "A", "pkcs11:token=t", "d", id2, 16),
                     PROV_ERR_JOURNAL);
    assert_int_equal(prov_journal_record_stored(f->j, 1, "A"), 0);
    assert_null(f->m->rows[1].error);
    assert_int_equal(f->m->rows[1].cert_id, 1);
}

/* A store that cannot write: the error is the store's, the transaction rolled back. */
static void test_store_error_rolls_back(void **state)
{
    struct fixture *f = *state;

    f->m->is_put_failing = true;
    prov_error_clear();
    assert_int_equal(prov_journal_record_intent(f->j, 1, "A", "pkcs11:token=t", "d", id1, 16),
                     PROV_ERR_JOURNAL);
    assert_string_equal(prov_error_message(), "journal mock: A: disk full");
    assert_string_equal(f->m->log, "begin lot_name row_get row_put rollback");
    assert_int_equal(f->m->n_audit, 0);
    /* an unknown lot is the store's answer too */
    log_clear(f);
    assert_int_equal(prov_journal_record_stored(f->j, 7, "A"), PROV_ERR_JOURNAL);
    assert_string_equal(f->m->log, "begin lot_name rollback");
}

/* --reissue: the certificate is marked superseded by the run, the row waits for an intent. */
static void test_supersede(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(prov_journal_record_intent(f->j, 1, "A", "pkcs11:token=t", "d", id1, 16), 0);
    assert_int_equal(issue(f, "A", id1, 100, f->keys[0]), 0);
    assert_int_equal(prov_journal_record_stored(f->j, 1, "A"), 0);
    log_clear(f);
    assert_int_equal(prov_journal_supersede(f->j, 1, "A", 9), 0);
    assert_string_equal(
        f->m->log, "begin lot_name row_get cert_supersede row_put audit_head audit_append commit");
    assert_int_equal(f->m->certs[0].superseded_run, 9);
    assert_int_equal(f->m->rows[0].state, PROV_JOURNAL_SUPERSEDED);
    assert_int_equal(f->m->rows[0].cert_id, 0);
    assert_string_equal(f->m->audit[f->m->n_audit - 1].text[4], "cert_serial=64 run=9");
    /* superseded again is refused: there is no current certificate */
    assert_int_equal(prov_journal_supersede(f->j, 1, "A", 9), PROV_ERR_JOURNAL);
    assert_int_equal(prov_journal_record_intent(f->j, 1, "A", "pkcs11:token=v", "d", id2, 16), 0);
    assert_int_equal(f->m->rows[0].attempts, 2);
    assert_string_equal(f->m->rows[0].device_uri, "pkcs11:token=v");
    assert_null(f->m->rows[0].key_uri);
    /* the new certificate may not reuse the superseded one's key or serial */
    assert_int_equal(issue(f, "A", id2, 100, f->keys[1]), PROV_ERR_ALREADY_ISSUED);
    assert_int_equal(issue(f, "A", id2, 101, f->keys[1]), 0);
}

/*
 * The run bookkeeping: a first run is its own request; the same list again resumes the run
 * while it is unfinished, then continues its request with a new run; another list is another
 * request.
 */
static void test_runs(void **state)
{
    struct fixture *f = *state;
    struct prov_journal_run run;

    assert_int_equal(prov_journal_run_begin(f->j, 1, "A", false, &run), 0);
    assert_string_equal(f->m->log, "begin lot_name run_newest run_insert audit_head audit_append "
                                   "commit");
    assert_int_equal(run.id, 1);
    assert_int_equal(run.request, 1);
    assert_false(run.is_resumed);
    assert_false(run.is_continued);
    assert_string_equal(f->m->audit[0].text[3], "run-begin");
    assert_string_equal(f->m->audit[0].text[4], "run=1 request=1");

    log_clear(f);
    assert_int_equal(prov_journal_run_begin(f->j, 1, "A", false, &run), 0);
    assert_string_equal(f->m->log, "begin lot_name run_newest audit_head audit_append commit");
    assert_int_equal(run.id, 1);
    assert_true(run.is_resumed);
    assert_string_equal(f->m->audit[1].text[3], "run-resumed");

    assert_int_equal(prov_journal_run_end(f->j, 1), 0);
    assert_string_equal(f->m->audit[2].text[3], "run-end");
    assert_string_equal(f->m->audit[2].text[1], "lot-a");
    assert_int_equal(prov_journal_run_begin(f->j, 1, "A", false, &run), 0);
    assert_int_equal(run.id, 2);
    assert_int_equal(run.request, 1);
    assert_true(run.is_continued);
    assert_false(run.is_resumed);

    assert_int_equal(prov_journal_run_begin(f->j, 1, "B", false, &run), 0);
    assert_int_equal(run.id, 3);
    assert_int_equal(run.request, 3);
    assert_false(run.is_continued);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_one_transaction_each, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_writes_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_duplicate_certificate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_keeps_progress, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_error_rolls_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_supersede, setup, teardown),
        cmocka_unit_test_setup_teardown(test_runs, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
