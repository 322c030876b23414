/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One manifest row, driven by its journal state (the policy is in batch.h). Every device
 * operation goes through the core (the pipeline's steps, provisioner/pipeline/steps.h, and
 * prov_device_open_login) or the backend ops table; nothing here knows PKCS#11 or ESAPI. The
 * token locks are batch_tokens.c's, the storage stage's thread batch_stage.c's.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "backend.h"
#include "device.h"
#include "batch_row.h"
#include "ca_index.h"
#include "chain.h"
#include "connect.h"
#include "enroll.h"
#include "error.h"
#include "hex.h"
#include "log.h"
#include "manifest_value.h"
#include "steps.h"
#include "storage.h"
#include "text.h"

struct row_ctx {
    struct batch *b;
    struct batch_group *g;
    struct batch_row *e;
    const struct prov_manifest_row *row;
    const char *serial;
    const char *device_uri;
    struct prov_request rq;
    enum prov_key_type key_type;
    char *dir;
    struct prov_journal_device d;
    struct batch_hold hold;    /* the token lock the row holds */
    unsigned char key_id[PROV_KEY_ID_BYTES];
    const unsigned char *cur_id; /* the row's current key (kept when superseded keys go) */
    size_t cur_id_len;
    bool is_deferred;       /* handed to the storage stage, which concludes the row */
    bool is_outside_change; /* the storage holds an identity the lot did not issue */
    char *row_pin_spec;     /* the row's pin column, resolved; NULL: the run's PIN source */
    const char *pin;        /* the device PIN source the row uses (pin_spec) */
    struct prov_issuer *is; /* the run's issuer (issuer.h) */
    struct batch_kept_device *kept; /* the worker's (batch_row.h); NULL: none is kept */
    /*
     * The interrupted attempt's key (key_id) is asked for again rather than replaced: a CA
     * service may have certified it already, and answers the same request with the same
     * certificate (doc/ca-service.md, "What is issued").
     */
    bool is_reusing_key;
};

/* An issued identity waiting for the storage stage (everything owned). */
struct finish_job {
    uint32_t index; /* the row */
    char *serial;
    char *device_uri;
    char *dir;
    char *key_uri;
    X509 *cert;
    enum prov_key_type key_type;
    const char *backend; /* static: the backend's name */
    const char *profile; /* owned by the config */
};

static const char *const status_names[] = {"failed", "issued", "already-issued", "failed",
                                            "elsewhere"};

const char *batch_status_name(enum batch_status st)
{
    return status_names[st <= BATCH_ELSEWHERE ? st : BATCH_FAILED];
}

void batch_request(const struct batch *b, const struct prov_manifest_row *row,
                   const struct prov_profile *prof, struct prov_request *rq)
{
    memset(rq, 0, sizeof(*rq));
    rq->serial = row->value[PROV_COL_SERIAL];
    rq->cn = row->value[PROV_COL_CN];
    rq->san_dns = row->value[PROV_COL_SAN_DNS];
    rq->san_uri = row->value[PROV_COL_SAN_URI];
    rq->san_email = row->value[PROV_COL_SAN_EMAIL];
    rq->san_ip = row->value[PROV_COL_SAN_IP];
    rq->lot = b->lot;
    rq->profile = prof;
    rq->vars.x_names = row->x_names;
    rq->vars.x_values = row->x_values;
    rq->vars.n_x = row->n_x;
    /* The CA index leaves this lot's serials to its journal (provisioner/pki/ca_index.h). */
    rq->record.issued_by = "batch";
    rq->record.lot = b->lot;
    rq->record.journal = prov_journal_path(b->journal);
}

char *batch_storage_dir(const struct prov_config *cfg, const struct prov_manifest_row *row)
{
    const char *storage = row->value[PROV_COL_STORAGE];
    char norm[PROV_MANIFEST_FIELD_MAX + 1];
    const char *why;

    /* Validated already; normalized so that the journal and results show one spelling. */
    if (storage != NULL && !prov_manifest_storage_normalize(storage, norm, sizeof(norm), &why)) {
        return NULL;
    }
    return prov_storage_dir_for(cfg, NULL, storage != NULL ? norm : NULL,
                                row->value[PROV_COL_SERIAL]);
}

/* ---- steps ------------------------------------------------------------------------------ */

/* The lock of the row's own device's token (batch_tokens.h). */
static int lock_token(struct row_ctx *c)
{
    return batch_hold_token(&c->hold, c->device_uri);
}

void batch_kept_device_close(struct batch_kept_device *k)
{
    if (k != NULL) {
        prov_device_close(k->dev);
        free(k->uri);
        free(k->pin);
        memset(k, 0, sizeof(*k));
    }
}

void batch_kept_device_end(struct batch *b, struct batch_group *g, struct batch_kept_device *k)
{
    /* the group's token, resolved by its rows already: no look at the token to find it */
    struct batch_hold h = {.tokens = &b->tokens,
                           .group_uri = g->device_uri,
                           .group_token = &g->token,
                           .serial = "(the worker's last row)"};

    if (k->dev == NULL) {
        batch_kept_device_close(k);
        return;
    }
    if (batch_hold_token(&h, k->uri) < 0) {
        prov_error_clear(); /* resolved before, so not expected: closed all the same */
    }
    batch_kept_device_close(k);
    batch_release_token(&h);
}

/* Before any other use of a device in a row: the worker's kept one is closed (batch_row.h). */
static void drop_kept_device(struct row_ctx *c)
{
    batch_kept_device_close(c->kept);
}

/*
 * Whether the worker's device kept from its last row serves this row: the same device string
 * and PIN, and its session still as it was (backend.h, is_open). Asked before the token's lock
 * is taken: is_open only reads (the session's and the token's information, on this worker's
 * own session), the module was initialised for threads (CKF_OS_LOCKING_OK), and a device is
 * kept only where a second worker's session fits beside it (put_row_device), so the partner's
 * work on the token does not wait for the question. A token pulled between the answer and the
 * row's first call fails that call, as it would a moment after an answer under the lock.
 */
static bool kept_device_serves(const struct row_ctx *c)
{
    const struct batch_kept_device *k = c->kept;

    return k != NULL && k->dev != NULL && prov_same_text(k->uri, c->device_uri) &&
           prov_same_text(k->pin, c->pin) && k->dev->ops->is_open(k->dev);
}

/*
 * The device of a fresh enrollment, under the token's lock: the worker's kept device when it
 * serves (kept_device_serves, asked before the lock), else the kept one closed and the row's
 * opened, checked not to be the CA's and logged in (prov_step_open_device).
 */
