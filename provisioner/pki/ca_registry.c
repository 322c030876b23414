/* SPDX-License-Identifier: Apache-2.0 */
/* Stations and lots of the CA service in the CA index (ca_registry.h). */
#include "ca_registry.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "ca_index_handle.h"
#include "error.h"
#include "hex.h"
#include "timestamp.h"

/*
 * One statement with text parameters, stepped once: out (when not NULL) gets the first column
 * of its first row as a number, 0 when there is no row.
 */
static int query_int(struct prov_ca_index *ix, const char *sql, int n, const char *const *args,
                     long long *out)
{
    struct prov_sqldb_stmt *st = NULL;
    int rc;

    if (out != NULL) {
        *out = 0;
    }
    if (prov_sqldb_prepare(prov_ca_index_sql(ix), sql, &st) != 0) {
        return prov_ca_index_fail(ix, "cannot prepare");
    }
    for (int i = 0; i < n; i++) {
        prov_sqldb_bind_text(st, i + 1, args[i]);
    }
    rc = prov_sqldb_step(st);
    if (rc == PROV_SQLDB_ROW && out != NULL) {
        *out = prov_sqldb_column_int(st, 0);
    }
    prov_sqldb_finalize(st);
    return rc == PROV_SQLDB_ROW || rc == PROV_SQLDB_DONE
               ? 0
               : prov_ca_index_fail(ix, "cannot read or write");
}

static int exec_text(struct prov_ca_index *ix, const char *sql, int n, const char *const *args)
{
    return query_int(ix, sql, n, args, NULL);
}

static int begin(struct prov_ca_index *ix)
{
    int r;

    prov_ca_index_lock(ix);
    r = prov_ca_index_begin_write(ix);
    if (r < 0) {
        prov_ca_index_unlock(ix);
    }
    return r;
}

static int end(struct prov_ca_index *ix, int r)
{
    r = prov_ca_index_end_write(ix, r, "cannot commit");
    prov_ca_index_unlock(ix);
    return r;
}

/*
 * The start of a registration: now gets the time, a transaction opens and sql (a station's or
 * a lot's upsert, its parameters name, value, now) runs in it. 0: the transaction is open and
 * the caller ends it (end); < 0: nothing is open any more.
 */
static int begin_upsert(struct prov_ca_index *ix, const char *sql, const char *name,
                        const char *value, char *now, size_t now_cap)
{
    int r;

    prov_ca_index_now_text(now, now_cap);
    r = begin(ix);
    if (r == 0) {
        r = exec_text(ix, sql, 3, (const char *const[]){name, value, now});
        if (r < 0) {
            return end(ix, r);
        }
    }
    return r;
}

static void cert_serial_hex(X509 *cert, char *out, size_t cap)
{
    const ASN1_INTEGER *sn = X509_get0_serialNumber(cert);
    size_t n = (size_t)ASN1_STRING_length(sn);

    out[0] = '\0';
    if (n * 2 < cap) {
        prov_hex_encode(ASN1_STRING_get0_data(sn), n, out);
    }
}

int prov_ca_registry_station_add(struct prov_ca_index *ix, const char *name, X509 *cert,
                                 long long per_minute)
{
    struct prov_sqldb_stmt *st = NULL;
    char detail[80];
    char hex[72];
    char now[40];
    int rc = PROV_SQLDB_DONE;
    int r;

    cert_serial_hex(cert, hex, sizeof(hex));
    r = begin_upsert(ix,
                     "INSERT INTO station(name, cert_serial, added_at) VALUES (?1, ?2, ?3)"
                     " ON CONFLICT(name) DO UPDATE SET cert_serial = ?2, added_at = ?3",
                     name, hex, now, sizeof(now));
    if (r < 0) {
        return r;
    }
    snprintf(detail, sizeof(detail), "registered");
    if (per_minute >= 0) {
        if (prov_sqldb_prepare(prov_ca_index_sql(ix),
                               "UPDATE station SET per_minute = ?1 WHERE name = ?2", &st) != 0) {
            r = prov_ca_index_fail(ix, "cannot prepare");
        } else {
            prov_sqldb_bind_int(st, 1, per_minute);
            prov_sqldb_bind_text(st, 2, name);
            rc = prov_sqldb_step(st);
            r = rc == PROV_SQLDB_DONE ? 0 : prov_ca_index_fail(ix, "cannot write the station's rate");
        }
        prov_sqldb_finalize(st);
        snprintf(detail, sizeof(detail), "registered, rate %lld per minute", per_minute);
    }
    if (r == 0) {
        r = prov_ca_index_audit_append(ix, now, "station", name, hex, detail);
    }
    return end(ix, r);
}

