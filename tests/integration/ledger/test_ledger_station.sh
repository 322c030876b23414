#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# `provisioner station` (the fixture mode) on the shared ledger (doc/ledger.md, "Fixture
# stations"), its tokens behind `p11-kit server` as in the other ledger tests:
# - the ledger comes from [provisioner] journal (no [station] journal), the password from
#   journal_password; the station's name defaults to the host name, "@" and the instance,
#   and --station overrides it: each names an audit chain of the ledger;
# - the row's lease: a row another station holds a live lease on fails the arrival (exit 6,
#   one line), nothing touches the token; after `ledger release` the next arrival enrolls;
# - a rejected device PIN is remembered beside the manifest, in a file named after the
#   SHA-256 of the ledger's URI (no file named after the URI itself);
# - fencing: a station frozen after its intent past its 2 s lease loses the row to a batch;
#   thawed, it makes no key (the storage holds the batch's identity: exit 5) and its record
#   of the failure is refused: one certificate for the row, the batch's;
# - a batch whose manifest names the same tokens without the module (the config's) finds
#   the station's rows done, on the devices the station recorded;
# - `ledger verify` passes, each token holds exactly the ledger's keys.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../batch/batch_lib.sh"
. "$(dirname "$0")/ledger_lib.sh"
ledger_fixture
sed -i 's|^\[provisioner\]$|[provisioner]\njournal_lease = 2|' "$PROVISIONER_CONFIG"
for t in dev-a dev-b dev-c dev-d dev-e; do
    token_init "$t"
done
declare -A SER
for t in a b c d e; do
    SER[$t]=$(token_serial "dev-$t")
    [ -n "${SER[$t]}" ] || fail "token dev-$t: no serial"
done
p11_server
client=$(sed -n 's/^pkcs11_module = //p' "$PROVISIONER_CONFIG")
# the device as the station names it (device table: the module), so that a batch of the
# same manifest finds each row's certificate on the device the station recorded
{
    echo "serial,device,cn"
    for t in a b c d e; do
        echo "SN-${t^^},pkcs11:serial=${SER[$t]}?module-path=$client,Station ${t^^}"
    done
} >lot.csv
echo "1209:0001  $client  usb-serial  SoftHSM2 behind p11-kit server" >tokens.table
printf '\n[station]\nmanifest = lot.csv\nmode = row-by-identity\ndevice_table = tokens.table\n' \
    >>"$PROVISIONER_CONFIG"
prov 0 ledger init
inst() { echo "usb-1209:0001-${SER[$1]}"; }

# the default name: host name @ instance; the ledger from [provisioner] journal
prov 0 station --instance "$(inst a)"
assert_grep "$PROV_OUT" "serial=SN-A status=issued"
host=$(hostname)
assert_eq "$(pg_q "SELECT count(*) > 0 FROM audit WHERE chain = '$host@$(inst a)'")" t \
    "records in the chain $host@$(inst a)"
assert_eq "$(pg_q "SELECT state FROM device WHERE serial = 'SN-A'")" proven "SN-A in the ledger"
assert_eq "$(pg_q "SELECT done FROM work WHERE serial = 'SN-A'")" t "SN-A's lease ended done"
# --station names it
prov 0 station --instance "$(inst b)" --station line1-st02
assert_grep "$PROV_OUT" "serial=SN-B status=issued"
assert_eq "$(pg_q "SELECT count(*) > 0 FROM audit WHERE chain = 'line1-st02'")" t \
    "records in the chain line1-st02"
# the host-local files are beside the manifest, named after the URI's hash, never the URI
hash=$(printf '%s' "$PG_URI" | sha256sum | cut -c1-16)
[ -e "$WORK/lot.ledger-$hash.ca.lock" ] || fail "no CA lock lot.ledger-$hash.ca.lock: $(ls "$WORK")"
uri_files=$(find "$WORK" -maxdepth 2 \( -name '*postgresql:*' -o -name "*127.0.0.1:$PG_PORT*" \))
[ -z "$uri_files" ] || fail "files named after the ledger's URI: $uri_files"

# a live lease of another station on SN-C: this arrival does nothing, then after release enrolls
pg_q "INSERT INTO work(lot_id, serial, station, token, expires)
      SELECT id, 'SN-C', 'other', nextval('lease_token'), now() + interval '10 minutes' FROM lot
      ON CONFLICT (lot_id, serial) DO UPDATE SET station = excluded.station,
      token = excluded.token, expires = excluded.expires" >/dev/null
