#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The shared ledger's cost (doc/ledger.md), not a timed test:
#  1. one station, one token, N rows, --jobs 1: ms per device with the SQLite journal and
#     with the ledger (PostgreSQL 15 on this machine), RUNS times each, medians;
#  2. four stations, four tokens, 4*N rows: four batch processes draining ONE lot on the
#     ledger, against four independent SQLite stations each with its own lot, devices/s
#     (wall time of all four), medians of RUNS;
#  3. the ledger's statements per device (server log, log_statement = all).
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
trap 'it_cleanup; rm -rf "$PROV_BUILD_ROOT"' EXIT
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

# 1. one station
for r in $(seq 1 "$RUNS"); do
    use_sqlite
    lot "s1-sqlite-$r" "t-s$r" "$N"
    "$PROVISIONER" batch "s1-sqlite-$r.csv" --jobs 1 --no-progress --json >"log/s1-sqlite-$r.json"
    use_ledger
    lot "s1-pg-$r" "t-p$r" "$N"
    "$PROVISIONER" batch "s1-pg-$r.csv" --station one --jobs 1 --no-progress --json >"log/s1-pg-$r.json"
done
ms() { jq -r --argjson n "$N" '.seconds * 1000 / $n' "$@"; }
sqlite_ms=$(for r in $(seq 1 "$RUNS"); do ms "log/s1-sqlite-$r.json"; done | median)
pg_ms=$(for r in $(seq 1 "$RUNS"); do ms "log/s1-pg-$r.json"; done | median)

# 2. four stations
four() { # four KIND RUN: wall seconds of four batch processes
    local kind=$1 r=$2 t0 t1 s pids=()
    for s in 1 2 3 4; do lot "f-$kind-$r-$s" "t-$kind$r$s" "$N"; done
    if [ "$kind" = pg ]; then
        # one lot: one manifest of all rows, that all four stations run
        { echo "serial,device,cn,x_token"; for s in 1 2 3 4; do tail -n +2 "f-$kind-$r-$s.csv"; done; } >"f-pg-$r.csv"
    fi
    t0=$(date +%s.%N)
    for s in 1 2 3 4; do
        if [ "$kind" = pg ]; then
            "$PROVISIONER" batch "f-pg-$r.csv" --station "st$s" --jobs 1 --no-progress --json \
                --results "f-pg-$r-$s.results.csv" >"log/f-pg-$r-$s.json" 2>/dev/null &
        else
            "$PROVISIONER" batch "f-$kind-$r-$s.csv" --jobs 1 --no-progress --json \
                >"log/f-$kind-$r-$s.json" 2>/dev/null &
        fi
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || true; done
    t1=$(date +%s.%N)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }'
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
sqlite_dps=$(printf '%s\n' "${four_sqlite[@]}" | dps | median)
pg_dps=$(printf '%s\n' "${four_pg[@]}" | dps | median)

# 3. statements per device: a run with the server logging every statement
pg_stop
printf "log_statement = 'all'\n" >>"$PG_DIR/data/postgresql.conf"
pg_run
use_ledger
lot count "t-count" "$N"
before=$(grep -c 'LOG:  \(statement\|execute\)' log/postgres.log || true)
"$PROVISIONER" batch count.csv --station one --jobs 1 --no-progress >/dev/null
after=$(grep -c 'LOG:  \(statement\|execute\)' log/postgres.log || true)

echo
echo "| measurement (N = $N per token, medians of $RUNS, /dev/shm) | SQLite | ledger (PostgreSQL) | ratio |"
echo "|---|---|---|---|"
awk -v a="$sqlite_ms" -v b="$pg_ms" 'BEGIN { printf "| one station, ms per device | %.1f | %.1f | %.2f |\n", a, b, b / a }'
awk -v a="$sqlite_dps" -v b="$pg_dps" 'BEGIN { printf "| four stations, devices/s | %.1f | %.1f | %.2f |\n", a, b, b / a }'
awk -v s=$((after - before)) -v n="$N" 'BEGIN { printf "| ledger statements (round trips) per device | | %.1f | |\n", s / n }'
