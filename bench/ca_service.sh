#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# bench/ca_service.sh [BUILD_DIR [N]]: certificates per second through the CA service
# (doc/ca-service.md) for 8 concurrent stations, N certificates each (default 25), in one run:
# - EST: each station is one curl process sending its N simpleenroll requests on one
#   kept-alive TLS connection (its client certificate the station's identity);
# - CMP: each station runs `openssl cmp -cmd ir` N times (a new connection and two round trips,
#   ir and certConf, per certificate: what openssl's client does).
# The keys and CSRs are made before the clock starts. Uses the integration harness's fixtures
# (tests/integration/lib.sh) in BUILD_DIR/it-work/bench-ca-service; the service is stopped by
# its PID.

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
for ((s = 1; s <= STATIONS; s++)); do
    cmp_station "BENCH-$s"
done
prov 0 ca lot add LOT-BENCH --count $((STATIONS * N * 2 + 10)) \
    $(for ((s = 1; s <= STATIONS; s++)); do printf -- '--station BENCH-%d ' "$s"; done)
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

# ---- EST: 8 curl processes, each one connection ---------------------------------------------
before=$(cmp_issued)
t0=$(now)
pids=()
for ((s = 1; s <= STATIONS; s++)); do
    curl -sS -K "$WORK/in/$s/curl.cfg" >"$WORK/in/$s/est.codes" 2>"$WORK/in/$s/est.err" &
    pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || fail "a curl failed"; done
t1=$(now)
est_ok=$(cat "$WORK"/in/*/est.codes | grep -c '^200 ')
connects=$(cat "$WORK"/in/*/est.codes | awk '{ n += $2 } END { print n }')
[ "$est_ok" -eq $((STATIONS * N)) ] || fail "EST: $est_ok of $((STATIONS * N)) answered 200"
[ "$(cmp_issued)" -eq $((before + STATIONS * N)) ] || fail "EST: not every certificate issued"

# ---- CMP: 8 loops of openssl cmp ------------------------------------------------------------
before=$(cmp_issued)
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
[ "$(cmp_issued)" -eq $((before + STATIONS * N)) ] || fail "CMP: not every certificate issued"
stop_pid "$CMP_PID"

total=$((STATIONS * N))
printf 'CA service, %d stations x %d certificates, one host (%s cores)\n' "$STATIONS" "$N" \
    "$(nproc)"
printf '  EST simpleenroll (curl, keep-alive, %d TLS connections): %s s, %s certificates/s\n' \
    "$connects" "$(fdiv "$(awk -v a="$t1" -v b="$t0" 'BEGIN { print a - b }')" 1 2)" \
    "$(fdiv "$total" "$(awk -v a="$t1" -v b="$t0" 'BEGIN { print a - b }')" 1)"
printf '  CMP ir + certConf (openssl cmp over TLS, a connection each): %s s, %s certificates/s\n' \
    "$(fdiv "$(awk -v a="$t3" -v b="$t2" 'BEGIN { print a - b }')" 1 2)" \
    "$(fdiv "$total" "$(awk -v a="$t3" -v b="$t2" 'BEGIN { print a - b }')" 1)"