int prov_ca_registry_station_cert(struct prov_ca_index *ix, const char *name, char *hex,
                                  size_t hex_cap)
{
    struct prov_sqldb_stmt *st = NULL;
    int rc;
    int r = 0;

    prov_ca_index_lock(ix);
    if (prov_sqldb_prepare(prov_ca_index_sql(ix), "SELECT cert_serial FROM station WHERE name = ?",
                           &st) != 0) {
        r = prov_ca_index_fail(ix, "cannot prepare");
        prov_ca_index_unlock(ix);
        return r;
    }
    prov_sqldb_bind_text(st, 1, name);
    rc = prov_sqldb_step(st);
    if (rc == PROV_SQLDB_ROW) {
        snprintf(hex, hex_cap, "%s", prov_sqldb_column_text(st, 0));
    } else {
        r = rc == PROV_SQLDB_DONE ? prov_fail(PROV_ERR_USAGE,
                                              "station %s: not registered (provisioner ca station "
                                              "add %s)",
                                              name, name)
                                  : prov_ca_index_fail(ix, "cannot read the stations");
    }
    prov_sqldb_finalize(st);
    prov_ca_index_unlock(ix);
    return r;
}

int prov_ca_registry_station_each(struct prov_ca_index *ix,
                                  int (*fn)(void *arg, const struct prov_ca_station *st),
                                  void *arg)
{
    struct prov_sqldb_stmt *st = NULL;
    int rc = PROV_SQLDB_DONE;
    int r = 0;

    prov_ca_index_lock(ix);
    if (prov_sqldb_prepare(prov_ca_index_sql(ix),
                           "SELECT s.name, s.cert_serial, s.added_at,"
                           " (SELECT min(v.revoked_at) FROM revocation v"
                           "  WHERE v.cert_serial = s.cert_serial),"
                           " coalesce((SELECT group_concat(l.lot, ',') FROM"
                           "  (SELECT lot FROM lot_station WHERE station = s.name ORDER BY lot) l),"
                           "  ''), s.per_minute"
                           " FROM station s ORDER BY s.name",
                           &st) != 0) {
        r = prov_ca_index_fail(ix, "cannot prepare");
        prov_ca_index_unlock(ix);
        return r;
    }
    while (r == 0 && (rc = prov_sqldb_step(st)) == PROV_SQLDB_ROW) {
        struct prov_ca_station row = {
            .name = prov_sqldb_column_text(st, 0),
            .cert_serial = prov_sqldb_column_text(st, 1),
            .added_at = prov_sqldb_column_text(st, 2),
            .revoked_at = prov_sqldb_column_text(st, 3),
            .lots = prov_sqldb_column_text(st, 4),
            .per_minute = prov_sqldb_column_int(st, 5),
        };

        r = fn(arg, &row);
    }
    if (r == 0 && rc != PROV_SQLDB_DONE) {
        r = prov_ca_index_fail(ix, "cannot read the stations");
    }
    prov_sqldb_finalize(st);
    prov_ca_index_unlock(ix);
    return r;
}

bool prov_ca_registry_lot_name_ok(const char *name, size_t len)
{
    if (len == 0 || len > PROV_CA_LOT_NAME_MAX || (len == 1 && name[0] == '.') ||
        (len == 2 && name[0] == '.' && name[1] == '.')) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        char c = name[i];

        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-')) {
            return false;
        }
    }
    return true;
}

/* Rows (lot, value) of table for each of values: a lot's profiles or serials. */
static int insert_each(struct prov_ca_index *ix, const char *sql, const char *lot,
                       const char *const *values, size_t n)
{
    int r = 0;

    for (size_t i = 0; i < n && r == 0; i++) {
        r = exec_text(ix, sql, 2, (const char *const[]){lot, values[i]});
    }
    return r;
}