before=$(token_objects dev-c | wc -l)
prov 6 station --instance "$(inst c)"
assert_grep "$PROV_OUT" "serial=SN-C status=failed"
assert_grep "$PROV_OUT" "another station holds the row's lease"
assert_eq "$(token_objects dev-c | wc -l)" "$before" "objects on dev-c after the refused arrival"
assert_eq "$(pg_q "SELECT count(*) FROM certificate c JOIN device d ON d.id = c.device_id
                   WHERE d.serial = 'SN-C'")" 0 "SN-C's certificates while leased elsewhere"
prov 0 ledger release --station other
prov 0 station --instance "$(inst c)"
assert_grep "$PROV_OUT" "serial=SN-C status=issued"

# a rejected device PIN: remembered beside the manifest under the URI's hash
write_secret "$WORK/bad.pin" "Wrong-Pin-Value"
prov 3 station --instance "$(inst e)" --pin "file:$WORK/bad.pin"
assert_grep "$PROV_OUT" "status=failed"
assert_file "$WORK/lot.ledger-$hash.pin-rejected.pkcs11_${SER[e]}"
prov 3 station --instance "$(inst e)"
assert_one_error "rejected in an earlier station run" "lot.ledger-$hash.pin-rejected"
rm -f "$WORK"/lot.ledger-"$hash".pin-rejected.*
prov 0 station --instance "$(inst e)"
assert_grep "$PROV_OUT" "serial=SN-E status=issued"


# fencing: frozen past its lease after the intent, its row taken over by a batch
PROVISIONER_TEST_PAUSE_AT="intent:$WORK/pause-d" "$PROVISIONER" station --instance "$(inst d)" \
    --station st-d >log/d.out 2>log/d.err </dev/null &
d_pid=$!
it_track "$d_pid"
wait_file "$WORK/pause-d" "$d_pid" || fail "station d did not reach its intent: $(cat log/d.err)"
kill -STOP "$d_pid"
rm -f "$WORK/pause-d"
assert_eq "$(pg_q "SELECT station FROM work WHERE serial = 'SN-D'")" st-d "SN-D's lease holder"
sleep 3 # past the 2 s lease: the frozen station renews nothing
prov 0 batch lot.csv --station B --jobs 1 --no-progress --results results-b.csv
assert_grep "$PROV_OUT" '^5 rows: 1 issued, 4 already-issued, 0 failed '
kill -CONT "$d_pid"
wait "$d_pid" && rc=0 || rc=$?
# thawed, it finds the batch's identity in the row's storage (exit 5) before it makes a key,
# and its record of that failure is refused: the row is the batch's
assert_eq "$rc" 5 "station d's exit after its lease was taken over ($(cat log/d.err))"
assert_grep log/d.err "serial SN-D: this station's lease on the row was taken over"
assert_grep log/d.err "already holds an identity"
assert_eq "$(pg_q "SELECT count(*) FROM certificate c JOIN device d ON d.id = c.device_id
                   WHERE d.serial = 'SN-D'")" 1 "SN-D's certificates (the frozen station's refused)"
assert_eq "$(pg_q "SELECT state FROM device WHERE serial = 'SN-D'")" proven "SN-D"

assert_eq "$(pg_q "SELECT count(*) FROM device WHERE state = 'proven'")" 5 "proven rows"
assert_eq "$(pg_q "SELECT count(*) FROM certificate")" 5 "certificates"
# each token holds exactly its row's key (the station's device URIs name tokens by serial)
for t in a b c d e; do
    want=$(pg_q "SELECT encode(key_id, 'hex') FROM device WHERE serial = 'SN-${t^^}'")
    for k in privkey pubkey cert; do
        assert_eq "$(token_objects "dev-$t" | awk -v k=$k '$1 == k { print $2 }')" "$want" \
            "dev-$t's $k objects"
    done
done
# the same devices as a manifest written by hand names them (no module-path: the config's
# pkcs11_module): a batch finds every row done on the device the station recorded
sed "s|?module-path=$client||" lot.csv >plain.csv
prov 0 batch plain.csv --station P --jobs 1 --no-progress
assert_grep "$PROV_OUT" '^5 rows: 0 issued, 5 already-issued, 0 failed '
prov 0 ledger verify
