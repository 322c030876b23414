#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Faults a factory line meets, and the exit code + single stderr line for each (doc/exit-codes.md):
# wrong PIN (3, and exactly one C_Login: a station must never lock a token), unreadable PIN
# source (3), token not found (4), a CA key that is extractable, allows derive or was
# extractable once (5), CSR with a broken signature or a weak key (5), storage not writable
# (6, no partial files), unknown config key (2).
# No output may carry a PIN (checked on every run by `prov`).
. "$(dirname "$0")/lib.sh"
it_setup
need pkcs11-tool

ca_fixture pkcs11
token_init dev-fault

# ---- wrong device PIN: exit 3, one C_Login, nothing written ------------------------------
it_log "case: wrong device PIN"
SPY=$(libdir_file pkcs11-spy.so)
need_file "$SPY"
sed "s|^pkcs11_module = .*|pkcs11_module = $SPY|" provisioner.cnf >spy.cnf
write_secret "$WORK/wrong.pin" "wrong-PIN-Otter-1111"
export PKCS11SPY=$SOFTHSM_MODULE PKCS11SPY_OUTPUT=$WORK/log/spy.log
prov 3 --config spy.cnf enroll --serial SN-FAULT-PIN --device pkcs11:token=dev-fault \
    --pin "file:$WORK/wrong.pin"
unset PKCS11SPY PKCS11SPY_OUTPUT
assert_one_error dev-fault
assert_file "$WORK/log/spy.log"
n_incorrect=$(count_re 'CKR_PIN_INCORRECT' "$WORK/log/spy.log")
n_login=$(count_re '^[0-9]+: C_Login$' "$WORK/log/spy.log")
it_log "pkcs11-spy: $n_login C_Login call(s), $n_incorrect CKR_PIN_INCORRECT"
assert_eq "$n_incorrect" 1 "C_Login attempts with the wrong PIN (pkcs11-spy log)"
# nothing after the failed login may be another C_Login
after=$(awk '/CKR_PIN_INCORRECT/ { seen = 1; next } seen && /^[0-9]+: C_Login$/ { n++ } END { print n + 0 }' \
    "$WORK/log/spy.log")
assert_eq "$after" 0 "C_Login calls after the PIN was refused"
assert_eq "$(tree_digest devices/SN-FAULT-PIN)" "(absent)" "storage after a wrong PIN"
# The token is not locked and not at its final try: the right PIN still works.
token_info dev-fault >"$WORK/log/flags" || exit 1
assert_no_grep "$WORK/log/flags" 'final try|locked' "token flags after one wrong PIN"
prov 0 enroll --serial SN-FAULT-OK --device pkcs11:token=dev-fault
assert_storage devices/SN-FAULT-OK

# ---- PIN source unreadable: exit 3 ---------------------------------------------------------
it_log "case: PIN file missing"
prov 3 enroll --serial SN-FAULT-NOPIN --device pkcs11:token=dev-fault --pin "file:$WORK/no-such.pin"
assert_one_error no-such.pin
assert_eq "$(tree_digest devices/SN-FAULT-NOPIN)" "(absent)" "storage after a missing PIN file"
it_log "case: PIN env var unset"
unset PROV_IT_NO_SUCH_VAR || true
prov 3 enroll --serial SN-FAULT-NOENV --device pkcs11:token=dev-fault --pin env:PROV_IT_NO_SUCH_VAR
assert_one_error PROV_IT_NO_SUCH_VAR

# ---- PIN file format: one trailing newline (or CRLF) is stripped, no more ---------------
it_log "case: PIN file line endings"
token_init dev-fault-nl
write_secret "$WORK/nl.pin" "$DEV_PIN_VALUE"
printf '\n' >>"$WORK/nl.pin"
prov 0 csr --serial SN-FAULT-NL --device pkcs11:token=dev-fault-nl --pin "file:$WORK/nl.pin" \
    --out "$WORK/nl.csr"
