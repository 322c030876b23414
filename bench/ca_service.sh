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
# - CMP: bench_cmp_client (bench/bench_cmp_client.c), one process, a thread per station, each
#   sending its N `ir` + `certConf` transactions through OpenSSL's CMP client over TLS: once
#   as OpenSSL 3.0's client sends them (a new connection, a TLS handshake, per transaction),
#   once with one kept-alive connection per station (as the EST curl), the service with its
#   default workers (4 per processor);
# - then, untimed, `openssl cmp -cmd ir` for two certificates: the interop smoke;
# - then CMP kept alive once more, the service started again with `--workers 1`: what the
#   workers bring, in the same run.
# For EST and CMP: the rate against the floor's, and the service process's CPU (user +
# system from /proc/PID/stat) per certificate; for CMP also how many cores the service's
# threads were on, on average, and how long they waited for one (/proc/PID/task/*/schedstat):
# what holds the rate. The keys and CSRs are made before the clock starts. Uses the integration harness's fixtures (tests/integration/lib.sh) in
# BUILD_DIR/it-work/bench-ca-service; the service is stopped by its PID. Nothing is asserted
# about time (bench/README.md): it fails only when a certificate is not issued or an answer
# fails its check.
# CA_SERVICE_WORKERS=N: the service's --workers for EST and the first two CMP phases (default:
# its own, 4 per processor online); the last CMP phase has --workers 1.
# CA_HSM_SIGN_MS=MS: the CA token modelled as a network HSM, every signature MS milliseconds
# (tests/integration/pkcs11/latency_module.c, LATENCY_PARALLEL: its sessions served at once),
# for the floor and the service alike; SoftHSM2 in process signs in about 0.05 ms.
# CA_INDEX=postgresql: the CA index in a PostgreSQL of the run's own ([ca] index, a CA pair's
# store, doc/revocation.md; tests/integration/pg_lib.sh) instead of <CA dir>/index.sqlite.

SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(cd "${1:-$SRC/build}" && pwd)
N=${2:-25}
STATIONS=8
CG_N=${CA_SERVICE_CALLGRIND_N:-10} # with CA_SERVICE_CALLGRIND=1: certificates per station
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
if [ -n "${CA_HSM_SIGN_MS:-}" ]; then
    sed "s|^pkcs11_module = .*|pkcs11_module = $BUILD/tests/integration/pkcs11/pkcs11_latency.so|" \
        "$PROVISIONER_CONFIG" >"$WORK/hsm.cnf"
    export PROVISIONER_CONFIG=$WORK/hsm.cnf LATENCY_TARGET=$SOFTHSM_MODULE \
        LATENCY_SIGN_MS=$CA_HSM_SIGN_MS LATENCY_PARALLEL=1 LATENCY_TOKENS=provisioner-ca \
        LATENCY_KEYGEN_MS=0 LATENCY_CREATE_MS=0 LATENCY_LOGIN_MS=0 LATENCY_OTHER_MS=0
fi
for ((s = 1; s <= STATIONS; s++)); do
    cmp_station "BENCH-$s"
done
prov 0 ca lot add LOT-BENCH --count $((STATIONS * (N * 4 + CG_N) + 10)) \
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
    --max-body 65536 ${CA_SERVICE_WORKERS:+--workers "$CA_SERVICE_WORKERS"}
EST=https://127.0.0.1:$CMP_PORT/.well-known/est

# ---- inputs, before the clock: a curl config per station (bench_cmp_client makes its own) --
for ((s = 1; s <= STATIONS; s++)); do
    mkdir -p "$WORK/in/$s"
    : >"$WORK/in/$s/curl.cfg"
    for ((i = 1; i <= N; i++)); do
        e=$(printf 'E%02d-%04d' "$s" "$i")
        openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /dev/null \
            -subj "/CN=$e" -outform DER 2>/dev/null | base64 >"$WORK/in/$s/$e.b64"
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

