#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The shared ledger's cost (doc/ledger.md), not a timed test:
#  1. one station, one token, N rows, --jobs 1: ms per device with the SQLite journal and
#     with the ledger (PostgreSQL 15 on this machine), RUNS times each, medians;
#  2. four stations, four tokens, 4*N rows: four batch processes draining ONE lot on the
#     ledger, against four independent SQLite stations each with its own lot, devices/s
#     (wall time of all four), medians of RUNS;
#  3. the ledger's own cost per device: round trips, statements, and the milliseconds the
#     station waited for them (the store's debug line at its close, PROVISIONER_DEBUG=journal;
#     the lease renewal's own connection is not in it), for one station alone and for the four
#     stations of step 2 together (what the lot's sharing adds: claims of rows another took);
#  4. what bounds the four stations on this machine: CPU seconds per device of the stations,
#     of the token server (p11-kit) and of the PostgreSQL server, in the four-station runs.
# Everything lives under /dev/shm (tokens, journals, the database): the figures are the
# tool's and the database's cost, not the disk's. SoftHSM2 behind p11-kit server.
#
# Usage: bench/ledger.sh [BUILD_DIR [N [RUNS]]]   (defaults: build, 40, 3)
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$src/build}" && pwd)
N=${2:-40}
RUNS=${3:-3}
export PROVISIONER=$build/provisioner PROV_SOURCE_ROOT=$src
export PROV_BUILD_ROOT=/dev/shm/prov-ledger-bench.$$
mkdir -p "$PROV_BUILD_ROOT"
# the harness names the work dir after the script: $PROV_BUILD_ROOT/it-work/ledger
# shellcheck source=/dev/null
. "$src/tests/integration/lib.sh"
. "$src/tests/integration/batch/batch_lib.sh"
. "$src/tests/integration/ledger/ledger_lib.sh"
it_setup
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
# it_cleanup ends in exit, so what it stops is stopped here first and the tmpfs tree (tokens,
# database, about 50 MB a run) goes after a run that passed; a failed run keeps it to look at.
bench_exit() {
    local rc=$? i
    set +e
    for ((i = ${#IT_PIDS[@]} - 1; i >= 0; i--)); do
        stop_pid "${IT_PIDS[$i]}"
    done
    IT_PIDS=()
    [ "$rc" -ne 0 ] || rm -rf "$PROV_BUILD_ROOT"
    return "$rc"
}
trap 'bench_exit; it_cleanup' EXIT
need jq
batch_ca
pg_start bench
p11_server
base_config=$(cat "$PROVISIONER_CONFIG")

# lot NAME TOKEN ROWS: a manifest of ROWS rows on a new token.
lot() {
    local i
    token_init "$2"
    echo "serial,device,cn,x_token" >"$1.csv"
    for ((i = 1; i <= $3; i++)); do
        printf '%s-%05d,pkcs11:token=%s,,%s\n' "$1" "$i" "$2" "$2" >>"$1.csv"
    done
}
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
use_sqlite() { printf '%s\n' "$base_config" >"$PROVISIONER_CONFIG"; }
use_ledger() { use_sqlite; ledger_config; }

# Every token of the run is made before anything is measured: the token server looks at all
# the tokens it has when a slot list is read, so a measurement made later, with more tokens
# about, would cost it more than one made earlier; made up front, each sees the same tokens.
for r in $(seq 1 "$RUNS"); do
    lot "s1-sqlite-$r" "t-s$r" "$N"
    lot "s1-pg-$r" "t-p$r" "$N"
    for kind in sqlite pg; do
        for s in 1 2 3 4; do lot "f-$kind-$r-$s" "t-$kind$r$s" "$N"; done
    done
done
lot count "t-count" "$N"

# 1. one station
for r in $(seq 1 "$RUNS"); do
    use_sqlite
    "$PROVISIONER" batch "s1-sqlite-$r.csv" --jobs 1 --no-progress --json >"log/s1-sqlite-$r.json"
    use_ledger
    "$PROVISIONER" batch "s1-pg-$r.csv" --station one --jobs 1 --no-progress --json >"log/s1-pg-$r.json"
done
ms() { jq -r --argjson n "$N" '.seconds * 1000 / $n' "$@"; }
sqlite_ms=$(for r in $(seq 1 "$RUNS"); do ms "log/s1-sqlite-$r.json"; done | median)
pg_ms=$(for r in $(seq 1 "$RUNS"); do ms "log/s1-pg-$r.json"; done | median)

# 2. four stations
four() { # four KIND RUN: wall seconds of four batch processes
    local kind=$1 r=$2 t0 t1 s pids=()
    if [ "$kind" = pg ]; then
        # one lot: one manifest of all rows, that all four stations run
        { echo "serial,device,cn,x_token"; for s in 1 2 3 4; do tail -n +2 "f-$kind-$r-$s.csv"; done; } >"f-pg-$r.csv"
    fi
    local c0 p0 g0
    children_cpu >"$WORK/c0.out"
    c0=$(cat "$WORK/c0.out")
    p0=$(proc_cpu "$P11_PID")
    g0=$(pg_cpu)
    t0=$(date +%s.%N)
    for s in 1 2 3 4; do
        if [ "$kind" = pg ]; then
            PROVISIONER_DEBUG=journal "$PROVISIONER" batch "f-pg-$r.csv" --station "st$s" \
                --jobs 1 --no-progress --json --results "f-pg-$r-$s.results.csv" \
                >"log/f-pg-$r-$s.json" 2>"log/f-pg-$r-$s.err" &
        else
            "$PROVISIONER" batch "f-$kind-$r-$s.csv" --jobs 1 --no-progress --json \
                >"log/f-$kind-$r-$s.json" 2>/dev/null &
        fi
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || true; done
    t1=$(date +%s.%N)
    children_cpu >"$WORK/c1.out"
    # wall seconds; CPU seconds of the stations, the token server, the database server
    awk -v a="$t0" -v b="$t1" -v c="$(cat "$WORK/c1.out")" -v c0="$c0" -v p="$(proc_cpu "$P11_PID")" \
        -v p0="$p0" -v g="$(pg_cpu)" -v g0="$g0" -v hz="$(getconf CLK_TCK)" \
        'BEGIN { printf "%.3f %.3f %.3f %.3f\n", b - a, c - c0, (p - p0) / hz, (g - g0) / hz }'
}
# CPU seconds of this shell's waited-for children (bash's times, second line: user sys);
# the builtin runs in this shell (a command substitution would be a shell of its own)
children_cpu() {
    times >"$WORK/times.out"
    awk 'NR == 2 { gsub(/s/, ""); split($1, u, "m"); split($2, k, "m")
                   printf "%.3f\n", u[1] * 60 + u[2] + k[1] * 60 + k[2] }' "$WORK/times.out"
}
# proc_cpu PID: clock ticks of the process and of its children it has waited for
proc_cpu() { awk '{ print $14 + $15 + $16 + $17 }' "/proc/$1/stat"; }
# pg_cpu: clock ticks of the PostgreSQL server: the postmaster (with its ended backends) and
# the processes it runs now
pg_cpu() {
    local p t=0
    for p in "$PG_PID" $(cat /proc/"$PG_PID"/task/*/children 2>/dev/null); do
        t=$((t + $(proc_cpu "$p" 2>/dev/null || echo 0)))
    done
    echo "$t"
}
declare -a four_sqlite four_pg
for r in $(seq 1 "$RUNS"); do
    use_sqlite
    four_sqlite+=("$(four sqlite "$r")")
    use_ledger
    four_pg+=("$(four pg "$r")")
    issued=$(jq -s 'map(.issued) | add' log/f-pg-"$r"-*.json)
    [ "$issued" = $((4 * N)) ] || echo "warning: run $r: the four stations issued $issued of $((4 * N))" >&2
done
dps() { awk -v n=$((4 * N)) '{ printf "%.1f\n", n / $1 }'; }
# column C of the runs, per device in ms, median
per_dev() { awk -v n=$((4 * N)) -v c="$1" '{ printf "%.2f\n", $c * 1000 / n }' | median; }
sqlite_dps=$(printf '%s\n' "${four_sqlite[@]}" | dps | median)
pg_dps=$(printf '%s\n' "${four_pg[@]}" | dps | median)

# the four stations' round trips, statements and wait, all four together, per run
debug_sum() { # FILES...: "round trips, statements, ms" summed over the debug lines
    sed -n 's/.* \([0-9]*\) round trips, \([0-9]*\) statements, \([0-9.]*\) ms$/\1 \2 \3/p' "$@" |
        awk '{ t += $1; s += $2; m += $3 } END { print t + 0, s + 0, m + 0 }'
}
four_trips=$(for r in $(seq 1 "$RUNS"); do debug_sum log/f-pg-"$r"-*.err | awk -v n=$((4 * N)) '{ printf "%.2f\n", $1 / n }'; done | median)
four_stmts=$(for r in $(seq 1 "$RUNS"); do debug_sum log/f-pg-"$r"-*.err | awk -v n=$((4 * N)) '{ printf "%.2f\n", $2 / n }'; done | median)
four_wait=$(for r in $(seq 1 "$RUNS"); do debug_sum log/f-pg-"$r"-*.err | awk -v n=$((4 * N)) '{ printf "%.2f\n", $3 / n }'; done | median)

# 3. the ledger's own cost per device, one station
use_ledger
PROVISIONER_DEBUG=journal "$PROVISIONER" batch count.csv --station one --jobs 1 --no-progress \
    >/dev/null 2>log/count.err
read -r trips stmts wait_ms < <(debug_sum log/count.err)

echo
echo "| measurement (N = $N per token, medians of $RUNS, /dev/shm) | SQLite | ledger (PostgreSQL) | ratio |"
echo "|---|---|---|---|"
awk -v a="$sqlite_ms" -v b="$pg_ms" 'BEGIN { printf "| one station, ms per device | %.1f | %.1f | %.2f |\n", a, b, b / a }'
awk -v a="$sqlite_dps" -v b="$pg_dps" 'BEGIN { printf "| four stations, devices/s | %.1f | %.1f | %.2f |\n", a, b, b / a }'
awk -v t="$trips" -v s="$stmts" -v m="$wait_ms" -v n="$N" 'BEGIN {
    printf "| ledger round trips per device (statements) | | %.1f (%.1f) | |\n", t / n, s / n
    printf "| ledger wait per device, one station, ms | | %.2f | |\n", m / n }'
awk -v t="$four_trips" -v s="$four_stmts" -v m="$four_wait" 'BEGIN {
    printf "| four stations: the four\x27s round trips per device (statements) | | %.1f (%.1f) | |\n", t, s
    printf "| four stations: the four\x27s wait per device, ms (summed over the four) | | %.2f | |\n", m }'
cpu_a=0
cpu_b=0
for c in 2 3 4; do
    what=$(sed -n "$((c - 1))p" <<<'stations (batch processes)
token server (p11-kit)
database server (PostgreSQL)')
    a=$(printf '%s\n' "${four_sqlite[@]}" | per_dev "$c")
    b=$(printf '%s\n' "${four_pg[@]}" | per_dev "$c")
    awk -v w="$what" -v a="$a" -v b="$b" 'BEGIN { printf "| four stations: CPU ms per device, %s | %.2f | %.2f | |\n", w, a, b }'
    cpu_a=$(awk -v x="$cpu_a" -v y="$a" 'BEGIN { print x + y }')
    cpu_b=$(awk -v x="$cpu_b" -v y="$b" 'BEGIN { print x + y }')
done
# with the machine's cores busy all the time, devices/s is cores / CPU per device: the ratio
# the CPU alone allows, whatever the waits
awk -v a="$cpu_a" -v b="$cpu_b" -v c="$(nproc)" 'BEGIN {
    printf "| four stations: CPU ms per device, all; devices/s if %d cores were the only bound | %.2f; %.1f | %.2f; %.1f | %.2f |\n", c, a, c * 1000 / a, b, c * 1000 / b, a / b }'
echo "(load average at the start: $load_start; at the end: $(cut -d' ' -f1-3 /proc/loadavg))"
