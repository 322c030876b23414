#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The split flow (doc/architecture.md): `csr` on the device, `sign` on the station, `install` on the
# device, then `check`. The station's CA token and the device tokens share nothing but files.
. "$(dirname "$0")/lib.sh"
it_setup
need pkcs11-tool

ca_fixture pkcs11
token_init dev-split-a
token_init dev-split-b
mkdir -p "$WORK/xfer"

# ---- device A: the whole split flow ------------------------------------------------------
prov 0 csr --serial SN-SPLIT-A --device pkcs11:token=dev-split-a --key ec-p256 \
    --out "$WORK/xfer/SN-SPLIT-A.csr"
assert_eq "$(wc -l <"$PROV_OUT")" 1 "csr result lines on stdout"
assert_file "$WORK/xfer/SN-SPLIT-A.csr"
# (openssl 3.0 `req -verify` exits 0 either way: read what it says)
openssl req -in "$WORK/xfer/SN-SPLIT-A.csr" -noout -verify >"$WORK/log/csr-verify" 2>&1 || true
assert_grep "$WORK/log/csr-verify" 'self-signature verify OK' "the CSR's self-signature does not verify"
# Only the key is on the token so far; no certificate yet.
assert_eq "$(token_count dev-split-a "$DEV_PIN_VALUE" privkey)" 1 "private keys on dev-split-a after csr"
assert_eq "$(token_count dev-split-a "$DEV_PIN_VALUE" cert)" 0 "certificates on dev-split-a after csr"
assert_no_file "$WORK/devices/SN-SPLIT-A"

prov 0 sign --serial SN-SPLIT-A --csr "$WORK/xfer/SN-SPLIT-A.csr" --out "$WORK/xfer/SN-SPLIT-A.pem"
assert_grep "$PROV_OUT" '^SN-SPLIT-A issued ' "sign result line"
# FILE.pem = the certificate, then the CA chain (intermediate, root)
assert_eq "$(cert_count "$WORK/xfer/SN-SPLIT-A.pem")" 3 "certificates in the signed bundle"
assert_eq "$(fingerprints "$WORK/xfer/SN-SPLIT-A.pem" | tail -n +2 | tr '\n' ' ')" \
    "$(fingerprints "$IT_CA_DIR/chain.pem" | tr '\n' ' ')" "the CA chain after the certificate"
openssl x509 -in "$WORK/xfer/SN-SPLIT-A.pem" -noout -subject -nameopt RFC2253 >"$WORK/log/sub-a"
assert_grep "$WORK/log/sub-a" 'CN=SN-SPLIT-A(,|$)' "subject of the signed certificate"
# The signed certificate certifies the CSR's key.
openssl req -in "$WORK/xfer/SN-SPLIT-A.csr" -noout -pubkey >"$WORK/log/csr-pub.pem"
openssl x509 -in "$WORK/xfer/SN-SPLIT-A.pem" -noout -pubkey >"$WORK/log/crt-pub.pem"
assert_same_file "$WORK/log/csr-pub.pem" "$WORK/log/crt-pub.pem" "the certificate's key is not the CSR's"

prov 0 install --serial SN-SPLIT-A --device pkcs11:token=dev-split-a \
    --cert "$WORK/xfer/SN-SPLIT-A.pem"
assert_grep "$PROV_OUT" '^SN-SPLIT-A installed ' "install result line"
assert_device_identity SN-SPLIT-A dev-split-a "$WORK/devices/SN-SPLIT-A" ec-p256

# ---- install onto storage that already holds an identity: refused as such (exit 5) first,
# before the other checks and before the device is opened (prov_step_check_no_identity).
# Here the config names no server CA bundle, which would be exit 2 if it were checked first.
grep -v '^server_ca' "$PROVISIONER_CONFIG" >"$WORK/no-server-ca.cnf"
before=$(tree_digest "$WORK/devices/SN-SPLIT-A")
prov 5 --config "$WORK/no-server-ca.cnf" install --serial SN-SPLIT-A \
    --device pkcs11:token=dev-split-a --cert "$WORK/xfer/SN-SPLIT-A.pem"
assert_one_error "SN-SPLIT-A" "already holds an identity"
assert_eq "$(tree_digest "$WORK/devices/SN-SPLIT-A")" "$before" "storage after a refused install"

# ---- device B: station-chosen CN and SAN override the CSR, storage elsewhere, server CA file
prov 0 csr --serial SN-SPLIT-B --device pkcs11:token=dev-split-b --key ec-p384 \
    --pin "file:$WORK/device.pin" --out "$WORK/xfer/SN-SPLIT-B.csr"
