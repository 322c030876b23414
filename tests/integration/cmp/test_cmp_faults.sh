#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The CA service under faults (doc/ca-service.md, "The CA token comes and goes"): stations
# issue through `[ca] url = cmp://` batches (as test_cmp_batch.sh) while
# (a) the CA token is pulled and put back (tests/integration/pkcs11/fault_module.c,
#     FAULT_PULLED) under 4 stations enrolling at once: the service answers "unavailable"
#     meanwhile, re-opens the token by itself and serves again; the stations' re-runs finish
#     the lots; every device has one certificate in the CA index, none twice;
# (b) a station is killed (SIGKILL) between its request and the answer (the CA token made
#     slow with pkcs11/latency_module.c, so the service is still signing): its re-run gets
#     the same certificate, issued once;
# (c) the service is killed (SIGKILL) in the middle of a request, then started again: the
#     station's re-run completes with one issuance per device.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../batch/batch_lib.sh"
. "$(dirname "$0")/cmp_lib.sh"
it_setup
need sqlite3
[ -n "${PROV_FAULT_MODULE:-}" ] || fail "PROV_FAULT_MODULE is not set (run through meson test)"
[ -n "${PROV_LATENCY_MODULE:-}" ] || fail "PROV_LATENCY_MODULE is not set (run through meson test)"
need_file "$PROV_FAULT_MODULE" "$PROV_LATENCY_MODULE"
PER=${PROV_TEST_SANITIZED:+5}
PER=${PER:-10}
batch_ca
cmp_profiles
CA_CONFIG=$PROVISIONER_CONFIG
INDEX=$IT_CA_DIR/index.sqlite

# the CA host's config with the CA token behind a test module (the rest unchanged)
sed "s|^pkcs11_module = .*|pkcs11_module = $PROV_FAULT_MODULE|" "$CA_CONFIG" >"$WORK/fault.cnf"
sed "s|^pkcs11_module = .*|pkcs11_module = $PROV_LATENCY_MODULE|" "$CA_CONFIG" >"$WORK/slow.cnf"

# station NAME LOT TOKENS: station NAME's identity (its own token), registered for LOT, and
# its directory $WORK/NAME with a config through the service and a manifest of TOKENS device
# tokens of $PER devices each, serials SN-<NAME>-NNNN.
station() {
    local n=$1 lot=$2 d=$WORK/$1 t r label k=0
    token_init "id-$n"
    prov 0 csr --serial "$n" --device "pkcs11:token=id-$n" --profile station \
        --out "$WORK/$n.csr"
    prov 0 ca station add "$n" --csr "$WORK/$n.csr" --out "$WORK/$n.pem"
    prov 0 ca lot add "$lot" --count 1000 --station "$n"
    mkdir -p "$d"
    openssl x509 -in "$WORK/$n.pem" -out "$d/station.crt"
    cp "$IT_CA_DIR/root.crt" "$d/root.crt"
    cp "$WORK/device.pin" "$d/device.pin"
    cp "$WORK/server-ca.pem" "$d/server-ca.pem"
    echo "serial,device,cn,x_token" >"$d/lot.csv"
    for ((t = 1; t <= $3; t++)); do
        label="d$n-$t"
        token_init "$label"
        for ((r = 1; r <= PER; r++)); do
            k=$((k + 1))
            printf 'SN-%s-%04d,pkcs11:token=%s,,%s\n' "$n" "$k" "$label" "$label" >>"$d/lot.csv"
        done
    done
}

# station_config NAME LOT: the station's config for the service on $CMP_PORT
station_config() {
    cmp_station_config "$WORK/$1/provisioner.cnf" "$2" \
        "cmp://127.0.0.1:$CMP_PORT/.well-known/cmp" "pkcs11:token=id-$1;object=$1"
}

# run_batch NAME: the station's batch, its exit code in $WORK/log/NAME.rc
run_batch() {
    local rc=0
    (cd "$WORK/$1" && PROVISIONER_CONFIG=$WORK/$1/provisioner.cnf "$PROVISIONER" batch lot.csv \
        --no-progress >>"$WORK/log/$1.out" 2>>"$WORK/log/$1.err") || rc=$?
    echo "$rc" >"$WORK/log/$1.rc"
}

