#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The split flow through the CA service (doc/ca-service.md, "Stations as clients"): on a
# station with no CA token and no CA PIN, `csr` on the device, `sign` through the service,
# `install` on the device, over cmp://, est:// and cmps:// (CMP over HTTPS; a service
# whose TLS certificate does not chain to tls_ca is refused before anything is asked). `sign` opens its issuer
# deferred (cli/cmd_sign.c); the remote issuer then asks the service at its first issue.
# Each certificate passes `openssl verify -x509_strict` and is in the CA index once, issued
# by the station.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../batch/batch_lib.sh"
. "$(dirname "$0")/cmp_lib.sh"
it_setup
need sqlite3
batch_ca
cmp_profiles
CA_CONFIG=$PROVISIONER_CONFIG
token_init station-s
prov 0 csr --serial STATION-S --device pkcs11:token=station-s --profile station \
    --out "$WORK/station-s.csr"
prov 0 ca station add STATION-S --csr "$WORK/station-s.csr" --out "$WORK/station-s.pem"
prov 0 ca lot add LOT-IT-1 --count 10 --station STATION-S

# split PROTO URL SERIAL TOKEN: csr, sign through URL, install; the device's certificate
# verifies strictly and the CA index holds it once, issued by PROTO:STATION-S.
split() {
    local proto=$1 url=$2 sn=$3 tok=$4
    export PROVISIONER_CONFIG=$CA_CONFIG
    token_init "$tok"
    rm -rf "$WORK/station"
    station_dir "$WORK/station-s.pem" "$url" station-s STATION-S
    export PROVISIONER_CONFIG=$WORK/station/provisioner.cnf
    cd "$WORK/station" || fail "cd $WORK/station"
    prov 0 csr --serial "$sn" --device "pkcs11:token=$tok" --out "$WORK/$sn.csr"
    prov 0 sign --serial "$sn" --csr "$WORK/$sn.csr" --out "$WORK/$sn.pem"
    assert_strict_cert "$WORK/$sn.pem"
    prov 0 install --serial "$sn" --device "pkcs11:token=$tok" --cert "$WORK/$sn.pem"
    assert_strict_cert "devices/$sn/client.crt"
    assert_same_file "devices/$sn/client.crt" <(openssl x509 -in "$WORK/$sn.pem") \
        "$proto: the installed certificate is the one signed"
    assert_eq "$(sql_q "$IT_CA_DIR/index.sqlite" "SELECT count(*) || ' ' || issued_by
        FROM certificate WHERE serial = '$sn'")" "1 $proto:STATION-S" "$proto: the CA index"
    if grep -rlF -- "$CA_PIN_VALUE" "$WORK/station" >/dev/null; then
        fail "$proto: the station's files hold the CA PIN"
    fi
    cd "$WORK" || fail "cd $WORK"
    export PROVISIONER_CONFIG=$CA_CONFIG
}

cmp_serve
split cmp "cmp://127.0.0.1:$CMP_PORT/.well-known/cmp" SP-00001 dev-s1
cmp_stop
cmp_serve --tls-cert "$WORK/server-ca/server.crt" --tls-key "$WORK/server-ca/server.key"
split est "est://127.0.0.1:$CMP_PORT" SP-00002 dev-s2
split cmp "cmps://127.0.0.1:$CMP_PORT/.well-known/cmp" SP-00003 dev-s3

# cmps:// checks the service's TLS certificate: against a tls_ca that did not issue it (the
# device root), the station stops before anything is asked: exit 4, one line, nothing issued
token_init dev-s4
station_dir "$WORK/station-s.pem" "cmps://127.0.0.1:$CMP_PORT/.well-known/cmp" station-s STATION-S
sed -i 's/^tls_ca = .*/tls_ca = root.crt/' "$WORK/station/provisioner.cnf"
cd "$WORK/station" || fail "cd $WORK/station"
PROVISIONER_CONFIG=$WORK/station/provisioner.cnf prov 0 csr --serial SP-00004 \
    --device pkcs11:token=dev-s4 --out "$WORK/SP-00004.csr"
PROVISIONER_CONFIG=$WORK/station/provisioner.cnf prov 4 sign --serial SP-00004 \
    --csr "$WORK/SP-00004.csr" --out "$WORK/SP-00004.pem"
assert_one_error "CA service cmps://127.0.0.1:$CMP_PORT/.well-known/cmp" "genm caCerts"
assert_no_file "$WORK/SP-00004.pem"
assert_eq "$(sql_q "$IT_CA_DIR/index.sqlite" "SELECT count(*) FROM certificate
    WHERE serial = 'SP-00004'")" 0 "cmps with a TLS certificate it does not trust: nothing issued"
cd "$WORK" || fail "cd $WORK"
cmp_stop
