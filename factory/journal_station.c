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

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "error.h"

/* The serial the identity is bound to in this lot, into out ("" when none). */
static int claimed_serial(struct prov_journal *j, long long lot_id, const char *identity,
                          char *out, size_t cap)
{
    sqlite3_stmt *st = NULL;
    int r;

    out[0] = '\0';
    r = journal_query(j, &st, "SELECT serial FROM station_claim WHERE lot_id = ? AND identity = ?",
                      "it", lot_id, identity);
    if (r == 0 && sqlite3_step(st) == SQLITE_ROW) {
        journal_col_copy(st, 0, out, cap);
    }
    journal_release(j, st);
    return r;
}

/* Whether a row is taken: claimed by a device, or already in the journal (a batch run). */
static int row_is_taken(sqlite3_stmt *claimed, sqlite3_stmt *known, const char *serial,
                        bool *out)
{
    int rc;

    sqlite3_reset(claimed);
    sqlite3_reset(known);
    if (sqlite3_bind_text(claimed, 2, serial, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_text(known, 2, serial, -1, SQLITE_STATIC) != SQLITE_OK) {
        return PROV_ERR_JOURNAL;
    }
    rc = sqlite3_step(claimed);
    *out = rc == SQLITE_ROW;
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        return PROV_ERR_JOURNAL;
    }
    if (!*out) {
        rc = sqlite3_step(known);
        *out = rc == SQLITE_ROW;
        if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
            return PROV_ERR_JOURNAL;
        }
    }
    return 0;
}