static int open_row_device(struct row_ctx *c, bool is_kept_serving, struct prov_device **out)
{
    struct batch_kept_device *k = c->kept;

    if (is_kept_serving) {
        *out = k->dev;
        k->dev = NULL;
        batch_kept_device_close(k);
        prov_debug("batch", "serial %s: %s still open from the last row", c->serial,
                   (*out)->name);
        return 0;
    }
    batch_kept_device_close(k);
    return prov_step_open_device(c->b->cfg, c->is, c->device_uri, c->pin, false, out);
}

/*
 * After a fresh enrollment: its device kept for the worker's next row if it went well, and
 * only on a device that takes a second worker's session beside it (backend.h, may_share):
 * the session stays open once the row lets the token's lock go, and another group's worker
 * may take that lock for another device string naming the same token; a token that allows
 * one read-write session would refuse that worker's.
 */
static void put_row_device(struct row_ctx *c, struct prov_device *dev, bool is_ok)
{
    struct batch_kept_device *k = c->kept;

    if (dev != NULL && is_ok && k != NULL && dev->ops->is_open != NULL &&
        dev->ops->may_share != NULL && dev->ops->may_share(dev)) {
        k->uri = strdup(c->device_uri);
        k->pin = c->pin != NULL ? strdup(c->pin) : NULL;
        if (k->uri != NULL && (c->pin == NULL || k->pin != NULL)) {
            k->dev = dev;
            return;
        }
        batch_kept_device_close(k); /* out of memory: the device is only closed */
    }
    prov_device_close(dev);
}

int batch_resolve_pin_spec(const char *manifest, const char *spec, char **out)
{
    const char *slash = strrchr(manifest, '/');

    *out = NULL;
    if (spec == NULL) {
        return 0;
    }
    /* file:PATH relative to the manifest's directory, wherever the batch runs from */
    if (strncmp(spec, "file:", 5) == 0 && spec[5] != '/' && slash != NULL) {
        if (asprintf(out, "file:%.*s/%s", (int)(slash - manifest), manifest, spec + 5) < 0) {
            *out = NULL;
        }
    } else {
        *out = strdup(spec);
    }
    return *out != NULL ? 0 : prov_fail(PROV_ERR_NOMEM, "%s: out of memory", manifest);
}

/* The device PIN source a row uses: its pin column, else the run's --pin, else device_pin. */
static const char *pin_spec(const struct batch *b, const char *row_pin_spec)
{
    if (row_pin_spec != NULL) {
        return row_pin_spec;
    }
    return b->pin_spec ? b->pin_spec : b->cfg->device_pin;
}

/* What in the parsed storage s disagrees with the journal's certificate and the row, or NULL. */
static const char *stored_mismatch(const struct prov_stored_identity *s, X509 *cert,
                                   const char *serial, const char *key_uri)
{
    if (X509_cmp(s->cert, cert) != 0) {
        return "client.crt is not the certificate in the journal";
    }
    if (s->serial == NULL || strcmp(s->serial, serial) != 0) {
        return "identity.json names another serial";
    }
    if (key_uri != NULL && strcmp(s->key_uri, key_uri) != 0) {
        return "key.uri does not name the device key";
    }
    if (sk_X509_num(s->fullchain) < 1 || X509_cmp(sk_X509_value(s->fullchain, 0), cert) != 0) {
        return "fullchain.pem does not start with the certificate";
    }
    return NULL;
}

/*
 * The identity as written: the certificate plus the CA chain pass the chain rules
 * (doc/chains.md) for clientAuth, and the files hold exactly that identity. When this row has just written them
 * (is_just_written), prov_storage_write made them from cert, key_uri and the CA's chain and
 * read every file back byte for byte before renaming it into place, so the chain is checked
 * on those same objects. Otherwise (storage found complete on a re-run) the files are parsed:
 * client.crt is the journal's certificate, fullchain.pem starts with it, identity.json names
 * the serial, key.uri the key, and the chain checked is chain.pem's.
 * The key itself signed a fresh challenge that verified with this certificate before any of
 * it was stored (fresh_on_device, write_from_journal); the device is not opened again, because
 * on SoftHSM2 every key lookup costs time in proportion to the objects on the token
 * (`provisioner check` repeats the device proof from storage at any time).
 */
static int verify_written(struct row_ctx *c, X509 *cert, const char *key_uri,
                          bool is_just_written)
{
    struct prov_stored_identity *s = NULL;
    struct prov_chain_report rep = {0};
    STACK_OF(X509) *full = NULL;
    const char *what = NULL;
    int r = 0;

    if (!is_just_written) {
        r = prov_storage_read(c->dir, &s);
        if (r < 0) {
            return r;
        }
        what = stored_mismatch(s, cert, c->serial, key_uri);
    }
    full = what == NULL ? sk_X509_dup(s != NULL ? s->chain : c->is->ops->chain(c->is)) : NULL;
    if (what == NULL && (full == NULL || !sk_X509_unshift(full, cert))) {
        r = prov_fail(PROV_ERR_NOMEM, "serial %s: out of memory", c->serial);
    } else if (what == NULL &&
               prov_chain_verify(full, NULL, PROV_PURPOSE_CLIENT, time(NULL), &rep) < 0) {
        prov_error_clear();
        r = prov_fail(PROV_ERR_VERIFY, "serial %s: %s: chain: %s: %s", c->serial, c->dir,
                      rep.n > 0 ? rep.items[0].rule : "?",
                      rep.n > 0 ? rep.items[0].detail : "does not verify");
    } else if (what != NULL) {
        r = prov_fail(PROV_ERR_VERIFY, "serial %s: %s: %s", c->serial, c->dir, what);
    }
    prov_chain_report_free(&rep);
    sk_X509_free(full);
    prov_stored_identity_free(s);
    return r;
}

/*
 * Deletes the key with the recorded id from the device the journal names: the key of an
 * attempt that was interrupted (or failed) before its certificate was recorded. Absent is
 * fine. Any other failure stops the row: the id must stay in the journal until the key is
 * known to be gone, or it would become an orphan.
 */
static int delete_key_by_id(struct row_ctx *c, const char *device_uri, const unsigned char *id,
                            size_t id_len, const char *why)
{
    struct prov_device *dev = NULL;
    struct prov_key *key = NULL;
    char hex[2 * PROV_JOURNAL_KEY_ID_MAX + 1];
    int r;

    drop_kept_device(c);
    r = prov_step_open_device(c->b->cfg, c->is, device_uri, c->pin, false, &dev);
    if (r < 0) {
        return r;
    }
    r = dev->ops->find_key_by_id(dev, id, id_len, &key);
    if (r == PROV_ERR_NOT_FOUND) {
        prov_error_clear();
        r = 0;
    } else if (r == 0) {
        r = dev->ops->delete_key(dev, key);
        if (r == 0) {
            prov_hex_encode(id, id_len, hex);
            prov_info("serial %s: deleted %s key id %s from %s", c->serial, why, hex, dev->name);
        }
    }
    prov_key_free(key);
    prov_device_close(dev);
    return r;
}

