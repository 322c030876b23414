#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Where a batch's time goes on one token, against the device floor measured in the same run
# (bench/README.md, "The token's critical path"):
#
#   bench/critical.sh [--build DIR] [--store tmpfs|disk] [--runs K] [--prov FILE] [N]
#                     (defaults: <repo>/build-bench, tmpfs, 3 runs, N=500)
#
# --prov FILE times another provisioner binary (another commit's build, for an A/B) with the
# build's floor, CA and tokens; it must log the lock lines with the clock (as the tool does from
# the commit that added this script).
#
# Each run: `provisioner batch` of N devices on one fresh SoftHSM2 token with the tool's
# default --jobs, `bench_p11 device N` on another and the line floor (`bench_p11 device N`
# with the CA's signature of each device on a second thread, in the same module: "line ms")
# on a third, and the work floor (the line floor with the rest of the batch's work per device
# done the leanest way: bench/bench_work.c; "work ms") on a fourth, back to back (the floors
# first in odd runs). The batch runs with
# PROVISIONER_DEBUG=batch,clock: every token lock a row takes and
# lets go is a debug line with the monotonic clock (factory/batch_tokens.c, support/log.c),
# and python3 times the process on the same clock. The batch's wall time then splits
# exactly into
#
#   start-up   the process's start to the first lock taken (libraries, config, manifest,
#              journal, the CA's token and index, the first device's login)
#   held       the token's lock held: the token's work and what the tool does under the lock
#   idle       the lock free between two holds (handing it over; a worker busy elsewhere)
#   tail       the last lock let go to the process's end (the storage stage's last rows,
#              the results file, the journal's end, exit)
#
# and held ÷ the floor is what the tool's token work costs against the floor's own (held ÷
# the line floor: against the floor's own with the CA's signatures beside it). Prints
# per run and the medians; asserts nothing about time, fails only when something did not
# work.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=tests/integration/lib.sh
. "$repo/tests/integration/lib.sh"
# shellcheck source=bench/lib.sh
. "$repo/bench/lib.sh"
IT_NAME=bench-critical
build=$repo/build-bench
store=tmpfs
runs=3
prov_file=
while [ $# -gt 0 ]; do
    case "$1" in
    --build) build=${2:?--build needs a directory}; shift 2 ;;
    --store) store=${2:?--store needs tmpfs or disk}; shift 2 ;;
    --runs) runs=${2:?--runs needs a number}; shift 2 ;;
    --prov) prov_file=${2:?--prov needs a file}; shift 2 ;;
    -h | --help) sed -n '3,/^set -e/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "bench/critical.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) break ;;
    esac
done
n=${1:-500}
case "$n$runs" in *[!0-9]*) echo "bench/critical.sh: N and K are numbers" >&2; exit 2 ;; esac
case "$store" in tmpfs | disk) ;; *) echo "bench/critical.sh: --store tmpfs or disk" >&2; exit 2 ;; esac
[ "$n" -gt 0 ] && [ "$runs" -gt 0 ] || { echo "bench/critical.sh: N and K must be > 0" >&2; exit 2; }
case "$build" in /*) ;; *) build=$PWD/$build ;; esac
bench_need softhsm2-util python3 awk
bench_build "$repo" "$build"
build=$(cd "$build" && pwd)
if [ -n "$prov_file" ]; then
    [ -x "$prov_file" ] || die "--prov $prov_file: not an executable"
    PROV=$(cd "$(dirname "$prov_file")" && pwd)/$(basename "$prov_file")
fi
work=$build/bench-critical
rm -rf "$work"
mkdir -p "$work"
bench_stores "$work"
trap bench_cleanup EXIT
trap 'exit 143' TERM INT
setup_ca "$work"

# batch_timed: the batch of lot.csv in the current scenario, its stderr in err.txt; prints
# "t0 t1" (CLOCK_MONOTONIC, seconds) around the process.
batch_timed() {
    PROVISIONER_DEBUG=batch,clock python3 - "$PROV" <<'EOF'
import subprocess, sys, time
t0 = time.monotonic()
with open("out.txt", "wb") as out, open("err.txt", "wb") as err:
    rc = subprocess.call([sys.argv[1], "--config", "provisioner.cnf", "batch", "lot.csv",
                          "--no-progress"], stdout=out, stderr=err, stdin=subprocess.DEVNULL)
t1 = time.monotonic()
print(f"{t0:.6f} {t1:.6f}")
sys.exit(rc)
EOF
}

# split T0 T1 ERR: "startup held idle tail handoffs first last" (ms; handoffs: holds by
# another row than the one that let the lock go last; first, last: the mean held per row of
# the first and the last 100 rows, as bench_p11 prints its first and last 100) from the lock
# lines of ERR.
split() {
    awk -v t0="$1" -v t1="$2" '
        /^provisioner: debug: \[[0-9.]+\] serial .*: (holding|released) the lock of / {
            t = substr($3, 2, length($3) - 2)
            s = $0; sub(/^[^]]*\] serial /, "", s); sub(/: (holding|released) the lock of .*/, "", s)
            if ($0 ~ /: holding the lock of /) {
                if (first == "") first = t
                else { idle += t - last; if (s != last_s) handoffs++ }
                since = t
                if (!(s in row)) { row[s] = ++rows; order[rows] = s }
            } else {
                held += t - since; last = t; last_s = s; by_row[s] += t - since
            }
        }
        END {
            if (first == "") { print "none"; exit }
            k = rows < 100 ? rows : 100
            for (i = 1; i <= k; i++) { f += by_row[order[i]]; l += by_row[order[rows - k + i]] }
            printf "%.1f %.1f %.1f %.1f %d %.2f %.2f\n", 1000 * (first - t0), 1000 * held,
                1000 * idle, 1000 * (t1 - last), handoffs, 1000 * f / k, 1000 * l / k
        }' "$3"
}

