/* SPDX-License-Identifier: Apache-2.0 */
#include "strset.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

static unsigned char fold(unsigned char c, bool is_case_folded)
{
    return is_case_folded && c >= 'A' && c <= 'Z' ? (unsigned char)(c - 'A' + 'a') : c;
}

static uint64_t hash_str(const char *s, bool is_case_folded)
{
    uint64_t h = 0xcbf29ce484222325ULL;

    for (; *s; s++) {
        h ^= fold((unsigned char)*s, is_case_folded);
        h *= 0x100000001b3ULL;
    }
    return h;
}

/* strcmp, or equality but for ASCII letter case (not strcasecmp: it follows the locale). */
static bool same_key(const char *a, const char *b, bool is_case_folded)
{
    if (!is_case_folded) {
        return strcmp(a, b) == 0;
    }
    for (; *a && *b; a++, b++) {
        if (fold((unsigned char)*a, true) != fold((unsigned char)*b, true)) {
            return false;
        }
    }
    return *a == *b;
}

/*
 * buf (of *cap elements of size) grown by doubling to hold need elements, from first: the
 * buffer to use (*cap updated), or NULL when out of memory (buf is still valid then).
 */
static void *reserve(void *buf, size_t *cap, size_t need, size_t size, size_t first)
{
    size_t n = *cap ? *cap : first;
    void *more;

    if (need <= *cap) {
        return buf;
    }
    while (n < need) {
        n *= 2;
    }
    more = realloc(buf, n * size);
    if (more != NULL) {
        *cap = n;
    }
    return more;
}

static const char *key_at(const struct prov_strset *s, uint32_t slot)
{
    return s->keys + s->entries[slot - 1].key;
}

static int grow(struct prov_strset *s)
{
    size_t cap = s->cap ? s->cap * 2 : 1024;
    uint32_t *slots = calloc(cap, sizeof(*slots));

    if (slots == NULL) {
        return PROV_ERR_NOMEM;
    }
    for (size_t i = 0; i < s->cap; i++) {
        if (s->slots[i] != 0) {
            size_t j = hash_str(key_at(s, s->slots[i]), s->is_case_folded) & (cap - 1);

            while (slots[j] != 0) {
                j = (j + 1) & (cap - 1);
            }
            slots[j] = s->slots[i];
        }
    }
    free(s->slots);
    s->slots = slots;
    s->cap = cap;
    return 0;
}

static size_t find_slot(const struct prov_strset *s, const char *key)
{
    size_t i = hash_str(key, s->is_case_folded) & (s->cap - 1);

    while (s->slots[i] != 0 && !same_key(key_at(s, s->slots[i]), key, s->is_case_folded)) {
        i = (i + 1) & (s->cap - 1);
    }
    return i;
}

/* A new entry for key at slot i. */
static int insert(struct prov_strset *s, size_t i, const char *key, unsigned long value)
{
    size_t len = strlen(key) + 1;
    struct prov_strset_entry *e;
    char *keys;

    if (value > UINT32_MAX || s->n >= UINT32_MAX - 1 || s->keys_len + len > UINT32_MAX) {
        return PROV_ERR_NOMEM;
    }
    keys = reserve(s->keys, &s->keys_cap, s->keys_len + len, 1, 65536);
    if (keys == NULL) {
        return PROV_ERR_NOMEM;
    }
    s->keys = keys;
    e = reserve(s->entries, &s->cap_entries, s->n + 1, sizeof(*s->entries), 1024);
    if (e == NULL) {
        return PROV_ERR_NOMEM;
    }
    s->entries = e;
    e = &s->entries[s->n];
    e->key = (uint32_t)s->keys_len;
    e->value = (uint32_t)value;
    memcpy(s->keys + s->keys_len, key, len);
    s->keys_len += len;
    s->n++;
    s->slots[i] = (uint32_t)s->n;
    return 0;
}

int prov_strset_add(struct prov_strset *s, const char *key, unsigned long value,
                    unsigned long *found, bool *is_new)
{
    size_t i;

    if (is_new != NULL) {
        *is_new = false;
    }
    /* Keep the load under 70% so that probe sequences stay short. */
    if ((s->n + 1) * 10 > s->cap * 7 && grow(s) < 0) {
        return PROV_ERR_NOMEM;
    }
    i = find_slot(s, key);
    if (s->slots[i] == 0) {
        if (insert(s, i, key, value) < 0) {
            return PROV_ERR_NOMEM;
        }
        if (is_new != NULL) {
            *is_new = true;
        }
    }
    if (found != NULL) {
        *found = s->entries[s->slots[i] - 1].value;
    }
    return 0;
}

bool prov_strset_get(const struct prov_strset *s, const char *key, unsigned long *value)
{
    size_t i;

    if (s->cap == 0) {
        return false;
    }
    i = find_slot(s, key);
    if (s->slots[i] == 0) {
        return false;
    }
    if (value != NULL) {
        *value = s->entries[s->slots[i] - 1].value;
    }
    return true;
}

const char *prov_strset_key(const struct prov_strset *s, const char *key)
{
    size_t i;

    if (s->cap == 0) {
        return NULL;
    }
    i = find_slot(s, key);
    return s->slots[i] != 0 ? key_at(s, s->slots[i]) : NULL;
}

void prov_strset_free(struct prov_strset *s)
{
    bool is_case_folded = s->is_case_folded;

    free(s->slots);
    free(s->entries);
    free(s->keys);
    memset(s, 0, sizeof(*s));
    s->is_case_folded = is_case_folded;
}