/* The first row in manifest order that nobody has: *index, or n when there is none. */
static int first_free_row(struct prov_journal *j, long long lot_id, const char *const *serials,
                          size_t n, size_t *index)
{
    sqlite3_stmt *claimed = NULL;
    sqlite3_stmt *known = NULL;
    bool is_taken = true;
    int r;

    *index = n;
    r = journal_query(j, &claimed,
                      "SELECT 1 FROM station_claim WHERE lot_id = ? AND serial = ?", "it",
                      lot_id, "");
    if (r == 0) {
        r = journal_query(j, &known, "SELECT 1 FROM device WHERE lot_id = ? AND serial = ?",
                          "it", lot_id, "");
    }
    for (size_t i = 0; r == 0 && i < n; i++) {
        r = row_is_taken(claimed, known, serials[i], &is_taken);
        if (r < 0) {
            r = journal_db_fail(j, serials[i]);
        } else if (!is_taken) {
            *index = i;
            break;
        }
    }
    journal_release(j, claimed);
    journal_release(j, known);
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

/* A new claim of serials[i] for identity, with its audit record. */
static int insert_claim(struct prov_journal *j, long long lot_id, const char *serial,
                        const char *identity, const char *instance)
{
    char lot[256];
    char now[32];
    char *detail = NULL;
    int r;

    r = journal_lot_name(j, lot_id, lot, sizeof(lot));
    if (r < 0) {
        return r;
    }
    journal_now(now, sizeof(now));
    if (journal_exec(j,
                     "INSERT INTO station_claim(lot_id, serial, identity, instance, claimed)"
                     " VALUES (?, ?, ?, ?, ?)",
                     "itttt", lot_id, serial, identity, instance, now) != SQLITE_DONE) {
        return journal_db_fail(j, serial);
    }
    if (asprintf(&detail, "identity=%s instance=%s", identity, instance) < 0) {
        return PROV_ERR_NOMEM;
    }
    r = journal_audit_append(j, lot, serial, "claim", detail);
    free(detail);
    return r;
}

int prov_journal_station_claim(struct prov_journal *j, long long lot_id, const char *identity,
                               const char *instance, const char *const *serials, size_t n,
                               bool is_next_free, size_t *index)
{
    char bound[128];
    int r;

    *index = n;
    pthread_mutex_lock(&j->lock);
    r = journal_begin(j);
    if (r == 0) {
        r = claimed_serial(j, lot_id, identity, bound, sizeof(bound));
    }
    if (r == 0 && bound[0] != '\0') {
        /* A device that was here before goes back to its row. */
        *index = find_serial(serials, n, bound);
        if (*index == n) {
            r = prov_fail(PROV_ERR_ALREADY_ISSUED,
                          "device %s: the journal binds it to serial %s, not to %s",
                          identity, bound,
                          is_next_free ? "a row of the manifest" : serials[0]);
        }
    } else if (r == 0 && is_next_free) {
        r = first_free_row(j, lot_id, serials, n, index);
        if (r == 0 && *index == n) {
            r = prov_fail(PROV_ERR_POLICY, "device %s: no free row left in the lot (%zu rows)",
                          identity, n);
        }
        if (r == 0) {
            r = insert_claim(j, lot_id, serials[*index], identity, instance);
        }
    } else if (r == 0) {
        /* row-by-identity: the one row naming this device (n == 1). */
        *index = 0;
        r = insert_claim(j, lot_id, serials[0], identity, instance);
        if (r < 0 && sqlite3_extended_errcode(j->db) == SQLITE_CONSTRAINT_PRIMARYKEY) {
            prov_error_clear();
            r = prov_fail(PROV_ERR_ALREADY_ISSUED,
                          "serial %s: already claimed by another device in this lot", serials[0]);
        }
    }
    r = journal_end(j, r);
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
    sqlite3_stmt *st = NULL;
    char bound[128];
    char lot[256];
    char now[32];
    char *key_uri = NULL;
    char *old_uri = NULL;
    char *detail = NULL;
    int r;

    pthread_mutex_lock(&j->lock);
    r = journal_begin(j);
    r = r ? r : claimed_serial(j, lot_id, identity, bound, sizeof(bound));
    if (r == 0 && strcmp(bound, serial) != 0) {
        r = prov_fail(PROV_ERR_ALREADY_ISSUED, "device %s: serial %s is not claimed by it",
                      identity, serial);
    }
    r = r ? r : journal_query(j, &st, "SELECT device_uri, key_uri FROM device"
                                      " WHERE lot_id = ? AND serial = ?", "it", lot_id, serial);
    if (r == 0 && sqlite3_step(st) == SQLITE_ROW &&
        strcmp((const char *)sqlite3_column_text(st, 0), device_uri) != 0) {
        const char *was = (const char *)sqlite3_column_text(st, 0);
        const char *was_key = (const char *)sqlite3_column_text(st, 1); /* NULL before issued */

        key_uri = was_key != NULL ? moved_key_uri(was_key, was, device_uri) : NULL;
        old_uri = strdup(was);
        if ((was_key != NULL && key_uri == NULL) || old_uri == NULL ||
            asprintf(&detail, "from=%s to=%s", was, device_uri) < 0) {
            detail = NULL;
            r = PROV_ERR_NOMEM;
        }
    }
    journal_release(j, st);
    if (r == 0 && detail != NULL) {
        journal_now(now, sizeof(now));
        r = journal_lot_name(j, lot_id, lot, sizeof(lot));
        /* the row's certificates generated on this device move with it (schema 2) */
        if (r == 0 &&
            (journal_exec(j,
                          "UPDATE certificate SET device_uri = ? WHERE device_uri = ?"
                          " AND device_id = (SELECT id FROM device"
                          " WHERE lot_id = ? AND serial = ?)",
                          "ttit", device_uri, old_uri, lot_id, serial) != SQLITE_DONE ||
             journal_exec(j,
                          "UPDATE device SET device_uri = ?, key_uri = ?, updated = ?"
                          " WHERE lot_id = ? AND serial = ?",
                          "tttit", device_uri, key_uri, now, lot_id, serial) != SQLITE_DONE)) {
            r = journal_db_fail(j, serial);
        }
        r = r ? r : journal_audit_append(j, lot, serial, "device-moved", detail);
    }
    r = journal_end(j, r);
    pthread_mutex_unlock(&j->lock);
    free(key_uri);
    free(old_uri);
    free(detail);
    return r;
}

int prov_journal_row_lock(struct prov_journal *j, long long lot_id, const char *serial, int *fd)
{
    char *path = NULL;
    int r = 0;

    *fd = -1;
    if (asprintf(&path, "%s.row-%lld-%s.lock", j->path, lot_id, serial) < 0) {
        return PROV_ERR_NOMEM;
    }
    *fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (*fd < 0) {
        r = prov_fail(PROV_ERR_JOURNAL, "journal %s: cannot open %s: %s", j->path, path,
                      strerror(errno));
    } else if (flock(*fd, LOCK_EX | LOCK_NB) != 0) {
        r = prov_fail(PROV_ERR_JOURNAL,
                      "serial %s: another station is working on this row (lock %s is held)",
                      serial, path);
        close(*fd);
        *fd = -1;
    }
    free(path);
    return r;
}