# service_sched: the service's time on a core and its time runnable but waiting for one so far,
# in nanoseconds, summed over its threads (/proc/PID/task/TID/schedstat, the kernel's scheduler
# statistics: the event loop and the workers)
service_sched() {
    cat /proc/"$CMP_PID"/task/*/schedstat 2>/dev/null |
        awk '{ run += $1; wait += $2 } END { printf "%.0f %.0f\n", run, wait }'
}

# ---- CMP: bench_cmp_client, 8 stations' threads ---------------------------------------------
# cmp_phase NAME [OPTIONS...]: one timed run of bench_cmp_client (its CN prefix NAME), every
# certificate checked by it and counted in the CA index; sets cmp_s, cmp_conn, cmp_service_ms
# (the service's CPU per certificate), cmp_client_ms (the client process's), cmp_busy (the
# service's threads' time on a core over the client's timed part: the cores it kept busy on
# average; near its workers' count, the service holds the rate) and cmp_queued_ms (their time
# per certificate runnable but waiting for a core, which the clients on the same cores took).
cmp_phase() {
    local name=$1 out before c0 c1 s0 s1
    shift
    before=$(cmp_issued)
    c0=$(service_cpu)
    s0=$(service_sched)
    out=$("$BUILD/bench/bench_cmp_client" -k "$STATIONS" -n "$N" -c "$name" "$@" \
        -t "$WORK/server-ca/ca.crt" -i "$IT_CA_DIR/intermediate.crt" \
        "127.0.0.1:$CMP_PORT" /.well-known/cmp "$WORK/stations/BENCH-" "$IT_CA_DIR/root.crt" \
        2>"$WORK/log/cmp-$name.err") ||
        fail "bench_cmp_client $name: $(head -n3 "$WORK/log/cmp-$name.err" | tr '\n' ' ')"
    c1=$(service_cpu)
    s1=$(service_sched)
    [ "$(cmp_issued)" -eq $((before + STATIONS * N)) ] ||
        fail "CMP $name: not every certificate in the CA index"
    cmp_s=$(echo "$out" | sed -n 's/.* s=\([0-9.]*\) .*/\1/p')
    cmp_conn=$(echo "$out" | sed -n 's/.* connections=\([0-9]*\) .*/\1/p')
    cmp_client_ms=$(echo "$out" | awk -v n=$((STATIONS * N)) -F'cpu=' \
        'NF == 2 { split($2, f, " "); printf "%.2f", f[1] * 1000 / n }')
    cmp_service_ms=$(fdiv "$(awk -v a="$c1" -v b="$c0" 'BEGIN { print (a - b) * 1000 }')" \
        "$((STATIONS * N))" 2)
    cmp_busy=$(awk -v a="${s1% *}" -v b="${s0% *}" -v s="$cmp_s" \
        'BEGIN { printf "%.2f", (a - b) / 1e9 / s }')
    cmp_queued_ms=$(awk -v a="${s1#* }" -v b="${s0#* }" -v n=$((STATIONS * N)) \
        'BEGIN { printf "%.2f", (a - b) / 1e6 / n }')
}
cmp_phase C
cmp1_s=$cmp_s cmp1_conn=$cmp_conn cmp1_service_ms=$cmp_service_ms cmp1_client_ms=$cmp_client_ms
cmp1_busy=$cmp_busy cmp1_queued_ms=$cmp_queued_ms
cmp_phase K -a
cmp2_s=$cmp_s cmp2_conn=$cmp_conn cmp2_service_ms=$cmp_service_ms cmp2_client_ms=$cmp_client_ms
cmp2_busy=$cmp_busy cmp2_queued_ms=$cmp_queued_ms

# ---- interop smoke, untimed: OpenSSL's own client, two certificates --------------------------
for i in 1 2; do
    o=$(printf 'O01-%04d' "$i")
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$WORK/in/$o.key" \
        2>/dev/null || fail "openssl genpkey $o"
    openssl cmp -cmd ir -server "127.0.0.1:$CMP_PORT" -path /.well-known/cmp -tls_used \
        -tls_trusted "$WORK/server-ca/ca.crt" -tls_host 127.0.0.1 \
        -cert "$WORK/stations/BENCH-1.crt" -key "$WORK/stations/BENCH-1.key" \
        -trusted "$IT_CA_DIR/root.crt" -newkey "$WORK/in/$o.key" -subject "/CN=$o" \
        -certout "$WORK/in/$o.crt" >"$WORK/log/cmp-$o.log" 2>&1 ||
        fail "openssl cmp $o: $(tail -n2 "$WORK/log/cmp-$o.log" | tr '\n' ' ')"
    assert_strict_cert "$WORK/in/$o.crt"
