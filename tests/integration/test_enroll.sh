#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# `provisioner enroll` end to end on real SoftHSM2 device tokens (EC P-256, EC P-384,
# RSA-2048): storage files (doc/storage.md), strict verification by OpenSSL and GnuTLS, the key's
# protection on the token, the certificate object next to it, `check`, the refusal to
# enroll a serial twice, and --reissue; a storage directory an earlier run made has its
# parent synced (strace).
. "$(dirname "$0")/lib.sh"
it_setup
need certtool pkcs11-tool jq strace

ca_fixture pkcs11
for t in dev-p256 dev-p384 dev-rsa; do
    token_init "$t"
done


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
    # a station with a tight umask still writes certificates 0644 (doc/storage.md)
    umask 077
    prov 0 enroll --serial SN-RSA-0003 --device pkcs11:token=dev-rsa --key rsa-2048 \
        --pin "file:$WORK/device.pin"
)
assert_device_identity SN-RSA-0003 dev-rsa "$WORK/devices/SN-RSA-0003" rsa-2048
for t in dev-p256 dev-p384 dev-rsa; do
    assert_eq "$(token_count "$t" "$DEV_PIN_VALUE" privkey)" 1 "private keys on token $t"
done

# ---- the same serial again: refused, storage and token untouched ----------------------
d=$WORK/devices/SN-P256-0001
before=$(tree_digest "$d")
objs_before=$(token_list dev-p256 "$DEV_PIN_VALUE")
prov 5 enroll --serial SN-P256-0001 --device pkcs11:token=dev-p256
assert_one_error SN-P256-0001
assert_eq "$(tree_digest "$d")" "$before" "storage of SN-P256-0001 after a refused enroll"
assert_eq "$(token_list dev-p256 "$DEV_PIN_VALUE")" "$objs_before" \
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
assert_eq "$(token_count dev-p256 "$DEV_PIN_VALUE" privkey)" 1 "private keys on token dev-p256 after --reissue"

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
# each check runs on its own: a missing server-ca.pem fails storage and server-ca only;
# the key still proves itself and the chain still verifies
cp -a "$WORK/devices/SN-P256-0001" "$WORK/no-server-ca"
rm "$WORK/no-server-ca/server-ca.pem"
prov 1 check "$WORK/no-server-ca"
assert_grep "$PROV_OUT" 'storage=FAILED key-proof=ok chain=ok server-ca=FAILED' \
    "check without server-ca.pem: the other checks still run"
assert_one_error server-ca.pem
prov 1 check --json "$WORK/no-server-ca"
assert_eq "$(jq -r '"\(.ok) \(.storage) \(.key_proof) \(.chain) \(.server_ca)"' "$PROV_OUT")" \
    "false false true true false" "check --json without server-ca.pem"
assert_grep "$PROV_OUT" '"error": *"[^"]*server-ca.pem'
# --json also prints its object when the check cannot be carried out (here: a wrong PIN)
write_secret "$WORK/wrong.pin" "dev-PIN-Wrong-1111"
prov 3 check --json --pin "file:$WORK/wrong.pin" "$WORK/devices/SN-RSA-0003"
assert_eq "$(jq -r '"\(.ok) \(.key_proof) \(.serial)"' "$PROV_OUT")" "false false SN-RSA-0003" \
    "check --json with a wrong PIN"
assert_grep "$PROV_OUT" '"error": *"[^"]*CKR_PIN_INCORRECT'
assert_one_error dev-rsa
prov 2 check --json "$WORK/no-such-dir"
assert_eq "$(jq -r '"\(.ok) \(.dir)"' "$PROV_OUT")" "false $WORK/no-such-dir" "check --json of no dir"
assert_grep "$PROV_OUT" '"error": *"[^"]*no-such-dir'
assert_one_error no-such-dir

# ---- a probe file a killed enroll left in the storage directory goes with the next one --
mkdir -p "$WORK/devices/SN-PROBE-1"
: >"$WORK/devices/SN-PROBE-1/.provisioner-probe.Zz99Yy"
prov 0 enroll --serial SN-PROBE-1 --device pkcs11:token=dev-p256
assert_no_file "$WORK/devices/SN-PROBE-1/.provisioner-probe.Zz99Yy"

# ---- a storage directory an earlier run made: its parent is synced as well ------------------
# That run may have stopped between the directory's mkdir and the sync of its parent
# (provisioner/storage/durable.c); the run that writes into it syncs the parent before the
# storage is recorded, or a power cut could take the directory's entry with it.
token_init dev-left
mkdir -p "$WORK/left/SN-LEFT-0004"
# (LeakSanitizer cannot work under ptrace: in the sanitizer build this one traced run goes
# without leak detection; the other runs of this test keep it)
ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" \
    strace -f -qq -e trace=fsync,fdatasync -y -o "$WORK/log/left.strace" \
    "$PROVISIONER" enroll --serial SN-LEFT-0004 --device pkcs11:token=dev-left --key ec-p256 \
    --storage "$WORK/left/SN-LEFT-0004" >"$WORK/log/left.out" 2>&1 ||
    fail "enroll into a directory already there: $(tail -n2 "$WORK/log/left.out")"
grep -qF "<$(realpath "$WORK/left")>)" "$WORK/log/left.strace" ||
    fail "the parent of a storage directory already there was not synced ($WORK/log/left.strace)"
assert_device_identity SN-LEFT-0004 dev-left "$WORK/left/SN-LEFT-0004" ec-p256
