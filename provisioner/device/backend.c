/* SPDX-License-Identifier: Apache-2.0 */
#include "backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

#define MAX_BACKENDS 8

static const struct prov_backend_ops *backends[MAX_BACKENDS];
static size_t n_backends;

void prov_backend_register(const struct prov_backend_ops *ops)
{
    for (size_t i = 0; i < n_backends; i++) {
        if (backends[i] == ops) {
            return;
        }
    }
    if (n_backends < MAX_BACKENDS) {
        backends[n_backends++] = ops;
    }
}

const struct prov_backend_ops *prov_backend_for(const char *device_uri)
{
    if (device_uri == NULL) {
        return NULL;
    }
    /* Later registrations win, so a test can stack a wrapper over a real backend. */
    for (size_t i = n_backends; i > 0; i--) {
        if (backends[i - 1]->handles(device_uri)) {
            return backends[i - 1];
        }
    }
    return NULL;
}

const struct prov_backend_ops *prov_backend_named(const char *name)
{
    for (size_t i = n_backends; name != NULL && i > 0; i--) {
        if (strcmp(backends[i - 1]->name, name) == 0) {
            return backends[i - 1];
        }
    }
    return NULL;
}

const char *prov_backend_schemes(char *buf, size_t len)
{
    size_t n_schemes = 0;
    size_t o = 0;

    if (len == 0) {
        return buf;
    }
    buf[0] = '\0';
    for (size_t i = 0; i < n_backends; i++) {
        n_schemes += backends[i]->scheme != NULL;
    }
    for (size_t i = 0, k = 0; i < n_backends; i++) {
        const char *sep;
        int w;

        if (backends[i]->scheme == NULL) {
            continue;
        }
        sep = k == 0 ? "" : k + 1 == n_schemes ? " or " : ", ";
        k++;
        w = snprintf(buf + o, len - o, "%s%s", sep, backends[i]->scheme);
        if (w < 0 || (size_t)w >= len - o) {
            buf[o] = '\0'; /* only whole schemes */
            break;
        }
        o += (size_t)w;
    }
    return buf;
}

bool prov_backend_scheme_known(const char *device_uri)
{
    for (size_t i = 0; device_uri != NULL && i < n_backends; i++) {
        const char *scheme = backends[i]->scheme;

        if (scheme != NULL && strncmp(device_uri, scheme, strlen(scheme)) == 0) {
            return true;
        }
    }
    return false;
}

static int unknown_scheme(const char *uri)
{
    char schemes[128];

    return prov_fail(PROV_ERR_USAGE, "device \"%s\": unknown scheme (expected %s)",
                     uri ? uri : "", prov_backend_schemes(schemes, sizeof(schemes)));
}

void prov_device_name_clear(struct prov_device_name *name)
{
    if (name != NULL) {
        free(name->identity);
        free(name->module_path);
        free(name->tcti);
        memset(name, 0, sizeof(*name));
    }
}

int prov_device_uri_parse(const char *device_uri, struct prov_device_name *out)
{
    const struct prov_backend_ops *ops = prov_backend_for(device_uri);

    memset(out, 0, sizeof(*out));
    if (ops == NULL) {
        return unknown_scheme(device_uri);
    }
    if (ops->parse_uri == NULL) {
        return prov_fail(PROV_ERR_USAGE, "device \"%s\": the %s backend cannot parse it",
                         device_uri, ops->name);
    }
    return ops->parse_uri(device_uri, out);
}

int prov_device_uri_build(const char *backend, const struct prov_device_name *name, char **out)
{
    const struct prov_backend_ops *ops = prov_backend_named(backend);

    *out = NULL;
    if (ops == NULL || ops->build_uri == NULL) {
        return prov_fail(PROV_ERR_USAGE, "no %s backend builds device strings",
                         backend ? backend : "(none)");
    }
    return ops->build_uri(name, out);
}

bool prov_device_uri_same(const char *a, const char *b, const char *default_module)
{
    const struct prov_backend_ops *ops = prov_backend_for(a);

    if (strcmp(a, b) == 0) {
        return true;
    }
    return ops != NULL && ops == prov_backend_for(b) && ops->names_same_device != NULL &&
           ops->names_same_device(a, b, default_module);
}

int prov_device_uri_pin(const char *device_uri, const char *identity, char **out)
{
    const struct prov_backend_ops *ops = prov_backend_for(device_uri);
    struct prov_device_name name;
    int r;

    *out = NULL;
    r = prov_device_uri_parse(device_uri, &name);
    if (r == 0 && ops->build_uri == NULL) {
        r = prov_fail(PROV_ERR_USAGE, "no %s backend builds device strings", ops->name);
    }
    if (r == 0) {
        free(name.identity);
        name.identity = strdup(identity);
        r = name.identity != NULL ? ops->build_uri(&name, out) : PROV_ERR_NOMEM;
    }
    prov_device_name_clear(&name);
    return r;
}

bool prov_device_names_identity(const char *device_uri, const char *backend,
                                const char *identity)
{
    const struct prov_backend_ops *ops = prov_backend_for(device_uri);

    return ops != NULL && backend != NULL && identity != NULL && ops->names_identity != NULL &&
           strcmp(ops->name, backend) == 0 && ops->names_identity(device_uri, identity);
}

int prov_key_uri_label_id(const char *key_uri, char **label, unsigned char *id, size_t *id_len)
{
    const struct prov_backend_ops *ops = prov_backend_for(key_uri);

    *label = NULL;
    if (ops == NULL || ops->key_uri_label_id == NULL) {
        *id_len = 0;
        return prov_fail(PROV_ERR_CONFIG, "key URI \"%s\": no backend reads a key label or id "
                         "from it", key_uri ? key_uri : "");
    }
    return ops->key_uri_label_id(key_uri, label, id, id_len);
}

int prov_device_validate(const char *uri)
{
    const struct prov_backend_ops *ops = prov_backend_for(uri);

    if (ops == NULL) {
        return unknown_scheme(uri);
    }
    return ops->validate != NULL ? ops->validate(uri) : 0;
}

int prov_device_open(const char *uri, const struct prov_device_params *params,
                     struct prov_device **out)
{
    const struct prov_backend_ops *ops;

    *out = NULL;
    ops = prov_backend_for(uri);
    if (ops == NULL) {
        return unknown_scheme(uri);
    }
    return ops->open(uri, params, out);
}

void prov_device_close(struct prov_device *dev)
{
    if (dev != NULL) {
        dev->ops->close(dev);
    }
}

void prov_key_free(struct prov_key *key)
{
    if (key != NULL) {
        key->dev->ops->free_key(key->dev, key);
    }
}