/* Whether the key's public key is the one whose SHA-256 (of the SubjectPublicKeyInfo) is hex. */
static bool is_key_with_pub(const struct prov_key *key, const char *hex)
{
    char got[65];

    if (key->pub == NULL || prov_ca_index_spki_sha256(key->pub, got) < 0) {
        prov_error_clear();
        return false;
    }
    return strcmp(got, hex) == 0;
}

/*
 * Deletes the superseded key k from the device it was generated on (the journal records it
 * per certificate: a reissue may have moved the serial to another device), under that
 * token's lock. The key found by the recorded id must be the superseded certificate's key: a
 * TPM handle, or an id reused by hand, may hold another identity's key by now, which is left
 * alone (the superseded key is gone from there all the same). A device that is not here
 * keeps its key: a warning names it, it stays listed as not retired (batch status), and a
 * later run retires it when the device is back.
 */
static int retire_key(struct row_ctx *c, const struct prov_journal_old_key *k)
{
    struct prov_device *dev = NULL;
    struct prov_key *key = NULL;
    char hex[2 * PROV_JOURNAL_KEY_ID_MAX + 1];
    int r;

    prov_hex_encode(k->key_id, k->key_id_len, hex);
    drop_kept_device(c);
    r = batch_hold_token(&c->hold, k->device_uri);
    r = r ? r
          : prov_device_open_login(c->b->cfg, k->device_uri, c->pin, "device PIN", false,
                                   &dev);
    if (r == PROV_ERR_NOT_FOUND || r == PROV_ERR_DEVICE_REMOVED) {
        prov_warn("serial %s: the key of superseded certificate %s (id %s) stays on %s, which is "
                  "not here: not retired (%s)",
                  c->serial, k->cert_serial, hex, k->device_uri,
                  prov_error_message() ? prov_error_message() : prov_strerror(r));
        prov_error_clear();
        return 0;
    }
    if (r == 0) {
        r = dev->ops->find_key_by_id(dev, k->key_id, k->key_id_len, &key);
    }
    if (r == PROV_ERR_NOT_FOUND) {
        prov_error_clear();
        r = 0;
    } else if (r == 0 && !is_key_with_pub(key, k->pubkey_sha256)) {
        prov_info("serial %s: id %s on %s holds another key than superseded certificate %s; "
                  "left alone",
                  c->serial, hex, dev->name, k->cert_serial);
    } else if (r == 0) {
        r = dev->ops->delete_key(dev, key);
        if (r == 0) {
            prov_info("serial %s: deleted the superseded key id %s from %s", c->serial, hex,
                      dev->name);
        }
    }
    prov_key_free(key);
    prov_device_close(dev);
    if (r == 0) {
        r = prov_journal_record_retired(c->b->journal, c->b->lot_id, c->serial, k->cert_serial);
    }
    return r;
}

/*
 * After a reissue: the superseded keys leave their devices once the new identity is
 * verified. The current key is never touched: on a TPM that reissued in place it sits at
 * the superseded key's handle, whose old key the new one replaced.
 */
static int retire_superseded(struct row_ctx *c)
{
    struct prov_journal_old_key *keys = NULL;
    size_t n = 0;
    int r;

    r = prov_journal_unretired_keys(c->b->journal, c->b->lot_id, c->serial, &keys, &n);
    for (size_t i = 0; i < n && r == 0; i++) {
        if (keys[i].key_id_len == c->cur_id_len &&
            memcmp(keys[i].key_id, c->cur_id, c->cur_id_len) == 0 &&
            strcmp(keys[i].device_uri, c->device_uri) == 0) {
            r = prov_journal_record_retired(c->b->journal, c->b->lot_id, c->serial,
                                            keys[i].cert_serial);
        } else {
            r = retire_key(c, &keys[i]);
        }
    }
    prov_journal_old_keys_free(keys, n);
    return r;
}

/*
 * --prove on the resume path: the key with the journal's id on the journal's device, against
 * the written storage. (A fresh enrollment proves in fresh_on_device with the key it holds.)
 */
static int connect_from_journal(struct row_ctx *c)
{
    struct prov_connect_result res;
    struct prov_device *dev = NULL;
    struct prov_key *key = NULL;
    int r;

    drop_kept_device(c);
    r = prov_device_open_login(c->b->cfg, c->d.device_uri, c->pin, "device PIN", true, &dev);
    if (r == 0) {
        r = dev->ops->find_key_by_id(dev, c->d.key_id, c->d.key_id_len, &key);
    }
    if (r == 0) {
        r = prov_connect_prove(key, c->dir, c->b->prove_url, &res);
        if (r < 0) {
            prov_error_clear();
            prov_fail(r, "serial %s: stored, but the proof over %s failed: %s", c->serial,
                      c->b->prove_url, res.detail);
        }
    }
    prov_key_free(key);
    prov_device_close(dev);
    return r;
}

/*
 * What proven stands for, short of its record: the written identity verified
 * (verify_written), the CA index told it is delivered, with --prove the mTLS proof too
 * (unless is_connected: fresh_on_device has just done it), the keys of a reissued row's
 * superseded certificates deleted from their devices. Deleting before proven makes proven
 * mean "nothing superseded is left on a device that was here": a run stopped in between
 * deletes again (absent is fine), a key on a device that is not here stays listed (batch
 * status) and a later run retires it, while a proven row with intact storage and nothing left
 * to retire is not opened again.
 */
static int check_written(struct row_ctx *c, X509 *cert, const char *key_uri, bool is_just_written,
                         bool is_connected)
{
    const char *url = c->b->prove_url;
    int r = verify_written(c, cert, key_uri, is_just_written);

    /* The identity is in its storage: the CA index counts the certificate delivered. */
    if (r == 0) {
        r = c->is->ops->delivered(c->is, cert);
    }
    if (r == 0 && url != NULL && !is_connected) {
        r = connect_from_journal(c);
    }
    if (r == 0 && (c->d.n_unretired > 0 || c->d.state == PROV_JOURNAL_SUPERSEDED)) {
        r = retire_superseded(c);
    }
    return r;
}

/* check_written, then proven is recorded (the row is stored already). */
static int prove_written(struct row_ctx *c, X509 *cert, const char *key_uri, bool is_just_written,
                         bool is_connected)
{
    const char *url = c->b->prove_url;
    int r = check_written(c, cert, key_uri, is_just_written, is_connected);

    if (r == 0) {
        r = url != NULL ? prov_journal_record_proven_over(c->b->journal, c->b->lot_id, c->serial, url)
                        : prov_journal_record_proven(c->b->journal, c->b->lot_id, c->serial);
    }
    return r;
}

