#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The manifest's pin column: tokens with their own PINs in one lot. A row's PIN source is
# file: (relative to the manifest's directory) or env:; an empty pin is the run's PIN
# (--pin, then [provisioner] device_pin). The batch runs from another directory than the
# manifest's; every row is issued on its token and proven by `check` with that token's
# PIN; a second run issues nothing. A wrong PIN in one row fails that row only (exit 1,
# reason "PIN"), with exactly one C_Login on its token (never retried, the token not
# locked) and the other rows issued. No PIN appears in any output.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/batch_lib.sh"
it_setup
need sqlite3
batch_ca
PIN_B=dev-PIN-Bison-2222
PIN_C=dev-PIN-Cobra-3333
PIN_D=dev-PIN-Dingo-4444
token_init dev-a
token_init dev-b "$PIN_B"
token_init dev-c "$PIN_C"
mkdir -p lot/pins
write_secret "$WORK/lot/pins/dev-b.pin" "$PIN_B"
IT_SECRETS+=("$PIN_C")
export PROV_TEST_PIN_C=$PIN_C
cat >lot/lot.csv <<'EOF'
serial,device,pin,x_token
SN-A1,pkcs11:token=dev-a,,dev-a
SN-B1,pkcs11:token=dev-b,file:pins/dev-b.pin,dev-b
SN-C1,pkcs11:token=dev-c,env:PROV_TEST_PIN_C,dev-c
SN-B2,pkcs11:token=dev-b,file:pins/dev-b.pin,dev-b
SN-A2,pkcs11:token=dev-a,,dev-a
EOF

prov 0 batch lot/lot.csv --check
prov 0 batch lot/lot.csv --no-progress --jobs 2
assert_grep "$PROV_OUT" '^5 rows: 5 issued, 0 already-issued, 0 failed '
for sn in SN-A1 SN-A2; do
    prov 0 check "devices/$sn"
done
for sn in SN-B1 SN-B2; do
    prov 0 check --pin "file:$WORK/lot/pins/dev-b.pin" "devices/$sn"
    assert_grep "devices/$sn/key.uri" 'token=dev-b'
done
prov 0 check --pin env:PROV_TEST_PIN_C devices/SN-C1
assert_grep devices/SN-C1/key.uri 'token=dev-c'
prov 0 batch lot/lot.csv --no-progress
assert_grep "$PROV_OUT" '^5 rows: 0 issued, 5 already-issued, 0 failed '

# One row's PIN is wrong: that row fails, sent once; the others are issued.
token_init dev-d "$PIN_D"
write_secret "$WORK/lot/pins/wrong.pin" "dev-PIN-Wrong-9999"
cat >lot/wrong.csv <<'EOF'
serial,device,pin
SN-D1,pkcs11:token=dev-d,file:pins/wrong.pin
SN-D2,pkcs11:token=dev-d,file:pins/wrong.pin
SN-A3,pkcs11:token=dev-a,
EOF
# C_Login calls counted by the fault module (pkcs11/fault_module.c), with no fault set
[ -n "${PROV_FAULT_MODULE:-}" ] || fail "PROV_FAULT_MODULE is not set (run through meson test)"
sed "s|^pkcs11_module = .*|pkcs11_module = $PROV_FAULT_MODULE|" "$PROVISIONER_CONFIG" >fault.cnf
export FAULT_TARGET=$SOFTHSM_MODULE FAULT_LOG=$WORK/log/wrong.calls
prov 1 --config fault.cnf batch lot/wrong.csv --no-progress --jobs 1
unset FAULT_LOG
assert_grep "$PROV_OUT" '^3 rows: 1 issued, 0 already-issued, 2 failed '
assert_grep lot/wrong.results.csv '^SN-D1,failed,.*PIN'
assert_grep lot/wrong.results.csv '^SN-D2,failed,.*PIN'
assert_grep lot/wrong.results.csv '^SN-A3,issued,'
assert_eq "$(grep -c '^C_Login 0xa0' "$WORK/log/wrong.calls")" 1 "refused C_Login calls on dev-d"
p11 dev-d "$PIN_D" --list-objects >/dev/null 2>&1 || fail "token dev-d is not usable with its PIN"
prov 0 check devices/SN-A3

# The station serves a row with its own PIN: enrolled, and proven again by a later station
# run (a fresh process, so the token is not logged in yet) with the row's PIN source.
PIN_E=dev-PIN-Eagle-5555
token_init dev-e "$PIN_E"
SER_E=$(token_serial dev-e)
write_secret "$WORK/lot/pins/dev-e.pin" "$PIN_E"
printf 'serial,device,pin\nSN-E1,pkcs11:serial=%s,file:pins/dev-e.pin\n' "$SER_E" >lot/station.csv
echo "1209:0001  $SOFTHSM_MODULE  usb-serial  SoftHSM2 standing in for a USB token" >tokens.table
cp "$PROVISIONER_CONFIG" station.cnf
printf '\n[station]\nmanifest = lot/station.csv\ndevice_table = tokens.table\n' >>station.cnf
prov 0 --config station.cnf station --instance "usb-1209:0001-$SER_E"
assert_grep "$PROV_OUT" ' serial=SN-E1 status=issued '
prov 0 --config station.cnf station --instance "usb-1209:0001-$SER_E"
assert_grep "$PROV_OUT" ' serial=SN-E1 status=already-issued '
prov 0 check --pin "file:$WORK/lot/pins/dev-e.pin" devices/SN-E1