int prov_ca_registry_lot_add(struct prov_ca_index *ix, const struct prov_ca_lot *lot)
{
    const char *name = lot->name;
    char now[40];
    char cap_text[32];
    char rate_text[32];
    char detail[256];
    long long known = 0;
    int r;

    if (!prov_ca_registry_lot_name_ok(name, strlen(name))) {
        return prov_fail(PROV_ERR_USAGE, "lot \"%s\": must be " PROV_CA_LOT_NAME_RULE, name);
    }
    prov_ca_index_now_text(now, sizeof(now));
    snprintf(cap_text, sizeof(cap_text), "%lld", lot->cap);
    snprintf(rate_text, sizeof(rate_text), "%lld", lot->per_minute);
    r = begin(ix);
    if (r < 0) {
        return r;
    }
    r = exec_text(ix,
                  "INSERT INTO lot(name, cap, added_at, reissue, devices)"
                  " VALUES (?1, CAST(?2 AS INTEGER), ?3, CAST(?4 AS INTEGER),"
                  " (SELECT count(DISTINCT serial) FROM certificate WHERE lot = ?1))"
                  " ON CONFLICT(name) DO UPDATE SET cap = CAST(?2 AS INTEGER),"
                  " reissue = CAST(?4 AS INTEGER),"
                  " devices = (SELECT count(DISTINCT serial) FROM certificate WHERE lot = ?1)",
                  4, (const char *const[]){name, cap_text, now, lot->is_reissue ? "1" : "0"});
    for (size_t i = 0; i < 3 && r == 0; i++) {
        static const char *const clear[] = {"DELETE FROM lot_station WHERE lot = ?",
                                            "DELETE FROM lot_profile WHERE lot = ?",
                                            "DELETE FROM lot_serial WHERE lot = ?"};

        r = exec_text(ix, clear[i], 1, (const char *const[]){name});
    }
    for (size_t i = 0; i < lot->n_stations && r == 0; i++) {
        r = query_int(ix, "SELECT count(*) FROM station WHERE name = ?", 1,
                      (const char *const[]){lot->stations[i]}, &known);
        if (r == 0 && known == 0) {
            r = prov_fail(PROV_ERR_USAGE,
                          "station %s: not registered (provisioner ca station add %s)",
                          lot->stations[i], lot->stations[i]);
        }
        if (r == 0) {
            r = exec_text(ix,
                          "INSERT INTO lot_station(lot, station, per_minute)"
                          " VALUES (?, ?, CAST(? AS INTEGER)) ON CONFLICT DO NOTHING",
                          3, (const char *const[]){name, lot->stations[i], rate_text});
        }
    }
    if (r == 0) {
        r = insert_each(ix,
                        "INSERT INTO lot_profile(lot, profile) VALUES (?, ?)"
                        " ON CONFLICT DO NOTHING",
                        name, lot->profiles, lot->n_profiles);
    }
    if (r == 0) {
        r = insert_each(ix,
                        "INSERT INTO lot_serial(lot, serial) VALUES (?, ?)"
                        " ON CONFLICT DO NOTHING",
                        name, lot->serials, lot->n_serials);
    }
    snprintf(detail, sizeof(detail),
             "registered, cap %lld, %zu station(s), %zu profile(s), %zu serial(s), reissue %s,"
             " %lld per minute",
             lot->cap, lot->n_stations, lot->n_profiles, lot->n_serials,
             lot->is_reissue ? "allowed" : "refused", lot->per_minute);
    if (r == 0) {
        r = prov_ca_index_audit_append(ix, now, "lot", name, "", detail);
    }
    return end(ix, r);
}