static int reload(struct row_ctx *c)
{
    prov_journal_device_clear(&c->d);
    return prov_journal_get(c->b->journal, c->b->lot_id, c->serial, &c->d);
}

static void finish_job_free(struct finish_job *j)
{
    if (j != NULL) {
        free(j->serial);
        free(j->device_uri);
        free(j->dir);
        free(j->key_uri);
        X509_free(j->cert);
        free(j);
    }
}

/* Queues the issued identity for the storage stage (waits while the queue is full). */
static int defer_storage(struct row_ctx *c, X509 **cert, const char *key_uri,
                         enum prov_key_type key_type, const char *backend)
{
    struct finish_job *j = calloc(1, sizeof(*j));

    if (j == NULL || (j->serial = strdup(c->serial)) == NULL ||
        (j->device_uri = strdup(c->device_uri)) == NULL || (j->dir = strdup(c->dir)) == NULL ||
        (j->key_uri = strdup(key_uri)) == NULL) {
        finish_job_free(j);
        return prov_fail(PROV_ERR_NOMEM, "serial %s: out of memory", c->serial);
    }
    j->index = (uint32_t)(c->e - c->b->rows);
    j->cert = *cert;
    *cert = NULL;
    j->key_type = key_type;
    j->backend = backend;
    j->profile = c->rq.profile->name;
    batch_stage_push(c->b->stage, j);
    c->is_deferred = true;
    return 0;
}

/*
 * The certificate a reissue replaces, from the journal: the storage directory may be gone,
 * and a TPM key at the device's handle may be replaced only when it is this one's.
 */
static int reissued_cert(struct row_ctx *c, X509 **out)
{
    unsigned char *der = NULL;
    const unsigned char *p;
    size_t len = 0;
    int r;

    *out = NULL;
    r = prov_journal_last_superseded(c->b->journal, c->b->lot_id, c->serial, &der, &len);
    p = der;
    if (r == 0 && der != NULL && (*out = d2i_X509(NULL, &p, (long)len)) == NULL) {
        r = prov_fail_ossl(PROV_ERR_JOURNAL,
                           "serial %s: the journal's superseded certificate does not parse",
                           c->serial);
    }
    free(der);
    return r;
}

/*
 * After the certificate's record failed: whether the journal, read back, surely does not
 * hold it. A ledger whose connection was lost inside COMMIT may have committed it (the
 * outcome is read, never guessed: doc/ledger.md, "Failures: fail closed"); when the read
 * fails too, nothing is sure and the key stays (the next run reads the row and deletes the
 * key of an attempt without a certificate).
 */
static bool is_surely_unrecorded(struct row_ctx *c, X509 *cert)
{
    struct prov_cert_facts facts;
    const char *msg = prov_error_message();
    char *failure = msg != NULL ? strdup(msg) : NULL;
    int err = prov_error_code();
    bool is_held = true;
    int r = -1;

    if (cert != NULL && prov_cert_facts(cert, &facts) == 0) {
        r = prov_journal_row_has_cert(c->b->journal, c->b->lot_id, c->serial, facts.sha256_hex,
                                      &is_held);
    }
    /* the row's failure is the record's, not the read's */
    prov_error_clear();
    if (failure != NULL) {
        prov_fail(err, "%s", failure);
    }
    free(failure);
    return r == 0 && !is_held;
}

/*
 * The device's part of a fresh enrollment, the pipeline's steps in order (steps.h): open,
 * generate the key with the journal's id, CSR, issue, then the certificate into the journal
 * before anything is stored, install (with defer, on the device only: the storage stage
 * writes the storage directory), and with --prove the mTLS proof. The device is closed on
 * return, before the journal's next records open any device again. *cert and *key_uri are
 * the issued identity (set once the journal holds it).
 *
 * The token's lock is held for the token's work only: the key, the CSR's signature and the
 * proof's signature (prov_proof_sign), then again the certificate object (the kept session
 * is asked whether it still serves before the lock is taken: kept_device_serves; with defer,
 * enroll_fresh lets it go right after: the storage stage does the rest). Between the two
 * the lock is let go while the CSR is checked, the CA issues, the journal records and the
 * proof is checked against the certificate: none of it uses the token, and the next row of
 * the token (a partner worker, batch.c) makes its key meanwhile. This row's session stays
 * open: the login state is the token's and the process's (backends/pkcs11/pkcs11_module.c,
 * "login_anchor"). Only where the device may be shared (backend.h, may_share, which
 * batch.c's partner_group asks too): a TPM, or a token of too few sessions, keeps its lock.
 * The order of the checks is the single enrollment's: the CSR verifies before anything is
 * issued, the proof before the certificate is stored.
 */
