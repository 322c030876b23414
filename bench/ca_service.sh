#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# bench/ca_service.sh [BUILD_DIR [N]]: certificates per second through the CA service
# (doc/ca-service.md) for 8 concurrent stations, N certificates each (default 25), against
# the in-process issue floor, in one run:
# - floor: bench_issue (bench/bench_issue.c) issues 8 x N CSRs one after another in one
#   process through the issue path the service runs (CSR verify, certificate built, signed in
#   the CA token, recorded in the CA index), the CA opened once: no network, no CMP, no TLS;
# - EST: each station is one curl process sending its N simpleenroll requests on one
#   kept-alive TLS connection (its client certificate the station's identity);
# - CMP: each station runs `openssl cmp -cmd ir` N times (a new connection and two round trips,
#   ir and certConf, per certificate: what openssl's client does).
# For EST and CMP: the rate against the floor's, and the service process's CPU (user +
# system from /proc/PID/stat) per certificate. The keys and CSRs are made before the clock
# starts. Uses the integration harness's fixtures (tests/integration/lib.sh) in
# BUILD_DIR/it-work/bench-ca-service; the service is stopped by its PID. Nothing is asserted
# about time (bench/README.md): it fails only when a certificate is not issued.
# CA_INDEX=postgresql: the CA index in a PostgreSQL of the run's own ([ca] index, a CA pair's
# store, doc/revocation.md; tests/integration/pg_lib.sh) instead of <CA dir>/index.sqlite.

SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(cd "${1:-$SRC/build}" && pwd)
N=${2:-25}
STATIONS=8
export PROVISIONER=$BUILD/provisioner PROV_BUILD_ROOT=$BUILD PROV_SOURCE_ROOT=$SRC
IT_NAME=bench-ca-service
. "$SRC/tests/integration/lib.sh"
. "$SRC/tests/integration/batch/batch_lib.sh"
. "$SRC/tests/integration/cmp/cmp_lib.sh"
. "$SRC/bench/lib.sh"
it_setup
need curl
batch_ca
cmp_profiles
if [ "${CA_INDEX:-sqlite}" = postgresql ]; then
    . "$SRC/tests/integration/pg_lib.sh"
    pg_start bench
    sed -i "s|^\[ca\]\$|[ca]\nindex = $PG_URI\nindex_password = file:$WORK/ledger.pass|" \
        "$PROVISIONER_CONFIG"
    cmp_issued() { pg_q 'SELECT count(*) FROM certificate'; }
fi
for ((s = 1; s <= STATIONS; s++)); do
    cmp_station "BENCH-$s"
done
prov 0 ca lot add LOT-BENCH --count $((STATIONS * N * 2 + 10)) \
    $(for ((s = 1; s <= STATIONS; s++)); do printf -- '--station BENCH-%d ' "$s"; done)

# ---- floor: the same issue path in one process, before the service holds the CA ------------
mkdir -p "$WORK/in/floor"
for ((s = 1; s <= STATIONS; s++)); do
    for ((i = 1; i <= N; i++)); do
        f=$(printf 'F%02d-%04d' "$s" "$i")
        openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /dev/null \
            -subj "/CN=$f" -outform DER -out "$WORK/in/floor/$f.der" 2>/dev/null ||
            fail "openssl req $f"
    done
