#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Several CMP transactions open at once (doc/ca-service.md, "Transactions and replays"): two
# `openssl cmp` clients (stations CA-1 and CA-2), each through its own proxy
# (interleave_proxy.py) that holds its certConf until the other has gone ahead, reach
# `ca serve` as ir, ir, certConf, certConf: both transactions open together. Each is
# answered for its own transaction: both certificates issued, both confirmed (delivered in
# the CA index), each to its own station.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../batch/batch_lib.sh"
. "$(dirname "$0")/cmp_lib.sh"
it_setup
need sqlite3 python3
batch_ca
cmp_profiles
IX=$IT_CA_DIR/index.sqlite
cmp_station CA-1
cmp_station CA-2
prov 0 ca lot add LOT-C --count 10 --station CA-1 --station CA-2
cmp_serve
mkdir -p "$WORK/done"

# proxy NAME WAIT_FOR: a proxy for client NAME to the service; its port in $WORK/NAME.port
proxy() {
    python3 "$PROV_SOURCE_ROOT/tests/integration/cmp/interleave_proxy.py" "$WORK/$1.port" \
        "$CMP_PORT" "$1" "$2" "$WORK/done" 2>"$WORK/log/proxy-$1.err" &
    it_track $!
    for _ in $(seq 1 200); do
        [ -s "$WORK/$1.port" ] && return 0
        sleep 0.05
    done
    fail "proxy $1 did not start: $(cat "$WORK/log/proxy-$1.err")"
}
proxy A B-1 # A's certConf waits for B's ir
proxy B A-2 # B's certConf waits for A's certConf

# client NAME STATION SERIAL: openssl cmp through proxy NAME (in the background)
client() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$WORK/$3.key" \
        2>/dev/null || fail "openssl genpkey"
    CMP_PORT=$(cat "$WORK/$1.port") cmp_client "$1" "$2" -cmd ir -newkey "$WORK/$3.key" \
        -subject "/CN=$3" -certout "$WORK/$3.crt" &
}
client A CA-1 SN-C-A
pid_a=$!
client B CA-2 SN-C-B
pid_b=$!
wait "$pid_a" || fail "client A: $(tail -n3 "$WORK/log/cmp-A.log" | tr '\n' ' ')"
wait "$pid_b" || fail "client B: $(tail -n3 "$WORK/log/cmp-B.log" | tr '\n' ' ')"

# the service saw both irs before either certConf
grep -oE ' (ir|certConf) station=CA-[12] ' "$CMP_LOG" | awk '{ print $1 }' | tr '\n' ' ' \
    >"$WORK/order"
assert_eq "$(cat "$WORK/order")" "ir ir certConf certConf " "the order the service saw"
for s in A:CA-1:SN-C-A B:CA-2:SN-C-B; do
    IFS=: read -r c st serial <<<"$s"
    assert_strict_cert "$WORK/$serial.crt"
    assert_grep "$CMP_LOG" "ir station=$st serial=$serial cert_serial=[0-9a-f]+ outcome=\"issued\"" \
        "$c: issued"
    assert_grep "$CMP_LOG" "certConf station=$st serial=$serial outcome=\"confirmed\"" \
        "$c: confirmed in its own transaction"
    assert_eq "$(sql_q "$IX" "SELECT status || ' ' || issued_by FROM certificate
        WHERE serial = '$serial'")" "delivered cmp:$st" "$c: delivered to its station"
done
cmp_stop
