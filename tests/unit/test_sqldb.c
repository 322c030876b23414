/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The SQL seam (provisioner/support/sqldb.h) the CA index reads and writes through: the
 * behaviour ca_index*.c and ca_registry.c rely on, over the SQLite implementation (an
 * in-memory database). A second store's implementation must pass the same list.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "sqldb_sqlite.h"

struct fixture {
    sqlite3 *conn;
    struct prov_sqldb *db;
};

static int set_up(void **state)
{
    static struct fixture f;

    assert_int_equal(sqlite3_open(":memory:", &f.conn), SQLITE_OK);
    f.db = prov_sqldb_sqlite_wrap(f.conn);
    assert_non_null(f.db);
    assert_int_equal(prov_sqldb_exec(f.db, "CREATE TABLE t(id INTEGER PRIMARY KEY,"
                                           " name TEXT NOT NULL UNIQUE, n INTEGER, b BLOB)"),
                     0);
    *state = &f;
    return 0;
}

static int tear_down(void **state)
{
    struct fixture *f = *state;

    prov_sqldb_close(f->db);
    sqlite3_close(f->conn);
    return 0;
}

/* Inserts one row by the type string; returns the step's code. */
static int insert(struct prov_sqldb *db, const char *name, long long n, const void *b, size_t b_len)
{
    struct prov_sqldb_stmt *st = NULL;
    int rc;

    assert_int_equal(prov_sqldb_prepare(db, "INSERT INTO t(name, n, b) VALUES (?1, ?2, ?3)", &st),
                     0);
    rc = prov_sqldb_bind_text(st, 1, name);
    rc = rc == 0 ? prov_sqldb_bind_int(st, 2, n) : rc;
    rc = rc == 0 ? prov_sqldb_bind_blob(st, 3, b, b_len) : rc;
    rc = rc == 0 ? prov_sqldb_step(st) : rc;
    prov_sqldb_finalize(st);
    return rc;
}

static void test_round_trip(void **state)
{
    struct fixture *f = *state;
    struct prov_sqldb_stmt *st = NULL;
    const unsigned char blob[] = {0, 1, 2, 0xff};
    const void *p;
    size_t len = 0;
    char copy[4];

    assert_int_equal(insert(f->db, "alpha", 1LL << 40, blob, sizeof(blob)), PROV_SQLDB_DONE);
    assert_int_equal(prov_sqldb_last_id(f->db), 1);
    assert_int_equal(insert(f->db, "beta", -7, NULL, 0), PROV_SQLDB_DONE);
    assert_int_equal(prov_sqldb_last_id(f->db), 2);
    /* ?1 used twice, and a bare ? after it is ?2 */
    assert_int_equal(prov_sqldb_prepare(f->db,
                                        "SELECT name, n, b FROM t WHERE name = ?1 OR (name <> ?1"
                                        " AND n = ?) ORDER BY id",
                                        &st),
                     0);
    assert_int_equal(prov_sqldb_bind_text(st, 1, "alpha"), 0);
    assert_int_equal(prov_sqldb_bind_int(st, 2, -7), 0);
    assert_int_equal(prov_sqldb_step(st), PROV_SQLDB_ROW);
    assert_string_equal(prov_sqldb_column_text(st, 0), "alpha");
    assert_true(prov_sqldb_column_int(st, 1) == (1LL << 40));
    p = prov_sqldb_column_blob(st, 2, &len);
    assert_int_equal(len, sizeof(blob));
    assert_memory_equal(p, blob, sizeof(blob));
    assert_int_equal(prov_sqldb_step(st), PROV_SQLDB_ROW);
    assert_string_equal(prov_sqldb_column_text(st, 0), "beta");
    assert_true(prov_sqldb_column_null(st, 2));
    prov_sqldb_column_copy(st, 0, copy, sizeof(copy));
    assert_string_equal(copy, "bet"); /* truncated to the buffer */
    assert_int_equal(prov_sqldb_step(st), PROV_SQLDB_DONE);
    /* reset clears the bindings: a NULL name matches nothing */
    prov_sqldb_reset(st);
    assert_int_equal(prov_sqldb_step(st), PROV_SQLDB_DONE);
    prov_sqldb_finalize(st);
}

static void test_constraint_and_transaction(void **state)
{
    struct fixture *f = *state;
    struct prov_sqldb_stmt *st = NULL;

    assert_int_equal(prov_sqldb_begin(f->db), 0);
    assert_int_equal(insert(f->db, "gamma", 3, NULL, 0), PROV_SQLDB_DONE);
    /* UNIQUE refuses the second row of a name, as the index's rules need */
    assert_int_equal(insert(f->db, "gamma", 4, NULL, 0), PROV_SQLDB_CONSTRAINT);
    prov_sqldb_rollback(f->db);
    prov_sqldb_rollback(f->db); /* safe once the transaction has ended */
    assert_int_equal(prov_sqldb_prepare(f->db, "SELECT count(*) FROM t WHERE name = 'gamma'", &st),
                     0);
    assert_int_equal(prov_sqldb_step(st), PROV_SQLDB_ROW);
    assert_int_equal(prov_sqldb_column_int(st, 0), 0);
    prov_sqldb_finalize(st);

    assert_int_equal(prov_sqldb_begin(f->db), 0);
    assert_int_equal(prov_sqldb_exec(f->db, "UPDATE t SET n = n + 1"), 0);
    assert_int_equal(prov_sqldb_changes(f->db), 2);
    assert_int_equal(prov_sqldb_commit(f->db), 0);
    assert_true(prov_sqldb_exec(f->db, "NOT SQL") < 0);
    assert_true(strlen(prov_sqldb_errmsg(f->db)) > 0);
    assert_true(prov_sqldb_prepare(f->db, "SELECT nothing FROM nowhere", &st) < 0);
    assert_null(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_constraint_and_transaction),
    };

    return cmocka_run_group_tests(tests, set_up, tear_down);
}
