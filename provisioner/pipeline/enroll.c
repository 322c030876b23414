/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One device end to end. The order is chosen so that a failure at any step leaves nothing
 * behind: the key is deleted from the device unless the identity was completely written,
 * the certificate is proven with the device key before anything is stored, and storage is
 * written last, all files or none (storage.c).
 */
#include "enroll.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "backend.h"
#include "ca.h"
#include "chain.h"
#include "csr.h"
#include "error.h"
#include "interrupt.h"
#include "log.h"
#include "secret.h"
#include "signer.h"

#define KEY_ID_BYTES 16

int prov_device_open_for_key(const struct prov_config *cfg, const struct prov_ca *ca,
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
    if (r == 0 && cfg != NULL) {
        r = prov_ca_check_device(cfg, ca, dev);
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

/* A signal asked to stop (interrupt.h): PROV_ERR_INTERRUPTED naming the serial and the step. */
static int stop_if_interrupted(const char *serial, const char *step)
{
    char what[96];

    if (prov_interrupt_signal() == 0) {
        return 0;
    }
    snprintf(what, sizeof(what), "serial %s", serial);
    return prov_interrupt_check(what, step);
}


char *prov_storage_dir_for(const struct prov_config *cfg, const char *dir, const char *serial)
{
    char *out = NULL;

    if (dir != NULL) {
        return strdup(dir);
    }
    if (asprintf(&out, "%s/%s", cfg->output_dir ? cfg->output_dir : "devices", serial) < 0) {
        return NULL;
    }
    return out;
}

/*
 * Before a key is generated: the storage directory must exist or be creatable and accept a
 * new file. Catching this early means a read-only or mistyped storage path costs nothing on
 * the device. (The real write is still checked: storage.c writes all files or none.)
 */
static int preflight_storage(const char *dir, bool *created)
{
    struct stat st;
    char *probe = NULL;
    int fd;
    int r;

    *created = stat(dir, &st) < 0;
    /* a probe or temp file an earlier, killed run left here goes now, not in a later run */
    if (!*created) {
        prov_storage_remove_temp_files(dir);
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
                         enum prov_key_type *type)
{
    const struct prov_profile *prof = p->req.profile;

    if (p->req.serial == NULL || !prov_serial_is_valid(p->req.serial)) {
        return prov_fail(PROV_ERR_USAGE, "serial \"%s\": must match " PROV_SERIAL_RULE,
                         p->req.serial ? p->req.serial : "");
    }
    if (prof == NULL) {
        return prov_fail(PROV_ERR_CONFIG, "serial %s: no issuance profile", p->req.serial);
    }
    *type = p->key_type != PROV_KEY_NONE ? p->key_type : prof->key_type;
    if (!(prof->allowed_keys & PROV_KEY_BIT(*type))) {
        return prov_fail(PROV_ERR_POLICY, "serial %s: key type %s not allowed by profile %s",
                         p->req.serial, prov_key_type_name(*type), prof->name);
    }
    if (cfg->server_ca == NULL) {
        return prov_fail(PROV_ERR_CONFIG,
                         "%s: [provisioner] server_ca is not set (the server CA bundle that "
                         "devices must trust)",
                         cfg->path);
    }
    return 0;
}

/* Deletes the identity key an earlier enrollment left, once the new one is stored. */
static void retire_old_key(struct prov_device *dev, const char *old_uri, struct prov_key *key)
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

/*
 * The identity a reissue replaces, from the storage directory: the key.uri of the old key
 * (deleted once the new identity is stored) and, when identity.json names this serial, the
 * old certificate's public key (a TPM key at the same handle may be replaced only when it is
 * that key: struct prov_keygen_params.replaceable_pub). Either is NULL when unknown.
 */
static void read_old_identity(const char *dir, const char *serial, char **uri, EVP_PKEY **pub)
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

/*
 * Generates the key on the device (id chosen by the caller or random), checks its protection
 * and makes a CSR signed by it that verifies and carries exactly this key. *key_out is set as
 * soon as the key exists, even on a later failure, so that the caller can delete it.
 */
static int keygen_csr(struct prov_device *dev, const struct prov_enroll_params *p,
                      enum prov_key_type type, X509_NAME *subject, EVP_PKEY *replaceable_pub,
                      struct prov_key **key_out, X509_REQ **req_out)
{
    unsigned char id[KEY_ID_BYTES];
    size_t id_len = sizeof(id);
    struct prov_keygen_params kp;
    EVP_PKEY *signer = NULL;
    int r;

    *key_out = NULL;
    *req_out = NULL;
    if (p->key_id != NULL) {
        id_len = p->key_id_len < sizeof(id) ? p->key_id_len : sizeof(id);
        memcpy(id, p->key_id, id_len);
    } else if (RAND_bytes(id, sizeof(id)) != 1) {
        return prov_fail_ossl(PROV_ERR_CRYPTO, "serial %s: no randomness for the key id",
                              p->req.serial);
    }
    kp = (struct prov_keygen_params){.type = type,
                                     .label = p->req.serial,
                                     .id = id,
                                     .id_len = id_len,
                                     .replace = p->reissue,
                                     .replaceable_pub = replaceable_pub,
                                     .replaceable_subject = subject};
    r = dev->ops->generate_key(dev, &kp, key_out);
    if (r < 0) {
        return r;
    }
    prov_debug("enroll", "serial %s: key generated on %s: %s", p->req.serial, dev->name,
               (*key_out)->uri);
    r = prov_check_key_protection(*key_out, "device key");
    if (r == 0) {
        r = prov_signer_pkey(*key_out, &signer);
    }
    if (r == 0) {
        r = prov_csr_create(signer, subject, prov_key_type_digest(type), req_out);
    }
    /* The CSR must carry this key, and verify, before anything is issued (doc/platform.md). */
    if (r == 0) {
        r = prov_csr_verify(*req_out, (*key_out)->pub);
    }
    EVP_PKEY_free(signer);
    return r;
}

int prov_enroll(const struct prov_config *cfg, struct prov_ca *ca,
                const struct prov_enroll_params *p, struct prov_enroll_result *res)
{
    enum prov_key_type type = PROV_KEY_NONE;
    struct prov_request rq = p->req;
    struct prov_device *dev = NULL;
    struct prov_key *key = NULL;
    X509_NAME *subject = NULL;
    X509_REQ *req = NULL;
    X509 *cert = NULL;
    char *dir = NULL;
    char *old_uri = NULL;
    EVP_PKEY *old_pub = NULL;
    bool keep_key = false;
    bool created_dir = false;
    int r;

    memset(res, 0, sizeof(*res));
    /* What the CA index records with the certificate, and whether it may supersede one. */
    rq.record.device_uri = p->device_uri;
    rq.record.is_reissue = p->reissue || p->req.record.is_reissue;
    r = check_request(cfg, p, &type);
    if (r == 0) {
        r = prov_ca_check_device_uri(cfg, p->device_uri);
    }
    if (r < 0) {
        goto out;
    }
    dir = prov_storage_dir_for(cfg, p->storage_dir, p->req.serial);
    if (dir == NULL) {
        r = PROV_ERR_NOMEM;
        goto out;
    }
    if (prov_storage_has_identity(dir)) {
        if (!p->reissue) {
            r = prov_fail(PROV_ERR_ALREADY_ISSUED,
                          "serial %s: %s already holds an identity (use --reissue to certify "
                          "this device again)",
                          p->req.serial, dir);
            goto out;
        }
        read_old_identity(dir, p->req.serial, &old_uri, &old_pub);
    }
    if (old_pub == NULL && p->reissued_cert != NULL &&
        (old_pub = X509_get0_pubkey(p->reissued_cert)) != NULL) {
        EVP_PKEY_up_ref(old_pub);
    }
    /* The CA index's serial rule before the device is touched (checked again at issuance). */
    if (ca->index != NULL) {
        r = prov_ca_index_check(ca->index, rq.serial, &rq.record, NULL);
        if (r < 0) {
            goto out;
        }
    }
    r = prov_issue_subject(cfg, &rq, &subject);
    if (r < 0) {
        goto out;
    }
    r = preflight_storage(dir, &created_dir);
    if (r < 0) {
        goto out;
    }
    r = prov_device_open_for_key(cfg, ca, p->device_uri,
                                 p->pin_spec ? p->pin_spec : cfg->device_pin, false, &dev);
    if (r == 0) {
        r = stop_if_interrupted(p->req.serial, "its key was generated; nothing was issued: run "
                                                    "the same command again");
    }
    if (r < 0) {
        goto out;
    }

    r = keygen_csr(dev, p, type, subject, old_pub, &key, &req);
    if (r < 0) {
        goto out;
    }
    /* the last point to stop at: once the CA signed, the identity is finished (interrupt.h) */
    r = stop_if_interrupted(p->req.serial, "the CA signed its certificate; its new key is "
                                           "deleted, nothing was issued: run the same command "
                                           "again");
    if (r < 0) {
        goto out;
    }
    rq.record.key_uri = key->uri;
    if (p->ca_lock != NULL) {
        pthread_mutex_lock(p->ca_lock);
    }
    r = prov_issue_certificate(cfg, ca, req, &rq, &cert);
    if (p->ca_lock != NULL) {
        pthread_mutex_unlock(p->ca_lock);
    }
    if (r < 0) {
        goto out;
    }
    if (p->on_issued != NULL) {
        r = p->on_issued(p->hook_ctx, cert, key);
        if (r < 0) {
            goto out;
        }
        keep_key = true;
    }
    r = prov_prove_key(key, cert);
    if (r < 0) {
        goto out;
    }
    r = dev->ops->store_certificate(dev, key, cert);
    if (r < 0) {
        goto out;
    }
    if (p->defer_storage && p->on_issued != NULL && !p->reissue && p->prove_url == NULL) {
        goto done;
    }
    {
        struct prov_identity ident = {
            .serial = p->req.serial,
            .cert = cert,
            .chain = ca->chain,
            .server_ca_path = cfg->server_ca,
            .key_uri = key->uri,
            .key_type = type,
            .backend = dev->ops->name,
            .profile = p->req.profile->name,
            .lot = p->req.lot ? p->req.lot : cfg->lot,
        };

        r = prov_storage_write(dir, &ident);
        if (r < 0) {
            goto out;
        }
    }
    keep_key = true;
    if (old_uri != NULL) {
        retire_old_key(dev, old_uri, key);
    }
    res->storage_dir = dir;
    dir = NULL;
done:
    r = prov_cert_facts(cert, &res->facts);
    if (r < 0) {
        goto out;
    }
    res->key_uri = strdup(key->uri);
    res->cert = cert;
    res->key_type = type;
    cert = NULL;
    r = 0;
    if (p->prove_url != NULL) {
        res->is_proof_run = true;
        r = prov_connect_prove(key, res->storage_dir, p->prove_url, &res->proof);
        if (r < 0) {
            prov_error_clear();
            prov_fail(r, "serial %s: issued and stored, but the proof over %s failed: %s",
                      p->req.serial, p->prove_url, res->proof.detail);
        }
    }
out:
    if (key != NULL && !keep_key) {
        /* No orphan: a key that did not become a complete identity leaves the device. */
        if (dev->ops->delete_key(dev, key) < 0) {
            prov_warn("serial %s: could not delete the unused key %s from %s",
                      p->req.serial, key->uri, dev->name);
            res->has_orphan_key = true;
        }
    }
    if (r < 0 && created_dir && dir != NULL) {
        rmdir(dir); /* only if still empty: never removes anything that was written */
    }
    X509_free(cert);
    X509_REQ_free(req);
    X509_NAME_free(subject);
    prov_key_free(key);
    prov_device_close(dev);
    EVP_PKEY_free(old_pub);
    free(old_uri);
    free(dir);
    return r;
}

void prov_enroll_result_clear(struct prov_enroll_result *res)
{
    if (res == NULL) {
        return;
    }
    X509_free(res->cert);
    free(res->storage_dir);
    free(res->key_uri);
    memset(res, 0, sizeof(*res));
}

int prov_enroll_csr(const struct prov_config *cfg, const struct prov_enroll_params *p,
                    X509_REQ **out)
{
    enum prov_key_type type = PROV_KEY_NONE;
    const struct prov_profile *prof = p->req.profile;
    struct prov_device *dev = NULL;
    struct prov_key *key = NULL;
    X509_NAME *subject = NULL;
    X509_REQ *req = NULL;
    EVP_PKEY *old_pub = NULL;
    char *old_uri = NULL;
    char *dir = NULL;
    int r;

    *out = NULL;
    if (p->req.serial == NULL || !prov_serial_is_valid(p->req.serial) || prof == NULL) {
        return prov_fail(PROV_ERR_USAGE, "serial \"%s\": must match " PROV_SERIAL_RULE,
                         p->req.serial ? p->req.serial : "");
    }
    type = p->key_type != PROV_KEY_NONE ? p->key_type : prof->key_type;
    if (!(prof->allowed_keys & PROV_KEY_BIT(type))) {
        return prov_fail(PROV_ERR_POLICY, "serial %s: key type %s not allowed by profile %s",
                         p->req.serial, prov_key_type_name(type), prof->name);
    }
    r = prov_ca_check_device_uri(cfg, p->device_uri);
    if (r < 0) {
        goto out;
    }
    r = prov_issue_subject(cfg, &p->req, &subject);
    if (r < 0) {
        goto out;
    }
    r = prov_device_open_for_key(cfg, NULL, p->device_uri,
                                 p->pin_spec ? p->pin_spec : cfg->device_pin, false, &dev);
    if (r == 0) {
        r = stop_if_interrupted(p->req.serial, "its key was generated; nothing was issued: run "
                                                    "the same command again");
    }
    if (r < 0) {
        goto out;
    }
    /* a reissue on a device whose storage holds this serial's identity may replace its key */
    if (p->reissue) {
        dir = prov_storage_dir_for(cfg, p->storage_dir, p->req.serial);
        if (dir != NULL) {
            read_old_identity(dir, p->req.serial, &old_uri, &old_pub);
        }
    }
    r = keygen_csr(dev, p, type, subject, old_pub, &key, &req);
    if (r < 0) {
        goto out;
    }
    *out = req;
    req = NULL;
out:
    if (r < 0 && key != NULL) {
        dev->ops->delete_key(dev, key);
    }
    EVP_PKEY_free(old_pub);
    free(old_uri);
    free(dir);
    X509_REQ_free(req);
    X509_NAME_free(subject);
    prov_key_free(key);
    prov_device_close(dev);
    return r;
}

int prov_install(const struct prov_config *cfg, const struct prov_install_params *p,
                 struct prov_enroll_result *res)
{
    struct prov_chain_report rep = {0};
    struct prov_device *dev = NULL;
    struct prov_key *key = NULL;
    STACK_OF(X509) *chain = NULL;
    X509 *cert;
    char *dir = NULL;
    bool created_dir = false;
    int r = PROV_ERR_NOMEM;

    memset(res, 0, sizeof(*res));
    if (p->serial == NULL || !prov_serial_is_valid(p->serial)) {
        return prov_fail(PROV_ERR_USAGE, "serial \"%s\": must match " PROV_SERIAL_RULE,
                         p->serial ? p->serial : "");
    }
    if (sk_X509_num(p->bundle) < 2) {
        return prov_fail(PROV_ERR_INPUT,
                         "serial %s: the certificate file must hold the certificate followed "
                         "by its CA chain (as written by `provisioner sign`)",
                         p->serial);
    }
    cert = sk_X509_value(p->bundle, 0);
    r = prov_chain_verify(p->bundle, NULL, PROV_PURPOSE_CLIENT, time(NULL), &rep);
    if (r < 0) {
        if (r == PROV_ERR_VERIFY && rep.n > 0) {
            r = prov_fail(PROV_ERR_VERIFY, "serial %s: certificate %d (%s): %s: %s", p->serial,
                          rep.items[0].index, rep.items[0].subject ? rep.items[0].subject : "",
                          rep.items[0].rule, rep.items[0].detail);
        }
        goto out;
    }
    dir = prov_storage_dir_for(cfg, p->storage_dir, p->serial);
    if (dir == NULL) {
        r = PROV_ERR_NOMEM;
        goto out;
    }
    if (prov_storage_has_identity(dir) && !p->reissue) {
        r = prov_fail(PROV_ERR_ALREADY_ISSUED,
                      "serial %s: %s already holds an identity (use --reissue)", p->serial, dir);
        goto out;
    }
    if ((p->server_ca_path ? p->server_ca_path : cfg->server_ca) == NULL) {
        r = prov_fail(PROV_ERR_CONFIG, "serial %s: no server CA bundle (--server-ca or "
                      "[provisioner] server_ca)", p->serial);
        goto out;
    }
    r = prov_ca_check_device_uri(cfg, p->device_uri);
    if (r < 0) {
        goto out;
    }
    r = preflight_storage(dir, &created_dir);
    if (r < 0) {
        goto out;
    }
    r = prov_device_open_for_key(cfg, NULL, p->device_uri,
                                 p->pin_spec ? p->pin_spec : cfg->device_pin, false, &dev);
    if (r < 0) {
        goto out;
    }
    r = dev->ops->find_key_by_public(dev, X509_get0_pubkey(cert), &key);
    if (r < 0) {
        if (r == PROV_ERR_NOT_FOUND) {
            r = prov_fail(PROV_ERR_NOT_FOUND, "serial %s: no key on %s matches the certificate",
                          p->serial, dev->name);
        }
        goto out;
    }
    r = prov_check_key_protection(key, "device key");
    if (r < 0) {
        goto out;
    }
    r = prov_prove_key(key, cert);
    if (r < 0) {
        goto out;
    }
    r = dev->ops->store_certificate(dev, key, cert);
    if (r < 0) {
        goto out;
    }
    chain = sk_X509_dup(p->bundle);
    if (chain == NULL) {
        r = PROV_ERR_NOMEM;
        goto out;
    }
    (void)sk_X509_shift(chain); /* borrowed view: the chain without the leaf */
    {
        struct prov_identity ident = {
            .serial = p->serial,
            .cert = cert,
            .chain = chain,
            .server_ca_path = p->server_ca_path ? p->server_ca_path : cfg->server_ca,
            .key_uri = key->uri,
            .key_type = key->type,
            .backend = dev->ops->name,
            .profile = p->profile ? p->profile : "device",
            .lot = cfg->lot,
        };

        r = prov_storage_write(dir, &ident);
        if (r < 0) {
            goto out;
        }
    }
    r = prov_cert_facts(cert, &res->facts);
    if (r < 0) {
        goto out;
    }
    X509_up_ref(cert);
    res->cert = cert;
    res->key_uri = strdup(key->uri);
    res->key_type = key->type;
    res->storage_dir = dir;
    dir = NULL;
out:
    if (r < 0 && created_dir && dir != NULL) {
        rmdir(dir);
    }
    sk_X509_free(chain);
    prov_chain_report_free(&rep);
    prov_key_free(key);
    prov_device_close(dev);
    free(dir);
    return r;
}