int prov_ca_registry_lot_each(struct prov_ca_index *ix,
                              int (*fn)(void *arg, const struct prov_ca_lot_row *lot), void *arg)
{
    struct prov_sqldb_stmt *st = NULL;
    int rc = PROV_SQLDB_DONE;
    int r = 0;

    prov_ca_index_lock(ix);
    if (prov_sqldb_prepare(prov_ca_index_sql(ix),
                           "SELECT l.name, l.cap, l.devices,"
                           " l.reissue, (SELECT count(*) FROM lot_serial WHERE lot = l.name),"
                           " coalesce((SELECT group_concat(p.profile, ',') FROM (SELECT profile"
                           "  FROM lot_profile WHERE lot = l.name ORDER BY profile) p), ''),"
                           " coalesce((SELECT group_concat(t.station || '/' || t.per_minute, ',')"
                           "  FROM (SELECT station, per_minute FROM lot_station"
                           "  WHERE lot = l.name ORDER BY station) t), ''),"
                           " l.added_at FROM lot l ORDER BY l.name",
                           &st) != 0) {
        r = prov_ca_index_fail(ix, "cannot prepare");
        prov_ca_index_unlock(ix);
        return r;
    }
    while (r == 0 && (rc = prov_sqldb_step(st)) == PROV_SQLDB_ROW) {
        struct prov_ca_lot_row row = {
            .name = prov_sqldb_column_text(st, 0),
            .cap = prov_sqldb_column_int(st, 1),
            .devices = prov_sqldb_column_int(st, 2),
            .is_reissue = prov_sqldb_column_int(st, 3) != 0,
            .n_serials = prov_sqldb_column_int(st, 4),
            .profiles = prov_sqldb_column_text(st, 5),
            .stations = prov_sqldb_column_text(st, 6),
            .added_at = prov_sqldb_column_text(st, 7),
        };

        r = fn(arg, &row);
    }
    if (r == 0 && rc != PROV_SQLDB_DONE) {
        r = prov_ca_index_fail(ix, "cannot read the lots");
    }
    prov_sqldb_finalize(st);
    prov_ca_index_unlock(ix);
    return r;
}

/* The reason station name (its certificate hex) may not ask at all, or "" when it may. */
static int check_station(struct prov_ca_index *ix, const char *name, const char *hex, char *why,
                         size_t why_cap)
{
    long long n = 0;
    int r;

    why[0] = '\0';
    r = query_int(ix, "SELECT count(*) FROM station WHERE name = ?1 AND cert_serial = ?2", 2,
                  (const char *const[]){name, hex}, &n);
    if (r == 0 && n == 0) {
        r = query_int(ix, "SELECT count(*) FROM station WHERE name = ?", 1,
                      (const char *const[]){name}, &n);
        snprintf(why, why_cap, n == 0 ? "station %s is not registered"
                                      : "station %s: not its registered certificate", name);
        return r;
    }
    if (r == 0) {
        r = query_int(ix, "SELECT count(*) FROM revocation WHERE cert_serial = ?", 1,
                      (const char *const[]){hex}, &n);
    }
    if (r == 0 && n > 0) {
        snprintf(why, why_cap, "station %s: its certificate %s is revoked", name, hex);
    }
    return r;
}

/* The refusal: an audit record, then PROV_ERR_POLICY with why (the transaction ends). */
static int refuse(struct prov_ca_index *ix, const char *serial, const char *hex,
                  const char *why)
{
    char now[40];
    int r;

    prov_ca_index_now_text(now, sizeof(now));
    r = prov_ca_index_audit_append(ix, now, "refuse", serial != NULL ? serial : "", hex, why);
    r = end(ix, r);
    return r < 0 ? r : prov_fail(PROV_ERR_POLICY, "%s", why);
}

int prov_ca_registry_authorize(struct prov_ca_index *ix, const char *name, X509 *cert)
{
    char hex[72];
    char why[256];
    int r;

    cert_serial_hex(cert, hex, sizeof(hex));
    r = begin(ix);
    if (r < 0) {
        return r;
    }
    r = check_station(ix, name, hex, why, sizeof(why));
    if (r == 0 && why[0] != '\0') {
        return refuse(ix, NULL, hex, why);
    }
    return end(ix, r);
}

/*
 * Whether station name's certificates of the last minute (in lot; lot NULL: in all its lots)
 * reach rate; *retry_after then gets the seconds until the oldest of them leaves the minute.
 * The times compare as text (provisioner/support/timestamp.h: one fixed form).
 */
