/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_FACTORY_STRSET_H
#define PROV_FACTORY_STRSET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * A set of strings with a number attached to each (the manifest line that used a serial
 * first, the group index of a device URI). Exact: keys are compared whole, never by hash
 * alone. Compact, because the manifest's uniqueness sets hold an entry per row: the keys
 * back to back in one buffer, an 8-byte entry (the key's offset, the value) and a 4-byte slot
 * of an open-addressing table over FNV-1a kept 35-70 % full: a key's length plus 15 to 20
 * bytes, no malloc per key. FNV-1a is not flood-resistant; the keys come from the operator's
 * own manifest.
 */
struct prov_strset_entry {
    uint32_t key; /* offset in keys */
    uint32_t value;
};

struct prov_strset {
    uint32_t *slots; /* 0: empty, else an entry's index + 1 */
    size_t cap;      /* 0 or a power of two */
    struct prov_strset_entry *entries;
    size_t n;
    size_t cap_entries;
    char *keys; /* NUL-terminated, back to back */
    size_t keys_len;
    size_t keys_cap;
    /*
     * Keys equal but for ASCII letter case are one key (set before the first add): serials
     * and storage directories that would be one directory on a case-insensitive file system
     * (FAT, exFAT, as on many devices). The first spelling is kept (prov_strset_key).
     */
    bool is_case_folded;
};

/*
 * Adds key with value (< 2^32) unless it is present. *found (optional) gets the entry's value
 * and *is_new whether it was added. PROV_ERR_NOMEM (also past 4 GiB of keys).
 */
int prov_strset_add(struct prov_strset *s, const char *key, unsigned long value,
                    unsigned long *found, bool *is_new);

/* The value of key, or false when absent. */
bool prov_strset_get(const struct prov_strset *s, const char *key, unsigned long *value);

/*
 * The key as it was first added (its spelling in a case-folded set), or NULL when absent;
 * valid until the next add.
 */
const char *prov_strset_key(const struct prov_strset *s, const char *key);

/* Frees everything; the set is empty and reusable afterwards. */
void prov_strset_free(struct prov_strset *s);

#endif
