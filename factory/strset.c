/* SPDX-License-Identifier: Apache-2.0 */
#include "strset.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

#define CHUNK_BYTES 65536

struct chunk {
    struct chunk *next;
    size_t used;
    size_t cap;
    char data[];
};

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

static char *keep(struct prov_strset *s, const char *key)
{
    size_t len = strlen(key) + 1;
    struct chunk *c = s->chunks;
    char *out;

    if (c == NULL || c->cap - c->used < len) {
        size_t cap = len > CHUNK_BYTES ? len : CHUNK_BYTES;

        c = malloc(sizeof(*c) + cap);
        if (c == NULL) {
            return NULL;
        }
        c->next = s->chunks;
        c->used = 0;
        c->cap = cap;
        s->chunks = c;
    }
    out = c->data + c->used;
    memcpy(out, key, len);
    c->used += len;
    return out;
}

static int grow(struct prov_strset *s)
{
    size_t cap = s->cap ? s->cap * 2 : 1024;
    struct prov_strset_entry *slots = calloc(cap, sizeof(*slots));

    if (slots == NULL) {
        return PROV_ERR_NOMEM;
    }
    for (size_t i = 0; i < s->cap; i++) {
        if (s->slots[i].key != NULL) {
            size_t j = hash_str(s->slots[i].key, s->is_case_folded) & (cap - 1);

            while (slots[j].key != NULL) {
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

    while (s->slots[i].key != NULL && !same_key(s->slots[i].key, key, s->is_case_folded)) {
        i = (i + 1) & (s->cap - 1);
    }
    return i;
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
    if (s->slots[i].key == NULL) {
        s->slots[i].key = keep(s, key);
        if (s->slots[i].key == NULL) {
            return PROV_ERR_NOMEM;
        }
        s->slots[i].value = value;
        s->n++;
        if (is_new != NULL) {
            *is_new = true;
        }
    }
    if (found != NULL) {
        *found = s->slots[i].value;
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
    if (s->slots[i].key == NULL) {
        return false;
    }
    if (value != NULL) {
        *value = s->slots[i].value;
    }
    return true;
}

const char *prov_strset_key(const struct prov_strset *s, const char *key)
{
    if (s->cap == 0) {
        return NULL;
    }
    return s->slots[find_slot(s, key)].key;
}

void prov_strset_free(struct prov_strset *s)
{
    bool is_case_folded = s->is_case_folded;
    struct chunk *c = s->chunks;

    while (c != NULL) {
        struct chunk *next = c->next;

        free(c);
        c = next;
    }
    free(s->slots);
    memset(s, 0, sizeof(*s));
    s->is_case_folded = is_case_folded;
}