prov 0 sign --serial SN-SPLIT-B --csr "$WORK/xfer/SN-SPLIT-B.csr" --cn gateway-b.example \
    --san-dns gateway-b.example --out "$WORK/xfer/SN-SPLIT-B.pem"
openssl x509 -in "$WORK/xfer/SN-SPLIT-B.pem" -noout -subject -nameopt RFC2253 >"$WORK/log/sub-b"
assert_grep "$WORK/log/sub-b" 'CN=gateway-b.example(,|$)' "--cn of sign"

# install onto the WRONG device: the key is not there, nothing is written
prov 4 install --serial SN-SPLIT-B --device pkcs11:token=dev-split-a \
    --cert "$WORK/xfer/SN-SPLIT-B.pem" --storage "$WORK/wrong"
assert_one_error dev-split-a
assert_eq "$(tree_digest "$WORK/wrong")" "(absent)" "storage after installing on the wrong device"

# PIN sources other than file: (doc/keys.md): fd:N for install, env:VAR for check
prov 0 install --serial SN-SPLIT-B --device pkcs11:token=dev-split-b \
    --cert "$WORK/xfer/SN-SPLIT-B.pem" --storage "$WORK/storage-b" --server-ca "$IT_SERVER_CA" \
    --pin fd:3 3<"$WORK/device.pin"
assert_grep "$WORK/storage-b/identity.json" 'gateway-b.example' "identity.json of SN-SPLIT-B"
PROV_IT_DEVICE_PIN=$DEV_PIN_VALUE prov 0 check --pin env:PROV_IT_DEVICE_PIN "$WORK/storage-b"

# ---- a tampered bundle is refused by install --------------------------------------------
corrupt_signature x509 "$WORK/xfer/SN-SPLIT-A.pem" "$WORK/xfer/tampered.pem"
tail -n +"$(($(grep -n -m1 'END CERTIFICATE' "$WORK/xfer/SN-SPLIT-A.pem" | cut -d: -f1) + 1))" \
    "$WORK/xfer/SN-SPLIT-A.pem" >>"$WORK/xfer/tampered.pem"
assert_eq "$(cert_count "$WORK/xfer/tampered.pem")" 3 "certificates in the tampered bundle"
rc=0
"$PROVISIONER" install --serial SN-SPLIT-A --device pkcs11:token=dev-split-a \
    --cert "$WORK/xfer/tampered.pem" --storage "$WORK/tampered" >"$WORK/log/tampered.out" \
    2>"$WORK/log/tampered.err" || rc=$?
[ "$rc" -ne 0 ] || fail "install accepted a tampered certificate bundle"
assert_eq "$(tree_digest "$WORK/tampered")" "(absent)" "storage after a tampered install"

# ---- install refuses a device key that is not signing-only and never-extractable ---------
# Keys made on the token with exactly one flaw each (pkcs11-make-key, pkcs11/make_key.c): one
# that also allows CKA_DERIVE, one that was extractable once (CKA_NEVER_EXTRACTABLE false).
# `sign` certifies them (a CSR carries no key attributes); `install` reads the attributes back
# and refuses (exit 5), writing nothing.
[ -x "${PROV_MAKE_KEY:-}" ] || fail "PROV_MAKE_KEY is not set (run through meson test)"
token_init dev-split-c
engine_conf "$WORK/engine.cnf"
id=10
for flaw in derive was-extractable; do
    sn=SN-SPLIT-$flaw
    id=$((id + 1))
    "$PROV_MAKE_KEY" "$SOFTHSM_MODULE" dev-split-c "$WORK/device.pin" "c0$id" "$sn" "$flaw" ||
        fail "pkcs11-make-key $flaw failed"
    OPENSSL_CONF=$WORK/engine.cnf openssl req -new -engine pkcs11 -keyform engine \
        -key "pkcs11:token=dev-split-c;id=%c0%$id;type=private;pin-value=$DEV_PIN_VALUE" \
        -subj "/CN=$sn" -out "$WORK/xfer/$sn.csr" >"$WORK/log/$sn-csr" 2>&1 ||
        fail "openssl req -engine pkcs11 ($flaw key): $(tail -n1 "$WORK/log/$sn-csr")"
    prov 0 sign --serial "$sn" --csr "$WORK/xfer/$sn.csr" --out "$WORK/xfer/$sn.pem"
    prov 5 install --serial "$sn" --device pkcs11:token=dev-split-c --cert "$WORK/xfer/$sn.pem"
    case $flaw in
    derive) assert_one_error dev-split-c "decrypt, unwrap or derive" ;;
    was-extractable) assert_one_error dev-split-c CKA_NEVER_EXTRACTABLE ;;
    esac
    assert_eq "$(tree_digest "$WORK/devices/$sn")" "(absent)" "storage after installing a $flaw key"
done
