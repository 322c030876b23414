#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The CA index (<CA dir>/index.sqlite, provisioner/ca_index.h), the CA's record of what it
# issued, on real SoftHSM2 tokens:
# - a serial certified by `enroll` is refused (exit 5) when enrolled again into other
#   storage on another token, until --reissue, which supersedes the first certificate;
# - `batch` refuses a row whose serial enroll or another lot certified, until --reissue;
# - two enrolls of one serial at once: exactly one certifies it;
# - an older CA's issued-keys file is imported on first use and refused keys stay refused;
# - `ca show` reports the counts.
. "$(dirname "$0")/lib.sh"
it_setup
need sqlite3 pkcs11-tool

ca_fixture pkcs11
for t in dev-a dev-b dev-c; do
    token_init "$t"
done

index_q() {
    sqlite3 -batch -noheader "$IT_CA_DIR/index.sqlite" "$1" ||
        fail "sqlite3 on the CA index failed: $1"
}
cert_serial_of() { # the lower-case hex serial of a PEM certificate
    openssl x509 -in "$1" -noout -serial | sed 's/^serial=//' | tr 'A-F' 'a-f'
}
# ids_on TOKEN TYPE: the CKA_IDs of the token's objects of TYPE (privkey, pubkey, cert), sorted
ids_on() {
    p11 "$1" "$DEV_PIN_VALUE" --list-objects --type "$2" 2>/dev/null |
        awk '/^ *ID:/ { print tolower($2) }' | sort
}

# ---- 1. a serial certified by enroll is not certified again without --reissue ---------------
it_log "case 1: the same serial, other storage, other token"
prov 0 enroll --serial SN-DUP --device pkcs11:token=dev-a
first=$(cert_serial_of devices/SN-DUP/client.crt)
assert_eq "$(index_q "SELECT issued_by || ' ' || status || ' ' || cert_serial FROM certificate WHERE serial = 'SN-DUP'")" \
    "enroll delivered $first" "the CA index after enroll"
prov 5 enroll --serial SN-DUP --device pkcs11:token=dev-b --storage "$WORK/elsewhere/SN-DUP"
assert_one_error SN-DUP "$first" "already certified" "enroll"
assert_eq "$(ids_on dev-b privkey)" "" "keys on dev-b after a refused enroll"
assert_eq "$(tree_digest "$WORK/elsewhere")" "(absent)" "storage after a refused enroll"
prov 0 enroll --serial SN-DUP --device pkcs11:token=dev-b --storage "$WORK/elsewhere/SN-DUP" \
    --reissue
second=$(cert_serial_of "$WORK/elsewhere/SN-DUP/client.crt")
assert_eq "$(index_q "SELECT cert_serial || ' ' || status FROM certificate WHERE serial = 'SN-DUP' ORDER BY id")" \
    "$(printf '%s superseded\n%s delivered' "$first" "$second")" "SN-DUP after --reissue"
assert_eq "$(index_q "SELECT count(*) FROM certificate a JOIN certificate b ON a.superseded_by = b.id WHERE a.cert_serial = '$first' AND b.cert_serial = '$second'")" \
    1 "the superseded certificate names its successor"

# ---- 2. a batch row whose serial enroll or another lot certified --------------------------
it_log "case 2: batch rows against the CA index"
# (SN-DUP into storage of its own: the rule at work is the index's, not the storage's)
printf 'serial,device,storage\nSN-DUP,pkcs11:token=dev-c,batch-dup\nSN-LOT-1,pkcs11:token=dev-c,\n' >lot1.csv
prov 1 --config provisioner.cnf batch lot1.csv --no-progress
assert_grep lot1.results.csv '^SN-DUP,failed,.*already certified.*enroll' "lot1: SN-DUP refused"
assert_grep lot1.results.csv '^SN-LOT-1,issued,' "lot1: SN-LOT-1 issued"
assert_eq "$(ids_on dev-c privkey | wc -l)" 1 "keys on dev-c: SN-LOT-1's only"
prov 0 batch lot1.csv --no-progress --reissue SN-DUP
assert_eq "$(index_q "SELECT issued_by || ' ' || status FROM certificate WHERE serial = 'SN-DUP' ORDER BY id")" \
    "$(printf 'enroll superseded\nenroll superseded\nbatch delivered')" "SN-DUP after the lot's --reissue"
