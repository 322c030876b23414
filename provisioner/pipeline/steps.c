/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The steps of the identity pipeline (steps.h). The order they run in is chosen so that a
 * failure at any step leaves nothing behind: the key is discarded unless it became a complete
 * identity, the certificate is proven with the device key before anything is stored, and
 * storage is written last, all files or none (storage.c).
 */
#include "steps.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "backend.h"
#include "csr.h"
#include "enroll.h"
#include "error.h"
#include "interrupt.h"
#include "log.h"
#include "signer.h"

const char *prov_output_dir(const struct prov_config *cfg)
{
    return cfg->output_dir != NULL ? cfg->output_dir : PROV_OUTPUT_DIR_DEFAULT;
}

char *prov_storage_dir_for(const struct prov_config *cfg, const char *dir, const char *relative,
                           const char *serial)
{
    char *out = NULL;

    if (dir != NULL) {
        return strdup(dir);
    }
    if (asprintf(&out, "%s/%s", prov_output_dir(cfg), relative != NULL ? relative : serial) < 0) {
        return NULL;
    }
    return out;
}

struct prov_identity prov_identity_make(const struct prov_config *cfg, const char *serial,
                                        X509 *cert, STACK_OF(X509) *chain,
                                        const char *server_ca_path, const char *key_uri,
                                        enum prov_key_type key_type, const char *backend,
                                        const char *profile, const char *lot)
{
    return (struct prov_identity){
        .serial = serial,
        .cert = cert,
        .chain = chain,
        .server_ca_path = server_ca_path != NULL ? server_ca_path : cfg->server_ca,
        .key_uri = key_uri,
        .key_type = key_type,
        .backend = backend,
        .profile = profile != NULL ? profile : "device",
        .lot = lot != NULL ? lot : cfg->lot,
    };
}

int prov_step_stop_if_interrupted(const char *serial, const char *step)
{
    char what[96];

    if (prov_interrupt_signal() == 0) {
        return 0;
    }
    snprintf(what, sizeof(what), "serial %s", serial);
    return prov_interrupt_check(what, step);
}

/* ---- plan ------------------------------------------------------------------------------- */

int prov_step_preflight_storage(const char *dir, bool *created)
{
    struct stat st;
    char *probe = NULL;
    int fd;
    int r;

    *created = stat(dir, &st) < 0;
    /* a probe or temp file an earlier, killed run left here goes now, not in a later run */
    if (!*created) {
        prov_storage_remove_temp_files(dir);
        /*
         * That run may have stopped between the directory's mkdir and the sync of its parent
         * (durable.c): synced now, or a power cut after this run records the storage could
         * still lose the directory's entry. One sync, only for a directory already there.
         */
        r = prov_storage_sync_parent(dir);
        if (r < 0) {
            return r;
        }
    }
    r = prov_storage_mkdirs(dir);
    if (r < 0) {
        return r;
    }
    if (asprintf(&probe, "%s/.provisioner-probe.XXXXXX", dir) < 0) {
        return PROV_ERR_NOMEM;
    }
    fd = mkstemp(probe);
    if (fd < 0) {
        r = prov_fail(PROV_ERR_STORAGE, "storage %s: not writable: %s", dir, strerror(errno));
    } else {
        close(fd);
        unlink(probe);
    }
    free(probe);
    return r;
}

static int check_request(const struct prov_config *cfg, const struct prov_enroll_params *p,
                         unsigned what, enum prov_key_type *type)
{
    const struct prov_profile *prof = p->req.profile;

    if (p->req.serial == NULL || !prov_serial_is_valid(p->req.serial)) {
        return prov_fail(PROV_ERR_USAGE, "serial \"%s\": must match " PROV_SERIAL_RULE,
                         p->req.serial ? p->req.serial : "");
    }
    if ((what & PROV_PLAN_REQUEST) && prof == NULL) {
        return prov_fail(PROV_ERR_CONFIG, "serial %s: no issuance profile", p->req.serial);
    }
    if (what & PROV_PLAN_REQUEST) {
        *type = p->key_type != PROV_KEY_NONE ? p->key_type : prof->key_type;
        if (!(prof->allowed_keys & PROV_KEY_BIT(*type))) {
            return prov_fail(PROV_ERR_POLICY, "serial %s: key type %s not allowed by profile %s",
                             p->req.serial, prov_key_type_name(*type), prof->name);
        }
    }
    if ((what & PROV_PLAN_SERVER_CA) && cfg->server_ca == NULL) {
        return prov_fail(PROV_ERR_CONFIG,
                         "%s: [provisioner] server_ca is not set (the server CA bundle that "
                         "devices must trust)",
                         cfg->path);
    }
    return 0;
}

