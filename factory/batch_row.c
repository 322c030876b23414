/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One manifest row, driven by its journal state (the policy is in batch.h). Every device
 * operation goes through the core (prov_enroll, prov_check_identity, prov_device_open_login)
 * or the backend ops table; nothing here knows PKCS#11 or ESAPI.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/rand.h>
#include <openssl/x509.h>

#include "backend.h"
#include "batch_internal.h"
#include "ca_index.h"
#include "chain.h"
#include "connect.h"
#include "enroll.h"
#include "error.h"
#include "log.h"
#include "manifest_value.h"
#include "storage.h"

#define KEY_ID_BYTES 16

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
    struct batch_token *token; /* locked while set */
    unsigned char key_id[KEY_ID_BYTES];
    const unsigned char *cur_id; /* the row's current key (kept when superseded keys go) */
    size_t cur_id_len;
    bool is_deferred; /* handed to the storage stage, which concludes the row */
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

#define FINISH_QUEUE 4

struct batch_finisher {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t changed;
    struct finish_job *jobs[FINISH_QUEUE];
    size_t head;
    size_t n;
    bool is_stopping;
};

static const char *const status_names[] = {"failed", "issued", "already-issued", "failed"};

const char *batch_status_name(enum batch_status st)
{
    return status_names[st <= BATCH_FAILED ? st : BATCH_FAILED];
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
    /* The CA index leaves this lot's serials to its journal (provisioner/ca_index.h). */
    rq->record.issued_by = "batch";
    rq->record.lot = b->lot;
    rq->record.journal = prov_journal_path(b->journal);
}

char *batch_storage_dir(const struct prov_config *cfg, const struct prov_manifest_row *row)
{
    const char *storage = row->value[PROV_COL_STORAGE];
    char norm[PROV_MANIFEST_FIELD_MAX + 1];
    const char *why;
    char *out = NULL;

    if (storage == NULL) {
        return prov_storage_dir_for(cfg, NULL, row->value[PROV_COL_SERIAL]);
    }
    /* Validated already; normalized so that the journal and results show one spelling. */
    if (!prov_manifest_storage_normalize(storage, norm, sizeof(norm), &why)) {
        return NULL;
    }
    if (asprintf(&out, "%s/%s", cfg->output_dir ? cfg->output_dir : "devices", norm) < 0) {
        return NULL;
    }
    return out;
}

/* ---- tokens ----------------------------------------------------------------------------- */

/*
 * The token behind a group, found by its identity (token serial, TPM EK): the device is
 * opened once, without logging in. Two URIs for one token get one lock.
 */
static int resolve_token(struct row_ctx *c)
{
    struct batch *b = c->b;
    struct prov_device_params params = {
        .module_path = b->cfg->pkcs11_module,
        .read_only = true,
        .tpm_srk_handle = b->cfg->tpm_srk_handle,
        .tpm_key_handle = b->cfg->tpm_key_handle,
        .tpm_nv_index = b->cfg->tpm_nv_index,
    };
    struct prov_device *dev = NULL;
    char ident[512];
    char *key = NULL;
    unsigned long index = 0;
    bool is_new = false;
    int r;

    r = prov_device_open(c->g->device_uri, &params, &dev);
    if (r < 0) {
        return r;
    }
    if (dev->ops->identity(dev, ident, sizeof(ident)) < 0) {
        /* No identity: the URI is the best name we have. */
        prov_error_clear();
        snprintf(ident, sizeof(ident), "%s", c->g->device_uri);
    }
    if (asprintf(&key, "%s:%s", dev->ops->name, ident) < 0) {
        key = NULL;
    }
    prov_device_close(dev);
    if (key == NULL) {
        return PROV_ERR_NOMEM;
    }
    pthread_mutex_lock(&b->tokens_lock);
    /*
     * Room and the entry first, the index last: an index entry always names a token that
     * exists, even when memory runs out half way.
     */
    if (!prov_strset_get(&b->token_index, key, &index)) {
        struct batch_token *t = NULL;

        if (b->n_tokens == b->cap_tokens) {
            size_t cap = b->cap_tokens ? b->cap_tokens * 2 : 16;
            struct batch_token **a = realloc(b->tokens, cap * sizeof(*a));

            if (a != NULL) {
                b->tokens = a;
                b->cap_tokens = cap;
            }
        }
        if (b->n_tokens < b->cap_tokens) {
            t = calloc(1, sizeof(*t));
        }
        r = t != NULL ? prov_strset_add(&b->token_index, key, b->n_tokens, &index, &is_new)
                      : PROV_ERR_NOMEM;
        if (r == 0) {
            t->identity = key;
            key = NULL;
            pthread_mutex_init(&t->lock, NULL);
            b->tokens[b->n_tokens++] = t;
        } else {
            free(t);
        }
    }
    if (r == 0) {
        c->g->token = b->tokens[index];
    }
    pthread_mutex_unlock(&b->tokens_lock);
    free(key);
    return r;
}