# assert_lot_done NAME N: every device of the station has a certificate that verifies, and
# the CA index holds exactly one certificate per device serial, N in all.
assert_lot_done() {
    local n=$1 want=$2 d got
    got=0
    for d in "$WORK/$n"/devices/SN-*; do
        assert_strict_cert "$d/client.crt"
        got=$((got + 1))
    done
    assert_eq "$got" "$want" "$n: devices with a certificate"
    assert_eq "$(sql_q "$INDEX" "SELECT count(*) FROM certificate WHERE serial LIKE 'SN-$n-%'")" \
        "$want" "$n: certificates in the CA index"
    assert_eq "$(sql_q "$INDEX" "SELECT count(*) FROM (SELECT serial FROM certificate
        WHERE serial LIKE 'SN-$n-%' GROUP BY serial HAVING count(*) > 1)")" 0 \
        "$n: serials certified twice"
}

# wait_recorded SERIAL: until the CA index holds a certificate for SERIAL, 30 s at most (the
# caller asserts what it needs)
wait_recorded() {
    local end=$((SECONDS + 30))
    while [ "$(sql_q "$INDEX" "SELECT count(*) FROM certificate WHERE serial = '$1'")" != 1 ] &&
        [ "$SECONDS" -lt "$end" ]; do
        sleep 0.025
    done
}

# rerun_until_done NAME: re-runs the station's batch (up to 4 times) until it exits 0
rerun_until_done() {
    local i
    for i in 1 2 3 4; do
        [ "$(cat "$WORK/log/$1.rc" 2>/dev/null)" = 0 ] && return 0
        run_batch "$1"
    done
    fail "$1: the batch did not finish in 4 re-runs: $(tail -n2 "$WORK/log/$1.err" | tr '\n' ' ')"
}

# ==== (a) the CA token pulled and put back while 4 stations enroll ========================
for s in S1 S2 S3 S4; do
    station "$s" "LOT-$s" 2
done
cmp_station OSS # an openssl key, for `openssl cmp`
prov 0 ca lot add LOT-OSS --count 10 --station OSS
export FAULT_TARGET=$SOFTHSM_MODULE FAULT_PULLED=$WORK/pulled
PROVISIONER_CONFIG=$WORK/fault.cnf cmp_serve
unset FAULT_TARGET FAULT_PULLED
for s in S1 S2 S3 S4; do
    station_config "$s" "LOT-$s"
done
pids=()
for s in S1 S2 S3 S4; do
    run_batch "$s" &
    pids+=($!)
done
# pull the token once the lots are under way, put it back 3 s later
for _ in $(seq 1 300); do
    [ "$(cmp_issued)" -ge 8 ] && break
    sleep 0.05
done
touch "$WORK/pulled"
sleep 3
rm -f "$WORK/pulled"
for p in "${pids[@]}"; do
    wait "$p" || true
done
assert_grep "$CMP_LOG" 'outcome="unavailable: the CA token does not answer' \
    "the service answered \"unavailable\" while the token was out"
assert_grep "$CMP_LOG" 'CA unavailable: the CA token does not answer' "the loss is logged"
kill -0 "$CMP_PID" 2>/dev/null || fail "the service died with the token"
for s in S1 S2 S3 S4; do
    rerun_until_done "$s"
done
assert_grep "$CMP_LOG" 'CA available again after' "the service re-opened the token"
for s in S1 S2 S3 S4; do
    assert_lot_done "$s" $((2 * PER))
done
# the service kept running throughout: one process, re-opened at least once
assert_eq "$(grep -c 'listening on' "$WORK/log/serve-$CMP_PORT.out")" 1 "the service was not restarted"
stop_pid "$CMP_PID"

# ==== (a') the PIN rejected on re-open: unavailable, one line, never tried again ============
PROVISIONER_CONFIG=$WORK/fault.cnf FAULT_TARGET=$SOFTHSM_MODULE FAULT_PULLED=$WORK/pulled \
    cmp_serve
