#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# A station with no CA token and no CA PIN issues a lot of 100 SoftHSM2 devices through the
# CA service over EST (doc/ca-service.md): its config says [ca] url = est://..., the service's
# TLS certificate is checked against [ca] tls_ca, the station's identity key (its TLS client
# key) is on its own token (made with `provisioner csr --profile station`, certified and
# registered on the CA host with `ca station add`), the lot is registered there with
# `ca lot add`.
# - one kept-alive TLS connection for the lot's requests;
# - every device's certificate passes `openssl verify -x509_strict`; the CA index holds 100
#   for the lot, each issued by est:STATION-B; nothing in the station's config, environment
#   or files holds the CA PIN;
# - a second run issues nothing more (the journal resumes, every row done);
# - with the service gone, a new lot's run exits 4 with one line before any device is touched.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../batch/batch_lib.sh"
. "$(dirname "$0")/../cmp/cmp_lib.sh"
it_setup
need sqlite3
N=${PROV_TEST_SANITIZED:+20}
N=${N:-100}
batch_ca
cmp_profiles
CA_CONFIG=$PROVISIONER_CONFIG

# ---- the station's identity: key on its own token, certificate from the CA host ----------
token_init station-b
prov 0 csr --serial STATION-B --device pkcs11:token=station-b --profile station \
    --out "$WORK/station-b.csr"
prov 0 ca station add STATION-B --csr "$WORK/station-b.csr" --out "$WORK/station-b.pem"
prov 0 ca lot add LOT-IT-1 --count "$N" --station STATION-B
cmp_serve --tls-cert "$WORK/server-ca/server.crt" --tls-key "$WORK/server-ca/server.key"

# ---- the station: its own directory and config, no [ca] dir, key or PIN ----------------
mkdir -p "$WORK/station"
openssl x509 -in "$WORK/station-b.pem" -out "$WORK/station/station.crt"
cp "$IT_CA_DIR/root.crt" "$WORK/station/root.crt"
cp "$WORK/device.pin" "$WORK/station/device.pin"
cp "$WORK/server-ca.pem" "$WORK/station/server-ca.pem"
cmp_station_config "$WORK/station/provisioner.cnf" LOT-IT-1 "est://127.0.0.1:$CMP_PORT" \
    "pkcs11:token=station-b;object=STATION-B" "tls_ca = server-ca.pem"
export PROVISIONER_CONFIG=$WORK/station/provisioner.cnf
cd "$WORK/station"
make_lot lot.csv $((N / 10)) 10
start=$(date +%s.%N)
prov 0 batch lot.csv --no-progress
it_log "batch of $N over EST: $(echo "$(date +%s.%N) - $start" | bc) s"
n=0
for d in devices/SN-*; do
    assert_strict_cert "$d/client.crt"
    n=$((n + 1))
done
assert_eq "$n" "$N" "devices with a certificate"
# keep-alive: every simpleenroll of the run came on one connection (one peer port)
assert_eq "$(awk '/ simpleenroll / { print $4 }' "$CMP_LOG" | sort -u | wc -l)" 1 \
    "connections the station's simpleenrolls came on"
assert_eq "$(sql_q "$IT_CA_DIR/index.sqlite" "SELECT count(*) FROM certificate
    WHERE lot = 'LOT-IT-1' AND issued_by = 'est:STATION-B'")" "$N" "the lot in the CA index"
if grep -rlF -- "$CA_PIN_VALUE" "$WORK/station" >/dev/null; then
    fail "the station's files hold the CA PIN"
fi
if env | grep -qF -- "$CA_PIN_VALUE"; then
    fail "the station's environment holds the CA PIN"
fi

# ---- run again: nothing more issued ----------------------------------------------------
prov 0 batch lot.csv --no-progress
assert_eq "$(sql_q "$IT_CA_DIR/index.sqlite" "SELECT count(*) FROM certificate
    WHERE lot = 'LOT-IT-1'")" "$N" "a second run issues nothing"

# ---- the service gone: exit 4, one line, no device touched -------------------------------
stop_pid "$CMP_PID"
echo "serial,device,cn,x_token" >lot2.csv
token_init dev-x
echo "SN-09999,pkcs11:token=dev-x,," >>lot2.csv
sed -i 's/^lot = LOT-IT-1$/lot = LOT-IT-2/' provisioner.cnf
prov 4 batch lot2.csv --no-progress
assert_one_error "CA service"
assert_no_file devices/SN-09999