static int fresh_on_device(struct row_ctx *c, struct prov_enroll_plan *plan, bool defer,
                           X509 **cert, char **key_uri, const char **backend)
{
    struct prov_device *dev = NULL;
    struct prov_key *key = NULL;
    X509_REQ *req = NULL;
    struct prov_proof proof;
    bool keep_key = false;
    bool is_shared = false;
    bool is_asked;
    bool is_kept_serving = kept_device_serves(c); /* before the lock: it only reads */
    int r = lock_token(c);

    r = r ? r : open_row_device(c, is_kept_serving, &dev);
    r = r ? r : prov_step_stop_if_interrupted(c->serial, PROV_STEP_STOP_OPENED);
    if (r == 0 && c->is_reusing_key) {
        r = dev->ops->find_key_by_id(dev, c->key_id, sizeof(c->key_id), &key);
        r = r ? r : prov_check_key_protection(key, "the interrupted attempt's key");
        if (r == PROV_ERR_NOT_FOUND) {
            prov_error_clear();
            r = 0;
        }
    }
    r = r || key != NULL ? r : prov_step_generate_key(dev, plan, c->key_id, sizeof(c->key_id), &key);
    r = r ? r : prov_step_sign_csr(key, plan->subject, plan->type, &req);
    r = r ? r : prov_step_stop_if_interrupted(c->serial, PROV_STEP_STOP_SIGNED);
    r = r ? r : prov_proof_sign(key, &proof);
    if (r < 0) {
        goto out;
    }
    plan->rq.record.key_uri = key->uri;
    is_shared = dev->ops->may_share != NULL && dev->ops->may_share(dev);
    if (is_shared) {
        batch_release_token(&c->hold);
    }
    r = prov_step_check_csr(req, key);
    is_asked = r == 0;
    r = r ? r : prov_step_issue(c->is, req, &plan->rq, cert);
    if (r == 0) {
        r = prov_journal_record_issued(c->b->journal, c->b->lot_id, c->serial, key->id,
                                       key->id_len, *cert, key->uri);
        /* a failed record may still be committed (the connection lost inside COMMIT) */
        keep_key = r < 0 && !is_surely_unrecorded(c, *cert);
    } else if (is_asked && c->is->ops->is_remote) {
        /* a CA service may have certified it (issuer.h, is_remote; doc/ca-service.md, "What
           is issued"): the key stays, the failed row names it */
        keep_key = true;
    }
    if (r == 0) {
        /* from here the journal owns the certificate, and resumes from it if a step fails */
        keep_key = true;
        r = prov_proof_check(&proof, *cert);
    }
    if (is_shared) {
        int lr = lock_token(c);

        if (lr < 0 && !keep_key) {
            keep_key = true; /* not deleted without the lock: the next run deletes it */
        }
        r = r ? r : lr;
    }
    if (r < 0) {
        goto out;
    }
    *key_uri = strdup(key->uri);
    *backend = dev->ops->name;
    if (*key_uri == NULL) {
        r = prov_fail(PROV_ERR_NOMEM, "serial %s: out of memory", c->serial);
        goto out;
    }
    {
        struct prov_identity ident = prov_identity_make(
            c->b->cfg, c->serial, *cert, c->is->ops->chain(c->is), NULL, key->uri, plan->type,
            dev->ops->name, c->rq.profile->name, c->rq.lot);

        r = prov_step_store(dev, key, *cert, defer ? NULL : plan->dir, &ident);
    }
    if (r < 0 || defer) {
        goto out;
    }
    prov_step_retire_old_key(dev, plan->old_uri, key);
    if (c->b->prove_url != NULL) {
        struct prov_connect_result res;

        r = prov_step_prove(key, plan->dir, c->b->prove_url, c->serial, &res);
    }
out:
    if (key != NULL && !keep_key) {
        prov_step_discard_key(dev, key, c->serial);
    }
    X509_REQ_free(req);
    prov_key_free(key);
    put_row_device(c, dev, r == 0);
    return r;
}

/* intent (new key id) -> plan -> the device's steps -> stored -> proven. */
static int enroll_fresh(struct row_ctx *c)
{
    bool is_reissue = c->d.state == PROV_JOURNAL_SUPERSEDED || c->d.n_superseded > 0;
    struct prov_enroll_params p;
    struct prov_enroll_plan plan;
    X509 *cert = NULL;
    char *key_uri = NULL;
    const char *backend = NULL;
    enum prov_key_type type;
    bool defer;
    int r;

    if (!c->is_reusing_key && RAND_bytes(c->key_id, sizeof(c->key_id)) != 1) {
        return prov_fail_ossl(PROV_ERR_CRYPTO, "serial %s: no randomness for the key id",
                              c->serial);
    }
    r = prov_journal_record_intent(c->b->journal, c->b->lot_id, c->serial, c->device_uri, c->dir,
                                   c->key_id, sizeof(c->key_id));
    c->cur_id = c->key_id;
    c->cur_id_len = sizeof(c->key_id);
    if (r < 0) {
        return r;
    }
    memset(&p, 0, sizeof(p));
    p.device_uri = c->device_uri;
    p.storage_dir = c->dir;
    p.req = c->rq;
    p.key_type = c->key_type;
    /*
     * Storage of a superseded identity is overwritten, and so is one the journal does not
     * know when --reissue names the serial; any other existing identity is refused.
     */
    p.reissue = is_reissue || c->e->is_reissue;
    if (is_reissue) {
        r = reissued_cert(c, &p.reissued_cert);
        if (r < 0) {
            return r;
        }
    }
    r = prov_step_plan(c->b->cfg, c->is, &p, &plan);
    X509_free(p.reissued_cert);
    if (r < 0) {
        return r;
    }
    /* --prove needs the written storage and the open key: no storage stage then */
    defer = c->b->stage != NULL && !p.reissue && c->b->prove_url == NULL;
    type = plan.type;
    r = fresh_on_device(c, &plan, defer, &cert, &key_uri, &backend);
    if (r == 0 && defer) {
        /*
         * The certificate object is on the token and the device is put away (kept open for
         * this worker's next row, or closed): nothing left of this row uses the token, so the
         * partner's key need not wait while this row is queued for the storage stage and
         * concluded. A row that goes on here (--prove, a reissue) keeps the lock to its end.
         */
        batch_release_token(&c->hold);
    }
    prov_enroll_plan_clear(&plan, r < 0);
    if (r == 0 && defer) {
        r = defer_storage(c, &cert, key_uri, type, backend);
    } else if (r == 0) {
        r = prov_journal_record_stored(c->b->journal, c->b->lot_id, c->serial);
    }
    if (r == 0 && !c->is_deferred) {
        r = prove_written(c, cert, key_uri, true, true);
    }
    X509_free(cert);
    free(key_uri);
    return r;
}

/* The storage holds exactly the journal's certificate, every file present and parsable. */
static bool storage_matches(const struct row_ctx *c, X509 *cert)
{
    struct prov_stored_identity *s = NULL;
    bool ok;

    ok = prov_storage_read(c->dir, &s) == 0 && X509_cmp(s->cert, cert) == 0 && s->serial != NULL &&
         strcmp(s->serial, c->serial) == 0;
    prov_stored_identity_free(s);
    prov_error_clear();
    return ok;
}

/*
 * Storage from the journal, without issuing: the key is found by its recorded id on the
 * recorded device, must be the certificate's key and still protected, proves, and gets the
 * certificate stored next to it; then all files are written.
 */
static int write_from_journal(struct row_ctx *c, X509 *cert, char **key_uri)
{
    struct prov_device *dev = NULL;
    struct prov_key *key = NULL;
    char hex[2 * PROV_JOURNAL_KEY_ID_MAX + 1];
    int r;

    drop_kept_device(c);
    r = prov_device_open_login(c->b->cfg, c->d.device_uri, c->pin, "device PIN", false, &dev);
    if (r < 0) {
        goto out;
    }
    r = dev->ops->find_key_by_id(dev, c->d.key_id, c->d.key_id_len, &key);
    if (r == PROV_ERR_NOT_FOUND) {
        prov_hex_encode(c->d.key_id, c->d.key_id_len, hex);
        prov_error_clear();
        r = prov_fail(PROV_ERR_NOT_FOUND,
                      "serial %s: certificate %s is in the journal but its key (id %s) is no "
                      "longer on %s; --reissue %s certifies the device again",
                      c->serial, c->d.cert_serial, hex, dev->name, c->serial);
        goto out;
    }
    if (r < 0) {
        goto out;
    }
    if (EVP_PKEY_eq(key->pub, X509_get0_pubkey(cert)) != 1) {
        r = prov_fail(PROV_ERR_POLICY,
                      "serial %s: the key with the recorded id on %s is not "
                      "the key of certificate %s",
                      c->serial, dev->name, c->d.cert_serial);
        goto out;
    }
    r = prov_check_key_protection(key, "device key");
    if (r == 0) {
        struct prov_identity ident =
            prov_identity_make(c->b->cfg, c->serial, cert, c->is->ops->chain(c->is), NULL, key->uri,
                               key->type, dev->ops->name, c->rq.profile->name, c->b->lot);

        r = prov_step_install(dev, key, cert, c->dir, &ident);
    }
    if (r == 0) {
        *key_uri = strdup(key->uri);
        r = *key_uri ? 0 : PROV_ERR_NOMEM;
    }
out:
    prov_key_free(key);
    prov_device_close(dev);
    return r;
}

