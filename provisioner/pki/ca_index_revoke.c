/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Revocations in the CA's index (ca_index.h): the revocation table, the CRL numbers and the
 * index's audit trail, whose records are hash-chained as the batch journal's are
 * (factory/journal_audit.c): sha256 = SHA-256(prev_sha256 || seq || at || event || serial ||
 * cert_serial || detail), each text prefixed by its 32-bit length; the first record's
 * prev_sha256 is 64 zeros.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "audit_hash.h"
#include "ca_index_handle.h"
#include "crl_names.h"
#include "error.h"

#define ZERO_HASH "0000000000000000000000000000000000000000000000000000000000000000"

static int prepare(struct prov_ca_index *ix, const char *sql, struct prov_sqldb_stmt **st)
{
    return prov_sqldb_prepare(prov_ca_index_sql(ix), sql, st) == 0
               ? 0
               : prov_ca_index_fail(ix, "cannot prepare");
}

/* Appends one audit record; inside the caller's transaction. */
int prov_ca_index_audit_append(struct prov_ca_index *ix, const char *at, const char *event,
                               const char *serial, const char *cert_serial, const char *detail)
{
    const char *text[PROV_AUDIT_FIELDS] = {at, event, serial, cert_serial, detail};
    struct prov_sqldb_stmt *st = NULL;
    char prev[65] = ZERO_HASH;
    char hash[65];
    long long seq = 1;
    int rc;
    int r;

    r = prepare(ix, "SELECT seq, sha256 FROM audit ORDER BY seq DESC LIMIT 1", &st);
    if (r < 0) {
        return r;
    }
    rc = prov_sqldb_step(st);
    if (rc == PROV_SQLDB_ROW) {
        seq = prov_sqldb_column_int(st, 0) + 1;
        prov_sqldb_column_copy(st, 1, prev, sizeof(prev));
    }
    prov_sqldb_finalize(st);
    if (rc != PROV_SQLDB_ROW && rc != PROV_SQLDB_DONE) {
        return prov_ca_index_fail(ix, "reading the audit trail");
    }
    r = prov_audit_hash(prev, seq, text, hash);
    if (r < 0) {
        return r == PROV_ERR_VERIFY
                   ? prov_ca_index_fail(ix, "the audit trail's last hash is not SHA-256")
                   : r;
    }
    r = prepare(ix,
                "INSERT INTO audit(seq, at, event, serial, cert_serial, detail, prev_sha256,"
                " sha256) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                &st);
    if (r < 0) {
        return r;
    }
    prov_sqldb_bind_int(st, 1, seq);
    for (int i = 0; i < PROV_AUDIT_FIELDS; i++) {
        prov_sqldb_bind_text(st, i + 2, text[i]);
    }
    prov_sqldb_bind_text(st, 7, prev);
    prov_sqldb_bind_text(st, 8, hash);
    rc = prov_sqldb_step(st);
    prov_sqldb_finalize(st);
    return rc == PROV_SQLDB_DONE ? 0 : prov_ca_index_fail(ix, "cannot append to the audit trail");
}

/* Inserts the revocation row and its audit record; inside the caller's transaction. */
static int insert_revocation(struct prov_ca_index *ix, const struct prov_ca_revocation *rv)
{
    struct prov_sqldb_stmt *st = NULL;
    char detail[256];
    int rc;
    int r;

    r = prepare(ix,
                "INSERT INTO revocation(cert_serial, reason, revoked_at, invalidity_date,"
                " revoked_by) VALUES (?1, ?2, ?3, ?4, ?5)",
                &st);
    if (r < 0) {
        return r;
    }
    prov_sqldb_bind_text(st, 1, rv->cert_serial);
    prov_sqldb_bind_int(st, 2, rv->reason);
    prov_sqldb_bind_text(st, 3, rv->revoked_at);
    prov_sqldb_bind_text(st, 4, rv->invalidity_date[0] != '\0' ? rv->invalidity_date : NULL);
    prov_sqldb_bind_text(st, 5, rv->revoked_by);
    rc = prov_sqldb_step(st);
    prov_sqldb_finalize(st);
    if (rc != PROV_SQLDB_DONE) {
        return prov_ca_index_fail(ix, "cannot record the revocation");
    }
    snprintf(detail, sizeof(detail), "reason=%s invalidity_date=%s by=%s",
             prov_crl_reason_name(rv->reason), rv->invalidity_date[0] ? rv->invalidity_date : "-",
             rv->revoked_by);
    return prov_ca_index_audit_append(ix, rv->revoked_at, "revoke", rv->serial, rv->cert_serial,
                                      detail);
}

/* "0A:1b:..." -> "0a1b...": the index's form of a certificate serial. */
static int normalize_hex(const char *in, char *out, size_t cap)
{
    size_t n = 0;

    for (const char *p = in; *p != '\0'; p++) {
        if (*p == ':') {
            continue;
        }
        if (strchr("0123456789abcdefABCDEF", *p) == NULL || n + 1 >= cap) {
            return PROV_ERR_USAGE;
        }
        out[n++] = (char)(*p >= 'A' && *p <= 'F' ? *p - 'A' + 'a' : *p);
    }
    out[n] = '\0';
    return n > 0 ? 0 : PROV_ERR_USAGE;
}

/* The certificate to revoke: rv->serial's current one, or cert_serial (which must be its). */
static int find_certificate(struct prov_ca_index *ix, const char *serial, const char *cert_serial,
                            struct prov_ca_revocation *rv)
{
    struct prov_sqldb_stmt *st = NULL;
    int rc;
    int r;

    if (cert_serial != NULL) {
        r = prepare(ix, "SELECT serial, cert_serial FROM certificate WHERE cert_serial = ?1", &st);
        if (r == 0) {
            prov_sqldb_bind_text(st, 1, rv->cert_serial);
        }
    } else {
        r = prepare(ix,
                    "SELECT serial, cert_serial FROM certificate WHERE serial = ?1 AND status IN"
                    " ('issued', 'delivered') ORDER BY id DESC LIMIT 1",
                    &st);
        if (r == 0) {
            prov_sqldb_bind_text(st, 1, serial);
        }
    }
    if (r < 0) {
        return r;
    }
    rc = prov_sqldb_step(st);
    if (rc == PROV_SQLDB_ROW) {
        prov_sqldb_column_copy(st, 0, rv->serial, sizeof(rv->serial));
        prov_sqldb_column_copy(st, 1, rv->cert_serial, sizeof(rv->cert_serial));
    }
    prov_sqldb_finalize(st);
    if (rc == PROV_SQLDB_DONE && cert_serial != NULL) {
        return prov_fail(PROV_ERR_POLICY, "serial %s: no certificate %s in %s; nothing revoked",
                         serial, rv->cert_serial, prov_ca_index_path(ix));
    }
    if (rc == PROV_SQLDB_DONE) {
        return prov_fail(PROV_ERR_POLICY,
                         "serial %s: no current certificate in %s (unknown serial, or every "
                         "certificate superseded or abandoned: name one with --cert-serial); "
                         "nothing revoked",
                         serial, prov_ca_index_path(ix));
    }
    if (rc != PROV_SQLDB_ROW) {
        return prov_ca_index_fail(ix, "reading the certificate");
    }
    if (strcmp(rv->serial, serial) != 0) {
        return prov_fail(PROV_ERR_POLICY,
                         "certificate %s was issued for serial %s, not %s; nothing revoked",
                         rv->cert_serial, rv->serial, serial);
    }
    return 0;
}

/* The recorded revocation of rv->cert_serial into rv: PROV_SQLDB_ROW, PROV_SQLDB_DONE or an error.
 */
static int read_revocation(struct prov_ca_index *ix, struct prov_ca_revocation *rv)
{
    struct prov_sqldb_stmt *st = NULL;
    int rc;
    int r;

    r = prepare(ix,
                "SELECT reason, revoked_at, invalidity_date, revoked_by FROM revocation"
                " WHERE cert_serial = ?1",
                &st);
    if (r < 0) {
        return r;
    }
    prov_sqldb_bind_text(st, 1, rv->cert_serial);
    rc = prov_sqldb_step(st);
    if (rc == PROV_SQLDB_ROW) {
        rv->reason = prov_sqldb_column_int(st, 0);
        prov_sqldb_column_copy(st, 1, rv->revoked_at, sizeof(rv->revoked_at));
        prov_sqldb_column_copy(st, 2, rv->invalidity_date, sizeof(rv->invalidity_date));
        prov_sqldb_column_copy(st, 3, rv->revoked_by, sizeof(rv->revoked_by));
    }
    prov_sqldb_finalize(st);
    return rc == PROV_SQLDB_ROW || rc == PROV_SQLDB_DONE
               ? rc
               : prov_ca_index_fail(ix, "reading the revocation");
}

static int revoke_locked(struct prov_ca_index *ix, const char *serial, const char *cert_serial,
                         int reason, const char *invalidity_date, const char *by,
                         struct prov_ca_revocation *out, bool *is_new)
{
    struct prov_ca_revocation rv = {0};
    int r;

    if (cert_serial != NULL &&
        normalize_hex(cert_serial, rv.cert_serial, sizeof(rv.cert_serial)) < 0) {
        return prov_fail(PROV_ERR_USAGE, "--cert-serial \"%s\": not a hex serial", cert_serial);
    }
    r = find_certificate(ix, serial, cert_serial, &rv);
    if (r < 0) {
        return r;
    }
    *out = rv;
    r = read_revocation(ix, out);
    if (r == PROV_SQLDB_ROW && out->reason == reason) {
        return 0; /* the same revocation: recorded already */
    }
    if (r == PROV_SQLDB_ROW) {
        return prov_fail(PROV_ERR_ALREADY_ISSUED,
                         "serial %s: certificate %s is already revoked with reason %s (at %s by "
                         "%s); a revocation is final, its reason is not changed",
                         serial, out->cert_serial, prov_crl_reason_name(out->reason),
                         out->revoked_at, out->revoked_by);
    }
    if (r < 0) {
        return r;
    }
    rv.reason = reason;
    prov_ca_index_now_text(rv.revoked_at, sizeof(rv.revoked_at));
    snprintf(rv.invalidity_date, sizeof(rv.invalidity_date), "%s",
             invalidity_date ? invalidity_date : "");
    snprintf(rv.revoked_by, sizeof(rv.revoked_by), "%s", by ? by : "unknown");
    r = insert_revocation(ix, &rv);
    if (r == 0) {
        *out = rv;
        *is_new = true;
    }
    return r;
}

int prov_ca_index_revoke(struct prov_ca_index *ix, const char *serial, const char *cert_serial,
                         int reason, const char *invalidity_date, const char *by,
                         struct prov_ca_revocation *out, bool *is_new)
{
    int r;

    memset(out, 0, sizeof(*out));
    *is_new = false;
    prov_ca_index_lock(ix);
    r = prov_ca_index_begin_write(ix);
    if (r == 0) {
        r = revoke_locked(ix, serial, cert_serial, reason, invalidity_date, by, out, is_new);
        r = prov_ca_index_end_write(ix, r, "cannot commit the revocation");
        if (r < 0) {
            *is_new = false;
        }
    }
    prov_ca_index_unlock(ix);
    return r;
}

int prov_ca_index_revoke_superseded(struct prov_ca_index *ix, long long new_id, const char *serial)
{
    struct prov_ca_revocation *list = NULL;
    struct prov_sqldb_stmt *st = NULL;
    size_t n = 0;
    int rc;
    int r;

    r = prepare(
        ix,
        "SELECT cert_serial FROM certificate WHERE superseded_by = ?1 AND cert_serial NOT IN"
        " (SELECT cert_serial FROM revocation)",
        &st);
    if (r < 0) {
        return r;
    }
    prov_sqldb_bind_int(st, 1, new_id);
    while ((rc = prov_sqldb_step(st)) == PROV_SQLDB_ROW) {
        struct prov_ca_revocation *grown = realloc(list, (n + 1) * sizeof(*list));

        if (grown == NULL) {
            rc = PROV_SQLDB_ERROR;
            break;
        }
        list = grown;
        memset(&list[n], 0, sizeof(list[n]));
        snprintf(list[n].serial, sizeof(list[n].serial), "%s", serial);
        prov_sqldb_column_copy(st, 0, list[n].cert_serial, sizeof(list[n].cert_serial));
        n++;
    }
    prov_sqldb_finalize(st);
    r = rc == PROV_SQLDB_DONE ? 0 : prov_ca_index_fail(ix, "reading the superseded certificates");
    for (size_t i = 0; r == 0 && i < n; i++) {
        list[i].reason = PROV_CRL_REASON_SUPERSEDED;
        prov_ca_index_now_text(list[i].revoked_at, sizeof(list[i].revoked_at));
        snprintf(list[i].revoked_by, sizeof(list[i].revoked_by), "reissue");
        r = insert_revocation(ix, &list[i]);
    }
    free(list);
    return r;
}

int prov_ca_index_revocations(struct prov_ca_index *ix, X509 *issuer,
                              struct prov_ca_revocation **out, size_t *n)
{
    struct prov_ca_revocation *list = NULL;
    struct prov_sqldb_stmt *st = NULL;
    unsigned char md[32];
    unsigned int md_len = 0;
    char issuer_hex[65];
    size_t count = 0;
    int rc = PROV_SQLDB_ERROR;
    int r;

    *out = NULL;
    *n = 0;
    if (X509_digest(issuer, EVP_sha256(), md, &md_len) != 1 || md_len != 32) {
        return prov_fail_ossl(PROV_ERR_CRYPTO, "CA index: cannot hash the issuer");
    }
    for (unsigned int i = 0; i < md_len; i++) {
        snprintf(issuer_hex + 2 * i, 3, "%02x", md[i]);
    }
    prov_ca_index_lock(ix);
    r = prepare(ix,
                "SELECT c.serial, r.cert_serial, r.reason, r.revoked_at, r.invalidity_date,"
                " r.revoked_by FROM revocation r JOIN certificate c USING (cert_serial)"
                " WHERE c.issuer_sha256 = ?1 OR c.issuer_sha256 IS NULL"
                " ORDER BY r.revoked_at, r.cert_serial",
                &st);
    if (r == 0) {
        prov_sqldb_bind_text(st, 1, issuer_hex);
        while ((rc = prov_sqldb_step(st)) == PROV_SQLDB_ROW) {
            struct prov_ca_revocation *grown = realloc(list, (count + 1) * sizeof(*list));

            if (grown == NULL) {
                rc = PROV_SQLDB_ERROR;
                break;
            }
            list = grown;
            memset(&list[count], 0, sizeof(list[count]));
            prov_sqldb_column_copy(st, 0, list[count].serial, sizeof(list[count].serial));
            prov_sqldb_column_copy(st, 1, list[count].cert_serial, sizeof(list[count].cert_serial));
            list[count].reason = prov_sqldb_column_int(st, 2);
            prov_sqldb_column_copy(st, 3, list[count].revoked_at, sizeof(list[count].revoked_at));
            prov_sqldb_column_copy(st, 4, list[count].invalidity_date,
                                   sizeof(list[count].invalidity_date));
            prov_sqldb_column_copy(st, 5, list[count].revoked_by, sizeof(list[count].revoked_by));
            count++;
        }
        r = rc == PROV_SQLDB_DONE ? 0 : prov_ca_index_fail(ix, "reading the revocations");
        prov_sqldb_finalize(st);
    }
    prov_ca_index_unlock(ix);
    if (r < 0) {
        free(list);
        return r;
    }
    *out = list;
    *n = count;
    return 0;
}

int prov_ca_index_next_crl_number(struct prov_ca_index *ix, const char *name, long long *out)
{
    struct prov_sqldb_stmt *st = NULL;
    int rc = PROV_SQLDB_ERROR;
    int r;

    *out = 0;
    prov_ca_index_lock(ix);
    r = prov_ca_index_begin_write(ix);
    if (r == 0) {
        r = prepare(ix,
                    "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE name = ?1"
                    " RETURNING CAST(value AS INTEGER)",
                    &st);
    }
    if (r == 0) {
        prov_sqldb_bind_text(st, 1, name);
        rc = prov_sqldb_step(st);
        if (rc == PROV_SQLDB_ROW) {
            *out = prov_sqldb_column_int(st, 0);
            rc = prov_sqldb_step(st);
        }
        prov_sqldb_finalize(st);
        r = rc == PROV_SQLDB_DONE && *out > 0
                ? 0
                : prov_ca_index_fail(ix, "cannot count the CRL number");
    }
    r = prov_ca_index_end_write(ix, r, "cannot commit the CRL number");
    if (r < 0) {
        *out = 0;
    }
    prov_ca_index_unlock(ix);
    return r;
}

int prov_ca_index_audit_verify(struct prov_ca_index *ix, long long *n, bool *is_intact,
                               long long *bad_seq)
{
    struct prov_sqldb_stmt *st = NULL;
    char prev[65] = ZERO_HASH;
    int rc = PROV_SQLDB_ERROR;
    int r;

    *n = 0;
    *is_intact = true;
    *bad_seq = 0;
    prov_ca_index_lock(ix);
    r = prepare(ix,
                "SELECT seq, at, event, serial, cert_serial, detail, prev_sha256, sha256 FROM"
                " audit ORDER BY seq",
                &st);
    while (r == 0 && (rc = prov_sqldb_step(st)) == PROV_SQLDB_ROW) {
        const char *text[PROV_AUDIT_FIELDS];
        char hash[65];
        long long seq = prov_sqldb_column_int(st, 0);

        for (int i = 0; i < PROV_AUDIT_FIELDS; i++) {
            const char *t = prov_sqldb_column_text(st, i + 1);

            text[i] = t != NULL ? t : "";
        }
        (*n)++;
        if (*is_intact && (seq != *n || strcmp(prov_sqldb_column_text(st, 6), prev) != 0 ||
                           prov_audit_hash(prev, seq, text, hash) < 0 ||
                           strcmp(hash, prov_sqldb_column_text(st, 7)) != 0)) {
            *is_intact = false;
            *bad_seq = seq;
        }
        prov_sqldb_column_copy(st, 7, prev, sizeof(prev));
    }
    if (r == 0) {
        r = rc == PROV_SQLDB_DONE ? 0 : prov_ca_index_fail(ix, "reading the audit trail");
    }
    prov_sqldb_finalize(st);
    prov_ca_index_unlock(ix);
    return r;
}
