/* SPDX-License-Identifier: Apache-2.0 */
/* What the journal and every store share: state names, hex, time stamps, freeing a row. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "journal.h"
#include "journal_store.h"

static const char *const state_names[PROV_JOURNAL_STATE_COUNT] = {
    "none", "intent", "issued", "stored", "proven", "failed", "superseded",
};

void prov_journal_device_clear(struct prov_journal_device *d)
{
    if (d == NULL) {
        return;
    }
    free(d->lot);
    free(d->serial);
    free(d->device_uri);
    free(d->key_uri);
    free(d->storage);
    free(d->error);
    free(d->cert_der);
    memset(d, 0, sizeof(*d));
}

void prov_journal_old_keys_free(struct prov_journal_old_key *keys, size_t n)
{
    for (size_t i = 0; keys != NULL && i < n; i++) {
        free(keys[i].lot);
        free(keys[i].serial);
        free(keys[i].device_uri);
    }
    free(keys);
}

const char *prov_journal_state_name(enum prov_journal_state s)
{
    return (unsigned)s < PROV_JOURNAL_STATE_COUNT ? state_names[s] : "?";
}

enum prov_journal_state journal_state_parse(const char *s)
{
    for (int i = 1; i < PROV_JOURNAL_STATE_COUNT; i++) {
        if (s != NULL && strcmp(s, state_names[i]) == 0) {
            return (enum prov_journal_state)i;
        }
    }
    return PROV_JOURNAL_NONE;
}
