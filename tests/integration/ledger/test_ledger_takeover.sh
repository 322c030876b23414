#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Leases taken over, and fencing (doc/ledger.md, "Work distribution"); journal_lease = 2 s:
# - station A records SN-00001's intent and is frozen (SIGSTOP) before its key exists; its
#   lease runs out; station B takes the row over and issues the lot; A, thawed, generates its
#   key and has its certificate refused by the ledger (its token is not the row's any more):
#   one line, exit 1, no second certificate, and the lot is B's, exactly once;
# - (journal_lease = 60 s) station C is killed (-9) with SN-00003's certificate recorded but not stored; `ledger
#   release --station C` hands its row over at once; D completes it from the ledger;
# - two stations on one device meet in the middle: F, finding the first row E's, takes the
#   others from the end, and E does not read back the rows F finished while it ran.
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
# SN-00002, finished by B while A ran, is B's to answer for: not read back by A
assert_grep log/a.out '^2 rows: 0 issued, 0 already-issued, 1 failed, 1 elsewhere '
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

# A device two stations share: F, finding its first row E's, takes the rest from the end
# (doc/ledger.md, "Work distribution"); E, resumed, finds them finished by F while it ran.
token_init dev-09
{
    echo "serial,device,cn,x_token"
    for i in 1 2 3 4; do printf 'WK-%05d,pkcs11:token=dev-09,,dev-09\n' "$i"; done
} >walk.csv
PROVISIONER_TEST_PAUSE_AT="intent:$WORK/pause-e" "$PROVISIONER" batch walk.csv --station E \
    --jobs 1 --no-progress --results results-e.csv >log/e.out 2>log/e.err </dev/null &
e_pid=$!
it_track "$e_pid"
wait_file "$WORK/pause-e" "$e_pid" || fail "station E did not reach its intent: $(cat log/e.err)"
prov 0 batch walk.csv --station F --jobs 1 --no-progress --results results-f.csv
assert_grep "$PROV_OUT" '^4 rows: 3 issued, 0 already-issued, 0 failed, 1 elsewhere '
assert_eq "$(pg_q "SELECT string_agg(serial, ' ' ORDER BY seq) FROM audit WHERE chain = 'F'
                   AND event = 'intent'")" "WK-00004 WK-00003 WK-00002" "F's rows, in its order"
rm -f "$WORK/pause-e"
wait "$e_pid" && rc=0 || rc=$?
assert_eq "$rc" 0 "station E ($(cat log/e.err))"
assert_grep log/e.out '^4 rows: 1 issued, 0 already-issued, 0 failed, 3 elsewhere '
assert_eq "$(pg_q "SELECT string_agg(coalesce(done_by, '-'), ' ' ORDER BY serial) FROM work
                   WHERE serial LIKE 'WK-%'")" "E F F F" "who finished the rows"
assert_tokens_match_ledger dev-09
prov 0 ledger verify