write_secret "$WORK/crlf.pin" "$DEV_PIN_VALUE"
printf '\r\n' >>"$WORK/crlf.pin"
prov 0 csr --serial SN-FAULT-CRLF --device pkcs11:token=dev-fault-nl --pin "file:$WORK/crlf.pin" \
    --out "$WORK/crlf.csr"
write_secret "$WORK/nl2.pin" "$DEV_PIN_VALUE"
printf '\n\n' >>"$WORK/nl2.pin"
prov 3 csr --serial SN-FAULT-NL2 --device pkcs11:token=dev-fault-nl --pin "file:$WORK/nl2.pin" \
    --out "$WORK/nl2.csr"
assert_one_error_re 'nl2\.pin|dev-fault-nl'
assert_no_file "$WORK/nl2.csr"

# ---- token not found: exit 4 ------------------------------------------------------------
it_log "case: token not found"
prov 4 enroll --serial SN-FAULT-NOTOK --device pkcs11:token=no-such-token
assert_one_error no-such-token
assert_eq "$(tree_digest devices/SN-FAULT-NOTOK)" "(absent)" "storage after token not found"
prov 4 csr --serial SN-FAULT-NOTOK --device pkcs11:token=no-such-token --out "$WORK/x.csr"
assert_one_error no-such-token
assert_no_file "$WORK/x.csr"

# ---- CSR with a broken signature, CSR with a weak key: exit 5 ----------------------------
it_log "case: CSR with a corrupted signature"
token_init dev-fault-csr
prov 0 csr --serial SN-FAULT-CSR --device pkcs11:token=dev-fault-csr --out "$WORK/good.csr"
corrupt_signature req "$WORK/good.csr" "$WORK/badsig.csr"
# (openssl 3.0 `req -verify` exits 0 either way: read what it says)
if openssl req -in "$WORK/badsig.csr" -noout -verify 2>&1 | grep -q 'verify OK'; then
    fail "fixture: openssl still verifies the corrupted CSR"
fi
prov 5 sign --serial SN-FAULT-CSR --csr "$WORK/badsig.csr" --out "$WORK/badsig.pem"
assert_one_error_re 'badsig\.csr|SN-FAULT-CSR'
assert_no_file "$WORK/badsig.pem"
it_log "case: CSR with a weak key (RSA-1024)"
openssl req -new -newkey rsa:1024 -nodes -keyout "$WORK/weak.key" -subj /CN=SN-FAULT-WEAK \
    -out "$WORK/weak.csr" >/dev/null 2>&1
prov 5 sign --serial SN-FAULT-WEAK --csr "$WORK/weak.csr" --out "$WORK/weak.pem"
assert_one_error_re 'weak\.csr|SN-FAULT-WEAK'
assert_no_file "$WORK/weak.pem"

# ---- storage not writable: exit 6, no partial files ----------------------------------------
# Tests run as root, which ignores file modes: use an immutable directory (chattr +i) and a
# regular file where a directory is expected.
it_log "case: storage parent immutable"
mkdir -p "$WORK/ro"
make_immutable "$WORK/ro"
prov 6 enroll --serial SN-FAULT-RO --device pkcs11:token=dev-fault --storage "$WORK/ro/SN-FAULT-RO"
assert_one_error "$WORK/ro"
left=$(dir_entries "$WORK/ro")
[ -z "$left" ] || fail "files left in the read-only parent: $left"
it_log "case: storage directory immutable"
mkdir -p "$WORK/ro2/SN-FAULT-RO2"
make_immutable "$WORK/ro2/SN-FAULT-RO2"
prov 6 enroll --serial SN-FAULT-RO2 --device pkcs11:token=dev-fault --storage "$WORK/ro2/SN-FAULT-RO2"
assert_one_error SN-FAULT-RO2
left=$(dir_entries "$WORK/ro2/SN-FAULT-RO2")
[ -z "$left" ] || fail "partial files in the storage dir: $left"
it_log "case: a file where the storage directory should be"
printf 'not a directory\n' >"$WORK/afile"
prov 6 enroll --serial SN-FAULT-FILE --device pkcs11:token=dev-fault --storage "$WORK/afile/SN-FAULT-FILE"
assert_one_error afile
assert_eq "$(cat "$WORK/afile")" "not a directory" "the file in the way"

