#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The tool's own CMP client against a peer nobody here wrote: OpenSSL's mock CMP server
# (`openssl cmp -port`), which answers every request with one fixed certificate (-rsp_cert),
# so the certificate is prepared for the key this test makes, via the split flow:
# - on the CA host: `csr` on a SoftHSM2 device token, `sign` with the local CA; a protection
#   key for the mock server made with openssl, its CSR signed by `sign` under a profile whose
#   certificates carry id-kp-cmcCA (a CMP signer, as the service's own cmp-signer.crt,
#   doc/ca-service.md "Who signs the answers"); the station's identity on its own token (`ca
#   station add`);
# - the mock server with that certificate as -rsp_cert, the chain as -rsp_capubs and
#   -rsp_extracerts; its genm answer echoes the question (no caCerts), so the client takes the
#   chain from the issuance answer, checked against root_cert (doc/ca-service.md);
# - on the station (no CA token, no CA PIN): `sign` through [ca] url = cmp://127.0.0.1:PORT/,
#   then `install`; the device's certificate passes `openssl verify -x509_strict`.
# And a mock server answering with a certificate for the same key from another CA (its
# chain too): refused, nothing written. And a mock server that signs with a device's
# certificate of the same PKI (valid, chaining to the root, but no id-kp-cmcCA): it cannot
# stand in for the CA service; `sign` fails as against a service whose answers do not verify
# (exit 4, one line naming the signer), nothing written.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../batch/batch_lib.sh"
. "$(dirname "$0")/cmp_lib.sh"
it_setup
need python3
batch_ca
cmp_profiles
# what a CMP signer's certificate carries (the profile's extensions must keep clientAuth)
cat >>"$PROVISIONER_CONFIG" <<'EOC'

[profile_cmpsigner]
key = ec-p256
days = 30
extensions = cmpsigner_ext

[cmpsigner_ext]
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth, cmcCA
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOC
CA_CONFIG=$PROVISIONER_CONFIG
SN=MOCK-00001

# ---- on the CA host ------------------------------------------------------------------------
token_init dev-m1
prov 0 csr --serial "$SN" --device pkcs11:token=dev-m1 --out "$WORK/$SN.csr"
prov 0 sign --serial "$SN" --csr "$WORK/$SN.csr" --out "$WORK/$SN.ca.pem"
openssl x509 -in "$WORK/$SN.ca.pem" -out "$WORK/$SN.rsp.crt" || fail "the device certificate"
assert_strict_cert "$WORK/$SN.rsp.crt"
# mock_signer NAME SERIAL [ARGS...]: an openssl key $WORK/NAME.key and its certificate
# $WORK/NAME.crt for SERIAL, issued by `sign` with ARGS (a profile).
mock_signer() {
    local n=$1 sn=$2
    shift 2
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/$n.key" \
        -subj "/CN=$sn" -out "$WORK/$n.csr" >"$WORK/log/$n-req.log" 2>&1 ||
        fail "openssl req ($n): $(tail -n1 "$WORK/log/$n-req.log")"
    prov 0 sign --serial "$sn" --csr "$WORK/$n.csr" --out "$WORK/$n.pem" "$@"
    openssl x509 -in "$WORK/$n.pem" -out "$WORK/$n.crt" || fail "the certificate of $n"
    openssl x509 -in "$WORK/$n.crt" -noout -ext keyUsage | grep -q 'Digital Signature' ||
        fail "the certificate of $n lacks digitalSignature"
}
mock_signer mock MOCK-SRV --profile cmpsigner
openssl x509 -in "$WORK/mock.crt" -noout -ext extendedKeyUsage |
    grep -q 'CMC Certificate Authority' || fail "the mock server's certificate lacks cmcCA"
mock_signer mock-dev MOCK-DEV
if openssl x509 -in "$WORK/mock-dev.crt" -noout -ext extendedKeyUsage |
    grep -q 'CMC Certificate Authority'; then
    fail "a device's certificate carries cmcCA"
fi
token_init station-m
prov 0 csr --serial STATION-M --device pkcs11:token=station-m --profile station \
    --out "$WORK/station-m.csr"
prov 0 ca station add STATION-M --csr "$WORK/station-m.csr" --out "$WORK/station-m.pem"
cat "$IT_CA_DIR/intermediate.crt" "$IT_CA_DIR/root.crt" >"$WORK/chain.pem"

# mock_serve NAME CERT CHAIN [SIGNER]: the mock server on a free port (MOCK_PORT, MOCK_PID),
# answering with CERT and CHAIN as caPubs and extraCerts, its answers signed with
# $WORK/SIGNER.{crt,key} (default mock, the CMP signer).
# A port another test took between free_port and the bind is tried again on another one, as
# cmp_serve does.
mock_serve() {
    local signer=${4:-mock} try
    for try in 1 2 3 4 5; do
        MOCK_PORT=$(free_port)
        openssl cmp -port "$MOCK_PORT" -srv_cert "$WORK/$signer.crt" \
            -srv_key "$WORK/$signer.key" -srv_untrusted "$IT_CA_DIR/intermediate.crt" \
            -srv_trusted "$IT_CA_DIR/root.crt" -rsp_cert "$2" -rsp_capubs "$3" \
            -rsp_extracerts "$3" >"$WORK/log/mock-$1.log" 2>&1 </dev/null &
        MOCK_PID=$!
        it_track "$MOCK_PID"
        wait_port "$MOCK_PORT" "$MOCK_PID" && return 0
        grep -q 'Address already in use' "$WORK/log/mock-$1.log" || break
    done
    fail "openssl cmp -port did not listen: $(tail -n3 "$WORK/log/mock-$1.log" | tr '\n' ' ')"
}

