/* SPDX-License-Identifier: Apache-2.0 */
/* A lot export's files in memory, and the PEM text of a certificate (lot_bundle.h). */
#include "lot_bundle.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/pem.h>

#include "error.h"

int lot_bundle_add(struct prov_lot_bundle *b, const char *name, const char *data, size_t len)
{
    struct prov_lot_file *files = realloc(b->files, (b->n_files + 1) * sizeof(*files));
    struct prov_lot_file *f;

    if (files == NULL) {
        return PROV_ERR_NOMEM;
    }
    b->files = files;
    f = &files[b->n_files];
    f->name = strdup(name);
    f->data = malloc(len + 1);
    if (f->name == NULL || f->data == NULL) {
        free(f->name);
        free(f->data);
        return PROV_ERR_NOMEM;
    }
    memcpy(f->data, data, len);
    f->data[len] = '\0';
    f->len = len;
    b->n_files++;
    return 0;
}


int lot_bundle_add_json(struct prov_lot_bundle *b, const char *name, json_object *o)
{
    const char *s = o ? json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
                                                              JSON_C_TO_STRING_NOSLASHESCAPE)
                      : NULL;
    char *text = NULL;
    int r = PROV_ERR_NOMEM;

    if (s != NULL && asprintf(&text, "%s\n", s) >= 0) {
        r = lot_bundle_add(b, name, text, strlen(text));
        free(text);
    }
    json_object_put(o);
    return r;
}


void prov_lot_bundle_clear(struct prov_lot_bundle *b)
{
    for (size_t i = 0; b != NULL && i < b->n_files; i++) {
        free(b->files[i].name);
        free(b->files[i].data);
    }
    if (b != NULL) {
        free(b->files);
        memset(b, 0, sizeof(*b));
    }
}


int lot_cert_pem(X509 *cert, char **out)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *p = NULL;
    long len;
    int r = PROV_ERR_NOMEM;

    *out = NULL;
    if (bio != NULL && PEM_write_bio_X509(bio, cert) == 1) {
        len = BIO_get_mem_data(bio, &p);
        *out = strndup(p, (size_t)len);
        r = *out != NULL ? 0 : PROV_ERR_NOMEM;
    }
    BIO_free(bio);
    return r;
}

