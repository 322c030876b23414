/* SPDX-License-Identifier: Apache-2.0 */
#include "check.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/x509v3.h>

#include "backend.h"
#include "chain.h"
#include "crl.h"
#include "enroll.h"
#include "error.h"
#include "log.h"

static void note(struct prov_check_result *res, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void note(struct prov_check_result *res, const char *fmt, ...)
{
    va_list ap;

    if (res->detail[0] != '\0') {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(res->detail, sizeof(res->detail), fmt, ap);
    va_end(ap);
}

/* fullchain.pem must be client.crt followed by chain.pem without its root. */
static bool fullchain_matches(const struct prov_stored_identity *s)
{
    int n_full = sk_X509_num(s->fullchain);
    int n_chain = sk_X509_num(s->chain);

    if (n_full < 1 || X509_cmp(sk_X509_value(s->fullchain, 0), s->cert) != 0 ||
        n_full != n_chain) {
        return false;
    }
    for (int i = 1; i < n_full; i++) {
        if (X509_cmp(sk_X509_value(s->fullchain, i), sk_X509_value(s->chain, i - 1)) != 0) {
            return false;
        }
    }
    return true;
}

static void check_chain(const struct prov_stored_identity *s, const char *dir,
                        struct prov_check_result *res)
{
    struct prov_chain_report rep = {0};
    STACK_OF(X509) *full = sk_X509_new_null();

    if (full == NULL || !sk_X509_push(full, s->cert)) {
        note(res, "%s: out of memory", dir);
        goto out;
    }
    for (int i = 0; i < sk_X509_num(s->chain); i++) {
        sk_X509_push(full, sk_X509_value(s->chain, i));
    }
    if (prov_chain_verify(full, NULL, PROV_PURPOSE_CLIENT, time(NULL), &rep) == 0) {
        res->is_chain_ok = true;
    } else if (rep.n > 0) {
        note(res, "%s: chain: certificate %d (%s): %s: %s", dir, rep.items[0].index,
             rep.items[0].subject ? rep.items[0].subject : "", rep.items[0].rule,
             rep.items[0].detail);
    } else {
        note(res, "%s: chain: %s", dir, prov_error_message() ? prov_error_message() : "failed");
    }
out:
    prov_chain_report_free(&rep);
    sk_X509_free(full);
}

static void check_server_ca(const struct prov_stored_identity *s, const char *dir,
                            struct prov_check_result *res)
{
    int n = sk_X509_num(s->server_ca);

    if (n < 1) {
        note(res, "%s/server-ca.pem: no certificate", dir);
        return;
    }
    for (int i = 0; i < n; i++) {
        if (X509_check_ca(sk_X509_value(s->server_ca, i)) == 0) {
            note(res, "%s/server-ca.pem: certificate %d is not a CA certificate", dir, i);
            return;
        }
    }
    res->is_server_ca_ok = true;
}

struct no_id {
    size_t n;
    char handles[96]; /* the first few, for the message */
};

static int count_no_id(void *ctx, const struct prov_device_object *o)
{
    struct no_id *c = ctx;
    size_t used = strlen(c->handles);

    if (o->id != NULL) {
        return 0;
    }
    if (++c->n <= 4 && used + 24 < sizeof(c->handles)) {
        snprintf(c->handles + used, sizeof(c->handles) - used, "%s0x%lx %s", used ? ", " : "",
                 o->handle, o->kind);
    }
    return 0;
}

/*
 * Objects without a CKA_ID on the key's token: every key this tool makes has a unique one,
 * so they are left over from something else; a key generation killed half way leaves such
 * objects, with no key material, on SoftHSM2. A warning only: the identity is what check
 * proves, and `batch status --tokens` lists every object no journal row explains.
 */
static void warn_objects_without_id(struct prov_device *dev)
{
    struct no_id c = {0};

    if (dev->ops->list_objects == NULL || dev->ops->list_objects(dev, count_no_id, &c) < 0) {
        prov_error_clear();
        return;
    }
    if (c.n > 0) {
        prov_warn("%s holds %zu object%s without a CKA_ID (handle %s%s): not a key of this tool; "
                  "left by an interrupted key generation? `batch status --tokens` lists them",
                  dev->name, c.n, c.n == 1 ? "" : "s", c.handles, c.n > 4 ? ", ..." : "");
    }
}

int prov_check_identity(const struct prov_config *cfg, const char *dir, const char *pin_spec,
                        struct prov_check_result *res)
{
    return prov_check_identity_connect(cfg, dir, pin_spec, NULL, res);
}

int prov_check_identity_connect(const struct prov_config *cfg, const char *dir,
                                const char *pin_spec, const char *url,
                                struct prov_check_result *res)
{
    struct prov_stored_identity *s = NULL;
    struct prov_device *dev = NULL;
    struct prov_key *key = NULL;
    int n_bad = 0;
    int r;

    memset(res, 0, sizeof(*res));
    /*
     * File by file, and every check on what it needs: a missing server-ca.pem fails the
     * storage and server-ca checks, while the key still proves itself and the chain is
     * still verified.
     */
    r = prov_storage_read_each(dir, &s, &n_bad);
    if (r < 0) {
        goto out;
    }
    if (n_bad > 0) {
        note(res, "%s", prov_error_message() ? prov_error_message() : "storage incomplete");
    }
    prov_error_clear();
    if (s->cert != NULL && prov_cert_facts(s->cert, &res->facts) < 0) {
        note(res, "%s/client.crt: %s", dir, prov_error_message());
        prov_error_clear();
    }
    res->serial = s->serial ? strdup(s->serial) : NULL;
    res->key_uri = s->key_uri ? strdup(s->key_uri) : NULL;
    res->is_storage_ok = n_bad == 0 && fullchain_matches(s);
    if (n_bad == 0 && !res->is_storage_ok) {
        note(res, "%s/fullchain.pem: is not client.crt followed by the intermediate(s)", dir);
    }
    if (s->cert != NULL && s->chain != NULL) {
        check_chain(s, dir, res);
    }
    if (s->server_ca != NULL) {
        check_server_ca(s, dir, res);
    }
    r = PROV_ERR_VERIFY;
    if (s->cert == NULL || s->key_uri == NULL) {
        goto out; /* no key to ask, or nothing to verify its signature with */
    }
    r = prov_device_open_login(cfg, s->key_uri, pin_spec ? pin_spec : cfg->device_pin,
                               "device PIN", true, &dev);
    if (r < 0) {
        goto out;
    }
    r = dev->ops->find_key(dev, s->key_uri, &key);
    if (r < 0) {
        goto out;
    }
    if (prov_prove_key(key, s->cert) == 0) {
        res->is_key_proven = true;
    } else {
        note(res, "%s", prov_error_message());
    }
    warn_objects_without_id(dev);
    r = res->is_storage_ok && res->is_key_proven && res->is_chain_ok && res->is_server_ca_ok
            ? 0
            : PROV_ERR_VERIFY;
    /*
     * The connection runs even when a local rule failed (an expired certificate, a chain the
     * edge may still accept): what the server says is the point of --connect, so its refusal
     * is the reported failure. It needs the key to have proven itself and the files to parse.
     */
    if (url != NULL && res->is_key_proven) {
        int rc;

        prov_error_clear();
        res->is_connect_run = true;
        rc = prov_connect_prove(key, dir, url, &res->connect);
        if (rc < 0) {
            snprintf(res->detail, sizeof(res->detail), "%.200s: %.800s", dir,
                     prov_error_message() ? prov_error_message() : res->connect.detail);
            r = rc;
        }
    }
out:
    if (r == PROV_ERR_VERIFY) {
        prov_error_clear(); /* the first failure is res->detail */
    }
    prov_key_free(key);
    prov_device_close(dev);
    prov_stored_identity_free(s);
    return r;
}

int prov_check_revocation(const char *dir, STACK_OF(X509_CRL) *crls, const char *crl_path,
                          struct prov_check_result *res)
{
    struct prov_stored_identity *s = NULL;
    struct prov_chain_report rep = {0};
    STACK_OF(X509) *full = NULL;
    int n_bad = 0;
    int r;

    res->revoked_reason = -1;
    r = prov_storage_read_each(dir, &s, &n_bad);
    prov_error_clear();
    if (r < 0 || s->cert == NULL || s->chain == NULL) {
        prov_stored_identity_free(s);
        return 0;
    }
    full = sk_X509_new_null();
    r = full != NULL && sk_X509_push(full, s->cert) ? 0 : PROV_ERR_NOMEM;
    for (int i = 0; r == 0 && i < sk_X509_num(s->chain); i++) {
        r = sk_X509_push(full, sk_X509_value(s->chain, i)) ? 0 : PROV_ERR_NOMEM;
    }
    if (r == 0) {
        r = prov_crl_check_chain(crls, crl_path, full, time(NULL), &rep, &res->revoked_reason);
    }
    if (r == 0) {
        res->is_crl_run = true;
        res->is_crl_ok = rep.n == 0;
        if (rep.n > 0) {
            note(res, "%s: %s: certificate %d (%s): %s", dir, rep.items[0].rule,
                 rep.items[0].index, rep.items[0].subject ? rep.items[0].subject : "",
                 rep.items[0].detail);
            r = PROV_ERR_VERIFY;
        }
    }
    prov_chain_report_free(&rep);
    sk_X509_free(full);
    prov_stored_identity_free(s);
    return r;
}

void prov_check_result_clear(struct prov_check_result *res)
{
    if (res != NULL) {
        free(res->serial);
        free(res->key_uri);
        memset(res, 0, sizeof(*res));
    }
}