static int lock_token(struct row_ctx *c)
{
    int r;

    if (c->g->token == NULL) {
        r = resolve_token(c);
        if (r < 0) {
            return r;
        }
    }
    pthread_mutex_lock(&c->g->token->lock);
    c->token = c->g->token;
    return 0;
}

static void unlock_token(struct row_ctx *c)
{
    if (c->token != NULL) {
        pthread_mutex_unlock(&c->token->lock);
        c->token = NULL;
    }
}

void batch_tokens_free(struct batch *b)
{
    for (size_t i = 0; i < b->n_tokens; i++) {
        pthread_mutex_destroy(&b->tokens[i]->lock);
        free(b->tokens[i]->identity);
        free(b->tokens[i]);
    }
    free(b->tokens);
    prov_strset_free(&b->token_index);
}

/* ---- steps ------------------------------------------------------------------------------ */

static const char *pin_spec(const struct row_ctx *c)
{
    return c->b->opts->pin_spec ? c->b->opts->pin_spec : c->b->cfg->device_pin;
}

static void key_id_hex(const unsigned char *id, size_t len, char *out)
{
    for (size_t i = 0; i < len; i++) {
        sprintf(out + 2 * i, "%02x", id[i]);
    }
    out[2 * len] = '\0';
}

/* prov_enroll's hook: the certificate goes into the journal before anything is stored. */
static int journal_issued(void *ctx, X509 *cert, const struct prov_key *key)
{
    struct row_ctx *c = ctx;

    return prov_journal_record_issued(c->b->journal, c->b->lot_id, c->serial, key->id, key->id_len,
                                      cert, key->uri);
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
 * The identity as written: the certificate plus the CA chain pass the chain rules (SPEC §7) for
 * clientAuth, and the files hold exactly that identity. When this row has just written them
 * (is_just_written), prov_storage_write made them from cert, key_uri and the CA's chain and
 * read every file back byte for byte before renaming it into place, so the chain is checked
 * on those same objects. Otherwise (storage found complete on a re-run) the files are parsed:
 * client.crt is the journal's certificate, fullchain.pem starts with it, identity.json names
 * the serial, key.uri the key, and the chain checked is chain.pem's.
 * The key itself signed a fresh challenge that verified with this certificate before any of
 * it was stored (prov_enroll, write_from_journal); the device is not opened again, because
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
    full = what == NULL ? sk_X509_dup(s != NULL ? s->chain : c->b->ca->chain) : NULL;
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

    r = prov_device_open_for_key(c->b->cfg, c->b->ca, device_uri, pin_spec(c), false, &dev);
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
            key_id_hex(id, id_len, hex);
            prov_info("serial %s: deleted %s key id %s from %s", c->serial, why, hex, dev->name);
        }
    }
    prov_key_free(key);
    prov_device_close(dev);
    return r;
}

