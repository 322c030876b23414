#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# A CA pair (doc/revocation.md, doc/ca-service.md): two `provisioner ca serve` processes, two
# CA hosts — each with its own copy of the CA directory and of the CA token directory — and
# one CA index in a PostgreSQL this test starts ([ca] index). Both CA tokens sign slowly
# (pkcs11/latency_module.c, 300 ms), so that the hosts' requests overlap between a lot's cap
# check and the insert. Against concurrent `openssl cmp` clients, half on each host:
# - a lot's cap holds across both: of 12 requests for a lot of 6, exactly 6 certificates;
# - no public key is certified twice: the same key sent to both hosts at once is certified
#   once (one row in the index);
# - every issuance is recorded once (rows counted against the certificates the clients got);
# - a revocation made through one host (rr) is in the other host's CRL (its `ca crl`, and
#   its service's /crl/intermediate.crl).
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../batch/batch_lib.sh"
. "$(dirname "$0")/../pg_lib.sh"
. "$(dirname "$0")/cmp_lib.sh"
it_setup
need curl
[ -n "${PROV_LATENCY_MODULE:-}" ] || fail "PROV_LATENCY_MODULE is not set (run through meson test)"
need_file "$PROV_LATENCY_MODULE"
pg_start main
ca_prepare pkcs11
sed -i "s|^\[ca\]\$|[ca]\nindex = $PG_URI\nindex_password = file:$WORK/ledger.pass|" \
    "$PROVISIONER_CONFIG"
prov 0 ca init
batch_profile >>"$PROVISIONER_CONFIG"
cmp_profiles
cmp_station ST-1
prov 0 ca lot add LOT-P --count 6 --station ST-1
prov 0 ca lot add LOT-Q --count 10 --station ST-1

# Host A's service once, so that its CMP signer (key in the CA token, certificate in the CA
# directory) exists before host B copies both.
cmp_serve
cmp_stop
HOST_B=$WORK/host-b
mkdir -p "$HOST_B"
cp -a "$WORK/ca" "$HOST_B/ca"
cp -a "$WORK/ca.pin" "$WORK/device.pin" "$WORK/server-ca.pem" "$WORK/root.conf" "$HOST_B/"
cp -a "$WORK/softhsm" "$HOST_B/softhsm"
sed "s|$WORK/softhsm/tokens|$HOST_B/softhsm/tokens|" "$WORK/softhsm/softhsm2.conf" \
    >"$HOST_B/softhsm/softhsm2.conf"
sed "s|^dir = .*|dir = $HOST_B/ca|" "$PROVISIONER_CONFIG" >"$HOST_B/provisioner.cnf"
grep -q "^dir = $HOST_B/ca\$" "$HOST_B/provisioner.cnf" || fail "host B's config names no CA dir"
# each service's CA token behind the latency module (the rest of each config unchanged)
sed "s|^pkcs11_module = .*|pkcs11_module = $PROV_LATENCY_MODULE|" "$PROVISIONER_CONFIG" \
    >"$WORK/slow.cnf"
sed -i "s|^pkcs11_module = .*|pkcs11_module = $PROV_LATENCY_MODULE|" "$HOST_B/provisioner.cnf"

export LATENCY_TARGET=$SOFTHSM_MODULE LATENCY_SIGN_MS=300 LATENCY_TOKENS=provisioner-ca
PROVISIONER_CONFIG=$WORK/slow.cnf cmp_serve
PORT_A=$CMP_PORT PID_A=$CMP_PID
SOFTHSM2_CONF=$HOST_B/softhsm/softhsm2.conf PROVISIONER_CONFIG=$HOST_B/provisioner.cnf cmp_serve
PORT_B=$CMP_PORT PID_B=$CMP_PID

# ask NAME PORT LOT KEY: an ir for KEY on LOT's path of the service on PORT (background-safe)
ask() {
    openssl cmp -server "127.0.0.1:$2" -path "/.well-known/cmp/p/$3" \
        -cert "$WORK/stations/ST-1.crt" -key "$WORK/stations/ST-1.key" \
        -trusted "$IT_CA_DIR/root.crt" -msg_timeout 60 -total_timeout 120 \
        -cmd ir -newkey "$WORK/$4.key" -subject "/CN=$1" -certout "$WORK/$1.crt" \
        >"$WORK/log/cmp-$1.log" 2>&1
}
new_key() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$WORK/$1.key" \
        2>/dev/null || fail "openssl genpkey"
}

