#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The real binary on TPM devices (swtpm, one per simulated device, started here on free
# ports and stopped by PID): enroll, check (challenge signed inside the TPM), the storage of
# doc/storage.md with key.uri naming the handle, the NV index holding exactly client.der, the
# attributes tpm2_readpublic shows, the split flow csr/sign/install, and the faults:
# unreachable TPM, tpm2-tss's libraries missing, occupied handle, occupied NV index, a key
# with the wrong attributes; and
# --reissue (enroll, csr, batch) under another serial refused (exit 5) without touching the
# identity whose key is at the handle, while the same serial's --reissue replaces it.
# The CA is the usual SoftHSM2 fixture (lib.sh). No special case for TPM above the backend.
. "$PROV_SOURCE_ROOT/tests/integration/lib.sh"
it_setup
need swtpm tpm2_readpublic tpm2_nvread tpm2_nvdefine tpm2_nvwrite tpm2_getcap \
    tpm2_create tpm2_load tpm2_evictcontrol tpm2_flushcontext

. "$PROV_SOURCE_ROOT/tests/integration/tpm/tpm_lib.sh"

ca_fixture pkcs11
swtpm_start a
TCTI_A=$TCTI

# ---- enroll + check ----------------------------------------------------------------------
prov 0 enroll --serial TPM-0001 --device "tpm2:$TCTI_A" --san-dns tpm-0001.devices.example
assert_grep "$PROV_OUT" '^TPM-0001 issued ' "enroll result line"
[ ! -s "$PROV_ERR" ] || fail "enroll wrote on stderr on success: $(head -n2 "$PROV_ERR")"
assert_tpm_identity "$TCTI_A" "$WORK/devices/TPM-0001"
openssl verify -x509_strict -purpose sslclient -CAfile ca/root.crt -untrusted ca/intermediate.crt \
    devices/TPM-0001/client.crt >"$WORK/log/verify.out" 2>&1 ||
    fail "openssl verify: $(cat "$WORK/log/verify.out")"
has_persistent "$TCTI_A" 0x81000001 || fail "no SRK at 0x81000001 after enroll"

prov 0 check devices/TPM-0001
prov 0 check --json devices/TPM-0001
assert_grep "$PROV_OUT" '"key_proof": ?true' "check --json: key proven inside the TPM"

# ---- a second identity on the same TPM is refused: handle taken ------------------------
before_nv=$(tpm_sha256 "$TCTI_A" tpm2_nvread "$NV_INDEX" -C "$NV_INDEX")
prov 5 enroll --serial TPM-0002 --device "tpm2:$TCTI_A"
assert_one_error "0x81000101" "--reissue"
assert_no_file "$WORK/devices/TPM-0002"
assert_eq "$(tpm_sha256 "$TCTI_A" tpm2_nvread "$NV_INDEX" -C "$NV_INDEX")" "$before_nv" \
    "NV content after a refused enrollment"
prov 0 check devices/TPM-0001

# ---- --reissue under another serial never evicts this identity's key ---------------------
before_pub=$(tpm_sha256 "$TCTI_A" tpm2_readpublic -c "$KEY_HANDLE")
prov 5 enroll --serial TPM-0002 --device "tpm2:$TCTI_A" --reissue
assert_one_error "0x81000101" "another identity" "TPM-0001"
assert_no_file "$WORK/devices/TPM-0002"
assert_eq "$(tpm_sha256 "$TCTI_A" tpm2_readpublic -c "$KEY_HANDLE")" \
    "$before_pub" "key at $KEY_HANDLE after a reissue under another serial"
assert_eq "$(tpm_sha256 "$TCTI_A" tpm2_nvread "$NV_INDEX" -C "$NV_INDEX")" \
    "$before_nv" "NV content after a reissue under another serial"
# ... nor does a batch row of another serial on this TPM with --reissue
printf 'serial,device\nTPM-B1,"tpm2:%s"\n' "$TCTI_A" >b.csv
prov 1 batch b.csv --reissue TPM-B1 --no-progress
assert_grep "$PROV_ERR" 'another identity.*TPM-B1' "the batch row's refusal"
assert_eq "$(tpm_sha256 "$TCTI_A" tpm2_readpublic -c "$KEY_HANDLE")" \
    "$before_pub" "key at $KEY_HANDLE after a batch reissue under another serial"
