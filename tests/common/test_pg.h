/* SPDX-License-Identifier: Apache-2.0 */
#ifndef TEST_PG_H
#define TEST_PG_H

/*
 * Unit tests run over PostgreSQL when PROV_TEST_PG_URI (the CA index's,
 * tests/integration/test_ca_index_pg.sh) or PROV_TEST_LEDGER_URI (the journal's,
 * tests/integration/ledger/test_ledger_unit.sh) names a server: a database of the test's own,
 * made and dropped through the base URI's database. Failures end the test (cmocka).
 */
#include <stddef.h>

/* Runs sql (CREATE/DROP DATABASE) on the server of the URI in environment variable env. */
void test_pg_admin(const char *env, const char *sql);

/* The URI in env with its database replaced by name, into out. */
void test_pg_uri(const char *env, const char *name, char *out, size_t cap);

#endif
