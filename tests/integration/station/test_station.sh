#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The station on SoftHSM2 tokens, started as systemd starts provisioner-station@.service
# (udev/): the unit's environment and ExecStart with the instance name udev gives a USB
# token, usb-VVVV:PPPP-SERIAL, mapped to the SoftHSM2 module by a device table.
# - arrival: the token is identified by its serial, its manifest row (row-by-identity) is
#   enrolled and proven, one result line; again: already-issued, nothing new issued;
# - removal mid-enrollment (token directory moved away at the intent and at the issued
#   boundary, through PROVISIONER_TEST_PAUSE_AT): exit 4, the journal says failed; after
#   the token is back, the same unit succeeds; certificates issued exactly once, the token
#   holds exactly the journal's key, storage passes `check`;
# - two stations at once, one held right after its intent: the other finishes meanwhile;
# - next-free mode: rows handed out in manifest order, a returning token keeps its row, a
#   token too many is refused (exit 5);
# - a rejected device or CA PIN is not sent again by a later station, nor by one that was
#   waiting for the CA at the same time, and a rejected PIN source not to the next station's
#   token either;
# - a token not attached yet when the unit starts: waited for within [station] device_wait
#   (exit 4 saying so when it never comes), enrolled when it comes meanwhile;
# - a device in [station] exclude (the station PC's own TPM): status excluded, exit 0,
#   nothing claimed or touched;
# - SIGTERM (systemctl stop) right after the row's intent: exit 1, no key made, the next
#   arrival enrolls;
# - bad instance names, unlisted tokens, a bad --prove URL, a manifest with a bad column and
#   one naming the token twice: refused with exit 2 before any token is changed (the proof
#   itself: test_station_prove.sh).
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/station_lib.sh"
. "$(dirname "$0")/../batch/batch_lib.sh" # token_objects
it_setup
need sqlite3
ca_fixture pkcs11
for t in dev-a dev-b dev-c dev-d dev-e dev-f dev-g; do
    token_init "$t"
done
SER_A=$(token_serial dev-a)
SER_B=$(token_serial dev-b)
SER_C=$(token_serial dev-c)
SER_D=$(token_serial dev-d)
SER_E=$(token_serial dev-e)
[ -n "$SER_A" ] && [ "$SER_A" != "$SER_B" ] || fail "token serials not readable"
{
    echo "serial,device,cn"
    echo "SN-A,pkcs11:serial=$SER_A,Station A"
    echo "SN-B,pkcs11:serial=$SER_B,"
    echo "SN-C,pkcs11:serial=$SER_C,"
    echo "SN-D,pkcs11:serial=$SER_D,"
    echo "SN-E,pkcs11:serial=$SER_E,"
    echo "SN-X,pkcs11:serial=0000000000000000,"
} >lot.csv
station_config mode=row-by-identity device_table=tokens.table

# json1 FILE KEY: a string value of the one-line JSON object the station prints.
json1() {
    grep -o "\"$2\":\"[^\"]*\"" "$1" | head -n1 | cut -d'"' -f4
}

# token_keys LABEL: "TYPE ID" of every object on the token (batch_lib.sh's token_objects:
# objects without an ID too), sorted.
token_keys() {
    local out
    out=$(token_objects "$1") || exit 1
    [ -z "$out" ] || printf '%s\n' "$out" | sort
}

# assert_token_is_journal LABEL SERIAL: the token holds exactly the key (private, public,
# certificate) of the journal's proven row: no orphan of an interrupted attempt.
assert_token_is_journal() {
    local id
    id=$(jq_ "SELECT lower(hex(key_id)) FROM device WHERE serial = '$2' AND state = 'proven'")
    [ -n "$id" ] || fail "$2: not proven in the journal"
    printf 'cert %s\nprivkey %s\npubkey %s\n' "$id" "$id" "$id" >"$WORK/log/want-$1"
    token_keys "$1" >"$WORK/log/got-$1"
    cmp -s "$WORK/log/want-$1" "$WORK/log/got-$1" ||
        fail "token $1: objects are not the journal's key $id: $(tr '\n' ' ' <"$WORK/log/got-$1")"
}

