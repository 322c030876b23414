/* SPDX-License-Identifier: Apache-2.0 */
#include "backend.h"

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

static int unknown_scheme(const char *uri)
{
    return prov_fail(PROV_ERR_USAGE, "device \"%s\": unknown scheme (expected pkcs11: or tpm2:)",
                     uri ? uri : "");
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
