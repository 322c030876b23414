#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The tool's own CMP client against a peer nobody here wrote: OpenSSL's mock CMP server
# (`openssl cmp -port`), which answers every request with one fixed certificate (-rsp_cert),
# so the certificate is prepared for the key this test makes, via the split flow:
# - on the CA host: `csr` on a SoftHSM2 device token, `sign` with the local CA; a protection
#   key for the mock server made with openssl, its CSR signed by `sign` (the device profile:
#   keyUsage digitalSignature); the station's identity on its own token (`ca station add`);
# - the mock server with that certificate as -rsp_cert, the chain as -rsp_capubs and
#   -rsp_extracerts; its genm answer echoes the question (no caCerts), so the client takes the
#   chain from the issuance answer, checked against root_cert (doc/ca-service.md);
# - on the station (no CA token, no CA PIN): `sign` through [ca] url = cmp://127.0.0.1:PORT/,
#   then `install`; the device's certificate passes `openssl verify -x509_strict`.
# And a mock server answering with a certificate for the same key from another CA (its
# chain too): refused, nothing written.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../batch/batch_lib.sh"
. "$(dirname "$0")/cmp_lib.sh"
it_setup
need python3
batch_ca
cmp_profiles
CA_CONFIG=$PROVISIONER_CONFIG
SN=MOCK-00001

# ---- on the CA host ------------------------------------------------------------------------
token_init dev-m1
prov 0 csr --serial "$SN" --device pkcs11:token=dev-m1 --out "$WORK/$SN.csr"
prov 0 sign --serial "$SN" --csr "$WORK/$SN.csr" --out "$WORK/$SN.ca.pem"
openssl x509 -in "$WORK/$SN.ca.pem" -out "$WORK/$SN.rsp.crt" || fail "the device certificate"
assert_strict_cert "$WORK/$SN.rsp.crt"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/mock.key" \
    -subj "/O=Batch Test/CN=MOCK-SRV" -out "$WORK/mock.csr" >"$WORK/log/mock-req.log" 2>&1 ||
    fail "openssl req (mock server): $(tail -n1 "$WORK/log/mock-req.log")"
prov 0 sign --serial MOCK-SRV --csr "$WORK/mock.csr" --out "$WORK/mock.pem"
openssl x509 -in "$WORK/mock.pem" -out "$WORK/mock.crt" || fail "the mock server's certificate"
openssl x509 -in "$WORK/mock.crt" -noout -ext keyUsage | grep -q 'Digital Signature' ||
    fail "the mock server's certificate lacks digitalSignature"
token_init station-m
prov 0 csr --serial STATION-M --device pkcs11:token=station-m --profile station \
    --out "$WORK/station-m.csr"
prov 0 ca station add STATION-M --csr "$WORK/station-m.csr" --out "$WORK/station-m.pem"
cat "$IT_CA_DIR/intermediate.crt" "$IT_CA_DIR/root.crt" >"$WORK/chain.pem"

# mock_serve NAME CERT CHAIN: the mock server on a free port (MOCK_PORT, MOCK_PID), answering
# with CERT and CHAIN as caPubs and extraCerts.
mock_serve() {
    MOCK_PORT=$(free_port)
    openssl cmp -port "$MOCK_PORT" -srv_cert "$WORK/mock.crt" -srv_key "$WORK/mock.key" \
        -srv_untrusted "$IT_CA_DIR/intermediate.crt" -srv_trusted "$IT_CA_DIR/root.crt" \
        -rsp_cert "$2" -rsp_capubs "$3" -rsp_extracerts "$3" \
        >"$WORK/log/mock-$1.log" 2>&1 </dev/null &
    MOCK_PID=$!
    it_track "$MOCK_PID"
    wait_port "$MOCK_PORT" "$MOCK_PID" ||
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
