#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# `batch --reissue` of a finished row on the ledger takes the row's lease and is fenced
# (doc/ledger.md, "Work distribution"): station A reissues SN-00001 and is held right after
# its intent; station B, reissuing the same serial meanwhile, finds the row leased (counted
# elsewhere) and makes nothing; A completes. Exactly one new certificate: the serial has
# two certificates, one superseded, and the token holds exactly the ledger's key.
# `enroll --reissue` of a row another station holds is refused until the lease is released.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../batch/batch_lib.sh"
. "$(dirname "$0")/ledger_lib.sh"
ledger_lot 1 2
prov 0 batch lot.csv --station A --no-progress
assert_grep "$PROV_OUT" '^2 rows: 2 issued, 0 already-issued, 0 failed '
assert_eq "$(pg_q "SELECT done FROM work WHERE serial = 'SN-00001'")" t "SN-00001 finished"

PROVISIONER_TEST_PAUSE_AT="intent:$WORK/pause-a" "$PROVISIONER" batch lot.csv --station A \
    --reissue SN-00001 --jobs 1 --no-progress --results results-a.csv \
    >log/a.out 2>log/a.err </dev/null &
a_pid=$!
it_track "$a_pid"
wait_file "$WORK/pause-a" "$a_pid" || fail "station A did not reach its intent: $(cat log/a.err)"
assert_eq "$(pg_q "SELECT station || ' ' || done FROM work WHERE serial = 'SN-00001'")" \
    "A false" "SN-00001's lease while A reissues it"
prov 0 batch lot.csv --station B --reissue SN-00001 --no-progress --results results-b.csv
assert_grep "$PROV_OUT" '^2 rows: 0 issued, 1 already-issued, 0 failed, 1 elsewhere '
rm -f "$WORK/pause-a"
wait "$a_pid" && rc=0 || rc=$?
assert_eq "$rc" 0 "station A's reissue ($(cat log/a.err))"
assert_grep log/a.out '^2 rows: 1 issued, 1 already-issued, 0 failed '
assert_eq "$(pg_q "SELECT count(*) FROM certificate WHERE device_serial = 'SN-00001'")" 2 \
    "SN-00001's certificates (the first and one reissue)"
assert_eq "$(pg_q "SELECT count(*) FROM certificate WHERE device_serial = 'SN-00001'
                   AND superseded IS NULL")" 1 "SN-00001's current certificates"
assert_eq "$(pg_q "SELECT done FROM work WHERE serial = 'SN-00001'")" t "SN-00001 finished again"
assert_tokens_match_ledger dev-01
prov 0 ledger verify

# `enroll --reissue` of a serial the ledger has a row for takes that row's lease while it
# works: refused (one line naming the station) while another station holds it, nothing
# written to the device; once the lease is released it reissues and gives the lease back.
pg_q "UPDATE work SET station = 'st-x', token = nextval('lease_token'),
      expires = now() + interval '1 hour', done = false WHERE serial = 'SN-00002'" >/dev/null
before=$(sha256sum <devices/SN-00002/client.der)
prov 6 enroll --serial SN-00002 --device pkcs11:token=dev-01 --reissue
assert_one_error 'SN-00002' 'station st-x'
assert_eq "$(sha256sum <devices/SN-00002/client.der)" "$before" "SN-00002's storage while st-x holds it"
prov 0 ledger release --station st-x
prov 0 enroll --serial SN-00002 --device pkcs11:token=dev-01 --reissue
[ "$(sha256sum <devices/SN-00002/client.der)" != "$before" ] || fail "enroll --reissue kept the certificate"
assert_eq "$(pg_q "SELECT coalesce(station, '-') || ' ' || done FROM work WHERE serial = 'SN-00002'")" \
    "- true" "SN-00002's lease after enroll --reissue"