/* issued / stored / proven / failed-with-certificate: finish from the journal. */
static int complete_from_journal(struct row_ctx *c, enum batch_status *st)
{
    const unsigned char *der = c->d.cert_der;
    X509 *cert = d2i_X509(NULL, &der, (long)c->d.cert_der_len);
    enum prov_journal_state from = c->d.state;
    char *written_uri = NULL;
    int r = 0;

    if (cert == NULL) {
        return prov_fail_ossl(PROV_ERR_JOURNAL,
                              "serial %s: the journal's certificate does not "
                              "parse",
                              c->serial);
    }
    c->cur_id = c->d.key_id;
    c->cur_id_len = c->d.key_id_len;
    if (!storage_matches(c, cert)) {
        if (from == PROV_JOURNAL_STORED || from == PROV_JOURNAL_PROVEN) {
            prov_warn("serial %s: storage %s is missing or incomplete; rewriting it from the "
                      "journal",
                      c->serial, c->dir);
        }
        r = write_from_journal(c, cert, &written_uri);
    }
    if (r == 0) {
        r = prov_journal_record_stored(c->b->journal, c->b->lot_id, c->serial);
    }
    if (r == 0) {
        r = prove_written(c, cert, written_uri ? written_uri : c->d.key_uri, written_uri != NULL,
                          false);
    }
    free(written_uri);
    X509_free(cert);
    *st = from == PROV_JOURNAL_STORED || from == PROV_JOURNAL_PROVEN ? BATCH_ALREADY : BATCH_ISSUED;
    return r;
}

/*
 * --reissue: supersedes the current certificate, once per request (every run of it, see
 * prov_journal_run_begin). A row still on its way (intent, issued) is resumed instead: that
 * is the interrupted reissue itself.
 */
#define ALREADY_REISSUED                                                                          \
    "already reissued by this request (run %lld); not reissued again (--again makes a new "      \
    "request)"

static int maybe_supersede(struct row_ctx *c)
{
    long long by_run = 0;
    int r;

    if (c->d.cert_der == NULL ||
        !(c->d.state == PROV_JOURNAL_STORED || c->d.state == PROV_JOURNAL_PROVEN ||
          c->d.state == PROV_JOURNAL_FAILED)) {
        return 0;
    }
    r = prov_journal_superseded_in_request(c->b->journal, c->b->lot_id, c->serial,
                                           c->b->request_id, &by_run);
    if (r < 0) {
        return r;
    }
    if (by_run != 0 && c->b->progress != NULL) {
        prov_progress_message(c->b->progress, "warning: serial %s: " ALREADY_REISSUED,
                              c->serial, by_run);
    } else if (by_run != 0) {
        prov_warn("serial %s: " ALREADY_REISSUED, c->serial, by_run);
    }
    if (by_run != 0) {
        return 0;
    }
    r = prov_journal_supersede(c->b->journal, c->b->lot_id, c->serial, c->b->run_id);
    return r < 0 ? r : reload(c);
}

/*
 * The certificate in the row's storage (client.crt) when it is one the lot never issued for
 * this row: not the journal's current certificate, nor one it superseded. Someone replaced
 * the identity outside the lot (`enroll --reissue`, a restore from elsewhere): it is not
 * rewritten from the journal (that would destroy a working identity, and the journal's key
 * may be gone with it), the row's journal state stays what the lot did, and the row fails
 * with the reason. `--reissue SERIAL` certifies it for the lot again. A client.crt that
 * is missing or does not parse is the lot's own interrupted write: rewritten as before.
 */
static int refuse_outside_identity(struct row_ctx *c)
{
    char *path = NULL;
    FILE *f = NULL;
    X509 *found = NULL;
    struct prov_cert_facts facts;
    bool is_known = true;
    int r = 0;

    if (asprintf(&path, "%s/client.crt", c->dir) < 0) {
        return prov_fail(PROV_ERR_NOMEM, "serial %s: out of memory", c->serial);
    }
    f = fopen(path, "r");
    found = f != NULL ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
    if (f != NULL) {
        fclose(f);
    }
    if (found != NULL && prov_cert_facts(found, &facts) == 0 &&
        strcmp(facts.sha256_hex, c->d.sha256) != 0) {
        r = prov_journal_row_has_cert(c->b->journal, c->b->lot_id, c->serial, facts.sha256_hex,
                                      &is_known);
    }
    if (r == 0 && !is_known) {
        c->is_outside_change = true;
        r = prov_fail(PROV_ERR_POLICY,
                      "serial %s: %s holds certificate %s, which this lot never issued for it (the "
                      "journal's is %s): the identity was replaced outside the lot (enroll "
                      "--reissue?); left as it is, journal unchanged; --reissue %s certifies it "
                      "for the lot again",
                      c->serial, path, facts.serial_hex, c->d.cert_serial, c->serial);
    }
    if (r == 0) {
        prov_error_clear(); /* a client.crt that does not parse is rewritten, not an error */
    }
    X509_free(found);
    free(path);
    return r;
}

/*
 * A proven row whose superseded keys were not all retired (their device was not here when
 * the row was finished): retired now from the devices that are back. The identity is
 * complete whatever happens here, so a failure is a warning, never the row's.
 */
static void retire_left_over(struct row_ctx *c)
{
    if (c->d.n_unretired == 0) {
        return;
    }
    c->cur_id = c->d.key_id;
    c->cur_id_len = c->d.key_id_len;
    if (retire_superseded(c) < 0) {
        prov_warn("serial %s: %s", c->serial, prov_error_message());
        prov_error_clear();
    }
}

