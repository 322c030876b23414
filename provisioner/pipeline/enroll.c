/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One device end to end, and the device halves of the split flow: the steps of steps.h in
 * their order, with the checks between them.
 */
#include "enroll.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "backend.h"
#include "chain.h"
#include "error.h"
#include "log.h"

/* The device key's id: the caller's (a journal or an attempt recorded it), else random. */
static int choose_key_id(const struct prov_enroll_params *p, unsigned char *id, size_t *id_len)
{
    if (p->key_id != NULL) {
        *id_len = p->key_id_len < *id_len ? p->key_id_len : *id_len;
        memcpy(id, p->key_id, *id_len);
        return 0;
    }
    if (RAND_bytes(id, (int)*id_len) != 1) {
        return prov_fail_ossl(PROV_ERR_CRYPTO, "serial %s: no randomness for the key id",
                              p->req.serial);
    }
    return 0;
}

/*
 * Steps 1 to 3 for a planned key: the device opened and logged in to (a signal may stop here),
 * the key generated with its id, and its CSR. *dev and *key are set as soon as they exist,
 * also on a failure, so that the caller can discard the key and close the device.
 */
static int key_and_csr(const struct prov_config *cfg, struct prov_issuer *is,
                       const struct prov_enroll_params *p, const struct prov_enroll_plan *plan,
                       struct prov_device **dev, struct prov_key **key, X509_REQ **req)
{
    unsigned char id[PROV_KEY_ID_BYTES];
    size_t id_len = sizeof(id);
    int r;

    r = prov_step_open_device(cfg, is, p->device_uri, p->pin_spec ? p->pin_spec : cfg->device_pin,
                              false, dev);
    if (r == 0) {
        r = prov_step_stop_if_interrupted(p->req.serial, PROV_STEP_STOP_OPENED);
    }
    if (r == 0) {
        r = choose_key_id(p, id, &id_len);
    }
    if (r == 0) {
        r = prov_step_generate_key(*dev, plan, id, id_len, key);
    }
    if (r == 0) {
        r = prov_step_make_csr(*key, plan->subject, plan->type, req);
    }
    return r;
}