static int rate_reached(struct prov_ca_index *ix, const char *name, const char *lot,
                        long long rate, bool *is_reached, int *retry_after)
{
    struct prov_sqldb_stmt *st = NULL;
    char cmp_by[80];
    char est_by[80];
    char since[40];
    time_t oldest = 0;
    time_t now = time(NULL);
    long long n = 0;
    int rc;

    *is_reached = false;
    *retry_after = 0;
    snprintf(cmp_by, sizeof(cmp_by), "cmp:%s", name);
    snprintf(est_by, sizeof(est_by), "est:%s", name);
    prov_timestamp_ago(60, since, sizeof(since));
    if (prov_sqldb_prepare(prov_ca_index_sql(ix),
                           lot != NULL ? "SELECT count(*), min(issued_at) FROM certificate"
                                         " WHERE issued_by IN (?1, ?2) AND issued_at > ?3"
                                         " AND lot = ?4"
                                       : "SELECT count(*), min(issued_at) FROM certificate"
                                         " WHERE issued_by IN (?1, ?2) AND issued_at > ?3",
                           &st) != 0) {
        return prov_ca_index_fail(ix, "cannot prepare");
    }
    prov_sqldb_bind_text(st, 1, cmp_by);
    prov_sqldb_bind_text(st, 2, est_by);
    prov_sqldb_bind_text(st, 3, since);
    if (lot != NULL) {
        prov_sqldb_bind_text(st, 4, lot);
    }
    rc = prov_sqldb_step(st);
    if (rc == PROV_SQLDB_ROW) {
        n = prov_sqldb_column_int(st, 0);
        if (n >= rate && prov_timestamp_parse(prov_sqldb_column_text(st, 1), &oldest) == 0) {
            long long left = 61 - (long long)(now - oldest);

            *retry_after = left < 1 ? 1 : left > 60 ? 60 : (int)left;
        }
    }
    prov_sqldb_finalize(st);
    if (rc != PROV_SQLDB_ROW) {
        return prov_ca_index_fail(ix, "cannot read the certificates of the last minute");
    }
    *is_reached = n >= rate;
    if (*is_reached && *retry_after == 0) {
        *retry_after = 60;
    }
    return 0;
}

/*
 * Why lot (a row of lot_station for station name) does not admit ask, or "" when it does;
 * *retry_after gets the seconds until the rate allows one more.
 */
static int check_lot(struct prov_ca_index *ix, const char *name, const char *lot,
                     const struct prov_ca_ask *ask, char *why, size_t why_cap,
                     int *retry_after, bool *is_cap)
{
    const char *const lot_serial[] = {lot, ask->serial};
    long long n = 0;
    long long cap = 0;
    long long rate = 0;
    long long reissue = 0;
    int r;

    why[0] = '\0';
    *retry_after = 0;
    *is_cap = false;
    r = query_int(ix, "SELECT count(*) FROM lot_profile WHERE lot = ?1", 1,
                  (const char *const[]){lot}, &n);
    if (r == 0 && n > 0) {
        r = query_int(ix, "SELECT count(*) FROM lot_profile WHERE lot = ?1 AND profile = ?2", 2,
                      (const char *const[]){lot, ask->profile}, &n);
        if (r == 0 && n == 0) {
            snprintf(why, why_cap, "lot %s may not use profile %s", lot, ask->profile);
            return 0;
        }
    }
    if (r == 0) {
        r = query_int(ix, "SELECT count(*) FROM lot_serial WHERE lot = ?1", 1,
                      (const char *const[]){lot}, &n);
    }
    if (r == 0 && n > 0) {
        r = query_int(ix, "SELECT count(*) FROM lot_serial WHERE lot = ?1 AND serial = ?2", 2,
                      lot_serial, &n);
        if (r == 0 && n == 0) {
            snprintf(why, why_cap, "lot %s: device %s is not in its manifest", lot, ask->serial);
            return 0;
        }
    }
    if (r == 0) {
        r = query_int(ix, "SELECT reissue FROM lot WHERE name = ?", 1,
                      (const char *const[]){lot}, &reissue);
    }
    if (r == 0 && ask->is_reissue && reissue == 0) {
        snprintf(why, why_cap, "lot %s does not allow a reissue (%s)", lot, ask->serial);
        return 0;
    }
    /* the cap counts devices: a serial the lot has a certificate for already is counted */
    if (r == 0) {
        r = query_int(ix, "SELECT count(*) FROM certificate WHERE lot = ?1 AND serial = ?2", 2,
                      lot_serial, &n);
    }
    if (r == 0 && n == 0) {
        r = query_int(ix, "SELECT cap FROM lot WHERE name = ?", 1, (const char *const[]){lot},
                      &cap);
        if (r == 0) {
            r = query_int(ix, "SELECT devices FROM lot WHERE name = ?", 1,
                          (const char *const[]){lot}, &n);
        }
        if (r == 0 && n >= cap) {
            snprintf(why, why_cap, "lot %s: its cap (%lld) is reached", lot, cap);
            *is_cap = true;
            return 0;
        }
    }
    if (r == 0) {
        r = query_int(ix, "SELECT per_minute FROM lot_station WHERE lot = ?1 AND station = ?2",
                      2, (const char *const[]){lot, name}, &rate);
    }
    if (r == 0 && rate > 0) {
        bool is_reached = false;

        r = rate_reached(ix, name, lot, rate, &is_reached, retry_after);
        if (r == 0 && is_reached) {
            snprintf(why, why_cap,
                     "station %s: its rate for lot %s (%lld per minute) is reached; retry in"
                     " %d s", name, lot, rate, *retry_after);
        }
    }
    return r;
}