/* After a reissue: the superseded keys leave the token once the new identity is verified. */
static int retire_superseded(struct row_ctx *c)
{
    unsigned char(*ids)[PROV_JOURNAL_KEY_ID_MAX] = NULL;
    size_t *lens = NULL;
    size_t n = 0;
    int r;

    r = prov_journal_superseded_keys(c->b->journal, c->b->lot_id, c->serial, &ids, &lens, &n);
    for (size_t i = 0; i < n && r == 0; i++) {
        if (lens[i] != c->cur_id_len || memcmp(ids[i], c->cur_id, lens[i]) != 0) {
            r = delete_key_by_id(c, c->device_uri, ids[i], lens[i], "the superseded");
        }
    }
    free(ids);
    free(lens);
    return r;
}

/*
 * --prove on the resume path: the key with the journal's id on the journal's device, against
 * the written storage. (A fresh enrollment proves inside prov_enroll with the key it holds.)
 */
static int connect_from_journal(struct row_ctx *c)
{
    struct prov_connect_result res;
    struct prov_device *dev = NULL;
    struct prov_key *key = NULL;
    int r;

    r = prov_device_open_login(c->b->cfg, c->d.device_uri, pin_spec(c), "device PIN", true, &dev);
    if (r == 0) {
        r = dev->ops->find_key_by_id(dev, c->d.key_id, c->d.key_id_len, &key);
    }
    if (r == 0) {
        r = prov_connect_prove(key, c->dir, c->b->opts->prove_url, &res);
        if (r < 0) {
            prov_error_clear();
            prov_fail(r, "serial %s: stored, but the proof over %s failed: %s", c->serial,
                      c->b->opts->prove_url, res.detail);
        }
    }
    prov_key_free(key);
    prov_device_close(dev);
    return r;
}

/*
 * The written identity verified (verify_written), with --prove the mTLS proof too (unless
 * is_connected: prov_enroll has just done it), the keys of a reissued row's superseded
 * certificates deleted, then proven is recorded. Deleting before proven makes proven mean
 * "nothing superseded is left on the token": a run stopped in between deletes again (absent
 * is fine), while a proven row with intact storage is not opened again.
 */
