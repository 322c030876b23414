/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the station (factory/station.c) adds to the journal: the binding of a device, by its
 * identity (token serial, TPM EK digest), to the manifest row it enrolls ("claim"), and the
 * per-row lock that lets several station processes share one journal. A claim is made once,
 * in one transaction with its audit record, and outlives failures: a device that was pulled
 * mid-enrollment comes back to the same row, so its interrupted attempt is cleaned up and
 * resumed instead of a second row being started.
 */
#include "journal.h"
#include "journal_internal.h"
#include "journal_store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

/* The first row in manifest order that nobody has: *index, or n when there is none. */
static int first_free_row(struct journal_store *s, long long lot_id, const char *const *serials,
                          size_t n, size_t *index)
{
    bool is_taken = true;
    int r = 0;

    *index = n;
    for (size_t i = 0; r == 0 && i < n; i++) {
        r = s->ops->claim_is_taken(s, lot_id, serials[i], &is_taken);
        if (r == 0 && !is_taken) {
            *index = i;
            break;
        }
    }
    return r;
}

static size_t find_serial(const char *const *serials, size_t n, const char *serial)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(serials[i], serial) == 0) {
            return i;
        }
    }
    return n;
}

/* A new claim of serial for identity, with its audit record. */
static int insert_claim(struct journal_store *s, long long lot_id, const char *serial,
                        const char *identity, const char *instance, bool *is_claimed)
{
    char lot[256];
    char now[32];
    char *detail = NULL;
    int r;

    r = s->ops->lot_name(s, lot_id, lot, sizeof(lot));
    if (r < 0) {
        return r;
    }
    journal_now(now, sizeof(now));
    r = s->ops->claim_insert(s, lot_id, serial, identity, instance, now, is_claimed);
    if (r < 0) {
        return r;
    }
    if (asprintf(&detail, "identity=%s instance=%s", identity, instance) < 0) {
        return PROV_ERR_NOMEM;
    }
    r = journal_audit_append(s, lot, serial, "claim", detail);
    free(detail);
    return r;
}

int prov_journal_station_claim(struct prov_journal *j, long long lot_id, const char *identity,
                               const char *instance, const char *const *serials, size_t n,
                               bool is_next_free, size_t *index)
{
    struct journal_store *s = j->store;
    char bound[128];
    bool is_claimed = false;
    int r;

    *index = n;
    pthread_mutex_lock(&j->lock);
    r = s->ops->begin(s);
    if (r == 0) {
        r = s->ops->claim_of(s, lot_id, identity, bound, sizeof(bound));
    }
    if (r == 0 && bound[0] != '\0') {
        /* A device that was here before goes back to its row. */
        *index = find_serial(serials, n, bound);
        if (*index == n) {
            r = prov_fail(PROV_ERR_ALREADY_ISSUED,
                          "device %s: the journal binds it to serial %s, not to %s", identity,
                          bound, is_next_free ? "a row of the manifest" : serials[0]);
        }
    } else if (r == 0 && is_next_free) {
        r = first_free_row(s, lot_id, serials, n, index);
        if (r == 0 && *index == n) {
            r = prov_fail(PROV_ERR_POLICY, "device %s: no free row left in the lot (%zu rows)",
                          identity, n);
        }
        if (r == 0) {
            r = insert_claim(s, lot_id, serials[*index], identity, instance, &is_claimed);
        }
    } else if (r == 0) {
        /* row-by-identity: the one row naming this device (n == 1). */
        *index = 0;
        r = insert_claim(s, lot_id, serials[0], identity, instance, &is_claimed);
        if (r < 0 && is_claimed) {
            prov_error_clear();
            r = prov_fail(PROV_ERR_ALREADY_ISSUED,
                          "serial %s: already claimed by another device in this lot", serials[0]);
        }
    }
    r = s->ops->end(s, r);
    pthread_mutex_unlock(&j->lock);
    return r;
}

/* key_uri with its leading old device URI (then ';') replaced by device_uri; else a copy. */
static char *moved_key_uri(const char *key_uri, const char *old, const char *device_uri)
{
    size_t n = strlen(old);
    char *out = NULL;

    if (strncmp(key_uri, old, n) == 0 && key_uri[n] == ';') {
        return asprintf(&out, "%s%s", device_uri, key_uri + n) < 0 ? NULL : out;
    }
    return strdup(key_uri);
}

int prov_journal_station_follow(struct prov_journal *j, long long lot_id, const char *serial,
                                const char *identity, const char *device_uri)
{
    struct journal_store *s = j->store;
    struct prov_journal_device d;
    long long dev_id = 0;
    long long cert_id = 0;
    char bound[128];
    char lot[256];
    char now[32];
    char *key_uri = NULL;
    char *detail = NULL;
    int r;

    memset(&d, 0, sizeof(d));
    pthread_mutex_lock(&j->lock);
    r = s->ops->begin(s);
    r = r ? r : s->ops->claim_of(s, lot_id, identity, bound, sizeof(bound));
    if (r == 0 && strcmp(bound, serial) != 0) {
        r = prov_fail(PROV_ERR_ALREADY_ISSUED, "device %s: serial %s is not claimed by it",
                      identity, serial);
    }
    r = r ? r : s->ops->row_get(s, lot_id, serial, &d, &dev_id, &cert_id);
    if (r == 0 && dev_id != 0 && strcmp(d.device_uri, device_uri) != 0) {
        /* the key URI is NULL before issued */
        key_uri = d.key_uri != NULL ? moved_key_uri(d.key_uri, d.device_uri, device_uri) : NULL;
        if ((d.key_uri != NULL && key_uri == NULL) ||
            asprintf(&detail, "from=%s to=%s", d.device_uri, device_uri) < 0) {
            detail = NULL;
            r = PROV_ERR_NOMEM;
        }
    }
    if (r == 0 && detail != NULL) {
        struct journal_row w = {
            .id = dev_id,
            .lot_id = lot_id,
            .serial = serial,
            .device_uri = device_uri,
            .state = d.state,
            .key_id = d.key_id_len ? d.key_id : NULL,
            .key_id_len = d.key_id_len,
            .key_uri = key_uri,
            .storage = d.storage,
            .error = d.error,
            .attempts = d.attempts,
            .cert_id = cert_id,
            .updated = now,
        };

        journal_now(now, sizeof(now));
        r = s->ops->lot_name(s, lot_id, lot, sizeof(lot));
        /* the row's certificates generated on this device move with it */
        r = r ? r : s->ops->cert_move(s, dev_id, d.device_uri, device_uri);
        r = r ? r : s->ops->row_put(s, &w);
        r = r ? r : journal_audit_append(s, lot, serial, "device-moved", detail);
    }
    r = s->ops->end(s, r);
    pthread_mutex_unlock(&j->lock);
    prov_journal_device_clear(&d);
    free(key_uri);
    free(detail);
    return r;
}

int prov_journal_row_lock(struct prov_journal *j, long long lot_id, const char *serial,
                          struct prov_journal_row_lock **out)
{
    return j->store->ops->row_lock(j->store, lot_id, serial, out);
}

void prov_journal_row_unlock(struct prov_journal_row_lock *l)
{
    if (l != NULL) {
        l->release(l);
    }
}
