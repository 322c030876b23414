#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The journal's unit tests of its rules (tests/unit/test_journal.c: the state machine, stored
# and proven in one transaction, the uniqueness refusals, supersede and runs, an identity
# replaced outside the lot, the rows of a page of serials) run over the ledger's store: the
# same test list as over SQLite, against a PostgreSQL this test starts (one database per test).
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/ledger_lib.sh"
it_setup
[ -x "${PROV_TEST_JOURNAL:-}" ] || fail "PROV_TEST_JOURNAL (the test_journal binary) is not set"
pg_start unit
export PGPASSFILE=$WORK/pgpass
PROV_TEST_LEDGER_URI=$PG_URI CMOCKA_MESSAGE_OUTPUT=stdout "$PROV_TEST_JOURNAL" >log/unit.out 2>&1 ||
    fail "test_journal on the ledger: $(grep -E 'FAILED|Failure|error' log/unit.out | head -n3 | tr '\n' ' ')"
cat log/unit.out
grep -q 'PASSED.*7 test' log/unit.out || fail "test_journal on the ledger ran not 7 tests: $(tail -n2 log/unit.out)"
