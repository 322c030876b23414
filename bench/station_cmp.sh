#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# bench/station_cmp.sh [BUILD_DIR [N [RUNS]]]: a station's `batch` of N devices (default 200)
# on one SoftHSM2 token, issuing through the CA service over CMP (`[ca] url = cmp://...`,
# doc/ca-service.md), at --jobs 1 (one row at a time: every device waits for its CMP round
# trip before the next key is made) and at the tool's default --jobs (the CPUs: a second
# worker makes the next device's key while the service certifies the previous one;
# factory/README.md, "Concurrency"), RUNS times each in turn (default 3), printing the median
# devices/s of the whole command and the station's CPU per device. Everything on tmpfs
# (/dev/shm: the token, the journal, the storage, the CA's index), so that the figures are
# the tool's and the service's, not this disk's; the service (`ca serve`, plain HTTP on
# 127.0.0.1, one process) shares the machine's cores with the station. Each run on a fresh
# token with its own serials. Uses the integration harness's fixtures; the service is stopped
# by its PID. Nothing is asserted about time (bench/README.md): it fails only when a device is
# not issued.
SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(cd "${1:-$SRC/build}" && pwd)
N=${2:-200}
RUNS=${3:-3}
ROOT=/dev/shm/provisioner-bench-station-cmp
rm -rf "$ROOT"
mkdir -p "$ROOT"
export PROVISIONER=$BUILD/provisioner PROV_BUILD_ROOT=$ROOT PROV_SOURCE_ROOT=$SRC
IT_NAME=bench-station-cmp
. "$SRC/tests/integration/lib.sh"
. "$SRC/tests/integration/batch/batch_lib.sh"
. "$SRC/tests/integration/cmp/cmp_lib.sh"
it_setup
# the harness's cleanup (servers stopped by PID, the verdict) ends with exit: run it in a
# subshell, then remove the tmpfs root, keeping its status
bench_end() {
    local rc
    (exit "$1")
    (it_cleanup)
    rc=$?
    rm -rf "$ROOT"
    exit "$rc"
}
trap 'bench_end $?' EXIT
batch_ca
cmp_profiles
# the station's identity and config, the lot (room for every run), the service
station_batch cmp $((2 * RUNS * N + 10))
jobs_default=$(getconf _NPROCESSORS_ONLN)
declare -A RATE CPU
for ((k = 1; k <= RUNS; k++)); do
    for jobs in 1 "$jobs_default"; do
        tag=j$jobs-r$k
        token_init "dev-$tag"
        {
            echo "serial,device"
            for ((i = 1; i <= N; i++)); do printf 'ST-%s-%05d,pkcs11:token=dev-%s\n' "$tag" "$i" "$tag"; done
        } >"lot-$tag.csv"
        t0=$(date +%s.%N)
        ${STATION_CMP_WRAP:-} /usr/bin/time -f '%U %S' -o "time-$tag.txt" "$PROVISIONER" batch \
            "lot-$tag.csv" --jobs "$jobs" --no-progress \
            >"$WORK/log/batch-$tag.out" 2>"$WORK/log/batch-$tag.err" ||
            fail "batch --jobs $jobs: $(tail -n1 "$WORK/log/batch-$tag.err")"
        t1=$(date +%s.%N)
        assert_grep "$WORK/log/batch-$tag.out" "^$N rows: $N issued, "
        read -r u s <"time-$tag.txt"
        RATE[$jobs]+="$(awk -v n="$N" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", n / (b - a) }') "
        CPU[$jobs]+="$(awk -v n="$N" -v u="$u" -v s="$s" 'BEGIN { printf "%.2f", 1000 * (u + s) / n }') "
    done
done
median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
for jobs in 1 "$jobs_default"; do
    r=$(echo "${RATE[$jobs]}" | median)
    c=$(echo "${CPU[$jobs]}" | median)
    echo "station batch through CMP, N=$N, one token, --jobs $jobs: $r devices/s ($(awk -v r="$r" 'BEGIN { printf "%.2f", 1000 / r }') ms), station CPU $c ms per device (median of $RUNS: ${RATE[$jobs]}devices/s)"
done