/*
 * Why station name may have no more certificates now, across all its lots (its own rate,
 * `ca station add --rate`), or "" when it may; *retry_after as rate_reached's.
 */
static int check_station_rate(struct prov_ca_index *ix, const char *name, char *why,
                              size_t why_cap, int *retry_after)
{
    long long rate = 0;
    bool is_reached = false;
    int r = query_int(ix, "SELECT per_minute FROM station WHERE name = ?", 1,
                      (const char *const[]){name}, &rate);

    why[0] = '\0';
    *retry_after = 0;
    if (r == 0 && rate > 0) {
        r = rate_reached(ix, name, NULL, rate, &is_reached, retry_after);
    }
    if (r == 0 && is_reached) {
        snprintf(why, why_cap,
                 "station %s: its rate across its lots (%lld per minute) is reached; retry in"
                 " %d s", name, rate, *retry_after);
    }
    return r;
}

int prov_ca_registry_ask(struct prov_ca_index *ix, const char *name, X509 *cert,
                         struct prov_ca_ask *ask)
{
    struct prov_sqldb_stmt *st = NULL;
    size_t n_lots = 0;
    char hex[72];
    char why[256];
    char first[256] = "";
    int first_retry = 0;
    bool all_cap = true;
    int rc = PROV_SQLDB_DONE;
    int r;

    ask->lot_out[0] = '\0';
    ask->retry_after = 0;
    cert_serial_hex(cert, hex, sizeof(hex));
    r = begin(ix);
    if (r < 0) {
        return r;
    }
    r = check_station(ix, name, hex, why, sizeof(why));
    if (r == 0 && why[0] != '\0') {
        return refuse(ix, ask->serial, hex, why);
    }
    r = r ? r : check_station_rate(ix, name, why, sizeof(why), &ask->retry_after);
    if (r == 0 && why[0] != '\0') {
        return refuse(ix, ask->serial, hex, why);
    }
    /* the lots this station may serve (the one named, or all of them, oldest first) */
    if (r == 0 && prov_sqldb_prepare(prov_ca_index_sql(ix),
                                     "SELECT l.name FROM lot l JOIN lot_station s"
                                     " ON s.lot = l.name WHERE s.station = ?1"
                                     " AND (CAST(?2 AS TEXT) IS NULL OR l.name = ?2)"
                                     " ORDER BY l.added_at, l.name",
                                     &st) != 0) {
        r = prov_ca_index_fail(ix, "cannot prepare");
    }
    if (r == 0) {
        prov_sqldb_bind_text(st, 1, name);
        if (ask->lot != NULL) {
            prov_sqldb_bind_text(st, 2, ask->lot);
        }
    }
    while (r == 0 && (rc = prov_sqldb_step(st)) == PROV_SQLDB_ROW) {
        const char *lot = prov_sqldb_column_text(st, 0);
        int retry = 0;
        bool is_cap = false;

        n_lots++;
        r = check_lot(ix, name, lot, ask, why, sizeof(why), &retry, &is_cap);
        if (r == 0 && why[0] == '\0') {
            snprintf(ask->lot_out, sizeof(ask->lot_out), "%s", lot);
            break;
        }
        if (first[0] == '\0' || (all_cap && !is_cap)) {
            snprintf(first, sizeof(first), "%s", why);
            first_retry = retry;
        }
        all_cap = all_cap && is_cap;
    }
    if (st != NULL && r == 0 && rc != PROV_SQLDB_ROW && rc != PROV_SQLDB_DONE) {
        r = prov_ca_index_fail(ix, "cannot read the lots");
    }
    prov_sqldb_finalize(st);
    if (r == 0 && ask->lot_out[0] != '\0') {
        return end(ix, 0);
    }
    if (r < 0) {
        return end(ix, r);
    }
    if (n_lots == 0) {
        snprintf(why, sizeof(why),
                 ask->lot != NULL ? "station %s may not serve lot %s"
                                  : "station %s: no lot it may serve is registered",
                 name, ask->lot);
    } else if (ask->lot != NULL) {
        snprintf(why, sizeof(why), "%s", first);
    } else if (all_cap) {
        snprintf(why, sizeof(why), "station %s: the cap of every lot it may serve is reached",
                 name);
    } else if (n_lots == 1) {
        snprintf(why, sizeof(why), "%s", first);
    } else {
        snprintf(why, sizeof(why), "station %s: no lot it may serve admits %s (%s)", name,
                 ask->serial, first);
    }
    ask->retry_after = first_retry;
    return refuse(ix, ask->serial, hex, why);
}