prov 0 check devices/TPM-0001

# ---- --reissue replaces key and NV on the same TPM: a new certificate, proven ------------
old_cert=$(openssl x509 -in devices/TPM-0001/client.crt -noout -serial)
prov 0 enroll --serial TPM-0001 --device "tpm2:$TCTI_A" --reissue
assert_tpm_identity "$TCTI_A" "$WORK/devices/TPM-0001"
[ "$(openssl x509 -in devices/TPM-0001/client.crt -noout -serial)" != "$old_cert" ] ||
    fail "--reissue kept the old certificate"
prov 0 check devices/TPM-0001

# ---- unreachable TPM: exit 4, one clear line, nothing written --------------------------
dead=$(swtpm_port)
prov 4 enroll --serial TPM-0003 --device "tpm2:swtpm:host=127.0.0.1,port=$dead"
assert_one_error "TPM swtpm:host=127.0.0.1,port=$dead" "not reachable"
assert_no_file "$WORK/devices/TPM-0003"

# ---- tpm2-tss missing: loaded at the first TPM (backends/tpm/tss2_api.h), one clear line ----
prov_without 1 libtss2-esys.so.0 -- enroll --serial TPM-0003 --device "tpm2:$TCTI_A"
assert_one_error "TPM $TCTI_A" "libtss2-esys.so.0 cannot be loaded"
assert_no_file "$WORK/devices/TPM-0003"
prov_without 1 libtss2-tctildr.so.0 -- enroll --serial TPM-0003 --device "tpm2:$TCTI_A"
assert_one_error "TPM $TCTI_A" "libtss2-tctildr.so.0 cannot be loaded"
assert_no_file "$WORK/devices/TPM-0003"

# ---- split flow on a second TPM: csr on the device, sign on the station, install -------
swtpm_start b
TCTI_B=$TCTI
prov 0 csr --serial TPM-S1 --device "tpm2:$TCTI_B" --out "$WORK/s1.csr"
openssl req -in "$WORK/s1.csr" -verify -noout >"$WORK/log/req.out" 2>&1 ||
    fail "CSR signed in the TPM does not verify: $(cat "$WORK/log/req.out")"
has_persistent "$TCTI_B" "$KEY_HANDLE" || fail "csr left no key at $KEY_HANDLE"
prov 0 sign --serial TPM-S1 --csr "$WORK/s1.csr" --out "$WORK/s1.pem"
prov 0 install --serial TPM-S1 --device "tpm2:$TCTI_B" --cert "$WORK/s1.pem"
assert_tpm_identity "$TCTI_B" "$WORK/devices/TPM-S1"
prov 0 check devices/TPM-S1
# installing again into a fresh directory rewrites the same certificate: allowed
prov 0 install --serial TPM-S1 --device "tpm2:$TCTI_B" --cert "$WORK/s1.pem" \
    --storage "$WORK/devices/TPM-S1-again"
assert_tpm_identity "$TCTI_B" "$WORK/devices/TPM-S1-again"
# csr on a TPM that holds an identity: refused, and the key stays; --reissue replaces it
s1_pub=$(tpm_sha256 "$TCTI_B" tpm2_readpublic -c "$KEY_HANDLE")
prov 5 csr --serial TPM-S2 --device "tpm2:$TCTI_B" --out "$WORK/s2.csr"
assert_one_error "0x81000101" "--reissue"
assert_no_file "$WORK/s2.csr"
assert_eq "$(tpm_sha256 "$TCTI_B" tpm2_readpublic -c "$KEY_HANDLE")" "$s1_pub" \
    "key at $KEY_HANDLE after a refused csr"
prov 0 check devices/TPM-S1
# --reissue replaces the key only for the serial whose identity it is (devices/TPM-S1)
prov 5 csr --serial TPM-S2 --device "tpm2:$TCTI_B" --out "$WORK/s2.csr" --reissue
assert_one_error "0x81000101" "another identity" "TPM-S1"
assert_no_file "$WORK/s2.csr"
assert_eq "$(tpm_sha256 "$TCTI_B" tpm2_readpublic -c "$KEY_HANDLE")" \
    "$s1_pub" "key at $KEY_HANDLE after a reissue under another serial"