static int do_row(struct row_ctx *c, enum batch_status *st)
{
    char holder[128];
    enum prov_journal_lease lease = PROV_JOURNAL_LEASE_MINE;
    int r;

    *st = BATCH_ISSUED;
    /* on the ledger, the row is this station's only while it holds the row's lease */
    r = prov_journal_lease_claim(c->b->journal, c->b->lot_id, c->serial, c->e->is_reissue,
                                 holder, sizeof(holder), &lease);
    if (r == 0 && lease == PROV_JOURNAL_LEASE_FINISHED && c->b->is_fixture) {
        lease = PROV_JOURNAL_LEASE_MINE; /* the device is here: its row is read back */
    }
    if (r == 0 && lease != PROV_JOURNAL_LEASE_MINE) {
        /* a row another station finished while this one ran: its outcome is that station's */
        *st = BATCH_ELSEWHERE;
        prov_info("serial %s: station %s %s", c->serial, holder,
                  lease == PROV_JOURNAL_LEASE_HELD ? "is working on it" : "finished it");
        return 0;
    }
    if (r < 0) {
        return r;
    }
    /*
     * What a killed run left in the storage directory (temp files, the pre-check's probe)
     * goes with the first run that comes back to the row, whatever the row then needs (on
     * the ledger: once the row is this station's, never under another's feet).
     */
    prov_storage_remove_temp_files(c->dir);
    r = prov_journal_get(c->b->journal, c->b->lot_id, c->serial, &c->d);
    if (r == 0 && c->e->is_reissue) {
        r = maybe_supersede(c);
    }
    if (r < 0) {
        return r;
    }
    if (c->d.cert_der != NULL && (r = refuse_outside_identity(c)) < 0) {
        return r;
    }
    /* by meaning: a station records its token with the module (pkcs11:...?module-path=) */
    if (c->d.cert_der != NULL &&
        !prov_device_uri_same(c->d.device_uri, c->device_uri, c->b->cfg->pkcs11_module)) {
        return prov_fail(PROV_ERR_ALREADY_ISSUED,
                         "serial %s: the journal has it certified on %s, the manifest names %s "
                         "(--reissue %s certifies it on the new device)",
                         c->serial, c->d.device_uri, c->device_uri, c->serial);
    }
    /* Done before and intact: no device needed (it may have left the line long ago). */
    if (c->d.state == PROV_JOURNAL_PROVEN) {
        const unsigned char *der = c->d.cert_der;
        X509 *cert = d2i_X509(NULL, &der, (long)c->d.cert_der_len);
        bool is_intact = cert != NULL && storage_matches(c, cert);

        X509_free(cert);
        if (is_intact) {
            *st = BATCH_ALREADY;
            retire_left_over(c);
            /* the lot's identity is back where an outside one was seen: the note goes */
            return c->d.error == NULL ? 0
                                      : prov_journal_record_outside_change(
                                            c->b->journal, c->b->lot_id, c->serial, NULL);
        }
    }
    /* a fresh enrollment takes the token's lock for the device's steps only (fresh_on_device) */
    switch (c->d.state) {
    case PROV_JOURNAL_NONE:
    case PROV_JOURNAL_SUPERSEDED: return enroll_fresh(c);
    case PROV_JOURNAL_ISSUED:
    case PROV_JOURNAL_STORED:
    case PROV_JOURNAL_PROVEN:
        r = lock_token(c);
        return r < 0 ? r : complete_from_journal(c, st);
    case PROV_JOURNAL_INTENT:
    case PROV_JOURNAL_FAILED:
        if (c->d.cert_der != NULL) {
            r = lock_token(c);
            return r < 0 ? r : complete_from_journal(c, st);
        }
        if (c->d.key_id_len == sizeof(c->key_id) && c->is->ops->is_remote &&
            strcmp(c->d.device_uri, c->device_uri) == 0) {
            /* the same key asks the service again */
            memcpy(c->key_id, c->d.key_id, sizeof(c->key_id));
            c->is_reusing_key = true;
            return enroll_fresh(c);
        }
        if (c->d.key_id_len > 0) {
            /*
             * The interrupted key lives on the device its intent named, which the manifest
             * may have changed since: deleted under that token's lock, then back to the
             * row's own token for the new key.
             */
            drop_kept_device(c); /* before the hold: resolving a token may open a session */
            r = batch_hold_token(&c->hold, c->d.device_uri);
            r = r ? r
                  : delete_key_by_id(c, c->d.device_uri, c->d.key_id, c->d.key_id_len,
                                     "the interrupted attempt's");
            r = r ? r : lock_token(c);
        }
        return r < 0 ? r : enroll_fresh(c);
    default: return prov_fail(PROV_ERR_JOURNAL, "serial %s: unknown journal state", c->serial);
    }
}

static void count(struct batch *b, enum batch_status st)
{
    pthread_mutex_lock(&b->stats_lock);
    if (st == BATCH_ISSUED) {
        b->n_issued++;
    } else if (st == BATCH_ALREADY) {
        b->n_already++;
    } else if (st == BATCH_ELSEWHERE) {
        b->n_elsewhere++;
    } else {
        b->n_failed++;
    }
    pthread_mutex_unlock(&b->stats_lock);
    if (b->progress != NULL) {
        prov_progress_step(b->progress, st == BATCH_FAILED);
    }
}

void batch_row_elsewhere(struct batch *b, uint32_t index)
{
    b->rows[index].status = BATCH_ELSEWHERE;
    count(b, BATCH_ELSEWHERE);
}

/* One stderr line per failed row, naming the manifest line and the serial. */
static void report_failure(struct batch *b, uint32_t line, const char *serial, const char *msg)
{
    char text[1280];

    if (serial == NULL || strstr(msg, serial) != NULL) {
        snprintf(text, sizeof(text), "%s:%u: %s", b->manifest, line, msg);
    } else {
        snprintf(text, sizeof(text), "%s:%u: serial %s: %s", b->manifest, line, serial, msg);
    }
    if (b->progress != NULL) {
        prov_progress_message(b->progress, "%s", text);
    } else {
        prov_err("%s", text);
    }
}

/*
 * The row's outcome: status, count, and for a failure the journal record and one line. An
 * identity replaced outside the lot is not the lot's failure: the journal keeps the row's
 * state and notes the reason beside it.
 */
