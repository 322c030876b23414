/* SPDX-License-Identifier: Apache-2.0 */
/* A database of the test's own on a PostgreSQL server (test_pg.h). */
#include "test_pg.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <libpq-fe.h>

void test_pg_admin(const char *env, const char *sql)
{
    PGconn *c = PQconnectdb(getenv(env));
    PGresult *res;

    assert_int_equal(PQstatus(c), CONNECTION_OK);
    res = PQexec(c, sql);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    }
    PQclear(res);
    PQfinish(c);
}

void test_pg_uri(const char *env, const char *name, char *out, size_t cap)
{
    const char *base = getenv(env);

    assert_non_null(base);
    assert_non_null(strrchr(base, '/'));
    /* the base URI ends with the database: the test's own replaces it */
    snprintf(out, cap, "%.*s/%s", (int)(strrchr(base, '/') - base), base, name);
}
