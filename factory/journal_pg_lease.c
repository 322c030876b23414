/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Leases on the ledger's rows (doc/ledger.md, "Work distribution"): several batch processes
 * on one lot claim rows, a claim is a lease with an expiry that a thread renews while the
 * process works, and every write of a claimed row is fenced by the lease's token.
 *
 * A claim is one statement, the server-side function prov_claim (schema step 4): the row of
 * the work table is made if the lot has none yet, read with FOR UPDATE SKIP LOCKED (a claimer
 * that finds it locked moves on instead of queueing behind another station), and taken when
 * nobody holds a live lease on it; the token comes from a sequence that only grows. A station
 * that stalls past its lease loses the row to the next claimer, and its token is no longer the
 * row's: its next write is refused.
 */
#include "journal_pg_lease.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "log.h"

/* The lease this process holds on a row. */
struct pg_lease {
    struct pg_lease *next;
    long long lot_id;
    char *serial;
    long long token;
};

static struct pg_lease **find(struct journal_pg_leases *ls, long long lot_id, const char *serial)
{
    struct pg_lease **p = &ls->held;

    while (*p != NULL && ((*p)->lot_id != lot_id || strcmp((*p)->serial, serial) != 0)) {
        p = &(*p)->next;
    }
    return p;
}

/* The token held on the row; 0 when none. */
static long long held(struct journal_pg_leases *ls, long long lot_id, const char *serial)
{
    long long token;

    pthread_mutex_lock(&ls->lock);
    token = *find(ls, lot_id, serial) ? (*find(ls, lot_id, serial))->token : 0;
    pthread_mutex_unlock(&ls->lock);
    return token;
}

/* The tokens held, as a PostgreSQL array literal "{1,2}" (malloc'd); NULL on NOMEM. */
static char *held_array(struct journal_pg_leases *ls)
{
    size_t cap = 3;
    char *out;

    pthread_mutex_lock(&ls->lock);
    for (struct pg_lease *l = ls->held; l != NULL; l = l->next) {
        cap += 22;
    }
    out = malloc(cap);
    if (out != NULL) {
        size_t n = (size_t)snprintf(out, cap, "{");

        for (struct pg_lease *l = ls->held; l != NULL; l = l->next) {
            n += (size_t)snprintf(out + n, cap - n, "%s%lld", l == ls->held ? "" : ",", l->token);
        }
        snprintf(out + n, cap - n, "}");
    }
    pthread_mutex_unlock(&ls->lock);
    return out;
}

/* Renews every lease held, a third of the lease time apart, on a connection of its own. */
static void *renew_main(void *arg)
{
    struct journal_pg_leases *ls = arg;
    char secs[16];

    snprintf(secs, sizeof(secs), "%d", ls->seconds);
    pthread_mutex_lock(&ls->lock);
    while (!ls->is_renew_stop) {
        struct timespec until;
        char *tokens;

        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += ls->seconds / 3 > 0 ? ls->seconds / 3 : 1;
        pthread_cond_timedwait(&ls->renew_cond, &ls->lock, &until);
        if (ls->is_renew_stop || ls->held == NULL) {
            continue;
        }
        pthread_mutex_unlock(&ls->lock);
        tokens = held_array(ls);
        if (tokens != NULL) {
            const char *values[2] = {tokens, secs};
            PGresult *res;

            if (PQstatus(ls->renew_conn) != CONNECTION_OK) {
                PQreset(ls->renew_conn);
            }
            res = PQexecParams(ls->renew_conn,
                               "UPDATE work SET expires = now() + $2 * interval '1 second'"
                               " WHERE token = ANY($1::bigint[])",
                               2, NULL, values, NULL, NULL, 0);
            if (PQresultStatus(res) != PGRES_COMMAND_OK) {
                /* fencing keeps the rows safe; the station learns it at its next write */
                prov_warn("journal %s: cannot renew the leases: %s", ls->db->name,
                          PQerrorMessage(ls->renew_conn));
            }
            PQclear(res);
            free(tokens);
        }
        pthread_mutex_lock(&ls->lock);
    }
    pthread_mutex_unlock(&ls->lock);
    return NULL;
}