done
stop_pid "$CMP_PID"

# ---- CMP kept alive again, the service with one worker: what the workers bring, same run -----
cmp_serve --tls-cert "$WORK/server-ca/server.crt" --tls-key "$WORK/server-ca/server.key" \
    --max-body 65536 --workers 1
cmp_phase W -a
cmp3_s=$cmp_s cmp3_conn=$cmp_conn cmp3_service_ms=$cmp_service_ms cmp3_client_ms=$cmp_client_ms
cmp3_busy=$cmp_busy cmp3_queued_ms=$cmp_queued_ms
stop_pid "$CMP_PID"

# ---- with CA_SERVICE_CALLGRIND=1, untimed: instructions per certificate -----------------------
# The floor and `ca serve` again under callgrind, for 8 x CG_N more certificates each (CMP ir +
# certConf, kept alive), each counted from the function that does a request's work, so that
# start-up and TLS are not in it: prov_issue_certificate in bench_issue, the CMP request path
# (prov_cmp_server_handle_lot) in the service. Unlike times, these do not move with the load.
cg_total() { # FILE FUNCTION: FUNCTION's inclusive instructions in callgrind output FILE
    callgrind_annotate --auto=no --inclusive=yes "$1" 2>/dev/null |
        awk -v f=":$2 " '!n && index($0, f) { gsub(",", "", $1); print $1; n = 1 }'
}
if [ "${CA_SERVICE_CALLGRIND:-0}" = 1 ]; then
    need valgrind callgrind_annotate
    mkdir -p "$WORK/in/cg"
    for ((i = 1; i <= STATIONS * CG_N; i++)); do
        openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /dev/null \
            -subj "/CN=$(printf 'G%04d' "$i")" -outform DER -out "$WORK/in/cg/$i.der" \
            2>/dev/null || fail "openssl req G$i"
    done
    valgrind --tool=callgrind --callgrind-out-file="$WORK/cg-floor.out" \
        "$BUILD/bench/bench_issue" "$PROVISIONER_CONFIG" "$WORK"/in/cg/*.der \
        >"$WORK/log/cg-floor.log" 2>&1 || fail "bench_issue under callgrind (see $WORK/log)"
    cg_port=$(free_port)
    valgrind --tool=callgrind --callgrind-out-file="$WORK/cg-serve.out" \
        "$PROVISIONER" ca serve --listen "127.0.0.1:$cg_port" \
        --tls-cert "$WORK/server-ca/server.crt" --tls-key "$WORK/server-ca/server.key" \
        --max-body 65536 >"$WORK/log/cg-serve.out" 2>"$WORK/log/cg-serve.err" </dev/null &
    cg_pid=$!
    it_track "$cg_pid"
    for ((i = 0; i < 1200; i++)); do # valgrind starts slowly: up to 120 s
        (exec 3<>"/dev/tcp/127.0.0.1/$cg_port") 2>/dev/null && break
        kill -0 "$cg_pid" 2>/dev/null || fail "ca serve under callgrind did not start"
        sleep 0.1
    done
    "$BUILD/bench/bench_cmp_client" -k "$STATIONS" -n "$CG_N" -c V -a \
        -t "$WORK/server-ca/ca.crt" -i "$IT_CA_DIR/intermediate.crt" \
        "127.0.0.1:$cg_port" /.well-known/cmp "$WORK/stations/BENCH-" "$IT_CA_DIR/root.crt" \
        >"$WORK/log/cg-client.log" 2>&1 || fail "bench_cmp_client under callgrind: see $WORK/log"
    kill -TERM "$cg_pid"
    wait "$cg_pid" || fail "ca serve under callgrind did not exit 0"
    cg_floor=$(cg_total "$WORK/cg-floor.out" prov_issue_certificate)
    cg_serve=$(cg_total "$WORK/cg-serve.out" prov_cmp_server_handle_lot)
    [ -n "$cg_floor" ] && [ -n "$cg_serve" ] || fail "callgrind: a count is missing"
fi

total=$((STATIONS * N))
ca_token=SoftHSM2
[ -n "${CA_HSM_SIGN_MS:-}" ] && ca_token="a network HSM model, $CA_HSM_SIGN_MS ms a signature"
sub() { awk -v a="$1" -v b="$2" 'BEGIN { print a - b }'; }
floor_rate=$(fdiv "$total" "$floor_s" 1)
est_rate=$(fdiv "$total" "$(sub "$t1" "$t0")" 1)
cmp1_rate=$(fdiv "$total" "$cmp1_s" 1)
cmp2_rate=$(fdiv "$total" "$cmp2_s" 1)
cmp3_rate=$(fdiv "$total" "$cmp3_s" 1)
printf 'CA service, %d stations x %d certificates, one host (%s cores, load average %s), CA index: %s, CA token: %s\n' \
    "$STATIONS" "$N" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)" "${CA_INDEX:-sqlite}" \
    "$ca_token"
printf '  floor (bench_issue, the issue path in one process): %s s, %s certificates/s, CPU %s ms per certificate\n' \
    "$(fdiv "$floor_s" 1 2)" "$floor_rate" "$(fdiv "$(awk -v c="$floor_cpu" 'BEGIN { print c * 1000 }')" "$total" 2)"
printf '  EST simpleenroll (curl, keep-alive, %d TLS connections): %s s, %s certificates/s, %s x the floor, service CPU %s ms per certificate\n' \
    "$connects" "$(fdiv "$(sub "$t1" "$t0")" 1 2)" "$est_rate" "$(fdiv "$est_rate" "$floor_rate" 2)" \
    "$(fdiv "$(awk -v a="$c1" -v b="$c0" 'BEGIN { print (a - b) * 1000 }')" "$total" 2)"
printf '  CMP ir + certConf (bench_cmp_client, TLS, a connection per certificate: %d): %s s, %s certificates/s, %s x the floor, service CPU %s ms per certificate (client %s ms), service on cores %s (average), waiting for one %s ms per certificate\n' \
    "$cmp1_conn" "$(fdiv "$cmp1_s" 1 2)" "$cmp1_rate" "$(fdiv "$cmp1_rate" "$floor_rate" 2)" \
    "$cmp1_service_ms" "$cmp1_client_ms" "$cmp1_busy" "$cmp1_queued_ms"
printf '  CMP ir + certConf (bench_cmp_client, TLS, kept alive: %d connections): %s s, %s certificates/s, %s x the floor, service CPU %s ms per certificate (client %s ms), service on cores %s (average), waiting for one %s ms per certificate\n' \
    "$cmp2_conn" "$(fdiv "$cmp2_s" 1 2)" "$cmp2_rate" "$(fdiv "$cmp2_rate" "$floor_rate" 2)" \
    "$cmp2_service_ms" "$cmp2_client_ms" "$cmp2_busy" "$cmp2_queued_ms"
printf '  CMP ir + certConf, kept alive, the service with --workers 1 (%d connections): %s s, %s certificates/s, %s x the floor, service CPU %s ms per certificate (client %s ms), service on cores %s (average), waiting for one %s ms per certificate; default workers / one: %s\n' \
    "$cmp3_conn" "$(fdiv "$cmp3_s" 1 2)" "$cmp3_rate" "$(fdiv "$cmp3_rate" "$floor_rate" 2)" \
    "$cmp3_service_ms" "$cmp3_client_ms" "$cmp3_busy" "$cmp3_queued_ms" \
    "$(fdiv "$cmp2_rate" "$cmp3_rate" 2)"
if [ "${CA_SERVICE_CALLGRIND:-0}" = 1 ]; then
    printf '  instructions per certificate (callgrind, %d certificates each): floor %s M (prov_issue_certificate), CMP service %s M (prov_cmp_server_handle_lot: ir + certConf), %s x the floor\n' \
        "$((STATIONS * CG_N))" "$(fdiv "$cg_floor" "$((STATIONS * CG_N * 1000000))" 2)" \
        "$(fdiv "$cg_serve" "$((STATIONS * CG_N * 1000000))" 2)" "$(fdiv "$cg_serve" "$cg_floor" 2)"
fi