int prov_ca_registry_refused(struct prov_ca_index *ix, const char *what, const char *why)
{
    char now[40];
    int r = begin(ix);

    if (r < 0) {
        return r;
    }
    prov_ca_index_now_text(now, sizeof(now));
    return end(ix, prov_ca_index_audit_append(ix, now, "refuse", what, "", why));
}

int prov_ca_registry_retry(struct prov_ca_index *ix, const char *serial, const char *issued_by,
                           const char *pubkey_sha256, X509 **out)
{
    struct prov_sqldb_stmt *st = NULL;
    const unsigned char *p = NULL;
    size_t len = 0;
    int rc;
    int r = 0;

    *out = NULL;
    prov_ca_index_lock(ix);
    if (prov_sqldb_prepare(prov_ca_index_sql(ix),
                           "SELECT der FROM certificate WHERE pubkey_sha256 = ? AND serial = ?"
                           " AND issued_by = ? AND status IN ('issued', 'delivered')",
                           &st) != 0) {
        r = prov_ca_index_fail(ix, "cannot prepare");
        prov_ca_index_unlock(ix);
        return r;
    }
    prov_sqldb_bind_text(st, 1, pubkey_sha256);
    prov_sqldb_bind_text(st, 2, serial);
    prov_sqldb_bind_text(st, 3, issued_by);
    rc = prov_sqldb_step(st);
    if (rc == PROV_SQLDB_ROW) {
        p = prov_sqldb_column_blob(st, 0, &len);
    }
    if (rc == PROV_SQLDB_ROW && len > 0) {
        *out = d2i_X509(NULL, &p, (long)len);
        r = *out != NULL ? 0 : prov_fail(PROV_ERR_JOURNAL, "CA index %s: a certificate of %s "
                                         "cannot be read", prov_ca_index_path(ix), serial);
    } else if (rc != PROV_SQLDB_ROW && rc != PROV_SQLDB_DONE) {
        r = prov_ca_index_fail(ix, "cannot read");
    }
    prov_sqldb_finalize(st);
    prov_ca_index_unlock(ix);
    return r;
}

int prov_ca_registry_admit(struct prov_ca_index *ix, const char *station, X509 *station_cert,
                           EVP_PKEY *pub, const char *issued_by, struct prov_ca_ask *ask,
                           char spki[65], X509 **cert, bool *station_refused)
{
    int r;

    *cert = NULL;
    spki[0] = '\0';
    r = prov_ca_registry_authorize(ix, station, station_cert);
    *station_refused = r < 0;
    if (r == 0) {
        /* the key hashed once, for the retry and the index's rules (ca_index.h) */
        r = prov_ca_index_spki_sha256(pub, spki);
    }
    if (r == 0) {
        r = prov_ca_registry_retry(ix, ask->serial, issued_by, spki, cert);
    }
    if (r == 0 && *cert == NULL) {
        r = prov_ca_registry_ask(ix, station, station_cert, ask);
    }
    return r;
}