int prov_step_check_no_identity(const struct prov_config *cfg, const char *storage_dir,
                                const char *serial, bool reissue, char **dir)
{
    *dir = prov_storage_dir_for(cfg, storage_dir, NULL, serial);
    if (*dir == NULL) {
        return PROV_ERR_NOMEM;
    }
    if (!reissue && prov_storage_has_identity(*dir)) {
        return prov_fail(PROV_ERR_ALREADY_ISSUED,
                         "serial %s: %s already holds an identity (use --reissue to certify "
                         "this device again)",
                         serial, *dir);
    }
    return 0;
}

/* The storage directory, and what an identity already there means for this request. */
static int plan_storage_dir(const struct prov_config *cfg, const struct prov_enroll_params *p,
                            struct prov_enroll_plan *plan)
{
    int r = prov_step_check_no_identity(cfg, p->storage_dir, p->req.serial, p->reissue,
                                        &plan->dir);

    if (r == 0 && prov_storage_has_identity(plan->dir)) {
        prov_step_read_old_identity(plan->dir, p->req.serial, &plan->old_uri, &plan->old_pub);
    }
    return r;
}

void prov_step_read_old_identity(const char *dir, const char *serial, char **uri, EVP_PKEY **pub)
{
    struct prov_stored_identity *old = NULL;

    *uri = NULL;
    *pub = NULL;
    if (prov_storage_read(dir, &old) == 0) {
        *uri = old->key_uri != NULL ? strdup(old->key_uri) : NULL;
        if (old->serial != NULL && strcmp(old->serial, serial) == 0 &&
            (*pub = X509_get0_pubkey(old->cert)) != NULL) {
            EVP_PKEY_up_ref(*pub);
        }
    }
    prov_stored_identity_free(old);
    prov_error_clear();
}

int prov_step_plan_parts(const struct prov_config *cfg, struct prov_issuer *is,
                         const struct prov_enroll_params *p, unsigned what,
                         struct prov_enroll_plan *plan)
{
    int r;

    memset(plan, 0, sizeof(*plan));
    /* What the CA index records with the certificate, and whether it may supersede one. */
    plan->rq = p->req;
    plan->rq.record.device_uri = p->device_uri;
    plan->rq.record.is_reissue = p->reissue || p->req.record.is_reissue;
    plan->reissue = p->reissue;
    r = check_request(cfg, p, what, &plan->type);
    if (r == 0 && (what & PROV_PLAN_DEVICE)) {
        r = is->ops->check_device(is, p->device_uri, NULL);
    }
    if (r == 0 && (what & PROV_PLAN_STORAGE)) {
        r = plan_storage_dir(cfg, p, plan);
    }
    if (r < 0) {
        goto out;
    }
    if (plan->old_pub == NULL && p->reissued_cert != NULL &&
        (plan->old_pub = X509_get0_pubkey(p->reissued_cert)) != NULL) {
        EVP_PKEY_up_ref(plan->old_pub);
    }
    /* The issuer's serial rule before the device is touched (checked again at issuance). */
    if (what & PROV_PLAN_RECORD) {
        r = is->ops->check(is, &plan->rq, NULL);
    }
    if (r == 0 && (what & PROV_PLAN_SUBJECT)) {
        r = prov_issue_subject(cfg, &plan->rq, &plan->subject);
    }
    if (r == 0 && (what & PROV_PLAN_STORAGE)) {
        r = prov_step_preflight_storage(plan->dir, &plan->created_dir);
    }
out:
    if (r < 0) {
        prov_enroll_plan_clear(plan, true);
    }
    return r;
}

int prov_step_plan(const struct prov_config *cfg, struct prov_issuer *is,
                   const struct prov_enroll_params *p, struct prov_enroll_plan *plan)
{
    return prov_step_plan_parts(cfg, is, p, PROV_PLAN_ALL, plan);
}

void prov_enroll_plan_clear(struct prov_enroll_plan *plan, bool is_failed)
{
    if (is_failed && plan->created_dir && plan->dir != NULL) {
        rmdir(plan->dir); /* only if still empty: never removes anything that was written */
    }
    X509_NAME_free(plan->subject);
    EVP_PKEY_free(plan->old_pub);
    free(plan->old_uri);
    free(plan->dir);
    memset(plan, 0, sizeof(*plan));
}

/* ---- the device ------------------------------------------------------------------------- */