assert_eq "$(index_q "SELECT lot || ' ' || status FROM certificate WHERE serial = 'SN-LOT-1'")" \
    "LOT-IT-1 delivered" "SN-LOT-1 in the index"
# The same lot name with another journal is another lot: its serials are refused.
printf 'serial,device,storage\nSN-LOT-1,pkcs11:token=dev-c,lot2-sn\n' >lot2.csv
prov 1 batch lot2.csv --no-progress
assert_grep lot2.results.csv '^SN-LOT-1,failed,.*already certified.*lot LOT-IT-1' "lot2: SN-LOT-1 refused"
assert_eq "$(ids_on dev-c privkey | wc -l)" 2 "keys on dev-c after lot2 (SN-DUP, SN-LOT-1)"

# ---- 3. two enrolls of one serial at once --------------------------------------------------
it_log "case 3: two enrolls of one serial at the same time"
"$PROVISIONER" enroll --serial SN-RACE --device pkcs11:token=dev-a --storage "$WORK/race-a" \
    >"$WORK/log/race-a.out" 2>"$WORK/log/race-a.err" </dev/null &
pid_a=$!
"$PROVISIONER" enroll --serial SN-RACE --device pkcs11:token=dev-b --storage "$WORK/race-b" \
    >"$WORK/log/race-b.out" 2>"$WORK/log/race-b.err" </dev/null &
pid_b=$!
rc_a=0
rc_b=0
wait "$pid_a" || rc_a=$?
wait "$pid_b" || rc_b=$?
assert_eq "$(printf '%s\n' "$rc_a" "$rc_b" | sort | tr '\n' ' ')" "0 5 " "exit codes of the two enrolls"
assert_eq "$(index_q "SELECT count(*) FROM certificate WHERE serial = 'SN-RACE'")" 1 \
    "certificates of SN-RACE"
[ -e "$WORK/race-a/client.crt" ] && [ -e "$WORK/race-b/client.crt" ] &&
    fail "both enrolls of SN-RACE stored an identity"

# ---- 4. an older CA's issued-keys file -----------------------------------------------------
it_log "case 4: issued-keys of a CA from before the index"
mkdir -p "$WORK/old-ca" && cd "$WORK/old-ca"
ca_fixture pkcs11
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout old.key \
    -subj /CN=SN-OLD-2 -out old.csr 2>/dev/null
hash=$(openssl req -in old.csr -noout -pubkey | openssl pkey -pubin -outform DER | sha256sum | cut -d' ' -f1)
printf '%s 0a1b2c SN-OLD-1\n' "$hash" >ca/issued-keys
printf 'a truncated line\n' >>ca/issued-keys
cp ca/issued-keys issued-keys.before
assert_no_file ca/index.sqlite
prov 5 sign --serial SN-OLD-2 --csr old.csr --out old.pem
assert_one_error_after_warnings "already certified" SN-OLD-1
assert_grep "$PROV_ERR" '^provisioner: warning: .*issued-keys:2: ' "the unreadable line is named"
assert_no_file old.pem
assert_same_file ca/issued-keys issued-keys.before "issued-keys after the import"
assert_mode 600 ca/index.sqlite
assert_eq "$(sqlite3 ca/index.sqlite "SELECT serial || ' ' || cert_serial || ' ' || issued_by || ' ' || status FROM certificate")" \
    "SN-OLD-1 0a1b2c issued-keys delivered" "the imported line"
prov 0 ca show
assert_grep "$PROV_OUT" '^index: .*/ca/index.sqlite: 1 delivered, 0 issued not delivered, 0 superseded, 0 abandoned' \
    "ca show: the imported certificate"