static int prove_written(struct row_ctx *c, X509 *cert, const char *key_uri, bool is_just_written,
                         bool is_connected)
{
    const char *url = c->b->opts->prove_url;
    int r = verify_written(c, cert, key_uri, is_just_written);

    /* The identity is in its storage: the CA index counts the certificate delivered. */
    if (r == 0) {
        r = prov_ca_index_delivered(c->b->ca->index, cert);
    }
    if (r == 0 && url != NULL && !is_connected) {
        r = connect_from_journal(c);
    }
    if (r == 0 && (c->d.n_superseded > 0 || c->d.state == PROV_JOURNAL_SUPERSEDED)) {
        r = retire_superseded(c);
    }
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
static int defer_storage(struct row_ctx *c, struct prov_enroll_result *res)
{
    struct batch_finisher *f = c->b->finisher;
    const struct prov_backend_ops *ops = prov_backend_for(c->device_uri);
    struct finish_job *j = calloc(1, sizeof(*j));

    if (j == NULL || (j->serial = strdup(c->serial)) == NULL ||
        (j->device_uri = strdup(c->device_uri)) == NULL || (j->dir = strdup(c->dir)) == NULL ||
        (j->key_uri = strdup(res->key_uri ? res->key_uri : "")) == NULL) {
        finish_job_free(j);
        return prov_fail(PROV_ERR_NOMEM, "serial %s: out of memory", c->serial);
    }
    j->index = (uint32_t)(c->e - c->b->rows);
    j->cert = res->cert;
    res->cert = NULL;
    j->key_type = res->key_type;
    j->backend = ops ? ops->name : "";
    j->profile = c->rq.profile->name;
    pthread_mutex_lock(&f->lock);
    while (f->n == FINISH_QUEUE) {
        pthread_cond_wait(&f->changed, &f->lock);
    }
    f->jobs[(f->head + f->n) % FINISH_QUEUE] = j;
    f->n++;
    pthread_cond_broadcast(&f->changed);
    pthread_mutex_unlock(&f->lock);
    c->is_deferred = true;
    return 0;
}

/* intent (new key id) -> prov_enroll with the journal hook -> stored -> proven. */
static int enroll_fresh(struct row_ctx *c)
{
    bool is_reissue = c->d.state == PROV_JOURNAL_SUPERSEDED || c->d.n_superseded > 0;
    struct prov_enroll_params p;
    struct prov_enroll_result res;
    int r;

    if (RAND_bytes(c->key_id, sizeof(c->key_id)) != 1) {
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
    p.key_id = c->key_id;
    p.key_id_len = sizeof(c->key_id);
    p.pin_spec = pin_spec(c);
    p.ca_lock = &c->b->ca_lock;
    p.on_issued = journal_issued;
    p.hook_ctx = c;
    /* --prove needs the written storage and the open key: no storage stage then */
    p.defer_storage = c->b->finisher != NULL && !p.reissue && c->b->opts->prove_url == NULL;
    p.prove_url = c->b->opts->prove_url;
    r = prov_enroll(c->b->cfg, c->b->ca, &p, &res);
    if (r == 0 && p.defer_storage) {
        r = defer_storage(c, &res);
        prov_enroll_result_clear(&res);
        return r;
    }
    if (r == 0) {
        r = prov_journal_record_stored(c->b->journal, c->b->lot_id, c->serial);
    }
    if (r == 0) {
        r = prove_written(c, res.cert, res.key_uri, true, true);
    }
    prov_enroll_result_clear(&res);
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
 * Temp files a crash left in the storage directory (storage.c writes "NAME.tmp.XXXXXX",
 * enroll.c probes with ".provisioner-probe.XXXXXX"): never part of an identity.
 */
static void remove_stale_temp_files(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *ent;

    if (d == NULL) {
        return;
    }
    while ((ent = readdir(d)) != NULL) {
        const char *tmp = strstr(ent->d_name, ".tmp.");

        if ((tmp != NULL && strlen(tmp) == 11) ||
            strncmp(ent->d_name, ".provisioner-probe.", 19) == 0) {
            unlinkat(dirfd(d), ent->d_name, 0);
        }
    }
    closedir(d);
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

    r = prov_device_open_login(c->b->cfg, c->d.device_uri, pin_spec(c), "device PIN", false, &dev);
    if (r < 0) {
        goto out;
    }
    r = dev->ops->find_key_by_id(dev, c->d.key_id, c->d.key_id_len, &key);
    if (r == PROV_ERR_NOT_FOUND) {
        key_id_hex(c->d.key_id, c->d.key_id_len, hex);
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
        r = prov_prove_key(key, cert);
    }
    if (r == 0) {
        r = dev->ops->store_certificate(dev, key, cert);
    }
    if (r == 0) {
        struct prov_identity ident = {
            .serial = c->serial,
            .cert = cert,
            .chain = c->b->ca->chain,
            .server_ca_path = c->b->cfg->server_ca,
            .key_uri = key->uri,
            .key_type = key->type,
            .backend = dev->ops->name,
            .profile = c->rq.profile->name,
            .lot = c->b->lot,
        };

        r = prov_storage_write(c->dir, &ident);
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
    remove_stale_temp_files(c->dir);
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
 * --reissue: supersedes the current certificate, once per run. A row still on its way
 * (intent, issued) is resumed instead: that is the interrupted reissue itself.
 */
static int maybe_supersede(struct row_ctx *c)
{
    bool is_done = false;
    int r;

    if (c->d.cert_der == NULL ||
        !(c->d.state == PROV_JOURNAL_STORED || c->d.state == PROV_JOURNAL_PROVEN ||
          c->d.state == PROV_JOURNAL_FAILED)) {
        return 0;
    }
    r = prov_journal_superseded_in_run(c->b->journal, c->b->lot_id, c->serial, c->b->run_id,
                                       &is_done);
    if (r < 0 || is_done) {
        return r;
    }
    r = prov_journal_supersede(c->b->journal, c->b->lot_id, c->serial, c->b->run_id);
    return r < 0 ? r : reload(c);
}

static int do_row(struct row_ctx *c, enum batch_status *st)
{
    int r;

    *st = BATCH_ISSUED;
    r = prov_journal_get(c->b->journal, c->b->lot_id, c->serial, &c->d);
    if (r == 0 && c->e->is_reissue) {
        r = maybe_supersede(c);
    }
    if (r < 0) {
        return r;
    }
    if (c->d.cert_der != NULL && strcmp(c->d.device_uri, c->device_uri) != 0) {
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
            remove_stale_temp_files(c->dir);
            *st = BATCH_ALREADY;
            return 0;
        }
    }
    r = lock_token(c);
    if (r < 0) {
        return r;
    }
    switch (c->d.state) {
    case PROV_JOURNAL_NONE:
    case PROV_JOURNAL_SUPERSEDED: return enroll_fresh(c);
    case PROV_JOURNAL_ISSUED:
    case PROV_JOURNAL_STORED:
    case PROV_JOURNAL_PROVEN: return complete_from_journal(c, st);
    case PROV_JOURNAL_INTENT:
    case PROV_JOURNAL_FAILED:
        if (c->d.cert_der != NULL) {
            return complete_from_journal(c, st);
        }
        if (c->d.key_id_len > 0) {
            r = delete_key_by_id(c, c->d.device_uri, c->d.key_id, c->d.key_id_len,
                                 "the interrupted attempt's");
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
    } else {
        b->n_failed++;
    }
    pthread_mutex_unlock(&b->stats_lock);
    if (b->progress != NULL) {
        prov_progress_step(b->progress, st == BATCH_FAILED);
    }
}

/* One stderr line per failed row, naming the manifest line and the serial. */
static void report_failure(struct batch *b, uint32_t line, const char *serial, const char *msg)
{
    char text[1280];

    if (serial == NULL || strstr(msg, serial) != NULL) {
        snprintf(text, sizeof(text), "%s:%u: %s", b->opts->manifest, line, msg);
    } else {
        snprintf(text, sizeof(text), "%s:%u: serial %s: %s", b->opts->manifest, line, serial, msg);
    }
    if (b->progress != NULL) {
        prov_progress_message(b->progress, "%s", text);
    } else {
        prov_err("%s", text);
    }
}

/* The row's outcome: status, count, and for a failure the journal record and one line. */
static void conclude(struct row_ctx *c, int r, enum batch_status st)
{
    if (r < 0) {
        const char *msg = prov_error_message();
        char reason[1024];

        snprintf(reason, sizeof(reason), "%s", msg ? msg : prov_strerror(r));
        st = BATCH_FAILED;
        prov_error_clear();
        if (prov_journal_record_failed(c->b->journal, c->b->lot_id, c->serial, c->device_uri,
                                       reason) < 0) {
            report_failure(c->b, c->e->line, c->serial, prov_error_message());
        }
        report_failure(c->b, c->e->line, c->serial, reason);
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
    c.device_uri = job->device_uri ? job->device_uri : row->value[PROV_COL_DEVICE];
    batch_request(c.b, row, prov_config_profile(c.b->cfg, pname), &c.rq);
    if (row->value[PROV_COL_KEY] != NULL) {
        prov_key_type_parse(row->value[PROV_COL_KEY], &c.key_type);
    }
    c.dir = batch_storage_dir(c.b->cfg, row);
    prov_error_clear();
    if (c.dir == NULL) {
        r = prov_fail(PROV_ERR_NOMEM, "serial %s: out of memory", c.serial);
    } else if (c.rq.profile == NULL) {
        r = prov_fail(PROV_ERR_CONFIG, "serial %s: profile %s is not in the config", c.serial,
                      pname);
    } else {
        r = do_row(&c, &st);
    }
    unlock_token(&c);
    if (r < 0 || !c.is_deferred) {
        conclude(&c, r, st);
    }
    job->err = r < 0 ? r : 0; /* a deferred row cannot fail later: station has no storage stage */
    prov_journal_device_clear(&c.d);
    free(c.dir);
    return 0;
}

/* ---- the storage stage ------------------------------------------------------------------ */

/*
 * Storage, stored, read back, proven: what enroll_fresh does after prov_enroll, here on the
 * stage's thread. A failure leaves the certificate in the journal; the next run rewrites the
 * storage from it (complete_from_journal), as after a crash at the same point.
 */
static void finish(struct batch *b, struct finish_job *j)
{
    struct row_ctx c;
    struct prov_identity ident = {
        .serial = j->serial,
        .cert = j->cert,
        .chain = b->ca->chain,
        .server_ca_path = b->cfg->server_ca,
        .key_uri = j->key_uri,
        .key_type = j->key_type,
        .backend = j->backend,
        .profile = j->profile,
        .lot = b->lot,
    };
    int r;

    memset(&c, 0, sizeof(c));
    c.b = b;
    c.e = &b->rows[j->index];
    c.serial = j->serial;
    c.device_uri = j->device_uri;
    c.dir = j->dir;
    prov_error_clear();
    r = prov_storage_write(j->dir, &ident);
    if (r == 0) {
        r = prov_journal_record_stored(b->journal, b->lot_id, j->serial);
    }
    if (r == 0) {
        r = prove_written(&c, j->cert, j->key_uri, true, false);
    }
    conclude(&c, r, BATCH_ISSUED);
}

static void *finisher_main(void *arg)
{
    struct batch *b = arg;
    struct batch_finisher *f = b->finisher;

    for (;;) {
        struct finish_job *j;

        pthread_mutex_lock(&f->lock);
        while (f->n == 0 && !f->is_stopping) {
            pthread_cond_wait(&f->changed, &f->lock);
        }
        if (f->n == 0) {
            pthread_mutex_unlock(&f->lock);
            break;
        }
        j = f->jobs[f->head];
        pthread_mutex_unlock(&f->lock);
        finish(b, j);
        finish_job_free(j);
        /* the slot is freed only now: a full queue bounds the identities not yet stored */
        pthread_mutex_lock(&f->lock);
        f->head = (f->head + 1) % FINISH_QUEUE;
        f->n--;
        pthread_cond_broadcast(&f->changed);
        pthread_mutex_unlock(&f->lock);
    }
    return NULL;
}

int batch_finisher_start(struct batch *b)
{
    struct batch_finisher *f = calloc(1, sizeof(*f));

    if (f == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "batch: out of memory");
    }
    pthread_mutex_init(&f->lock, NULL);
    pthread_cond_init(&f->changed, NULL);
    b->finisher = f;
    if (pthread_create(&f->thread, NULL, finisher_main, b) != 0) {
        b->finisher = NULL;
        pthread_cond_destroy(&f->changed);
        pthread_mutex_destroy(&f->lock);
        free(f);
        return prov_fail(PROV_ERR_NOMEM, "batch: cannot start the storage thread");
    }
    return 0;
}

void batch_finisher_stop(struct batch *b)
{
    struct batch_finisher *f = b->finisher;

    if (f == NULL) {
        return;
    }
    pthread_mutex_lock(&f->lock);
    f->is_stopping = true;
    pthread_cond_broadcast(&f->changed);
    pthread_mutex_unlock(&f->lock);
    pthread_join(f->thread, NULL);
    b->finisher = NULL;
    pthread_cond_destroy(&f->changed);
    pthread_mutex_destroy(&f->lock);
    free(f);
}

void batch_row_unreadable(struct batch *b, uint32_t index)
{
    const char *msg = prov_error_message();

    b->rows[index].status = BATCH_FAILED;
    report_failure(b, b->rows[index].line, NULL, msg ? msg : "the row cannot be read again");
    count(b, BATCH_FAILED);
}