static int renew_start(struct journal_pg_leases *ls)
{
    if (ls->renew_conn != NULL) {
        return 0;
    }
    ls->renew_conn = journal_pg_connect(ls->db);
    if (ls->renew_conn == NULL || PQstatus(ls->renew_conn) != CONNECTION_OK) {
        PQfinish(ls->renew_conn);
        ls->renew_conn = NULL;
        return prov_fail(PROV_ERR_JOURNAL, "journal %s: cannot connect to renew leases",
                         ls->db->name);
    }
    if (pthread_create(&ls->renew_thread, NULL, renew_main, ls) != 0) {
        PQfinish(ls->renew_conn);
        ls->renew_conn = NULL;
        return prov_fail(PROV_ERR_JOURNAL, "journal %s: cannot start the lease renewal: %s",
                         ls->db->name, strerror(errno));
    }
    return 0;
}

void journal_pg_leases_init(struct journal_pg_leases *ls, struct journal_pg_db *db,
                            const char *station, int seconds)
{
    ls->db = db;
    ls->station = station;
    ls->seconds = seconds;
    pthread_mutex_init(&ls->lock, NULL);
    pthread_cond_init(&ls->renew_cond, NULL);
}

void journal_pg_leases_stop(struct journal_pg_leases *ls)
{
    if (ls->renew_conn != NULL) {
        pthread_mutex_lock(&ls->lock);
        ls->is_renew_stop = true;
        pthread_cond_signal(&ls->renew_cond);
        pthread_mutex_unlock(&ls->lock);
        pthread_join(ls->renew_thread, NULL);
        PQfinish(ls->renew_conn);
        ls->renew_conn = NULL;
    }
    while (ls->held != NULL) {
        struct pg_lease *l = ls->held;

        ls->held = l->next;
        free(l->serial);
        free(l);
    }
    pthread_mutex_destroy(&ls->lock);
    pthread_cond_destroy(&ls->renew_cond);
}

int journal_pg_lease_claim(struct journal_pg_leases *ls, long long lot_id, const char *serial,
                           bool is_reopen, char *holder, size_t cap, enum prov_journal_lease *out)
{
    struct pg_lease *l = NULL;
    PGresult *res;
    const char *outcome;
    int r;

    *out = PROV_JOURNAL_LEASE_MINE;
    holder[0] = '\0';
    if (held(ls, lot_id, serial) != 0) {
        return 0;
    }
    r = renew_start(ls);
    if (r < 0) {
        return r;
    }
    /*
     * prov_claim (schema step 4, journal_pg.c): the entry, the claim and who holds the row,
     * one statement in a transaction of its own (no audit record, so no station lock).
     */
    res = journal_pg_exec(ls->db, serial, NULL, NULL, 0,
                          "SELECT token, holder, outcome, at FROM prov_claim($1, $2, $3, $4,"
                          " $5, $6::timestamptz)",
                          "ittitt", lot_id, serial, ls->station, (long long)ls->seconds,
                          is_reopen ? "true" : "false", ls->since[0] ? ls->since : NULL);
    if (res == NULL) {
        return PROV_ERR_JOURNAL;
    }
    if (PQntuples(res) != 1) {
        PQclear(res);
        return prov_fail(PROV_ERR_JOURNAL, "journal %s: serial %s: the claim said nothing",
                         ls->db->name, serial);
    }
    if (ls->since[0] == '\0') {
        journal_pg_copy(res, 0, 3, ls->since, sizeof(ls->since));
    }
    outcome = PQgetvalue(res, 0, 2);
    if (strcmp(outcome, "mine") == 0) {
        l = calloc(1, sizeof(*l));
        if (l == NULL || (l->serial = strdup(serial)) == NULL) {
            free(l);
            PQclear(res);
            /* the lease runs out on its own: the row is claimable again then */
            return prov_fail(PROV_ERR_NOMEM, "journal %s: out of memory", ls->db->name);
        }
        l->lot_id = lot_id;
        l->token = journal_pg_ll(res, 0, 0);
        pthread_mutex_lock(&ls->lock);
        l->next = ls->held;
        ls->held = l;
        pthread_mutex_unlock(&ls->lock);
    } else if (strcmp(outcome, "held") == 0) {
        *out = PROV_JOURNAL_LEASE_HELD;
        journal_pg_copy(res, 0, 1, holder, cap);
    } else if (strcmp(outcome, "finished") == 0) {
        *out = PROV_JOURNAL_LEASE_FINISHED;
        journal_pg_copy(res, 0, 1, holder, cap);
    }
    /* "done": nothing to work, the row is read as any finished row (no lease) */
    PQclear(res);
    return 0;
}