# ---- config errors: exit 2 ----------------------------------------------------------------
it_log "case: unknown config keys"
sed 's/^lot = /lott = /' provisioner.cnf >typo-provisioner.cnf
prov 2 --config typo-provisioner.cnf enroll --serial SN-FAULT-CFG --device pkcs11:token=dev-fault
assert_one_error lott typo-provisioner.cnf
sed 's/^intermediate_days = .*//; s/^\[ca\]$/[ca]\nintermediate_dayz = 10/' provisioner.cnf >typo-ca.cnf
prov 2 --config typo-ca.cnf ca show
assert_one_error intermediate_dayz
{ cat provisioner.cnf; printf '\n[profile_device]\ndays = 30\ncolour = blue\n'; } >typo-profile.cnf
prov 2 --config typo-profile.cnf enroll --serial SN-FAULT-CFG --device pkcs11:token=dev-fault
assert_one_error colour
# a section name with a typo: the 30-day profile would be silently unused (365 days issued)
{ cat provisioner.cnf; printf '\n[profle_device]\ndays = 30\n'; } >typo-section.cnf
prov 2 --config typo-section.cnf enroll --serial SN-FAULT-CFG --device pkcs11:token=dev-fault
assert_one_error profle_device typo-section.cnf
prov 2 --config "$WORK/no-such.cnf" ca show
assert_one_error no-such.cnf
# A device profile must issue end entities that the chain rules accept: a profile whose
# extensions make a CA (or leave out what a TLS client certificate needs) is a config error
# naming the section and key, before any token is touched.
it_log "case: a device profile that would issue a CA"
keys_before=$(token_count dev-fault "$DEV_PIN_VALUE" privkey)
{
    cat provisioner.cnf
    printf '\n[profile_leafca]\nextensions = leafca_ext\n'
    printf '[leafca_ext]\nbasicConstraints = critical, CA:true\nkeyUsage = keyCertSign\n'
} >leafca.cnf
prov 2 --config leafca.cnf enroll --serial SN-FAULT-CFG --device pkcs11:token=dev-fault \
    --profile leafca
assert_one_error leafca.cnf "[leafca_ext] basicConstraints" "profile_leafca"
prov 2 --config leafca.cnf ca show
assert_one_error leafca.cnf "[leafca_ext] basicConstraints"
{
    cat provisioner.cnf
    printf '\n[profile_device]\nextensions = server_ext\n'
    printf '[server_ext]\nbasicConstraints = critical, CA:false\nkeyUsage = critical, digitalSignature\n'
    printf 'extendedKeyUsage = serverAuth\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n'
} >server-profile.cnf
prov 2 --config server-profile.cnf enroll --serial SN-FAULT-CFG --device pkcs11:token=dev-fault
assert_one_error server-profile.cnf "[server_ext] extendedKeyUsage" clientAuth
assert_eq "$(tree_digest devices/SN-FAULT-CFG)" "(absent)" "storage after config errors"
assert_eq "$(token_count dev-fault "$DEV_PIN_VALUE" privkey)" "$keys_before" "keys on the device after config errors"

