/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Listing every object of a token, for `batch status --tokens` and `check`: what an operator
 * needs to find objects that no journal row explains (an interrupted key generation can
 * leave objects with no CKA_ID and no key material on SoftHSM2). Reads only.
 */
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "pkcs11_internal.h"

#define FIND_BATCH 64

/* Every handle the session sees: collected first, so no other call runs inside the find. */
static int all_handles(struct prov_device *dev, CK_OBJECT_HANDLE **out, size_t *n)
{
    struct p11_dev *d = dev->priv;
    CK_OBJECT_HANDLE *all = NULL;
    size_t cap = 0;
    CK_ULONG got = 0;
    CK_RV rv;
    CK_RV rv_final;
    int r = 0;

    *out = NULL;
    *n = 0;
    rv = d->fl->C_FindObjectsInit(d->session, NULL, 0);
    if (rv != CKR_OK) {
        return prov_pkcs11_fail_rv(dev, "C_FindObjectsInit", rv);
    }
    do {
        if (*n + FIND_BATCH > cap) {
            size_t ncap = cap ? cap * 2 : 4 * FIND_BATCH;
            CK_OBJECT_HANDLE *a = realloc(all, ncap * sizeof(*a));

            if (a == NULL) {
                r = prov_fail(PROV_ERR_NOMEM, "%s: out of memory listing objects", dev->name);
                break;
            }
            all = a;
            cap = ncap;
        }
        rv = d->fl->C_FindObjects(d->session, all + *n, FIND_BATCH, &got);
        if (rv == CKR_OK) {
            *n += got;
        }
    } while (rv == CKR_OK && got > 0);
    rv_final = d->fl->C_FindObjectsFinal(d->session);
    if (r == 0 && rv != CKR_OK) {
        r = prov_pkcs11_fail_rv(dev, "C_FindObjects", rv);
    }
    if (r == 0 && rv_final != CKR_OK) {
        r = prov_pkcs11_fail_rv(dev, "C_FindObjectsFinal", rv_final);
    }
    if (r < 0) {
        free(all);
        *n = 0;
        return r;
    }
    *out = all;
    return 0;
}

static const char *kind_of(CK_OBJECT_CLASS cls)
{
    switch (cls) {
    case CKO_PRIVATE_KEY: return "private-key";
    case CKO_PUBLIC_KEY: return "public-key";
    case CKO_CERTIFICATE: return "certificate";
    case CKO_DATA: return "data";
    case CKO_SECRET_KEY: return "secret-key";
    default: return "other";
    }
}

int prov_pkcs11_list_objects(struct prov_device *dev,
                             int (*fn)(void *ctx, const struct prov_device_object *obj), void *ctx)
{
    CK_OBJECT_HANDLE *handles = NULL;
    size_t n = 0;
    int r;

    r = all_handles(dev, &handles, &n);
    for (size_t i = 0; i < n && r == 0; i++) {
        struct prov_device_object o = {.handle = (unsigned long)handles[i], .kind = "unknown"};
        unsigned char *cls = NULL;
        unsigned char *id = NULL;
        unsigned char *label = NULL;
        size_t len = 0;
        size_t id_len = 0;

        /*
         * An attribute that cannot be read (absent, or the object half made) is reported as
         * missing: the listing is for finding exactly such objects.
         */
        if (prov_pkcs11_get_attr(dev, handles[i], CKA_CLASS, &cls, &len) == 0 &&
            len == sizeof(CK_OBJECT_CLASS)) {
            CK_OBJECT_CLASS c;

            memcpy(&c, cls, sizeof(c));
            o.kind = kind_of(c);
        }
        if (prov_pkcs11_get_attr(dev, handles[i], CKA_ID, &id, &id_len) == 0 && id_len > 0) {
            o.id = id;
            o.id_len = id_len;
        }
        if (prov_pkcs11_get_attr(dev, handles[i], CKA_LABEL, &label, &len) == 0 && len > 0) {
            o.label = (const char *)label; /* NUL-terminated by prov_pkcs11_get_attr */
        }
        prov_error_clear();
        r = fn(ctx, &o);
        free(cls);
        free(id);
        free(label);
    }
    free(handles);
    return r;
}
