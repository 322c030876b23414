#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Failover mid-lot (doc/ledger.md, "High availability"): a primary and a synchronous
# streaming standby on this machine, the station on a two-host URI with
# target_session_attrs=read-write. The station pauses right after a row's intent is
# committed; the test stops the primary and promotes the standby; the station connects to
# the new primary and the lot completes there: nothing lost, nothing doubled, the tokens
# hold exactly the ledger's keys and the audit verifies.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../batch/batch_lib.sh"
. "$(dirname "$0")/ledger_lib.sh"
it_setup
batch_ca
pg_start primary
pg_standby
PG_URI=$PG_URI2
ledger_config
make_lot lot.csv 1 4
p11_server
prov 0 ledger init

PROVISIONER_TEST_PAUSE_AT="intent:$WORK/pause" "$PROVISIONER" batch lot.csv --station F \
    --jobs 1 --no-progress >log/f.out 2>log/f.err </dev/null &
pid=$!
it_track "$pid"
wait_file "$WORK/pause" "$pid" || fail "the batch did not reach an intent: $(cat log/f.err)"
# what the primary committed is on the standby already (synchronous commit)
pg_failover
assert_eq "$(pg_q "SELECT count(*) FROM device WHERE state = 'intent'")" 1 \
    "the committed intent on the promoted standby"
rm -f "$WORK/pause"
# the hook pauses at every intent: let the others through
while kill -0 "$pid" 2>/dev/null; do
    rm -f "$WORK/pause"
    sleep 0.1
done
rc=0
wait "$pid" || rc=$?
assert_eq "$rc" 0 "the station's exit after the failover ($(cat log/f.err))"
assert_grep log/f.out '^4 rows: 4 issued, 0 already-issued, 0 failed '
assert_grep log/f.err 'connected again'
assert_eq "$(pg_q "SELECT count(*) FROM device WHERE state = 'proven'")" 4 "proven rows on the new primary"
assert_eq "$(pg_q "SELECT count(*) FROM certificate")" 4 "certificates"
assert_tokens_match_ledger dev-01
prov 0 ledger verify
