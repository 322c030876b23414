#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The CA's own token is never used as a device: no login as a device, no key made on it.
# Where the URI alone shows it (the same token label as [ca] intermediate_key) `enroll`,
# `csr` and a manifest row are refused before anything starts (exit 2); where only the opened
# token shows it (named by its serial) `enroll`, `csr`, `install`, a batch row and a station
# are refused by the token's identity before the login (exit 5; a batch row fails). After
# every case the CA token's objects are what `ca init` made, and (pkcs11-spy) no C_Login but
# the CA's own was sent.
. "$(dirname "$0")/lib.sh"
it_setup
need pkcs11-tool sqlite3

ca_fixture pkcs11
token_init dev-t
ca_serial=$(token_serial provisioner-ca)
[ -n "$ca_serial" ] || fail "token provisioner-ca: no serial"
ca_objects() {
    p11 provisioner-ca "$CA_PIN_VALUE" --list-objects 2>/dev/null
}
ca_objects >"$WORK/log/ca-objects.before"
assert_ca_untouched() {
    ca_objects >"$WORK/log/ca-objects.now"
    assert_same_file "$WORK/log/ca-objects.now" "$WORK/log/ca-objects.before" \
        "objects on the CA token after: $1"
}
SPY=$(libdir_file pkcs11-spy.so)
need_file "$SPY"
sed "s|^pkcs11_module = .*|pkcs11_module = $SPY|" provisioner.cnf >spy.cnf
# logins RUN...: the provisioner through pkcs11-spy; prints how many C_Login it sent
spy_run() {
    local want=$1
    shift
    rm -f "$WORK/log/spy.log"
    PKCS11SPY=$SOFTHSM_MODULE PKCS11SPY_OUTPUT=$WORK/log/spy.log prov "$want" --config spy.cnf "$@"
}
logins() {
    count_re '^[0-9]+: C_Login$' "$WORK/log/spy.log"
}

# ---- by URI: the CA token's label, before anything starts --------------------------------
it_log "case: --device with the CA token's label"
prov 2 enroll --serial SN-CA-1 --device pkcs11:token=provisioner-ca
assert_one_error "pkcs11:token=provisioner-ca" "CA"
assert_no_file devices/SN-CA-1
prov 2 csr --serial SN-CA-2 --device 'pkcs11:token=provisioner-ca;manufacturer=SoftHSM%20project' \
    --out ca2.csr
assert_one_error "CA"
assert_no_file ca2.csr
assert_ca_untouched "refused by URI"
printf 'serial,device\nSN-CA-3,pkcs11:token=dev-t\nSN-CA-4,pkcs11:token=provisioner-ca\n' >by-uri.csv
prov 2 batch by-uri.csv --no-progress
assert_grep "$PROV_ERR" '^by-uri.csv:3:[0-9]+: device pkcs11:token=provisioner-ca names the CA' "the manifest row naming the CA token"
assert_no_file devices/SN-CA-3
assert_eq "$(token_list dev-t "$DEV_PIN_VALUE" | count_re Object)" 0 \
    "objects on dev-t after a refused manifest"
# another token of the same module is not the CA's
prov 0 enroll --serial SN-OK-1 --device pkcs11:token=dev-t

# ---- by identity: the CA token named by its serial -----------------------------------------
it_log "case: --device with the CA token's serial"
spy_run 5 enroll --serial SN-CA-5 --device "pkcs11:serial=$ca_serial"
assert_one_error "provisioner-ca" "CA"
assert_eq "$(logins)" 1 "C_Login calls (the CA's own only)"
assert_no_file devices/SN-CA-5
spy_run 5 csr --serial SN-CA-6 --device "pkcs11:serial=$ca_serial" --out ca6.csr
assert_one_error "provisioner-ca" "CA"
assert_eq "$(logins)" 0 "C_Login calls of csr on the CA token"
assert_no_file ca6.csr
prov 0 csr --serial SN-CA-7 --device pkcs11:token=dev-t --out ca7.csr
prov 0 sign --serial SN-CA-7 --csr ca7.csr --out ca7.pem
spy_run 5 install --serial SN-CA-7 --device "pkcs11:serial=$ca_serial" --cert ca7.pem
assert_one_error "provisioner-ca" "CA"
assert_eq "$(logins)" 0 "C_Login calls of install on the CA token"
assert_no_file devices/SN-CA-7
assert_ca_untouched "refused by identity"

it_log "case: a batch row with the CA token's serial"
printf 'serial,device\nSN-CA-8,pkcs11:serial=%s\n' "$ca_serial" >by-id.csv
spy_run 1 batch by-id.csv --no-progress
assert_eq "$(logins)" 1 "C_Login calls of the batch (the CA's own only)"
assert_grep by-id.results.csv '^SN-CA-8,failed,.*CA' "the row on the CA token failed"
assert_ca_untouched "a batch row"
# the same command again: the failed row is not cleaned up on the CA token either (the key
# its intent named was never made there); the CA's own login is the only one
spy_run 1 batch by-id.csv --no-progress
assert_eq "$(logins)" 1 "C_Login calls of the re-run (the CA's own only)"
assert_grep by-id.results.csv '^SN-CA-8,failed,.*CA' "the row on the CA token failed again"
assert_ca_untouched "a batch row, run again"

it_log "case: a station started for the CA token"
echo "1209:0001  $SOFTHSM_MODULE  usb-serial  SoftHSM2" >tokens.table
printf 'serial,device\nSN-CA-10,pkcs11:token=dev-t\n' >station.csv
printf '\n[station]\nmanifest = station.csv\ndevice_table = tokens.table\nmode = next-free\n' >>provisioner.cnf
prov 5 station --instance "usb-1209:0001-$ca_serial"
assert_grep "$PROV_OUT" "status=failed" "station result line"
assert_grep "$PROV_ERR" "CA" "the station's error line"
assert_eq "$(sqlite3 station.journal.sqlite "SELECT count(*) FROM station_claim" 2>/dev/null || echo 0)" 0 \
    "rows claimed for the CA token"
assert_ca_untouched "a station"
