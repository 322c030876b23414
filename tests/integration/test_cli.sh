#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The command line itself (SPEC §3): --help / --version, every command's --help, and usage
# errors: exit 2 with one stderr line, nothing on stdout. Needs no token.
. "$(dirname "$0")/lib.sh"
it_setup

prov 0 --help
for code in 0 1 2 3 4 5 6; do
    assert_grep "$PROV_OUT" "^ +$code " "--help does not document exit code $code"
done
for c in ca enroll csr sign install chain check batch station; do
    assert_grep "$PROV_OUT" "^ +$c " "--help does not list the command $c"
done
prov 0 --version
assert_grep "$PROV_OUT" '^provisioner [0-9]+\.[0-9]+' "--version"

for c in ca enroll csr sign install chain check batch station; do
    prov 0 "$c" --help
    assert_grep "$PROV_OUT" 'Usage: provisioner' "$c --help"
done

# usage errors: exit 2, one line naming what is wrong, nothing on stdout
prov 2 frobnicate
assert_one_error frobnicate
[ ! -s "$PROV_OUT" ] || fail "stdout not empty on a usage error"
prov 2 --no-such-option ca show
assert_one_error --no-such-option
prov 2 enroll --serial SN-1
assert_one_error --device
prov 2 sign --serial SN-1
assert_one_error
prov 2 chain verify
assert_one_error
prov 2 check
assert_one_error
# a bad serial is refused before any token is touched
softhsm_setup
write_secret "$PWD/device.pin" "$DEV_PIN_VALUE"
write_secret "$PWD/ca.pin" "$CA_PIN_VALUE"
write_config "$PWD/provisioner.cnf" pkcs11
prov 2 --config provisioner.cnf enroll --serial 'bad serial/../x' --device pkcs11:token=none
assert_one_error 'bad serial'
# "." and ".." match the characters but would name the output directory or its parent
for s in . ..; do
    prov 2 --config provisioner.cnf enroll --serial "$s" --device pkcs11:token=none
    assert_one_error "serial \"$s\""
    printf 'serial,device\n%s,pkcs11:token=none\n' "$s" >dots.csv
    prov 2 --config provisioner.cnf batch dots.csv --check
    assert_grep "$PROV_ERR" "dots.csv:2:1: serial \"$s\": must match"
done
[ ! -e devices ] || fail "a refused serial left $(ls devices)"
prov 2 --config provisioner.cnf enroll --serial SN-1 --device pkcs11:token=none --key ec-p999
assert_one_error ec-p999
