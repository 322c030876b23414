/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `enroll` is kill-safe through the CA index (ca_index.h), as a batch is through its journal:
 * the attempt (serial, device, key id, storage) is recorded before the key is generated, its
 * certificate is recorded before it is returned (issue.c), and the attempt is finished when
 * the identity is stored (its certificate delivered) or when it failed (anything it issued
 * abandoned, its key deleted by prov_enroll). An attempt stopped in between (a kill, a lost
 * device, a key that could not be deleted) stays unfinished; the next enroll of that serial,
 * or on that device, settles it first:
 *   - its storage holds its certificate: it was delivered; the key it replaced (a reissue)
 *     leaves the device, as a finished reissue would have done;
 *   - otherwise its key is deleted from its device (found by id: public key and certificate
 *     objects with that id go too), its undelivered certificate is abandoned (still recorded,
 *     visible in `ca show`), and a certificate it superseded whose identity is still in the
 *     storage is current again;
 *   - temp files of a stopped write are removed from its storage.
 */
#include "enroll_attempt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "backend.h"
#include "ca_index.h"
#include "error.h"
#include "log.h"
#include "secret.h"
#include "storage.h"


/*
 * The PIN source to open an interrupted attempt's device with: this run's for this run's
 * device; else the attempt's own source when it can be read again (file:, env:). A source
 * that was read once (fd:, prompt) is for the device it was given for: NULL, the attempt is
 * left for an enroll on its own device. (A device without a PIN needs none: "".)
 */
static const char *attempt_pin(const struct prov_ca_attempt *a, const char *device_uri,
                               const char *pin_spec)
{
    enum prov_secret_kind kind;
    const char *arg;

    if (strcmp(a->device_uri, device_uri) == 0) {
        return pin_spec ? pin_spec : "";
    }
    if (a->pin_source == NULL) {
        return "";
    }
    if (prov_secret_parse_source(a->pin_source, &kind, &arg) == 0 &&
        (kind == PROV_SECRET_FILE || kind == PROV_SECRET_ENV)) {
        return a->pin_source;
    }
    prov_error_clear();
    return NULL;
}

/* Deletes the key with a's key id from dev (absent is fine). */
static int delete_attempt_key(struct prov_device *dev, const struct prov_ca_attempt *a)
{
    struct prov_key *key = NULL;
    int r = dev->ops->find_key_by_id(dev, a->key_id, a->key_id_len, &key);

    if (r == PROV_ERR_NOT_FOUND) {
        prov_error_clear();
        return 0;
    }
    if (r == 0) {
        r = dev->ops->delete_key(dev, key);
    }
    prov_key_free(key);
    return r;
}

/* The key an interrupted reissue replaced leaves the device, unless it is the new key. */
static int retire_replaced_key(struct prov_device *dev, const struct prov_ca_attempt *a)
{
    struct prov_key *old = NULL;
    int r = dev->ops->find_key(dev, a->old_key_uri, &old);

    if (r == PROV_ERR_NOT_FOUND) {
        prov_error_clear();
        return 0;
    }
    if (r == 0 && (old->id_len != a->key_id_len || memcmp(old->id, a->key_id, a->key_id_len))) {
        r = dev->ops->delete_key(dev, old);
    }
    prov_key_free(old);
    return r;
}

/* What the attempt's storage holds now: delivered, or (for a reissue) the old identity. */
struct storage_state {
    bool has_identity; /* client.crt is there */
    bool is_delivered; /* ...and it is the attempt's certificate */
    X509 *stored;      /* client.crt when it parses, owned */
};

static void read_storage_state(struct prov_ca_index *ix, const struct prov_ca_attempt *a,
                               struct storage_state *s)
{
    struct prov_stored_identity *id = NULL;
    X509 *cert = NULL;

    memset(s, 0, sizeof(*s));
    s->has_identity = prov_storage_has_identity(a->storage);
    if (s->has_identity && prov_storage_read(a->storage, &id) == 0) {
        s->stored = id->cert;
        id->cert = NULL;
    }
    prov_stored_identity_free(id);
    if (s->stored != NULL && prov_ca_index_attempt_certificate(ix, a->id, &cert) == 0 &&
        cert != NULL) {
        s->is_delivered = X509_cmp(cert, s->stored) == 0;
    }
    X509_free(cert);
    /* A failed read records a reason; the caller decides whether it may be forgotten. */
}