void prov_ca_registry_request(const struct prov_ca_ask *ask, const struct prov_profile *profile,
                              const char *issued_by, const char *spki, struct prov_request *rq)
{
    memset(rq, 0, sizeof(*rq));
    rq->serial = ask->serial;
    rq->profile = profile;
    rq->lot = ask->lot_out;
    rq->record.issued_by = issued_by;
    rq->record.lot = ask->lot_out;
    rq->record.is_reissue = ask->is_reissue;
    rq->record.pubkey_sha256 = spki;
}

int prov_ca_registry_cert_owner(struct prov_ca_index *ix, const char *cert_serial, char *serial,
                                size_t serial_cap, char *by, size_t by_cap)
{
    struct prov_sqldb_stmt *st = NULL;
    int rc;
    int r = 0;

    prov_ca_index_lock(ix);
    if (prov_sqldb_prepare(prov_ca_index_sql(ix),
                           "SELECT serial, issued_by FROM certificate WHERE cert_serial = ?",
                           &st) != 0) {
        r = prov_ca_index_fail(ix, "cannot prepare");
        prov_ca_index_unlock(ix);
        return r;
    }
    prov_sqldb_bind_text(st, 1, cert_serial);
    rc = prov_sqldb_step(st);
    if (rc == PROV_SQLDB_ROW) {
        snprintf(serial, serial_cap, "%s", prov_sqldb_column_text(st, 0));
        snprintf(by, by_cap, "%s", prov_sqldb_column_text(st, 1));
    } else {
        r = rc == PROV_SQLDB_DONE
                ? prov_fail(PROV_ERR_POLICY, "certificate %s: not issued by this CA", cert_serial)
                : prov_ca_index_fail(ix, "cannot read");
    }
    prov_sqldb_finalize(st);
    prov_ca_index_unlock(ix);
    return r;
}

int prov_ca_registry_renewable(struct prov_ca_index *ix, X509 *cert, char *serial,
                               size_t serial_cap)
{
    char hex[72];
    char by[80] = "";
    char why[200] = "";
    char now[40];
    long long n = 0;
    int r;

    cert_serial_hex(cert, hex, sizeof(hex));
    r = prov_ca_registry_cert_owner(ix, hex, serial, serial_cap, by, sizeof(by));
    if (r == PROV_ERR_POLICY) {
        snprintf(why, sizeof(why), "kur: certificate %s is not in the CA index", hex);
        r = 0;
    }
    if (r < 0) {
        return r;
    }
    r = begin(ix);
    if (r < 0) {
        return r;
    }
    if (why[0] == '\0') {
        r = query_int(ix,
                      "SELECT count(*) FROM certificate c WHERE c.cert_serial = ?1 AND"
                      " c.status IN ('issued', 'delivered') AND NOT EXISTS"
                      " (SELECT 1 FROM revocation v WHERE v.cert_serial = ?1)",
                      1, (const char *const[]){hex}, &n);
        if (r == 0 && n == 0) {
            snprintf(why, sizeof(why),
                     "kur: certificate %s of %s is revoked or no longer current", hex, serial);
        }
    }
    if (r == 0 && why[0] != '\0') {
        prov_ca_index_now_text(now, sizeof(now));
        r = prov_ca_index_audit_append(ix, now, "refuse", serial, hex, why);
        r = end(ix, r);
        return r < 0 ? r : prov_fail(PROV_ERR_POLICY, "%s", why);
    }
    return end(ix, r);
}

int prov_ca_registry_is_current(struct prov_ca_index *ix, X509 *cert, const char *serial,
                                const char *profile, bool *out)
{
    long long n = 0;
    char hex[72];
    int r;

    *out = false;
    cert_serial_hex(cert, hex, sizeof(hex));
    prov_ca_index_lock(ix);
    r = query_int(ix,
                  "SELECT count(*) FROM certificate WHERE cert_serial = ?1 AND serial = ?2"
                  " AND profile = ?3 AND status IN ('issued', 'delivered')"
                  " AND revoked_at IS NULL"
                  " AND NOT EXISTS (SELECT 1 FROM revocation WHERE cert_serial = ?1)",
                  3, (const char *const[]){hex, serial, profile}, &n);
    prov_ca_index_unlock(ix);
    *out = r == 0 && n == 1;
    return r;
}
