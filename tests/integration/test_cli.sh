#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The command line itself (doc/provisioner.1.scd, doc/exit-codes.md): --help / --version,
# every command's --help, and usage errors: exit 2 with one stderr line, nothing on stdout.
# Needs no token.
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

# A device string is parsed by its backend before anything is opened: a malformed URI, a
# slot-based, PIN-carrying or key-naming attribute, an unknown query attribute, an empty or
# unknown TCTI are usage errors (exit 2, one line naming the string), for every command
# that takes --device; the CA token is not opened (there is none here) and nothing is made.
printf 'not a bundle\n' >bundle.pem
bad_devices=(
    'pkcs11:token=dev-a;id=%zz|not a valid PKCS#11 URI'
    'pkcs11:slot-id=1|slot-id'
    'pkcs11:token=dev-a;slot-description=x|slot-description'
    'pkcs11:token=dev-a?pin-source=file:/dev/null|pin-source'
    'pkcs11:token=dev-a;object=k|object'
    'pkcs11:token=dev-a?bogus=1|"bogus"'
    'pkcs11:token=dev-a;token=dev-b|"token" given twice'
    'pkcs11:token=dev-a?module-name=softhsm2|module-name'
    'pkcs11:library-description=x|library-description'
    'tpm2:|no TCTI'
    'tpm2:bogus-tcti:foo|"bogus-tcti"'
    'tpm2:swtpm:port=2321;handle=0x81000101|handle'
)
for entry in "${bad_devices[@]}"; do
    dev=${entry%%|*}
    why=${entry#*|}
    prov 2 --config provisioner.cnf enroll --serial SN-1 --device "$dev"
    assert_one_error "$dev" "$why"
    prov 2 --config provisioner.cnf csr --serial SN-1 --device "$dev" --out SN-1.csr
    assert_one_error "$dev" "$why"
    prov 2 --config provisioner.cnf install --serial SN-1 --device "$dev" --cert bundle.pem
    assert_one_error "$dev" "$why"
done
assert_no_file SN-1.csr
[ ! -e devices ] || fail "a refused device string left $(ls devices)"

# Input files named on the command line: missing, a directory, or garbage is a usage/input
# error (exit 2, one line naming the file), never "not found" (4, a device) or "failed" (1).
mkdir -p a-dir
printf 'garbage\n' >garbage.csr
printf 'garbage\n' >garbage.pem
for args in "batch no-such.csv|no-such.csv" "batch a-dir|a-dir" \
    "batch no-such.csv --check|no-such.csv" \
    "sign --serial SN-1 --csr no-such.csr --out x.pem|no-such.csr" \
    "sign --serial SN-1 --csr a-dir --out x.pem|a-dir" \
    "sign --serial SN-1 --csr garbage.csr --out x.pem|garbage.csr" \
    "install --serial SN-1 --device pkcs11:token=none --cert no-such.pem|no-such.pem" \
    "install --serial SN-1 --device pkcs11:token=none --cert a-dir|a-dir" \
    "install --serial SN-1 --device pkcs11:token=none --cert garbage.pem|garbage.pem" \
    "check no-such-dir|no-such-dir" "check garbage.pem|garbage.pem" \
    "chain verify no-such.pem|no-such.pem" "chain verify a-dir|a-dir" \
    "chain verify --trust no-such.pem garbage.pem|no-such.pem" \
    "station --instance tpmrm0 --manifest no-such.csv|no-such.csv" \
    "batch status --journal no-such.sqlite|no-such.sqlite" \
    "batch report no-such.csv|no-such.journal.sqlite"; do
    # shellcheck disable=SC2086 # the arguments are split on purpose
    prov 2 --config provisioner.cnf ${args%|*}
    assert_one_error "${args#*|}"
done
assert_no_file x.pem

# Output paths are checked before anything is made or any token is touched: a directory that
# is missing, a file where a directory must be, an output that is a directory: exit 6, one
# line naming the path, no journal, no results.
printf 'serial,device\nSN-1,pkcs11:token=none\n' >lot.csv
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout sw.key \
    -subj /CN=SN-1 -out sw.csr 2>/dev/null || fail "openssl req"
sed 's|^output_dir = .*|output_dir = garbage.pem/devices|' provisioner.cnf >badout.cnf
for args in "batch lot.csv --results no-such-dir/r.csv|no-such-dir" \
    "batch lot.csv --check --results no-such-dir/r.csv|no-such-dir" \
    "batch lot.csv --results a-dir|a-dir" \
    "batch lot.csv --journal no-such-dir/j.sqlite|no-such-dir" \
    "sign --serial SN-1 --csr sw.csr --out no-such-dir/x.pem|no-such-dir" \
    "sign --serial SN-1 --csr sw.csr --out a-dir|a-dir" \
    "csr --serial SN-1 --device pkcs11:token=none --out no-such-dir/x.csr|no-such-dir" \
    "chain export --out no-such-dir/chain.pem|no-such-dir"; do
    # shellcheck disable=SC2086 # the arguments are split on purpose
    prov 6 --config provisioner.cnf ${args%|*}
    assert_one_error "${args#*|}"
done
prov 6 --config badout.cnf batch lot.csv
assert_one_error garbage.pem/devices
assert_no_file lot.journal.sqlite
assert_no_file lot.results.csv

# A TPM behind a resource manager that is gone (the demo's after it ended): exit 4 and one
# line from the tool; the tabrmd TCTI's own GLib "** CRITICAL **" line must not reach stderr.
(
    export DBUS_SESSION_BUS_ADDRESS=unix:path=$WORK/no-such-bus
    prov 4 --config provisioner.cnf csr --serial SN-1 --out tabrmd.csr \
        --device 'tpm2:tabrmd:bus_name=com.intel.tss2.Tabrmd.gone,bus_type=session'
    assert_one_error 'tabrmd:bus_name=com.intel.tss2.Tabrmd.gone'
)
assert_no_file tabrmd.csr