/*
 * Settles one claimed, interrupted attempt (see the top of this file). Returns 0 when it is
 * finished, 1 when it is left for later (its device is not here, or no PIN for it), or the
 * error that stops this enroll (a PIN refused, a device error on this run's device).
 */
static int settle(const struct prov_config *cfg, struct prov_issuer *is,
                  struct prov_ca_index *ix, const struct prov_ca_attempt *a,
                  const char *device_uri, const char *pin_spec)
{
    struct storage_state s;
    struct prov_device *dev = NULL;
    const char *pin = attempt_pin(a, device_uri, pin_spec);
    bool is_own_device = strcmp(a->device_uri, device_uri) == 0;
    bool restored = false;
    bool is_old_gone;
    bool needs_device;
    int r = 0;

    read_storage_state(ix, a, &s);
    prov_error_clear(); /* storage that does not read is settled like storage without it */
    /* The new key goes unless delivered; the replaced one once the old identity is gone. */
    is_old_gone = a->old_key_uri != NULL && (s.is_delivered || !s.has_identity);
    needs_device = !s.is_delivered || is_old_gone;
    if (needs_device && pin == NULL) {
        prov_warn("serial %s: enroll attempt %lld on %s was interrupted; its PIN source is not "
                  "this run's, so it is left for an enroll on that device",
                  a->serial, a->id, a->device_uri);
        r = 1;
        goto out;
    }
    if (needs_device) {
        r = prov_step_open_device(cfg, is, a->device_uri, pin[0] ? pin : NULL, false, &dev);
        if (r < 0 && !is_own_device &&
            (r == PROV_ERR_NOT_FOUND || r == PROV_ERR_DEVICE_REMOVED ||
             r == PROV_ERR_PIN_SOURCE)) {
            prov_warn("serial %s: enroll attempt %lld on %s was interrupted; the device or its "
                      "PIN is not here, so it is left for later: %s",
                      a->serial, a->id, a->device_uri, prov_error_message());
            prov_error_clear();
            r = 1;
            goto out;
        }
    }
    if (r == 0 && needs_device && !s.is_delivered) {
        r = delete_attempt_key(dev, a);
    }
    if (r == 0 && is_old_gone) {
        r = retire_replaced_key(dev, a);
    }
    if (r == 0 && !s.is_delivered && s.stored != NULL) {
        r = prov_ca_index_attempt_restore(ix, a->id, s.stored, &restored);
    }
    if (r == 0) {
        prov_storage_remove_temp_files(a->storage);
        r = prov_ca_index_attempt_finish(ix, a->id, s.is_delivered,
                                         s.is_delivered ? "delivered" : "cleaned");
    }
    if (r == 0) {
        prov_info("serial %s: interrupted enroll attempt %lld on %s settled: %s", a->serial,
                  a->id, a->device_uri,
                  s.is_delivered ? "its identity was stored"
                  : restored     ? "its key deleted, the earlier identity is current again"
                                 : "its key deleted, anything it issued abandoned");
    }
out:
    X509_free(s.stored);
    prov_device_close(dev);
    return r;
}

/* Settles the interrupted attempts of this serial or on this device before a new one. */
static int settle_interrupted(const struct prov_config *cfg, struct prov_issuer *is,
                              struct prov_ca_index *ix, const char *serial,
                              const char *device_uri, const char *pin_spec)
{
    struct prov_ca_attempt *list = NULL;
    size_t n = 0;
    size_t n_busy = 0;
    int r;

    r = prov_ca_index_interrupted(ix, serial, device_uri, &list, &n, &n_busy);
    if (r < 0) {
        return r;
    }
    if (n_busy > 0) {
        r = prov_fail(PROV_ERR_POLICY, "serial %s: another enroll of this serial is running now",
                      serial);
    }
    for (size_t i = 0; i < n; i++) {
        int s = r == 0 ? settle(cfg, is, ix, &list[i], device_uri, pin_spec) : 1;

        if (s != 0) {
            prov_ca_index_attempt_release(ix, list[i].id);
        }
        if (s < 0) {
            r = s;
        }
        prov_ca_attempt_clear(&list[i]);
    }
    free(list);
    return r;
}