int prov_step_open_device(const struct prov_config *cfg, struct prov_issuer *is,
                          const char *uri, const char *pin_spec, bool read_only,
                          struct prov_device **out)
{
    struct prov_device_params params;
    struct prov_device *dev = NULL;
    int r;

    *out = NULL;
    prov_device_params_from_config(cfg, read_only, &params);
    r = prov_device_open(uri, &params, &dev);
    /* a device for a device key is never the CA's own token: refused before the login */
    if (r == 0 && is != NULL) {
        r = is->ops->check_device(is, uri, dev);
    }
    if (r == 0) {
        r = prov_device_login(dev, pin_spec, "device PIN");
    }
    if (r == 0) {
        *out = dev;
        dev = NULL;
    }
    prov_device_close(dev);
    return r;
}

int prov_step_generate_key(struct prov_device *dev, const struct prov_enroll_plan *plan,
                           const unsigned char *id, size_t id_len, struct prov_key **out)
{
    struct prov_keygen_params kp = {.type = plan->type,
                                    .label = plan->rq.serial,
                                    .id = id,
                                    .id_len = id_len,
                                    .replace = plan->reissue,
                                    .replaceable_pub = plan->old_pub,
                                    .replaceable_subject = plan->subject};
    int r;

    *out = NULL;
    r = dev->ops->generate_key(dev, &kp, out);
    if (r < 0) {
        return r;
    }
    prov_debug("enroll", "serial %s: key generated on %s: %s", plan->rq.serial, dev->name,
               (*out)->uri);
    return prov_check_key_protection(*out, "device key");
}

int prov_step_sign_csr(struct prov_key *key, const X509_NAME *subject, enum prov_key_type type,
                       X509_REQ **out)
{
    EVP_PKEY *signer = NULL;
    int r;

    *out = NULL;
    r = prov_signer_pkey(key, &signer);
    if (r == 0) {
        r = prov_csr_create(signer, subject, prov_key_type_digest(type), out);
    }
    EVP_PKEY_free(signer);
    return r;
}

int prov_step_check_csr(X509_REQ *req, const struct prov_key *key)
{
    return prov_csr_verify(req, key->pub);
}

int prov_step_make_csr(struct prov_key *key, const X509_NAME *subject,
                       enum prov_key_type type, X509_REQ **out)
{
    int r = prov_step_sign_csr(key, subject, type, out);

    /* The CSR must carry this key, and verify, before anything is issued. */
    return r < 0 ? r : prov_step_check_csr(*out, key);
}

int prov_step_issue(struct prov_issuer *is, X509_REQ *req, const struct prov_request *rq,
                    X509 **out)
{
    return is->ops->issue(is, req, rq, out);
}

int prov_step_install(struct prov_device *dev, struct prov_key *key, X509 *cert,
                      const char *dir, const struct prov_identity *ident)
{
    int r = 0;

    if (dev != NULL) {
        r = prov_prove_key(key, cert);
    }
    return r < 0 ? r : prov_step_store(dev, key, cert, dir, ident);
}

int prov_step_store(struct prov_device *dev, struct prov_key *key, X509 *cert, const char *dir,
                    const struct prov_identity *ident)
{
    int r = 0;

    if (dev != NULL) {
        r = dev->ops->store_certificate(dev, key, cert);
    }
    if (r == 0 && dir != NULL) {
        r = prov_storage_write(dir, ident);
    }
    return r;
}

int prov_step_prove(struct prov_key *key, const char *dir, const char *url,
                    const char *serial, struct prov_connect_result *res)
{
    int r = prov_connect_prove(key, dir, url, res);

    if (r < 0) {
        prov_error_clear();
        prov_fail(r, "serial %s: issued and stored, but the proof over %s failed: %s", serial,
                  url, res->detail);
    }
    return r;
}

bool prov_step_discard_key(struct prov_device *dev, struct prov_key *key, const char *serial)
{
    if (dev->ops->delete_key(dev, key) < 0) {
        prov_warn("serial %s: could not delete the unused key %s from %s", serial, key->uri,
                  dev->name);
        return false;
    }
    return true;
}

void prov_step_retire_old_key(struct prov_device *dev, const char *old_uri,
                              const struct prov_key *key)
{
    struct prov_key *old = NULL;

    if (old_uri == NULL || dev->ops->find_key(dev, old_uri, &old) < 0) {
        prov_error_clear();
        return;
    }
    if (old->id_len != key->id_len || memcmp(old->id, key->id, key->id_len) != 0) {
        if (dev->ops->delete_key(dev, old) < 0) {
            prov_warn("%s: could not delete the superseded key %s", dev->name, old_uri);
            prov_error_clear();
        }
    }
    prov_key_free(old);
}
