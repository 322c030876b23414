/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_FACTORY_STRSET_H
#define PROV_FACTORY_STRSET_H

#include <stdbool.h>
#include <stddef.h>

/*
 * A set of strings with a number attached to each (the manifest line that used a serial
 * first, the group index of a device URI). Open addressing over FNV-1a, keys copied into
 * 64 KiB arena chunks: one entry costs its key plus 16 bytes of table, no malloc per key.
 * FNV-1a is not flood-resistant; the keys come from the operator's own manifest.
 */
struct prov_strset_entry {
    const char *key;
    unsigned long value;
};

struct prov_strset {
    struct prov_strset_entry *slots;
    size_t cap; /* 0 or a power of two */
    size_t n;
    void *chunks;
    /*
     * Keys equal but for ASCII letter case are one key (set before the first add): serials
     * and storage directories that would be one directory on a case-insensitive file system
     * (FAT, exFAT, as on many devices). The first spelling is kept (prov_strset_key).
     */
    bool is_case_folded;
};

/*
 * Adds key with value unless it is present. *found (optional) gets the entry's value and
 * *is_new whether it was added. PROV_ERR_NOMEM.
 */
int prov_strset_add(struct prov_strset *s, const char *key, unsigned long value,
                    unsigned long *found, bool *is_new);

/* The value of key, or false when absent. */
bool prov_strset_get(const struct prov_strset *s, const char *key, unsigned long *value);

/* The key as it was first added (its spelling in a case-folded set), or NULL when absent. */
const char *prov_strset_key(const struct prov_strset *s, const char *key);

/* Frees everything; the set is empty and reusable afterwards. */
void prov_strset_free(struct prov_strset *s);

#endif
