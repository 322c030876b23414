#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Leases taken over, and fencing (doc/ledger.md, "Work distribution"); journal_lease = 2 s:
# - station A records SN-00001's intent and is frozen (SIGSTOP) before its key exists; its
#   lease runs out; station B takes the row over and issues the lot; A, thawed, generates its
#   key and has its certificate refused by the ledger (its token is not the row's any more):
#   one line, exit 1, no second certificate, and the lot is B's, exactly once;
# - (journal_lease = 60 s) station C is killed (-9) with SN-00003's certificate recorded but not stored; `ledger
#   release --station C` hands its row over at once; D completes it from the ledger.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../batch/batch_lib.sh"
. "$(dirname "$0")/ledger_lib.sh"
ledger_fixture
sed -i 's|^\[provisioner\]$|[provisioner]\njournal_lease = 2|' "$PROVISIONER_CONFIG"
make_lot lot.csv 1 2
p11_server
prov 0 ledger init

PROVISIONER_TEST_PAUSE_AT="intent:$WORK/pause-a" "$PROVISIONER" batch lot.csv --station A \
    --jobs 1 --no-progress --results results-a.csv >log/a.out 2>log/a.err </dev/null &
a_pid=$!
it_track "$a_pid"
wait_file "$WORK/pause-a" "$a_pid" || fail "station A did not reach its intent: $(cat log/a.err)"
kill -STOP "$a_pid"
rm -f "$WORK/pause-a"
assert_eq "$(pg_q "SELECT station FROM work WHERE serial = 'SN-00001'")" A "SN-00001's lease holder"
sleep 3 # past the 2 s lease: A renews nothing while frozen
prov 0 batch lot.csv --station B --no-progress --results results-b.csv
assert_grep "$PROV_OUT" '^2 rows: 2 issued, 0 already-issued, 0 failed '
kill -CONT "$a_pid"
rc=0
wait "$a_pid" || rc=$?
assert_eq "$rc" 1 "station A's exit after its lease was taken over ($(cat log/a.err))"
grep -q "serial SN-00001: this station's lease on the row was taken over" log/a.err ||
    fail "station A does not say its write was refused: $(cat log/a.err)"
assert_eq "$(pg_q "SELECT count(*) FROM certificate")" 2 "certificates (A's refused)"
assert_eq "$(pg_q "SELECT count(*) FROM device WHERE state = 'proven'")" 2 "proven rows"
assert_tokens_match_ledger dev-01

# kill -9 with a certificate recorded, not stored; release, then another station completes.
# A lease of 60 s here: C's row must still be leased when D first comes (no timing race).
sed -i 's|^journal_lease = 2$|journal_lease = 60|' "$PROVISIONER_CONFIG"
printf 'SN-00003,pkcs11:token=dev-01,,dev-01\n' >>lot.csv
PROVISIONER_TEST_PAUSE_AT="issued:$WORK/pause-c" "$PROVISIONER" batch lot.csv --station C \
    --no-progress --results results-c.csv >log/c.out 2>log/c.err </dev/null &
c_pid=$!
it_track "$c_pid"
wait_file "$WORK/pause-c" "$c_pid" || fail "station C did not reach issued: $(cat log/c.err)"
kill -KILL "$c_pid"
wait "$c_pid" 2>/dev/null || true
assert_eq "$(pg_q "SELECT state FROM device WHERE serial = 'SN-00003'")" issued "SN-00003 after the kill"
prov 0 batch lot.csv --station D --no-progress --results results-d.csv
assert_grep "$PROV_OUT" '^3 rows: 0 issued, 2 already-issued, 0 failed, 1 elsewhere '
prov 0 ledger release --station C
assert_grep "$PROV_OUT" 'released 1 leases of station C'
prov 0 batch lot.csv --station D --no-progress --results results-d.csv
assert_grep "$PROV_OUT" '^3 rows: 1 issued, 2 already-issued, 0 failed '
assert_eq "$(pg_q "SELECT count(*) FROM certificate")" 3 "certificates"
assert_eq "$(pg_q "SELECT count(*) FROM device WHERE state = 'proven'")" 3 "proven rows"
assert_tokens_match_ledger dev-01
prov 0 ledger verify