touch "$WORK/pulled"
cp "$WORK/ca.pin" "$WORK/ca.pin.good"
write_secret "$WORK/ca.pin" "999999"
cmp_client genm-pulled OSS -cmd genm -unprotected_errors || true
rm -f "$WORK/pulled"
sleep 1.2
cmp_client genm-badpin1 OSS -cmd genm -unprotected_errors || true
sleep 1.2
cmp_client genm-badpin2 OSS -cmd genm -unprotected_errors || true
assert_grep "$WORK/log/cmp-genm-badpin2.log" 'systemUnavail|unavailable' \
    "openssl cmp sees the service unavailable"
assert_eq "$(grep -c 'CA unavailable until restarted: the CA token rejected the PIN' "$CMP_LOG")" 1 \
    "the rejected PIN is said once"
assert_no_grep "$CMP_LOG" 'CA available again' "nothing re-opened with a rejected PIN"
stop_pid "$CMP_PID"
mv "$WORK/ca.pin.good" "$WORK/ca.pin"
chmod 0600 "$WORK/ca.pin"

# ==== (b) the station killed between its request and the answer ===========================
# the CA token 1.5 s per signature: the certificate is in the CA index a signature before
# the answer (the CMP signer's protection) goes out
station S5 LOT-S5 1
export LATENCY_TARGET=$SOFTHSM_MODULE LATENCY_SIGN_MS=1500 LATENCY_TOKENS=provisioner-ca
PROVISIONER_CONFIG=$WORK/slow.cnf cmp_serve
unset LATENCY_TARGET LATENCY_SIGN_MS LATENCY_TOKENS
station_config S5 LOT-S5
head -n 2 "$WORK/S5/lot.csv" >"$WORK/S5/one.csv"
(cd "$WORK/S5" && PROVISIONER_CONFIG=$WORK/S5/provisioner.cnf exec "$PROVISIONER" batch one.csv \
    --no-progress >"$WORK/log/S5-killed.out" 2>&1) &
victim=$!
it_track "$victim"
wait_recorded SN-S5-0001
assert_eq "$(sql_q "$INDEX" "SELECT count(*) FROM certificate WHERE serial = 'SN-S5-0001'")" 1 \
    "the certificate was recorded while the station waited"
kill -KILL "$victim"
wait "$victim" 2>/dev/null || true
first=$(sql_q "$INDEX" "SELECT lower(hex(der)) FROM certificate WHERE serial = 'SN-S5-0001'")
(cd "$WORK/S5" && PROVISIONER_CONFIG=$WORK/S5/provisioner.cnf prov 0 batch one.csv --no-progress)
assert_eq "$(sql_q "$INDEX" "SELECT count(*) FROM certificate WHERE serial = 'SN-S5-0001'")" 1 \
    "the re-run issued nothing new"
assert_eq "$(openssl x509 -in "$WORK/S5/devices/SN-S5-0001/client.crt" -outform DER |
    od -An -tx1 -v | tr -d ' \n')" "$first" \
    "the re-run got the same certificate"
assert_grep "$CMP_LOG" 'serial=SN-S5-0001 .*outcome="issued before \(a retry\)"' \
    "the service answered the re-run as a retry"

# ==== (c) the service killed in the middle of a request, then started again ===============
head -n 1 "$WORK/S5/lot.csv" >"$WORK/S5/rest.csv"
tail -n +3 "$WORK/S5/lot.csv" >>"$WORK/S5/rest.csv"
(cd "$WORK/S5" && PROVISIONER_CONFIG=$WORK/S5/provisioner.cnf exec "$PROVISIONER" batch rest.csv \
    --no-progress >"$WORK/log/S5-service-killed.out" 2>&1) &
station_pid=$!
it_track "$station_pid"
wait_recorded SN-S5-0002
kill -KILL "$CMP_PID"
wait "$CMP_PID" 2>/dev/null || true
rc=0
wait "$station_pid" || rc=$?
[ "$rc" != 0 ] || fail "the station's run went on without the service"
port=$CMP_PORT
PROVISIONER_CONFIG=$CA_CONFIG cmp_serve
sed -i "s|127.0.0.1:$port/|127.0.0.1:$CMP_PORT/|" "$WORK/S5/provisioner.cnf"
(cd "$WORK/S5" && PROVISIONER_CONFIG=$WORK/S5/provisioner.cnf prov 0 batch rest.csv --no-progress)
assert_lot_done S5 "$PER"
stop_pid "$CMP_PID"