done
before=$(cmp_issued)
floor=$("$BUILD/bench/bench_issue" "$PROVISIONER_CONFIG" "$WORK"/in/floor/*.der) ||
    fail "bench_issue: not every certificate issued"
[ "$(cmp_issued)" -eq $((before + STATIONS * N)) ] || fail "floor: not every certificate recorded"
floor_s=$(echo "$floor" | sed -n 's/.* s=\([0-9.]*\) .*/\1/p')
floor_cpu=$(echo "$floor" | sed -n 's/.* cpu=\([0-9.]*\)$/\1/p')

cmp_serve --tls-cert "$WORK/server-ca/server.crt" --tls-key "$WORK/server-ca/server.key" \
    --max-body 65536
EST=https://127.0.0.1:$CMP_PORT/.well-known/est

# ---- inputs, before the clock: a curl config per station, keys for CMP ---------------------
for ((s = 1; s <= STATIONS; s++)); do
    mkdir -p "$WORK/in/$s"
    : >"$WORK/in/$s/curl.cfg"
    for ((i = 1; i <= N; i++)); do
        e=$(printf 'E%02d-%04d' "$s" "$i")
        c=$(printf 'C%02d-%04d' "$s" "$i")
        openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /dev/null \
            -subj "/CN=$e" -outform DER 2>/dev/null | base64 >"$WORK/in/$s/$e.b64"
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
            -out "$WORK/in/$s/$c.key" 2>/dev/null
        [ "$i" -gt 1 ] && echo next >>"$WORK/in/$s/curl.cfg"
        cat >>"$WORK/in/$s/curl.cfg" <<EOC
url = "$EST/simpleenroll"
cacert = "$WORK/server-ca/ca.crt"
cert = "$WORK/stations/BENCH-$s.crt"
key = "$WORK/stations/BENCH-$s.key"
header = "Content-Type: application/pkcs10"
data-binary = "@$WORK/in/$s/$e.b64"
output = "$WORK/in/$s/$e.p7"
write-out = "%{http_code} %{num_connects}\n"
EOC
    done
done

# service_cpu: the service's user + system CPU so far, in seconds (/proc/PID/stat 14 and 15)
TICK=$(getconf CLK_TCK)
service_cpu() {
    awk -v t="$TICK" '{ sub(/^.*\) /, ""); printf "%.3f", ($12 + $13) / t }' "/proc/$CMP_PID/stat"
}

# ---- EST: 8 curl processes, each one connection ---------------------------------------------
before=$(cmp_issued)
c0=$(service_cpu)
t0=$(now)
pids=()
for ((s = 1; s <= STATIONS; s++)); do
    curl -sS -K "$WORK/in/$s/curl.cfg" >"$WORK/in/$s/est.codes" 2>"$WORK/in/$s/est.err" &
    pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || fail "a curl failed"; done
t1=$(now)
c1=$(service_cpu)
est_ok=$(cat "$WORK"/in/*/est.codes | grep -c '^200 ')
connects=$(cat "$WORK"/in/*/est.codes | awk '{ n += $2 } END { print n }')
[ "$est_ok" -eq $((STATIONS * N)) ] || fail "EST: $est_ok of $((STATIONS * N)) answered 200"
[ "$(cmp_issued)" -eq $((before + STATIONS * N)) ] || fail "EST: not every certificate issued"

# ---- CMP: 8 loops of openssl cmp ------------------------------------------------------------
before=$(cmp_issued)
c2=$(service_cpu)
t2=$(now)
pids=()
for ((s = 1; s <= STATIONS; s++)); do
    (
        for ((i = 1; i <= N; i++)); do
            c=$(printf 'C%02d-%04d' "$s" "$i")
            openssl cmp -cmd ir -server "127.0.0.1:$CMP_PORT" -path /.well-known/cmp -tls_used \
                -tls_trusted "$WORK/server-ca/ca.crt" -tls_host 127.0.0.1 \
                -cert "$WORK/stations/BENCH-$s.crt" -key "$WORK/stations/BENCH-$s.key" \
                -trusted "$IT_CA_DIR/root.crt" -newkey "$WORK/in/$s/$c.key" -subject "/CN=$c" \
                -certout "$WORK/in/$s/$c.crt" >>"$WORK/in/$s/cmp.log" 2>&1 || exit 1
        done
    ) &
    pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || fail "an openssl cmp failed (see $WORK/in/*/cmp.log)"; done
t3=$(now)
c3=$(service_cpu)
[ "$(cmp_issued)" -eq $((before + STATIONS * N)) ] || fail "CMP: not every certificate issued"
stop_pid "$CMP_PID"

total=$((STATIONS * N))
sub() { awk -v a="$1" -v b="$2" 'BEGIN { print a - b }'; }
floor_rate=$(fdiv "$total" "$floor_s" 1)
est_rate=$(fdiv "$total" "$(sub "$t1" "$t0")" 1)
cmp_rate=$(fdiv "$total" "$(sub "$t3" "$t2")" 1)
printf 'CA service, %d stations x %d certificates, one host (%s cores), CA index: %s\n' \
    "$STATIONS" "$N" "$(nproc)" "${CA_INDEX:-sqlite}"
printf '  floor (bench_issue, the issue path in one process): %s s, %s certificates/s, CPU %s ms per certificate\n' \
    "$(fdiv "$floor_s" 1 2)" "$floor_rate" "$(fdiv "$(awk -v c="$floor_cpu" 'BEGIN { print c * 1000 }')" "$total" 2)"
printf '  EST simpleenroll (curl, keep-alive, %d TLS connections): %s s, %s certificates/s, %s x the floor, service CPU %s ms per certificate\n' \
    "$connects" "$(fdiv "$(sub "$t1" "$t0")" 1 2)" "$est_rate" "$(fdiv "$est_rate" "$floor_rate" 2)" \
    "$(fdiv "$(awk -v a="$c1" -v b="$c0" 'BEGIN { print (a - b) * 1000 }')" "$total" 2)"
printf '  CMP ir + certConf (openssl cmp over TLS, a connection each): %s s, %s certificates/s, %s x the floor, service CPU %s ms per certificate\n' \
    "$(fdiv "$(sub "$t3" "$t2")" 1 2)" "$cmp_rate" "$(fdiv "$cmp_rate" "$floor_rate" 2)" \
    "$(fdiv "$(awk -v a="$c3" -v b="$c2" 'BEGIN { print (a - b) * 1000 }')" "$total" 2)"