# ---- the cap across both hosts --------------------------------------------------------
pids=()
for i in $(seq -w 1 12); do
    new_key "P-$i"
    if [ $((10#$i % 2)) -eq 0 ]; then port=$PORT_A; else port=$PORT_B; fi
    ask "P-$i" "$port" LOT-P "P-$i" &
    pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || true; done
got=$(find "$WORK" -maxdepth 1 -name 'P-*.crt' | wc -l)
assert_eq "$got" 6 "certificates the clients got for LOT-P (cap 6)"
assert_eq "$(pg_q "SELECT count(*) FROM certificate WHERE lot = 'LOT-P'")" 6 "LOT-P rows"
assert_eq "$(grep -l 'its cap (6) is reached' "$WORK"/log/cmp-P-*.log | wc -l)" 6 \
    "refusals naming the cap"
for c in "$WORK"/P-*.crt; do
    assert_strict_cert "$c"
    hex=$(openssl x509 -in "$c" -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f')
    assert_eq "$(pg_q "SELECT count(*) FROM certificate WHERE cert_serial = '$hex'")" 1 \
        "$c recorded once"
done
grep -q 'LOT-P' "$WORK/log/serve-$PORT_A.err" || fail "host A served none of LOT-P"
grep -q 'LOT-P' "$WORK/log/serve-$PORT_B.err" || fail "host B served none of LOT-P"

# ---- one key, both hosts at once: certified once ---------------------------------------
new_key Q-SAME
ask Q-1 "$PORT_A" LOT-Q Q-SAME &
qa=$!
ask Q-2 "$PORT_B" LOT-Q Q-SAME &
qb=$!
wait "$qa" || true
wait "$qb" || true
spki=$(openssl pkey -in "$WORK/Q-SAME.key" -pubout -outform DER | sha256sum | cut -d' ' -f1)
assert_eq "$(pg_q "SELECT count(*) FROM certificate WHERE pubkey_sha256 = '$spki'")" 1 \
    "the shared key's certificates"
assert_eq "$(pg_q "SELECT count(*) FROM certificate WHERE lot = 'LOT-Q'")" 1 "LOT-Q rows"
assert_eq "$(pg_q "SELECT count(*) - count(DISTINCT pubkey_sha256) FROM certificate")" 0 \
    "a key certified twice"

# ---- a revocation through host A, in host B's CRL --------------------------------------
victim=$(find "$WORK" -maxdepth 1 -name 'P-*.crt' | sort | head -n1)
vhex=$(openssl x509 -in "$victim" -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f')
openssl cmp -server "127.0.0.1:$PORT_A" -path /.well-known/cmp \
    -cert "$WORK/stations/ST-1.crt" -key "$WORK/stations/ST-1.key" \
    -trusted "$IT_CA_DIR/root.crt" -msg_timeout 30 -total_timeout 60 \
    -cmd rr -oldcert "$victim" -revreason 1 >"$WORK/log/cmp-rr.log" 2>&1 ||
    fail "rr through host A: $(tail -n3 "$WORK/log/cmp-rr.log" | tr '\n' ' ')"
assert_eq "$(pg_q "SELECT reason FROM revocation WHERE cert_serial = '$vhex'")" 1 "rr recorded"
SOFTHSM2_CONF=$HOST_B/softhsm/softhsm2.conf PROVISIONER_CONFIG=$HOST_B/provisioner.cnf \
    prov 0 ca crl
curl -sS -o "$WORK/b.crl" "http://127.0.0.1:$PORT_B/crl/intermediate.crl" || fail "curl host B's CRL"
openssl crl -inform DER -in "$WORK/b.crl" -CAfile "$HOST_B/ca/intermediate.crt" -verify -noout \
    -text >"$WORK/log/b-crl.txt" 2>&1 || fail "host B's CRL does not verify"
grep -qi "Serial Number: *$vhex" "$WORK/log/b-crl.txt" ||
    fail "the revocation made through host A is not in host B's CRL"
assert_no_file "$WORK/ca/intermediate.crl"

CMP_PID=$PID_A CMP_LOG=$WORK/log/serve-$PORT_A.err cmp_stop
CMP_PID=$PID_B CMP_LOG=$WORK/log/serve-$PORT_B.err cmp_stop

# ---- the registry read through PostgreSQL: lists on host B ------------------------------
SOFTHSM2_CONF=$HOST_B/softhsm/softhsm2.conf PROVISIONER_CONFIG=$HOST_B/provisioner.cnf \
    prov 0 ca lot list
assert_grep "$PROV_OUT" 'LOT-P' "ca lot list on host B"
SOFTHSM2_CONF=$HOST_B/softhsm/softhsm2.conf PROVISIONER_CONFIG=$HOST_B/provisioner.cnf \
    prov 0 ca station list
assert_grep "$PROV_OUT" 'ST-1' "ca station list on host B"