# ---- CA key not fit to sign: exit 5 -------------------------------------------------------
# A CA assembled by hand (openssl + a key made on the token): the intermediate key is on the
# token but was generated extractable, or allows CKA_DERIVE, or was extractable once
# (CKA_NEVER_EXTRACTABLE false; pkcs11-make-key, pkcs11/make_key.c, makes the last two with
# exactly that one flaw). The tool must refuse to sign with it.
[ -x "${PROV_MAKE_KEY:-}" ] || fail "PROV_MAKE_KEY is not set (run through meson test)"
hand_made_ca() {
    local flaw=$1
    mkdir -p "$WORK/xca-$flaw" && cd "$WORK/xca-$flaw"
    softhsm_setup
    token_init provisioner-ca "$CA_PIN_VALUE"
    token_init dev-xca
    write_secret "$PWD/ca.pin" "$CA_PIN_VALUE"
    write_secret "$PWD/device.pin" "$DEV_PIN_VALUE"
    cp "$IT_SERVER_CA" server-ca.pem
    write_root_conf root.conf strict
    make_root_key root.key
    if [ "$flaw" = extractable ]; then
        p11 provisioner-ca "$CA_PIN_VALUE" --keypairgen --key-type EC:prime256v1 --id 4242 \
            --label intermediate --usage-sign --extractable >"$WORK/log/xca-keygen" 2>&1 ||
            fail "pkcs11-tool --keypairgen --extractable: $(tail -n1 "$WORK/log/xca-keygen")"
        assert_grep <(p11_object_by_label provisioner-ca "$CA_PIN_VALUE" privkey intermediate) \
            ', extractable' "fixture: the hand-made intermediate key is not extractable"
    else
        "$PROV_MAKE_KEY" "$SOFTHSM_MODULE" provisioner-ca "$PWD/ca.pin" 4242 intermediate \
            "$flaw" || fail "pkcs11-make-key $flaw failed"
    fi
    engine_conf "$PWD/engine.cnf"
    mkdir -p ca
    openssl req -x509 -new -key root.key -passin "file:$PWD/root.pass" -config root.conf -days 3650 \
        -out ca/root.crt >"$WORK/log/xca-root" 2>&1 || fail "openssl: root: $(tail -n1 "$WORK/log/xca-root")"
    OPENSSL_CONF=$PWD/engine.cnf openssl req -new -engine pkcs11 -keyform engine \
        -key "pkcs11:token=provisioner-ca;object=intermediate;type=private;pin-value=$CA_PIN_VALUE" \
        -subj "/O=Provisioner Integration Test/CN=Test Intermediate CA" -out int.csr \
        >"$WORK/log/xca-csr" 2>&1 || fail "openssl req -engine pkcs11: $(tail -n1 "$WORK/log/xca-csr")"
    cat >int.ext <<'EOF2'
basicConstraints = critical, CA:true, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
EOF2
    openssl x509 -req -in int.csr -CA ca/root.crt -CAkey root.key -passin "file:$PWD/root.pass" \
        -CAcreateserial -days 1000 -extfile int.ext -out ca/intermediate.crt >"$WORK/log/xca-int" 2>&1 ||
        fail "openssl x509 -req (intermediate): $(tail -n1 "$WORK/log/xca-int")"
    cat ca/intermediate.crt ca/root.crt >ca/chain.pem
    openssl verify -x509_strict -CAfile ca/root.crt ca/intermediate.crt >/dev/null ||
        fail "fixture: the hand-made intermediate does not verify"
    write_config "$PWD/provisioner.cnf" file
    export PROVISIONER_CONFIG=$PWD/provisioner.cnf
}
for flaw in extractable derive was-extractable; do
    it_log "case: CA key $flaw"
    hand_made_ca "$flaw"
    prov 5 enroll --serial SN-FAULT-XCA --device pkcs11:token=dev-xca
    assert_one_error_re "provisioner-ca|intermediate"
    case $flaw in
    derive) assert_one_error "decrypt, unwrap or derive" ;;
    was-extractable) assert_one_error CKA_NEVER_EXTRACTABLE ;;
    esac
    assert_eq "$(tree_digest devices/SN-FAULT-XCA)" "(absent)" "storage after a $flaw CA key"
    assert_eq "$(token_count dev-xca "$DEV_PIN_VALUE" privkey)" 0 "keys generated on the device before the CA was checked"
    cp "$WORK/good.csr" good.csr
    prov 5 sign --serial SN-FAULT-CSR --csr good.csr --out xca.pem
    assert_one_error_re "provisioner-ca|intermediate"
    assert_no_file xca.pem
done