# assert_issued SERIAL: the result line's certificate is the one in storage and the journal.
assert_issued() {
    local dir=$WORK/devices/$1 cs
    cs=$(openssl x509 -in "$dir/client.crt" -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f')
    [ "$(field cert_serial | sed 's/^0*//')" = "$(echo "$cs" | sed 's/^0*//')" ] ||
        fail "$1: result cert_serial $(field cert_serial) is not client.crt's $cs"
    assert_eq "$(field sha256)" "$(openssl x509 -in "$dir/client.crt" -outform DER |
        sha256sum | cut -c1-64)" "$1: result sha256"
    assert_eq "$(jq_ "SELECT state FROM device WHERE serial = '$1'")" proven "$1: journal state"
    prov 0 check "$dir"
}

# --- arrival ------------------------------------------------------------------------------
unit_run "usb-1209:0001-$SER_A" 0
assert_result instance="usb-1209:0001-$SER_A" serial=SN-A status=issued \
    identity="pkcs11:$SER_A" storage="$WORK/devices/SN-A" \
    device="pkcs11:serial=$SER_A?module-path=$SOFTHSM_MODULE"
assert_issued SN-A
assert_eq "$(openssl x509 -in devices/SN-A/client.crt -noout -subject -nameopt RFC2253)" \
    "subject=CN=Station A" "SN-A subject (from the manifest row)"
assert_token_is_journal dev-a SN-A
first=$(field cert_serial)
unit_run "usb-1209:0001-$SER_A" 0
assert_result serial=SN-A status=already-issued cert_serial="$first"
assert_eq "$(jq_ "SELECT count(*) FROM certificate")" 1 "certificates after a second arrival"
prov 0 station --instance "usb-1209:0001-$SER_A" --json
assert_eq "$(wc -l <"$PROV_OUT")" 1 "--json: lines on stdout"
assert_eq "$(json1 "$PROV_OUT" status)" already-issued "--json status"
assert_eq "$(json1 "$PROV_OUT" cert_serial)" "$first" "--json cert_serial"
assert_eq "$(json1 "$PROV_OUT" storage)" "$WORK/devices/SN-A" "--json storage"

# --- removal mid-enrollment ---------------------------------------------------------------
# remove_at STATE LABEL TOKEN_SERIAL SERIAL: the station for the token pauses right after
# the journal records STATE; the token directory is moved away (unplugged); the station must
# fail with exit 4 and the journal must say failed. The token is plugged back in afterwards.
remove_at() {
    local state=$1 label=$2 ser=$3 dir
    dir=$(token_dir "$label")
    UNIT_EXTRA_ENV=("PROVISIONER_TEST_PAUSE_AT=$state:$WORK/pause")
    unit_start "usb-1209:0001-$ser"
    UNIT_EXTRA_ENV=()
    station_wait_file "$WORK/pause" "$UNIT_PID"
    mv "$dir" "$WORK/unplugged"
    rm -f "$WORK/pause"
    unit_wait 4
    assert_result status=failed serial="$4"
    assert_grep "$UNIT_OUT" "status=failed .*reason=\"device removed mid-enrollment: "
    assert_grep "$UNIT_ERR" "^provisioner: "
    assert_eq "$(jq_ "SELECT state FROM device WHERE serial = '$4'")" failed "$4 after removal"
    mv "$WORK/unplugged" "$dir"
}
remove_at intent dev-b "$SER_B" SN-B
assert_eq "$(jq_ "SELECT count(*) FROM certificate c JOIN device d ON d.id = c.device_id
                  WHERE d.serial = 'SN-B'")" 0 "SN-B certificates after removal at intent"
unit_run "usb-1209:0001-$SER_B" 0
assert_result serial=SN-B status=issued
assert_issued SN-B
assert_token_is_journal dev-b SN-B

