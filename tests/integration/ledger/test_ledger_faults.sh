#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The ledger's database in trouble mid-lot (doc/ledger.md, "Failures: fail closed"):
# - the server stopped right after SN-00001's certificate was recorded: the batch retries
#   with backoff, then exits 6 with one line; no other row touched a device, and only the
#   row whose certificate the ledger holds has storage; with the server back, the same
#   command completes the lot (after `ledger release` of the stopped run's lease), every
#   row once;
# - the station's backend terminated by the server (pg_terminate_backend) mid-row: the
#   store connects again and the lot completes;
# - a unique violation another writer planted (a current certificate of the serial): one
#   line, the rest of the lot issued, no key left over; resumable once it is undone.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../batch/batch_lib.sh"
. "$(dirname "$0")/ledger_lib.sh"
ledger_fixture
make_lot lot.csv 1 4
p11_server
prov 0 ledger init

PROVISIONER_TEST_PAUSE_AT="issued:$WORK/pause" "$PROVISIONER" batch lot.csv --station F --jobs 1 \
    --no-progress >log/away.out 2>log/away.err </dev/null &
pid=$!
it_track "$pid"
wait_file "$WORK/pause" "$pid" || fail "the batch did not reach issued: $(cat log/away.err)"
pg_stop
rm -f "$WORK/pause"
rc=0
wait "$pid" || rc=$?
assert_eq "$rc" 6 "exit with the ledger away ($(cat log/away.err))"
grep -v '^provisioner: warning' log/away.err >log/away.lines || true
assert_eq "$(wc -l <log/away.lines)" 1 "error lines with the ledger away: $(cat log/away.err)"
assert_grep log/away.lines 'the database went away and stayed away'
assert_no_file devices/SN-00002 devices/SN-00003 devices/SN-00004
[ "$(token_objects dev-01 | grep -c '^privkey ')" -le 1 ] ||
    fail "keys generated with the ledger away: $(token_objects dev-01 | tr '\n' ' ')"

pg_run
# the stopped run could not give its lease back: the operator does, or it expires
prov 0 ledger release --station F
assert_grep "$PROV_OUT" 'released 1 leases of station F'
prov 0 batch lot.csv --station F --jobs 1 --no-progress
assert_grep "$PROV_OUT" '^4 rows: 4 issued, 0 already-issued, 0 failed '
assert_eq "$(pg_q "SELECT count(*) FROM device WHERE state = 'proven'")" 4 "proven rows"
assert_eq "$(pg_q "SELECT count(*) FROM certificate")" 4 "certificates"
assert_tokens_match_ledger dev-01

# The backend terminated under the station, mid-row.
make_lot lot2.csv 0 0
printf 'SN-20001,pkcs11:token=dev-01,,dev-01\nSN-20002,pkcs11:token=dev-01,,dev-01\n' >>lot2.csv
PROVISIONER_TEST_PAUSE_AT="intent:$WORK/pause2" "$PROVISIONER" batch lot2.csv --jobs 1 \
    --no-progress >log/cut.out 2>log/cut.err </dev/null &
pid=$!
it_track "$pid"
wait_file "$WORK/pause2" "$pid" || fail "the batch did not reach intent: $(cat log/cut.err)"
assert_eq "$(pg_q "SELECT count(pg_terminate_backend(pid)) > 0 FROM pg_stat_activity
                   WHERE application_name = 'provisioner'")" t "backends terminated"
rm -f "$WORK/pause2"
while kill -0 "$pid" 2>/dev/null && [ ! -e "$WORK/pause2" ]; do sleep 0.1; done
rm -f "$WORK/pause2"
rc=0
wait "$pid" || rc=$?
assert_eq "$rc" 0 "exit after the backend was terminated ($(cat log/cut.err))"
assert_grep log/cut.out '^2 rows: 2 issued, 0 already-issued, 0 failed '
assert_grep log/cut.err 'connected again'
assert_tokens_match_ledger dev-01
prov 0 ledger verify

# A unique violation planted by "another writer": a current certificate of this CA for
# SN-30002 recorded in another lot. The row's certificate is refused by the database with
# one line, the rest of the lot is issued, no key is left over; with the planted record
# gone (the other writer's mistake undone), the same command completes the row.
make_lot lot3.csv 0 0
printf 'SN-30001,pkcs11:token=dev-01,,dev-01\nSN-30002,pkcs11:token=dev-01,,dev-01\n' >>lot3.csv
pg_q "INSERT INTO lot(name, created) VALUES ('planted', 'now');
      INSERT INTO device(lot_id, serial, device_uri, state, updated)
      SELECT id, 'SN-30002', 'pkcs11:token=elsewhere', 'issued', 'now' FROM lot WHERE name = 'planted';
      INSERT INTO certificate(device_id, device_serial, issuer, cert_serial, pubkey_sha256, sha256,
          not_after, key_id, der, issued)
      SELECT d.id, 'SN-30002', c.issuer, 'ff0001', 'planted', c.sha256, c.not_after, c.key_id,
          c.der, 'now' FROM device d, (SELECT * FROM certificate ORDER BY id LIMIT 1) c
      WHERE d.serial = 'SN-30002'" >/dev/null
prov 1 batch lot3.csv --jobs 1 --no-progress
assert_grep "$PROV_OUT" '^2 rows: 1 issued, 0 already-issued, 1 failed '
assert_one_error 'SN-30002' 'already has a current certificate of this issuer'
assert_tokens_match_ledger dev-01
pg_q "DELETE FROM certificate WHERE pubkey_sha256 = 'planted';
      DELETE FROM device WHERE device_uri = 'pkcs11:token=elsewhere'" >/dev/null
prov 0 batch lot3.csv --jobs 1 --no-progress
assert_grep "$PROV_OUT" '^2 rows: 1 issued, 1 already-issued, 0 failed '
assert_tokens_match_ledger dev-01
prov 0 ledger verify