/* After this run's own attempt failed: nothing was stored, and the key is gone (or not). */
static void finish_failed(struct prov_ca_index *ix, const struct prov_ca_attempt *a,
                          bool is_key_left)
{
    struct storage_state s;
    bool restored = false;

    if (is_key_left) {
        /* The next enroll of the serial or on the device deletes it. */
        prov_ca_index_attempt_release(ix, a->id);
        return;
    }
    read_storage_state(ix, a, &s);
    if (s.stored != NULL && prov_ca_index_attempt_restore(ix, a->id, s.stored,
                                                          &restored) < 0) {
        prov_warn("serial %s: the CA index could not record that the earlier identity is "
                  "still current: %s", a->serial, prov_error_message());
    }
    X509_free(s.stored);
    if (prov_ca_index_attempt_finish(ix, a->id, false, "failed") < 0) {
        prov_warn("serial %s: the CA index could not close enroll attempt %lld (the next "
                  "enroll settles it): %s", a->serial, a->id, prov_error_message());
        prov_ca_index_attempt_release(ix, a->id);
    }
}

/* Test-only: PROVISIONER_TEST_CRASH_AT=enroll-stored:1 exits (137) with the identity stored. */
static void crash_point(const char *name)
{
    const char *env = getenv("PROVISIONER_TEST_CRASH_AT");
    size_t n = strlen(name);

    if (env != NULL && strncmp(env, name, n) == 0 && strcmp(env + n, ":1") == 0) {
        _exit(137);
    }
}

int prov_enroll_attempt(const struct prov_config *cfg, struct prov_issuer *is,
                        const struct prov_enroll_params *p, struct prov_enroll_result *res)
{
    struct prov_enroll_params run = *p;
    struct prov_ca_attempt a = {0};
    struct prov_stored_identity *old = NULL;
    const char *pin_spec = p->pin_spec ? p->pin_spec : cfg->device_pin;
    struct prov_ca_index *ix = is->ops->record(is);
    char *dir = NULL;
    bool is_delivered;
    int r;

    memset(res, 0, sizeof(*res));
    if (ix == NULL || p->req.serial == NULL || !prov_serial_is_valid(p->req.serial)) {
        return prov_enroll(cfg, is, p, res); /* nothing to record, or refused at once */
    }
    dir = prov_storage_dir_for(cfg, p->storage_dir, NULL, p->req.serial);
    if (dir == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "serial %s: out of memory", p->req.serial);
    }
    r = settle_interrupted(cfg, is, ix, p->req.serial, p->device_uri, pin_spec);
    if (r < 0) {
        goto out;
    }
    /* Refused before a row is written or a device touched (prov_enroll checks it again). */
    run.req.record.issued_by = "enroll";
    run.req.record.lot = NULL;
    run.req.record.is_reissue = p->reissue;
    r = prov_ca_index_check(ix, p->req.serial, &run.req.record, NULL);
    if (r < 0) {
        goto out;
    }
    prov_storage_remove_temp_files(dir);
    a.serial = strdup(p->req.serial);
    a.device_uri = strdup(p->device_uri);
    a.storage = strdup(dir);
    a.pin_source = pin_spec ? strdup(pin_spec) : NULL;
    if (p->reissue && prov_storage_read(dir, &old) == 0 && old->key_uri != NULL) {
        a.old_key_uri = strdup(old->key_uri);
    }
    prov_error_clear();
    a.key_id_len = PROV_KEY_ID_BYTES;
    if (a.serial == NULL || a.device_uri == NULL || a.storage == NULL ||
        RAND_bytes(a.key_id, PROV_KEY_ID_BYTES) != 1) {
        r = prov_fail_ossl(PROV_ERR_NOMEM, "serial %s: cannot begin the enroll attempt",
                           p->req.serial);
        goto out;
    }
    r = prov_ca_index_attempt_begin(ix, &a);
    if (r < 0) {
        goto out;
    }
    run.key_id = a.key_id;
    run.key_id_len = a.key_id_len;
    run.req.record.attempt_id = a.id;
    r = prov_enroll(cfg, is, &run, res);
    /* A refused --prove still stored the identity: the certificate was delivered. */
    is_delivered = r == 0 || (res->is_proof_run && res->storage_dir != NULL);
    if (is_delivered) {
        crash_point("enroll-stored");
        if (prov_ca_index_attempt_finish(ix, a.id, true, "delivered") < 0) {
            prov_warn("serial %s: stored, but the CA index could not record the delivery (the "
                      "next enroll of the serial does): %s", a.serial, prov_error_message());
            prov_ca_index_attempt_release(ix, a.id);
        }
    } else {
        finish_failed(ix, &a, res->has_orphan_key);
    }
out:
    prov_stored_identity_free(old);
    prov_ca_attempt_clear(&a);
    free(dir);
    return r;
}