int journal_pg_lease_scan(struct journal_pg_leases *ls, long long lot_id,
                          const char *const *serials, size_t n, bool *is_other)
{
    char *list = journal_pg_text_array(serials, n);
    PGresult *res;

    if (list == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "journal %s: out of memory", ls->db->name);
    }
    /* prov_claim's HELD and FINISHED, without claiming: the rows' places in the list */
    res = journal_pg_exec(ls->db, "leases", NULL, NULL, 0,
                          "SELECT s.i FROM unnest($2::text[]) WITH ORDINALITY AS s(serial, i)"
                          " JOIN work w ON w.lot_id = $1 AND w.serial = s.serial"
                          " WHERE CASE WHEN w.done THEN w.done_by IS DISTINCT FROM $3"
                          "  AND w.done_at >= $4::timestamptz"
                          " ELSE w.station <> $3 AND w.expires >= now() END",
                          "ittt", lot_id, list, ls->station, ls->since[0] ? ls->since : NULL);
    free(list);
    if (res == NULL) {
        return PROV_ERR_JOURNAL;
    }
    for (int i = 0; i < PQntuples(res); i++) {
        long long at = journal_pg_ll(res, i, 0);

        if (at >= 1 && (size_t)at <= n) {
            is_other[at - 1] = true;
        }
    }
    PQclear(res);
    return 0;
}

/*
 * A lease's end, by token: a lease taken over meanwhile is the other station's, and stays; a
 * finished row names its station and time (prov_claim's "finished").
 */
#define LEASE_END_SQL                                                                              \
    "UPDATE work SET station = NULL, token = NULL, expires = NULL, done = $2,"                     \
    " done_by = CASE WHEN $2 THEN $3 ELSE done_by END,"                                            \
    " done_at = CASE WHEN $2 THEN now() ELSE done_at END WHERE token = $1"

int journal_pg_lease_end_with(struct journal_pg_leases *ls, long long lot_id, const char *serial,
                              bool *is_queued)
{
    long long token = held(ls, lot_id, serial);
    int r;

    *is_queued = false;
    if (token == 0) {
        return 0;
    }
    r = journal_pg_defer(ls->db, serial, NULL, NULL, LEASE_END_SQL, "itt", token, "true",
                         ls->station);
    *is_queued = r == 0;
    return r;
}

/* Takes the lease off the list: ended (done) by a committed transaction, or by the server. */
static struct pg_lease *forget(struct journal_pg_leases *ls, long long lot_id, const char *serial)
{
    struct pg_lease **p;
    struct pg_lease *l;

    pthread_mutex_lock(&ls->lock);
    p = find(ls, lot_id, serial);
    l = *p;
    if (l != NULL) {
        *p = l->next;
    }
    pthread_mutex_unlock(&ls->lock);
    return l;
}

void journal_pg_lease_forget(struct journal_pg_leases *ls, long long lot_id, const char *serial)
{
    struct pg_lease *l = forget(ls, lot_id, serial);

    if (l != NULL) {
        free(l->serial);
        free(l);
    }
}

int journal_pg_lease_end(struct journal_pg_leases *ls, long long lot_id, const char *serial,
                         bool is_done)
{
    struct pg_lease *l = forget(ls, lot_id, serial);
    int r;

    if (l == NULL) {
        return 0;
    }
    r = journal_pg_run(ls->db, serial, LEASE_END_SQL, "itt", l->token, is_done ? "true" : "false",
                       ls->station);
    free(l->serial);
    free(l);
    return r;
}

int journal_pg_fence(struct journal_pg_leases *ls, long long lot_id, const char *serial)
{
    /*
     * prov_fence (schema step 3, journal_pg.c) locks the row's work entry and refuses, with
     * its own line, a write whose token is not the row's; sent with the write itself.
     */
    return journal_pg_defer(ls->db, serial, NULL, NULL, "SELECT prov_fence($1, $2, $3)", "iti",
                            lot_id, serial, held(ls, lot_id, serial));
}