prov 0 check devices/TPM-S1
prov 0 csr --serial TPM-S1 --device "tpm2:$TCTI_B" --out "$WORK/s1b.csr" --reissue
prov 0 sign --serial TPM-S1 --csr "$WORK/s1b.csr" --out "$WORK/s1b.pem" --reissue
prov 0 install --serial TPM-S1 --device "tpm2:$TCTI_B" --cert "$WORK/s1b.pem" --reissue
assert_tpm_identity "$TCTI_B" "$WORK/devices/TPM-S1"

# ---- the TPM of an identity is gone: check says so (exit 4) ----------------------------
cp -r devices/TPM-S1 "$WORK/moved"
sed -i "s/port=[0-9]*/port=$dead/" "$WORK/moved/key.uri"
prov 4 check "$WORK/moved"
assert_one_error "not reachable"

# ---- NV index occupied by something else: refused before any key is made ---------------
swtpm_start c
TCTI_C=$TCTI
head -c 200 /dev/urandom >"$WORK/junk"
tpm "$TCTI_C" tpm2_nvdefine "$NV_INDEX" -C o -s 200 -a 'ownerread|ownerwrite|authread'
tpm "$TCTI_C" tpm2_nvwrite "$NV_INDEX" -C o -i "$WORK/junk"
prov 5 enroll --serial TPM-C1 --device "tpm2:$TCTI_C"
assert_one_error "NV index 0x01800101 already holds 200 bytes" "--reissue"
assert_no_file "$WORK/devices/TPM-C1"
if has_persistent "$TCTI_C" 0x81; then
    fail "a refused enrollment left a persistent object (key or SRK) behind"
fi
tpm "$TCTI_C" tpm2_nvread "$NV_INDEX" -C o -o "$WORK/log/junk-back"
assert_same_file "$WORK/junk" "$WORK/log/junk-back" "NV index changed by a refused enrollment"

# ---- a key with the wrong attributes at the configured handle: install refuses it ------
# Made by tpm2-tools (sign AND decrypt), with a CSR signed through the tpm2 OpenSSL
# provider; `sign` issues it (it cannot know), `install` reads the key back and refuses.
tpm "$TCTI_C" tpm2_nvundefine "$NV_INDEX" -C o
tpm "$TCTI_C" tpm2_createprimary -C o -G ecc256:aes128cfb -c "$WORK/c-srk.ctx"
tpm "$TCTI_C" tpm2_evictcontrol -C o -c "$WORK/c-srk.ctx" 0x81000001
tpm "$TCTI_C" tpm2_flushcontext -t
tpm "$TCTI_C" tpm2_create -C 0x81000001 -G ecc256 \
    -a 'sign|decrypt|fixedtpm|fixedparent|sensitivedataorigin|userwithauth' \
    -u "$WORK/w.pub" -r "$WORK/w.priv"
tpm "$TCTI_C" tpm2_load -C 0x81000001 -u "$WORK/w.pub" -r "$WORK/w.priv" -c "$WORK/w.ctx"
tpm "$TCTI_C" tpm2_evictcontrol -C o -c "$WORK/w.ctx" "$KEY_HANDLE"
tpm "$TCTI_C" tpm2_flushcontext -t
TPM2OPENSSL_TCTI=$TCTI_C openssl req -provider tpm2 -provider default -new \
    -key "handle:$KEY_HANDLE" -subj /CN=TPM-W1 -out "$WORK/w.csr" >"$WORK/log/w-req.out" 2>&1 ||
    fail "openssl req with the tpm2 provider: $(tail -n3 "$WORK/log/w-req.out" | tr '\n' ' ')"
prov 0 sign --serial TPM-W1 --csr "$WORK/w.csr" --out "$WORK/w.pem"
prov 5 install --serial TPM-W1 --device "tpm2:$TCTI_C" --cert "$WORK/w.pem"
assert_one_error "decrypt"
assert_no_file "$WORK/devices/TPM-W1"
if has_nv "$TCTI_C" "$NV_INDEX"; then
    fail "a refused install wrote NV index $NV_INDEX"
fi

# ---- every transient object was flushed --------------------------------------------------
for t in "$TCTI_A" "$TCTI_B" "$TCTI_C"; do
    out=$(TPM2TOOLS_TCTI=$t tpm2_getcap handles-transient) || fail "tpm2_getcap on $t failed"
    case "$out" in *0x80*) fail "transient objects left loaded on $t: $out" ;; esac
done