# ---- on the station ------------------------------------------------------------------------
mock_serve good "$WORK/$SN.rsp.crt" "$WORK/chain.pem"
station_dir "$WORK/station-m.pem" "cmp://127.0.0.1:$MOCK_PORT/" station-m STATION-M
export PROVISIONER_CONFIG=$WORK/station/provisioner.cnf
cd "$WORK/station" || fail "cd $WORK/station"
prov 0 sign --serial "$SN" --csr "$WORK/$SN.csr" --out "$WORK/$SN.pem"
# genm, p10cr, certConf: three requests, each answered by the mock server
assert_eq "$(grep -c 'Received request, 1st line: POST / ' "$WORK/log/mock-good.log")" 3 \
    "requests the mock server got"
openssl x509 -in "$WORK/$SN.pem" -out "$WORK/$SN.got.crt" || fail "sign wrote no certificate"
assert_same_file "$WORK/$SN.got.crt" "$WORK/$SN.rsp.crt" "the mock server's certificate"
assert_eq "$(fingerprints "$WORK/$SN.pem" | tr '\n' ' ')" \
    "$(fingerprint "$WORK/$SN.rsp.crt") $(fingerprint "$IT_CA_DIR/intermediate.crt") $(fingerprint "$IT_CA_DIR/root.crt") " \
    "the bundle: certificate, intermediate, root"
prov 0 install --serial "$SN" --device pkcs11:token=dev-m1 --cert "$WORK/$SN.pem"
assert_strict_cert "devices/$SN/client.crt"
if grep -rlF -- "$CA_PIN_VALUE" "$WORK/station" >/dev/null; then
    fail "the station's files hold the CA PIN"
fi
stop_pid "$MOCK_PID"

# ---- the device's key certified by another CA: refused, nothing written --------------------
mkdir -p "$WORK/other"
openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 5 \
    -keyout "$WORK/other/ca.key" -out "$WORK/other/ca.crt" -subj /CN=Other \
    -addext "basicConstraints=critical,CA:true" -addext "keyUsage=critical,keyCertSign" \
    >/dev/null 2>&1 || fail "openssl req (other CA)"
openssl x509 -req -in "$WORK/$SN.csr" -CA "$WORK/other/ca.crt" -CAkey "$WORK/other/ca.key" \
    -CAcreateserial -days 5 -out "$WORK/other/$SN.crt" >/dev/null 2>&1 ||
    fail "openssl x509 -req (other CA)"
mock_serve other "$WORK/other/$SN.crt" "$WORK/other/ca.crt"
sed -i "s|^url = .*|url = cmp://127.0.0.1:$MOCK_PORT/|" provisioner.cnf
rm -f "$WORK/$SN.again.pem"
prov 1 sign --serial "$SN" --csr "$WORK/$SN.csr" --out "$WORK/$SN.again.pem"
assert_one_error "caPubs and extraCerts do not chain"
assert_no_file "$WORK/$SN.again.pem"
stop_pid "$MOCK_PID"

# ---- a mock server signing with a device's certificate: not the CA service ----------------
# refused_signer WHAT: `sign` fails as against a service whose answers do not verify (exit
# 4), one line naming the answer to WHAT and its signer, nothing written.
refused_signer() {
    rm -f "$WORK/$SN.again.pem"
    prov 4 sign --serial "$SN" --csr "$WORK/$SN.csr" --out "$WORK/$SN.again.pem"
    assert_one_error "CA service unavailable" "answered $1 signed by CN=MOCK-DEV" \
        "which is not a CMP signer (no id-kp-cmcCA); unverified: "
    assert_no_file "$WORK/$SN.again.pem"
}
mock_serve device "$WORK/$SN.rsp.crt" "$WORK/chain.pem" mock-dev
DEV_PORT=$MOCK_PORT
sed -i "s|^url = .*|url = cmp://127.0.0.1:$DEV_PORT/|" provisioner.cnf
refused_signer "genm caCerts"
# its first answer (genp) was refused: nothing more was asked
assert_eq "$(grep -c 'Received request, 1st line: POST / ' "$WORK/log/mock-device.log")" 1 \
    "requests the device-signed mock server got"

# The same behind a proxy that sends the first N requests to the CMP signer's mock server and
# the rest to the device's: the issuance answer (ip) signed by the device, then (N=2) the
# answer to the confirmation (an error: that server knows no such transaction).
mock_serve good2 "$WORK/$SN.rsp.crt" "$WORK/chain.pem"
GOOD_PORT=$MOCK_PORT
for n in 1 2; do
    rm -f "$WORK/split-$n.port"
    python3 "$PROV_SOURCE_ROOT/tests/integration/cmp/split_proxy.py" "$WORK/split-$n.port" \
        "$GOOD_PORT" "$n" "$DEV_PORT" "$WORK/split-$n.log" >"$WORK/log/split-$n.log" 2>&1 &
    it_track $!
    for _ in $(seq 1 200); do [ -s "$WORK/split-$n.port" ] && break; sleep 0.05; done
    [ -s "$WORK/split-$n.port" ] ||
        fail "the split proxy did not start: $(cat "$WORK/log/split-$n.log")"
    sed -i "s|^url = .*|url = cmp://127.0.0.1:$(cat "$WORK/split-$n.port")/|" provisioner.cnf
    refused_signer "the certificate of $SN"
    want="$GOOD_PORT $DEV_PORT "
    [ "$n" = 1 ] || want="$GOOD_PORT $want"
    assert_eq "$(tr '\n' ' ' <"$WORK/split-$n.log")" "$want" "N=$n: the requests and where they went"
done
