#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The CA index's unit tests over PostgreSQL (doc/revocation.md): the SQL seam's
# (tests/unit/test_sqldb.c) and the index's rules, attempts, revocations and schema steps
# (tests/unit/test_ca_index.c) — the same test lists as over SQLite — against a PostgreSQL this
# test starts (tests/integration/pg_lib.sh); each program makes and drops a database of its own.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/pg_lib.sh"
it_setup
[ -x "${PROV_TEST_SQLDB:-}" ] || fail "PROV_TEST_SQLDB (the test_sqldb binary) is not set"
[ -x "${PROV_TEST_CA_INDEX:-}" ] || fail "PROV_TEST_CA_INDEX (the test_ca_index binary) is not set"
pg_start unit
export PGPASSFILE=$WORK/pgpass

# run_unit NAME BINARY COUNT: the program over PostgreSQL; all of its COUNT tests pass
run_unit() {
    PROV_TEST_PG_URI=$PG_URI CMOCKA_MESSAGE_OUTPUT=stdout "$2" >"log/$1.out" 2>&1 ||
        fail "$1 on PostgreSQL: $(grep -E 'FAILED|Failure|error' "log/$1.out" | head -n3 | tr '\n' ' ')"
    cat "log/$1.out"
    grep -q "PASSED.*$3 test" "log/$1.out" || fail "$1 on PostgreSQL ran not $3 tests: $(tail -n2 "log/$1.out")"
}

run_unit sqldb "$PROV_TEST_SQLDB" 4
grep -q 'PASSED.*2 test' log/sqldb.out || fail "test_sqldb's PostgreSQL-only group did not pass"
# every test of the program runs on PostgreSQL: as many as its source lists
run_unit ca_index "$PROV_TEST_CA_INDEX" "$(grep -c 'cmocka_unit_test' "$PROV_SOURCE_ROOT/tests/unit/test_ca_index.c")"