static void conclude(struct row_ctx *c, int r, enum batch_status st)
{
    if (r < 0) {
        const char *msg = prov_error_message();
        char reason[1024];
        int jr;

        snprintf(reason, sizeof(reason), "%s", msg ? msg : prov_strerror(r));
        st = BATCH_FAILED;
        prov_error_clear();
        jr = c->is_outside_change ? prov_journal_record_outside_change(c->b->journal, c->b->lot_id,
                                                                       c->serial, reason)
                                  : prov_journal_record_failed(c->b->journal, c->b->lot_id,
                                                               c->serial, c->device_uri, reason);
        if (jr < 0 && !prov_journal_is_away(c->b->journal)) {
            report_failure(c->b, c->e->line, c->serial, prov_error_message());
        }
        /* a row the signal rolled back is in the journal and the results; the run's one
         * "interrupted" line speaks for it (batch.c) */
        if (r == PROV_ERR_INTERRUPTED || prov_journal_is_away(c->b->journal)) {
            /* the run's one line speaks for it (batch.c): a signal, or the ledger away */
            pthread_mutex_lock(&c->b->stats_lock);
            c->b->n_interrupted++;
            pthread_mutex_unlock(&c->b->stats_lock);
        } else {
            report_failure(c->b, c->e->line, c->serial, reason);
        }
        /* no empty storage directory stays behind a failed row (one it made, or one a
         * killed run or a full disk left): rmdir removes nothing that holds a file */
        if (c->dir != NULL) {
            rmdir(c->dir);
        }
    }
    if (st != BATCH_ELSEWHERE) {
        /* the row's lease ends with its outcome here (a failed row is claimable again) */
        prov_journal_lease_end(c->b->journal, c->b->lot_id, c->serial, st != BATCH_FAILED);
    }
    c->e->status = (uint8_t)st;
    count(c->b, st);
}

int batch_row_handle(void *ctx, struct prov_manifest_parser *p, const struct prov_manifest_row *row)
{
    struct batch_row_job *job = ctx;
    struct row_ctx c;
    enum batch_status st = BATCH_FAILED;
    const char *pname = row->value[PROV_COL_PROFILE] ? row->value[PROV_COL_PROFILE] : "device";
    int r = PROV_ERR_NOMEM;

    memset(&c, 0, sizeof(c));
    c.b = job->b;
    c.g = job->g;
    c.e = &job->b->rows[job->index];
    c.row = row;
    c.serial = row->value[PROV_COL_SERIAL];
    c.hold.tokens = &c.b->tokens;
    c.hold.serial = c.serial;
    c.is = c.b->issuer;
    c.kept = job->kept;
    if (c.g != NULL) {
        c.hold.group_uri = c.g->device_uri;
        c.hold.group_token = &c.g->token;
    }
    c.device_uri = job->device_uri ? job->device_uri : row->value[PROV_COL_DEVICE];
    batch_request(c.b, row, prov_config_profile(c.b->cfg, pname), &c.rq);
    if (row->value[PROV_COL_KEY] != NULL) {
        prov_key_type_parse(row->value[PROV_COL_KEY], &c.key_type);
    }
    c.dir = batch_storage_dir(c.b->cfg, row);
    prov_error_clear();
    if (c.dir == NULL) {
        r = prov_fail(PROV_ERR_NOMEM, "serial %s: out of memory", c.serial);
    } else if (batch_resolve_pin_spec(c.b->manifest, row->value[PROV_COL_PIN],
                                      &c.row_pin_spec) < 0) {
        r = PROV_ERR_NOMEM;
    } else if (c.rq.profile == NULL) {
        r = prov_fail(PROV_ERR_CONFIG, "serial %s: profile %s is not in the config", c.serial,
                      pname);
    } else {
        c.pin = pin_spec(c.b, c.row_pin_spec);
        r = do_row(&c, &st);
    }
    if (r < 0) {
        /* whatever failed, the next row opens its device afresh (under this row's lock) */
        batch_kept_device_close(c.kept);
    }
    batch_release_token(&c.hold);
    if (r < 0 || !c.is_deferred) {
        conclude(&c, r, st);
    }
    job->err = r < 0 ? r : 0; /* a deferred row cannot fail later: station has no storage stage */
    job->is_elsewhere = r == 0 && st == BATCH_ELSEWHERE;
    prov_journal_device_clear(&c.d);
    free(c.row_pin_spec);
    free(c.dir);
    return 0;
}

/* ---- the storage stage ------------------------------------------------------------------ */

/*
 * Storage, read back, stored and proven: what enroll_fresh does after the device's steps, here
 * on the stage's thread. A failure leaves the certificate in the journal; the next run rewrites the
 * storage from it (complete_from_journal), as after a crash at the same point.
 *
 * stored and proven are one journal transaction (one sync of its WAL instead of two):
 * prov_step_install has synced every storage file and the directory before it returns, and
 * nothing between the two records acts on "stored" (no --prove, no superseded key on this
 * path: defer_storage takes neither). The CA index's "delivered" is committed before them, as
 * before proven: a crash before the journal's commit leaves the row issued, and the next run
 * compares (or rewrites) the storage, records stored, checks it again and records proven, as
 * it does for a row left stored (the index's update is a no-op the second time). A failed
 * check fails the row from issued, as a failed storage write does: a failed row with a
 * certificate resumes the same way whichever of the two it had reached.
 */
static void finish(struct batch *b, struct finish_job *j)
{
    struct row_ctx c;
    struct prov_identity ident;
    int r;

    memset(&c, 0, sizeof(c));
    c.b = b;
    c.e = &b->rows[j->index];
    c.serial = j->serial;
    c.hold.tokens = &b->tokens;
    c.hold.serial = j->serial;
    c.pin = pin_spec(b, NULL);
    c.is = b->issuer;
    c.device_uri = j->device_uri;
    c.dir = j->dir;
    ident = prov_identity_make(b->cfg, j->serial, j->cert, c.is->ops->chain(c.is), NULL,
                               j->key_uri, j->key_type, j->backend, j->profile, b->lot);
    prov_error_clear();
    r = prov_step_install(NULL, NULL, j->cert, j->dir, &ident);
    if (r == 0) {
        r = check_written(&c, j->cert, j->key_uri, true, false);
    }
    if (r == 0) {
        r = prov_journal_record_stored_proven(b->journal, b->lot_id, j->serial);
    }
    batch_release_token(&c.hold);
    conclude(&c, r, BATCH_ISSUED);
}

/* The stage runs one queued identity (batch_stage.h). */
static void finish_queued(void *ctx, void *job)
{
    finish(ctx, job);
    finish_job_free(job);
}

int batch_finisher_start(struct batch *b)
{
    struct batch_stage *s = calloc(1, sizeof(*s));
    int r;

    if (s == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "batch: out of memory");
    }
    r = batch_stage_start(s, finish_queued, b);
    if (r < 0) {
        free(s);
        return r;
    }
    b->stage = s;
    return 0;
}

void batch_finisher_stop(struct batch *b)
{
    if (b->stage == NULL) {
        return;
    }
    batch_stage_stop(b->stage);
    free(b->stage);
    b->stage = NULL;
}

void batch_row_unreadable(struct batch *b, uint32_t index)
{
    const char *msg = prov_error_message();

    b->rows[index].status = BATCH_FAILED;
    report_failure(b, b->rows[index].line, NULL, msg ? msg : "the row cannot be read again");
    count(b, BATCH_FAILED);
}
