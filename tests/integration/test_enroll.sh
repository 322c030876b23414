#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# `provisioner enroll` end to end on real SoftHSM2 device tokens (EC P-256, EC P-384,
# RSA-2048): storage files (SPEC §8), strict verification by OpenSSL and GnuTLS, the key's
# protection on the token, the certificate object next to it, `check`, the refusal to
# enroll a serial twice, and --reissue.
. "$(dirname "$0")/lib.sh"
it_setup
need certtool pkcs11-tool

ca_fixture pkcs11
for t in dev-p256 dev-p384 dev-rsa; do
    token_init "$t"
done

privkeys_on() {
    p11 "$1" "$DEV_PIN_VALUE" --list-objects --type privkey 2>/dev/null | grep -c '^Private Key Object' || true
}

# ---- three devices; config from $PROVISIONER_CONFIG, --config, ./provisioner.cnf ---------
prov 0 enroll --serial SN-P256-0001 --device pkcs11:token=dev-p256 --key ec-p256 \
    --san-dns 'sn-p256-0001.devices.example;alt.devices.example'
assert_eq "$(wc -l <"$PROV_OUT")" 1 "enroll result lines on stdout"
assert_grep "$PROV_OUT" '^SN-P256-0001 issued ' "enroll result line"
[ ! -s "$PROV_ERR" ] || fail "enroll wrote on stderr on success: $(head -n2 "$PROV_ERR")"
assert_device_identity SN-P256-0001 dev-p256 "$PWD/devices/SN-P256-0001" ec-p256 \
    sn-p256-0001.devices.example alt.devices.example

(
    unset PROVISIONER_CONFIG
    cd "$WORK/log"
    # -v -v: debug output on stderr, still without any secret (checked by prov)
    prov 0 --config "$WORK/provisioner.cnf" -v -v enroll --serial SN-P384-0002 \
        --device pkcs11:token=dev-p384 --key ec-p384 --storage "$WORK/custom/p384" --json
    assert_grep "$PROV_OUT" '"status": ?"issued"' "enroll --json status"
    assert_grep "$PROV_OUT" '"serial": ?"SN-P384-0002"' "enroll --json serial"
)
assert_device_identity SN-P384-0002 dev-p384 "$WORK/custom/p384" ec-p384
assert_no_file "$WORK/devices/SN-P384-0002"

(
    unset PROVISIONER_CONFIG
    cd "$WORK"
    # a station with a tight umask still writes certificates 0644 (SPEC §8)
    umask 077
    prov 0 enroll --serial SN-RSA-0003 --device pkcs11:token=dev-rsa --key rsa-2048 \
        --pin "file:$WORK/device.pin"
)
assert_device_identity SN-RSA-0003 dev-rsa "$WORK/devices/SN-RSA-0003" rsa-2048
for t in dev-p256 dev-p384 dev-rsa; do
    assert_eq "$(privkeys_on "$t")" 1 "private keys on token $t"
done

# ---- the same serial again: refused, storage and token untouched ----------------------
d=$WORK/devices/SN-P256-0001
before=$(tree_digest "$d")
objs_before=$(p11 dev-p256 "$DEV_PIN_VALUE" --list-objects 2>/dev/null)
prov 5 enroll --serial SN-P256-0001 --device pkcs11:token=dev-p256
assert_one_error SN-P256-0001
assert_eq "$(tree_digest "$d")" "$before" "storage of SN-P256-0001 after a refused enroll"
assert_eq "$(p11 dev-p256 "$DEV_PIN_VALUE" --list-objects 2>/dev/null)" "$objs_before" \
    "objects on token dev-p256 after a refused enroll (no orphaned key)"

# ---- --reissue: a new certificate (and key) for the same serial ------------------------
old_fp=$(fingerprint "$d/client.crt")
old_serial=$(openssl x509 -in "$d/client.crt" -noout -serial)
prov 0 enroll --serial SN-P256-0001 --device pkcs11:token=dev-p256 --reissue
assert_grep "$PROV_OUT" '^SN-P256-0001 issued ' "reissue result line"
[ "$(fingerprint "$d/client.crt")" != "$old_fp" ] || fail "--reissue left the old certificate"
[ "$(openssl x509 -in "$d/client.crt" -noout -serial)" != "$old_serial" ] ||
    fail "--reissue reused the certificate serial"
assert_device_identity SN-P256-0001 dev-p256 "$d" ec-p256
# `enroll --help`: the superseded key is deleted from the token afterwards.
assert_eq "$(privkeys_on dev-p256)" 1 "private keys on token dev-p256 after --reissue"

# ---- check refuses a storage that does not prove itself (exit 1) ------------------------
# another device's certificate next to this device's key: the challenge does not verify
cp -a "$WORK/devices/SN-P256-0001" "$WORK/swapped"
for f in client.crt client.der fullchain.pem; do
    cp "$WORK/devices/SN-RSA-0003/$f" "$WORK/swapped/$f"
done
prov 1 check "$WORK/swapped"
assert_grep "$PROV_OUT" 'key-proof=FAILED' "check of a swapped certificate: key proof"
assert_one_error dev-p256
# a server-ca.pem that does not parse
cp -a "$WORK/devices/SN-P256-0001" "$WORK/bad-server-ca"
printf 'garbage\n' >"$WORK/bad-server-ca/server-ca.pem"
prov 1 check "$WORK/bad-server-ca"
assert_one_error server-ca.pem

# ---- a probe file a killed enroll left in the storage directory goes with the next one --
mkdir -p "$WORK/devices/SN-PROBE-1"
: >"$WORK/devices/SN-PROBE-1/.provisioner-probe.Zz99Yy"
prov 0 enroll --serial SN-PROBE-1 --device pkcs11:token=dev-p256
assert_no_file "$WORK/devices/SN-PROBE-1/.provisioner-probe.Zz99Yy"