# floor_device NAME [ARG...]: `bench_p11 device N` (with ARGs: the line or work floor's) on
# a fresh token of scenario NAME; its output line in $out, its seconds in $secs.
floor_device() {
    local name=$1
    shift
    scenario "$name" "$store" "$MODULE" floor
    sync
    out=$("$P11" --module "$MODULE" --token floor --pin-file device.pin \
        --cert "$work/device-cert.der" "$@" device "$n") || die "bench_p11 device $n $* failed"
    secs=$(sed -n 's/.* seconds=\([0-9.]*\) .*/\1/p' <<<"$out")
    [ -n "$secs" ] || die "bench_p11 printed no seconds: $out"
}

declare -a R_WALL R_START R_HELD R_IDLE R_TAIL R_FLOOR R_LINE R_WORK R_RATIO R_OVER R_OVER_LINE
note "store $store ($(fs_type "$(store_root "$store")")), N=$n, --jobs $(getconf _NPROCESSORS_ONLN), $runs run(s)"
printf '%-4s %10s %9s %9s %9s %9s %9s %8s %8s %8s %9s %8s %8s  %s\n' run "wall ms" "start-up" held \
    idle tail "floor ms" "line ms" "work ms" "handoffs" "held/fl" "held/ln" "fl/wall" \
    "per row, first/last 100: held, floor (ms)"
for ((run = 1; run <= runs; run++)); do
    for part in $([ $((run % 2)) = 1 ] && echo "floor line work batch" || echo "batch work line floor"); do
        if [ "$part" = floor ]; then
            floor_device "floor-$run"
            floor_s=$secs
            floor_fl=$(sed -n 's/.* ms_first100=\([0-9.]*\) ms_last100=\([0-9.]*\).*/\1\/\2/p' <<<"$out")
            [ -n "$floor_fl" ] || die "bench_p11 printed no first and last 100: $out"
        elif [ "$part" = line ]; then
            floor_device "line-$run" --ca-token provisioner-ca --ca-pin-file ca.pin
            line_s=$secs
        elif [ "$part" = work ]; then
            floor_device "work-$run" --ca-token provisioner-ca --ca-pin-file ca.pin \
                --work work-floor --chain ca/chain.pem # in the scenario
            work_s=$secs
        else
            scenario "batch-$run" "$store" "$MODULE" dev-a
            manifest lot.csv "$n" dev-a
            sync
            times=$(batch_timed) || die "batch of $n failed: $(grep -v 'debug:' err.txt | tail -n2)"
            issued=$(issued_count lot.results.csv)
            [ "$issued" = "$n" ] || die "batch: $issued of $n devices issued"
            parts=$(split $times err.txt)
            [ "$parts" != none ] || die "batch: no lock lines with the clock in its stderr"
            read -r start held idle tail handoffs held_first held_last <<<"$parts"
            wall=$(awk -v t="$times" 'BEGIN { split(t, a, " "); printf "%.1f", 1000 * (a[2] - a[1]) }')
        fi
        scenario_done
    done
    floor_ms=$(awk -v s="$floor_s" 'BEGIN { printf "%.1f", 1000 * s }')
    line_ms=$(awk -v s="$line_s" 'BEGIN { printf "%.1f", 1000 * s }')
    work_ms=$(awk -v s="$work_s" 'BEGIN { printf "%.1f", 1000 * s }')
    R_WALL+=("$wall") R_START+=("$start") R_HELD+=("$held") R_IDLE+=("$idle") R_TAIL+=("$tail")
    R_FLOOR+=("$floor_ms") R_LINE+=("$line_ms") R_WORK+=("$work_ms")
    R_OVER+=("$(fdiv "$held" "$floor_ms")") R_RATIO+=("$(fdiv "$floor_ms" "$wall")")
    R_OVER_LINE+=("$(fdiv "$held" "$line_ms")")
    printf '%-4s %10s %9s %9s %9s %9s %9s %8s %8s %8s %9s %8s %8s  %s, %s\n' "$run" "$wall" \
        "$start" "$held" "$idle" "$tail" "$floor_ms" "$line_ms" "$work_ms" "$handoffs" "${R_OVER[-1]}" \
        "${R_OVER_LINE[-1]}" "${R_RATIO[-1]}" "$held_first/$held_last" "$floor_fl"
done
med() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
per() { fdiv "$(med "$@")" "$n"; }
printf '%-4s %10s %9s %9s %9s %9s %9s %8s %8s %8s %9s %8s %8s\n' median "$(med "${R_WALL[@]}")" \
    "$(med "${R_START[@]}")" "$(med "${R_HELD[@]}")" "$(med "${R_IDLE[@]}")" \
    "$(med "${R_TAIL[@]}")" "$(med "${R_FLOOR[@]}")" "$(med "${R_LINE[@]}")" \
    "$(med "${R_WORK[@]}")" - \
    "$(med "${R_OVER[@]}")" "$(med "${R_OVER_LINE[@]}")" "$(med "${R_RATIO[@]}")"
printf 'per device (medians): wall %s ms = held %s + idle %s + (start-up + tail) %s; floor %s ms, line floor %s ms, work floor %s ms\n' \
    "$(per "${R_WALL[@]}")" "$(per "${R_HELD[@]}")" "$(per "${R_IDLE[@]}")" \
    "$(fdiv "$(awk -v a="$(med "${R_START[@]}")" -v b="$(med "${R_TAIL[@]}")" 'BEGIN { print a + b }')" "$n")" \
    "$(per "${R_FLOOR[@]}")" "$(per "${R_LINE[@]}")" "$(per "${R_WORK[@]}")"