int prov_enroll(const struct prov_config *cfg, struct prov_issuer *is,
                const struct prov_enroll_params *p, struct prov_enroll_result *res)
{
    struct prov_enroll_plan plan;
    struct prov_device *dev = NULL;
    struct prov_key *key = NULL;
    X509_REQ *req = NULL;
    X509 *cert = NULL;
    bool keep_key = false;
    int r;

    memset(res, 0, sizeof(*res));
    r = prov_step_plan(cfg, is, p, &plan);
    if (r < 0) {
        return r;
    }
    r = key_and_csr(cfg, is, p, &plan, &dev, &key, &req);
    if (r < 0) {
        goto out;
    }
    /* the last point to stop at: once the CA signed, the identity is finished (interrupt.h) */
    r = prov_step_stop_if_interrupted(p->req.serial, PROV_STEP_STOP_SIGNED);
    if (r < 0) {
        goto out;
    }
    plan.rq.record.key_uri = key->uri;
    r = prov_step_issue(is, req, &plan.rq, &cert);
    if (r == 0) {
        struct prov_identity ident = prov_identity_make(
            cfg, p->req.serial, cert, is->ops->chain(is), NULL, key->uri, plan.type,
            dev->ops->name, p->req.profile->name, p->req.lot);

        r = prov_step_install(dev, key, cert, plan.dir, &ident);
    }
    if (r < 0) {
        goto out;
    }
    keep_key = true;
    prov_step_retire_old_key(dev, plan.old_uri, key);
    res->storage_dir = plan.dir;
    plan.dir = NULL;
    r = prov_cert_facts(cert, &res->facts);
    if (r < 0) {
        goto out;
    }
    res->key_uri = strdup(key->uri);
    res->cert = cert;
    res->key_type = plan.type;
    cert = NULL;
    if (p->prove_url != NULL) {
        res->is_proof_run = true;
        r = prov_step_prove(key, res->storage_dir, p->prove_url, p->req.serial, &res->proof);
    }
out:
    /* No orphan: a key that did not become a complete identity leaves the device. */
    if (key != NULL && !keep_key && !prov_step_discard_key(dev, key, p->req.serial)) {
        res->has_orphan_key = true;
    }
    prov_enroll_plan_clear(&plan, r < 0);
    X509_free(cert);
    X509_REQ_free(req);
    prov_key_free(key);
    prov_device_close(dev);
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

int prov_enroll_csr(const struct prov_config *cfg, struct prov_issuer *is,
                    const struct prov_enroll_params *p, X509_REQ **out)
{
    struct prov_enroll_plan plan;
    struct prov_device *dev = NULL;
    struct prov_key *key = NULL;
    X509_REQ *req = NULL;
    int r;

    *out = NULL;
    /* the request and the device; storage is the installing station's */
    r = prov_step_plan_parts(cfg, is, p, PROV_PLAN_REQUEST | PROV_PLAN_DEVICE | PROV_PLAN_SUBJECT,
                             &plan);
    if (r < 0) {
        return r;
    }
    /* a reissue on a device whose storage holds this serial's identity may replace its key */
    if (p->reissue) {
        plan.dir = prov_storage_dir_for(cfg, p->storage_dir, NULL, p->req.serial);
        if (plan.dir != NULL) {
            prov_step_read_old_identity(plan.dir, p->req.serial, &plan.old_uri, &plan.old_pub);
        }
    }
    r = key_and_csr(cfg, is, p, &plan, &dev, &key, &req);
    if (r == 0) {
        *out = req;
        req = NULL;
    }
    /* the key stays on the device for `install` only with its CSR */
    if (r < 0 && key != NULL) {
        dev->ops->delete_key(dev, key);
    }
    prov_enroll_plan_clear(&plan, false);
    X509_REQ_free(req);
    prov_key_free(key);
    prov_device_close(dev);
    return r;
}

int prov_install(const struct prov_config *cfg, struct prov_issuer *is,
                 const struct prov_install_params *p, struct prov_enroll_result *res)
{
    struct prov_enroll_params ep = {.device_uri = p->device_uri,
                                    .storage_dir = p->storage_dir,
                                    .req = {.serial = p->serial},
                                    .reissue = p->reissue};
    struct prov_enroll_plan plan = {0};
    struct prov_chain_report rep = {0};
    struct prov_device *dev = NULL;
    struct prov_key *key = NULL;
    STACK_OF(X509) *chain = NULL;
    X509 *cert;
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
    /* an identity already in the storage first, as every flow that writes storage does */
    {
        char *dir = NULL;

        r = prov_step_check_no_identity(cfg, p->storage_dir, p->serial, p->reissue, &dir);
        free(dir);
        if (r < 0) {
            goto out;
        }
    }
    if ((p->server_ca_path ? p->server_ca_path : cfg->server_ca) == NULL) {
        r = prov_fail(PROV_ERR_CONFIG, "serial %s: no server CA bundle (--server-ca or "
                      "[provisioner] server_ca)", p->serial);
        goto out;
    }
    /* the device is not the CA's, the storage takes this identity (a reissue replaces one) */
    r = prov_step_plan_parts(cfg, is, &ep, PROV_PLAN_DEVICE | PROV_PLAN_STORAGE, &plan);
    if (r < 0) {
        goto out;
    }
    r = prov_step_open_device(cfg, is, p->device_uri, p->pin_spec ? p->pin_spec : cfg->device_pin,
                              false, &dev);
    if (r < 0) {
        goto out;
    }
    /* the key `csr` generated, found by the certificate's public key */
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
    chain = sk_X509_dup(p->bundle);
    if (chain == NULL) {
        r = PROV_ERR_NOMEM;
        goto out;
    }
    (void)sk_X509_shift(chain); /* borrowed view: the chain without the leaf */
    {
        struct prov_identity ident =
            prov_identity_make(cfg, p->serial, cert, chain, p->server_ca_path, key->uri,
                               key->type, dev->ops->name, p->profile, NULL);

        r = prov_step_install(dev, key, cert, plan.dir, &ident);
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
    res->storage_dir = plan.dir;
    plan.dir = NULL;
out:
    prov_enroll_plan_clear(&plan, r < 0);
    sk_X509_free(chain);
    prov_chain_report_free(&rep);
    prov_key_free(key);
    prov_device_close(dev);
    return r;
}