remove_at issued dev-c "$SER_C" SN-C
issued_c=$(jq_ "SELECT c.cert_serial FROM certificate c JOIN device d ON d.id = c.device_id
                WHERE d.serial = 'SN-C'")
[ -n "$issued_c" ] || fail "SN-C: no certificate recorded before the removal"
unit_run "usb-1209:0001-$SER_C" 0
assert_result serial=SN-C status=issued cert_serial="$issued_c"
assert_issued SN-C
assert_token_is_journal dev-c SN-C
assert_eq "$(jq_ "SELECT count(*) FROM certificate c JOIN device d ON d.id = c.device_id
                  WHERE d.serial = 'SN-C'")" 1 "SN-C certified once across the removal"

# --- two stations, one slow ---------------------------------------------------------------
# D is held right after its intent (a slow device); E arrives at another fixture slot
# meanwhile and must be enrolled while D still waits.
UNIT_EXTRA_ENV=("PROVISIONER_TEST_PAUSE_AT=intent:$WORK/hold-d")
unit_start "usb-1209:0001-$SER_D"
UNIT_EXTRA_ENV=()
slow_pid=$UNIT_PID
slow_out=$UNIT_OUT
station_wait_file "$WORK/hold-d" "$slow_pid"
unit_run "usb-1209:0001-$SER_E" 0
assert_result serial=SN-E status=issued
kill -0 "$slow_pid" 2>/dev/null || fail "the slow station ended before it was released"
[ -e "$WORK/hold-d" ] || fail "the slow station went on before it was released"
rm -f "$WORK/hold-d"
UNIT_PID=$slow_pid
UNIT_OUT=$slow_out
UNIT_ERR=${slow_out%.out}.err
unit_wait 0
assert_result serial=SN-D status=issued
assert_issued SN-D
unit_run "usb-1209:0001-$SER_E" 0
assert_issued SN-E

# --- journal consistency --------------------------------------------------------------------
assert_eq "$(jq_ "SELECT count(*) FROM certificate")" 5 "certificates (A B C D E, once each)"
assert_eq "$(jq_ "SELECT count(DISTINCT pubkey_sha256) FROM certificate")" 5 "distinct keys"
assert_eq "$(jq_ "SELECT count(*) FROM device WHERE state <> 'proven'")" 0 "rows not proven"
assert_eq "$(jq_ "SELECT count(*) FROM station_claim")" 5 "claims"
for t in a b c d e; do
    assert_token_is_journal "dev-$t" "SN-$(echo "$t" | tr a-z A-Z)"
done
prov 0 batch report --journal "$JOURNAL" --verify-audit

# --- next-free ------------------------------------------------------------------------------
sed 's/^mode = row-by-identity/mode = next-free/; s/^manifest = lot.csv/manifest = nf.csv/
     s/^journal = lot.journal.sqlite/journal = nf.journal.sqlite/' provisioner.cnf >nf.cnf
printf 'serial,device\nNF-1,pkcs11:\nNF-2,pkcs11:\n' >nf.csv
sed -i "s|^PROVISIONER_CONFIG=.*|PROVISIONER_CONFIG=$WORK/nf.cnf|" station.env
unit_run "usb-1209:0001-$(token_serial dev-f)" 0
assert_result serial=NF-1 status=issued
unit_run "usb-1209:0001-$(token_serial dev-g)" 0
assert_result serial=NF-2 status=issued
unit_run "usb-1209:0001-$(token_serial dev-f)" 0
assert_result serial=NF-1 status=already-issued
unit_run "usb-1209:0001-$SER_A" 5
assert_result status=failed
assert_grep "$UNIT_ERR" "no free row left"
JOURNAL=$WORK/nf.journal.sqlite
assert_token_is_journal dev-f NF-1
assert_token_is_journal dev-g NF-2
sed -i "s|^PROVISIONER_CONFIG=.*|PROVISIONER_CONFIG=$WORK/provisioner.cnf|" station.env

# --- refusals -------------------------------------------------------------------------------
before=$(tree_digest softhsm/tokens)
unit_run "sdb1" 2
assert_grep "$UNIT_ERR" "instance sdb1: expected tpmrmN or usb-VVVV:PPPP-SERIAL"
unit_run "usb-dead:beef-$SER_A" 2
assert_grep "$UNIT_ERR" "dead:beef is not listed"
prov 2 station --instance "usb-1209:0001-$SER_A" --prove "mqtt://127.0.0.1:1"
assert_one_error "mqtt://127.0.0.1:1"
prov 2 station
assert_one_error "--instance"
# a bad manifest, and two rows naming one device, are manifest errors: exit 2, as for batch
printf 'serial,device,colour\nSN-X,pkcs11:serial=%s,red\n' "$SER_A" >bad.csv
prov 2 station --instance "usb-1209:0001-$SER_A" --manifest bad.csv --journal bad.journal.sqlite
assert_grep "$PROV_ERR" "bad.csv:1:"
printf 'serial,device\nSN-X,pkcs11:serial=%s\nSN-Y,pkcs11:serial=%s\n' "$SER_A" "$SER_A" >twice.csv
prov 2 station --instance "usb-1209:0001-$SER_A" --manifest twice.csv --journal twice.journal.sqlite
assert_one_error "2 rows of"
assert_eq "$(tree_digest softhsm/tokens)" "$before" "tokens after refused stations"

# --- a rejected PIN is never tried again by a later station run ---------------------------
token_init dev-h
SER_H=$(token_serial dev-h)
echo "SN-H,pkcs11:serial=$SER_H," >>lot.csv
write_secret "$WORK/bad.pin" "Wrong-Pin-Value"
prov 3 station --instance "usb-1209:0001-$SER_H" --pin "file:$WORK/bad.pin"
assert_grep "$PROV_OUT" "status=failed"
marker=$WORK/lot.journal.sqlite.pin-rejected.pkcs11_$SER_H
assert_file "$marker"
prov 3 station --instance "usb-1209:0001-$SER_H"
assert_one_error "rejected in an earlier station run" "$marker"
rm -f "$marker"
prov 0 station --instance "usb-1209:0001-$SER_H"
assert_grep "$PROV_OUT" "serial=SN-H status=issued"
# The PIN source dev-h rejected is not sent to the next station's token either: that station
# fails (exit 3) naming the marker, and its token spends no try. An operator fixes the PIN
# file, removes the marker, and the station enrolls.
token_init dev-i
SER_I=$(token_serial dev-i)
echo "SN-I,pkcs11:serial=$SER_I," >>lot.csv
prov 3 station --instance "usb-1209:0001-$SER_I" --pin "file:$WORK/bad.pin"
assert_one_error "not tried" "file:$WORK/bad.pin" "dev-h" "$WORK/lot.journal.sqlite.pin-rejected.source-"
token_info dev-i >"$WORK/log/dev-i.flags" || exit 1
assert_no_grep "$WORK/log/dev-i.flags" 'count low' "dev-i spent a PIN try"
write_secret "$WORK/bad.pin" "$DEV_PIN_VALUE"
prov 3 station --instance "usb-1209:0001-$SER_I" --pin "file:$WORK/bad.pin"
assert_one_error "not tried" "remove that file"
rm -f "$WORK"/lot.journal.sqlite.pin-rejected.source-*
prov 0 station --instance "usb-1209:0001-$SER_I" --pin "file:$WORK/bad.pin"
assert_grep "$PROV_OUT" "serial=SN-I status=issued"
# the same for the CA token's PIN, which every station of the line logs in with
sed "s|^pin = file:ca.pin|pin = file:$WORK/bad.pin|" provisioner.cnf >badca.cnf
PROVISIONER_CONFIG=$WORK/badca.cnf prov 3 station --instance "usb-1209:0001-$SER_A"
assert_file "$WORK/lot.journal.sqlite.pin-rejected.ca"
prov 3 station --instance "usb-1209:0001-$SER_A"
assert_one_error "[ca] pin was rejected in an earlier station run"
rm -f "$WORK"/lot.journal.sqlite.pin-rejected.*
# Two stations that arrive together with a wrong CA PIN: one login is refused, the other
# station must not try the same PIN (both wait on the CA lock, held here until both do).
ca_lock=$WORK/lot.journal.sqlite.ca.lock
: >>"$ca_lock"
exec {lock_fd}>>"$ca_lock"
flock "$lock_fd"
pids=()
for t in A B; do
    ser=SER_$t
    PROVISIONER_CONFIG=$WORK/badca.cnf "$PROVISIONER" station \
        --instance "usb-1209:0001-${!ser}" >"$WORK/log/ca-race-$t.out" \
        2>"$WORK/log/ca-race-$t.err" </dev/null {lock_fd}>&- &
    pids+=($!)
    it_track "$!"
done
inode=$(stat -c %i "$ca_lock")
for ((i = 0; i < 200; i++)); do
    [ "$(grep -c -- "-> FLOCK .*:$inode " /proc/locks)" -ge 2 ] && break
    sleep 0.1
done
[ "$i" -lt 200 ] || fail "the two stations never both waited on $ca_lock"
exec {lock_fd}>&-
for pid in "${pids[@]}"; do
    rc=0
    wait "$pid" || rc=$?
    assert_eq "$rc" 3 "station with a wrong CA PIN, arriving together: exit"
done
race_err=$(cat "$WORK"/log/ca-race-?.err) || fail "the racing stations left no stderr"
assert_eq "$(count_re 'rejected in an earlier station run' <<<"$race_err")" 1 \
    "stations that did not send the rejected CA PIN again"
assert_file "$WORK/lot.journal.sqlite.pin-rejected.ca"
rm -f "$WORK"/lot.journal.sqlite.pin-rejected.*
prov 0 station --instance "usb-1209:0001-$SER_A"
assert_grep "$PROV_OUT" "serial=SN-A status=already-issued"

# --- a token the system has not attached yet: the station waits for it, within a bound -----
JOURNAL=$WORK/lot.journal.sqlite
token_init dev-w
SER_W=$(token_serial dev-w)
echo "SN-W,pkcs11:serial=$SER_W," >>lot.csv
w_dir=$(token_dir dev-w)
mv "$w_dir" "$WORK/not-attached"
# it never comes within [station] device_wait = 1: exit 4 saying so, nothing claimed
sed '/^\[station\]$/a device_wait = 1' provisioner.cnf >wait1.cnf
PROVISIONER_CONFIG=$WORK/wait1.cnf prov 4 station --instance "usb-1209:0001-$SER_W"
assert_one_error "serial=$SER_W" "still after waiting 1 s for it: [station] device_wait"
assert_grep "$PROV_OUT" "status=failed"
assert_eq "$(jq_ "SELECT count(*) FROM station_claim WHERE serial = 'SN-W'")" 0 "SN-W claims"
# it comes while the unit waits (the default bound, raised here for a loaded machine): the
# station sees it without being started again, and enrolls it
sed '/^\[station\]$/a device_wait = 120' provisioner.cnf >wait120.cnf
UNIT_EXTRA_ENV=("PROVISIONER_CONFIG=$WORK/wait120.cnf" "PROVISIONER_DEBUG=station")
unit_start "usb-1209:0001-$SER_W"
UNIT_EXTRA_ENV=()
for ((i = 0; i < 600; i++)); do
    grep -q 'not there yet' "$UNIT_ERR" && break
    kill -0 "$UNIT_PID" 2>/dev/null || break
    sleep 0.1
done
grep -q 'not there yet' "$UNIT_ERR" || fail "the station did not wait for the token: $(head -c 300 "$UNIT_ERR")"
mv "$WORK/not-attached" "$w_dir"
unit_wait 0
assert_result serial=SN-W status=issued
assert_token_is_journal dev-w SN-W

# --- a device the station must never serve: the station PC's own TPM, or a listed token ----
sed "/^\[station\]$/a exclude = tpm2:0123abcd, pkcs11:$SER_W" provisioner.cnf >exclude.cnf
before=$(tree_digest softhsm/tokens)
claims=$(jq_ "SELECT count(*) FROM station_claim")
PROVISIONER_CONFIG=$WORK/exclude.cnf prov 0 station --instance "usb-1209:0001-$SER_W"
assert_grep "$PROV_OUT" "^station instance=usb-1209:0001-$SER_W .*identity=pkcs11:$SER_W status=excluded reason=\"\[station\] exclude lists this device; not served\"$"
[ ! -s "$PROV_ERR" ] || fail "an excluded device is not an error: $(head -c 300 "$PROV_ERR")"
assert_eq "$(jq_ "SELECT count(*) FROM station_claim")" "$claims" "claims after an excluded device"
assert_eq "$(tree_digest softhsm/tokens)" "$before" "tokens after an excluded device"

# --- systemctl stop (SIGTERM) right after the row's intent: stopped before the key is made --
token_init dev-j
SER_J=$(token_serial dev-j)
echo "SN-J,pkcs11:serial=$SER_J," >>lot.csv
UNIT_EXTRA_ENV=("PROVISIONER_TEST_PAUSE_AT=intent:$WORK/hold-j")
unit_start "usb-1209:0001-$SER_J"
UNIT_EXTRA_ENV=()
station_wait_file "$WORK/hold-j" "$UNIT_PID"
kill -TERM "$UNIT_PID"
rm -f "$WORK/hold-j"
unit_wait 1
assert_result serial=SN-J status=failed
assert_grep "$UNIT_ERR" "^provisioner: serial SN-J: interrupted by SIGTERM before its key was generated"
assert_eq "$(wc -l <"$UNIT_ERR")" 1 "stderr lines of the stopped station"
assert_eq "$(token_keys dev-j | wc -l)" 0 "objects on dev-j after the stop"
unit_run "usb-1209:0001-$SER_J" 0
assert_result serial=SN-J status=issued
assert_eq "$(token_keys dev-j | wc -l)" 3 "objects on dev-j (key pair, certificate)"
