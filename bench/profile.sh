#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The tool's own CPU per device, counted in instructions (callgrind), which do not move with
# the machine's load (bench/README.md, "Profile"):
#
#   bench/profile.sh [--build DIR] [N1 N2]      (defaults: <repo>/build-bench, 10 and 30)
#
# Runs `provisioner batch --jobs 1` of N1 and of N2 devices on one fresh SoftHSM2 token on
# tmpfs under `valgrind --tool=callgrind`, and splits every run's instructions into those
# inside the PKCS#11 module (the inclusive cost of every call from outside libsofthsm2.so into
# it: the token's work, including the OpenSSL code SoftHSM2 runs) and those outside it (the
# tool, its libraries, its start-up). The difference between the two runs, divided by
# N2 - N1, is the cost per device without the fixed start-up. Then one more run of N2 devices
# with SoftHSM2 out of the process (p11-kit server, the tool loading p11-kit's client module),
# where every instruction of the process is the tool's or the RPC's, and prints its most
# expensive functions. The callgrind files stay in DIR/bench-profile for callgrind_annotate.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=tests/integration/lib.sh
. "$repo/tests/integration/lib.sh"
# shellcheck source=bench/lib.sh
. "$repo/bench/lib.sh"
IT_NAME=bench-profile
build=$repo/build-bench
case "${1:-}" in
--build) build=${2:?--build needs a directory}; shift 2 ;;
-h | --help) sed -n '3,/^set -e/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
n1=${1:-10}
n2=${2:-30}
case "$n1$n2" in *[!0-9]*) echo "bench/profile.sh: N1 and N2 are numbers" >&2; exit 2 ;; esac
[ "$n2" -gt "$n1" ] || { echo "bench/profile.sh: N2 must be larger than N1" >&2; exit 2; }
case "$build" in /*) ;; *) build=$PWD/$build ;; esac

bench_need valgrind callgrind_annotate softhsm2-util p11-kit awk
CLIENT_MODULE=$(pkg-config --variable=p11_module_path p11-kit-1 2>/dev/null || true)/p11-kit-client.so
[ -r "$CLIENT_MODULE" ] || die "$CLIENT_MODULE is missing (run scripts/deps.sh)"
bench_build "$repo" "$build"
build=$(cd "$build" && pwd)
work=$build/bench-profile
rm -rf "$work"
mkdir -p "$work"
bench_stores "$work"
trap bench_cleanup EXIT
trap 'exit 143' TERM INT
setup_ca "$work"

# split FILE: "total inside" instructions of a callgrind file written with
# --compress-strings=no --compress-pos=no. A call line's cost line carries the call's
# inclusive cost; a call from an object outside the module into it counts as inside.
split() {
    awk -v mod="libsofthsm2.so" '
        function in_mod(o) { return index(o, mod) > 0 }
        /^ob=/ { ob = substr($0, 4); next }
        /^cob=/ { cob = substr($0, 5); next }
        /^calls=/ { is_call = 1; next }
        /^totals:/ { total = $2; next }
        /^[0-9+-]/ {
            if (is_call) {
                callee = (cob != "" ? cob : ob)
                if (!in_mod(ob) && in_mod(callee)) inside += $2
                is_call = 0
                cob = ""
            }
            next
        }
        END { printf "%d %d\n", total, inside }' "$1"
}

# profile_batch NAME N [ENV...]: a batch of N devices under callgrind in the current scenario
# (lot.csv made here); the callgrind file is $work/NAME.cg.
profile_batch() {
    local name=$1 n=$2
    shift 2
    manifest lot.csv "$n" dev-a
    env "$@" valgrind --tool=callgrind --callgrind-out-file="$work/$name.cg" --dump-instr=no \
        --compress-strings=no --compress-pos=no "$PROV" --config provisioner.cnf batch lot.csv \
        --jobs 1 >out.txt 2>err.txt || die "batch $name under callgrind failed: $(tail -n2 err.txt)"
    [ "$(issued_count lot.results.csv)" = "$n" ] || die "batch $name: not every device issued"
}

declare -A TOTAL INSIDE
note "callgrind: batch of $n1 and of $n2 devices, SoftHSM2 in the process"
for n in "$n1" "$n2"; do
    scenario "inproc-$n" tmpfs "$MODULE" dev-a
    profile_batch "inproc-$n" "$n"
    scenario_done
    read -r TOTAL[$n] INSIDE[$n] < <(split "$work/inproc-$n.cg")
done

note "callgrind: batch of $n2 devices, SoftHSM2 in a p11-kit server"
scenario remote tmpfs "$CLIENT_MODULE" dev-a
env=$(p11-kit server -s --provider "$MODULE" -n "$PWD/p11.sock" "pkcs11:") ||
    die "p11-kit server failed to start"
server_pid=$(sed -n 's/.*P11_KIT_SERVER_PID=\([0-9]*\);.*/\1/p' <<<"$env")
[ -n "$server_pid" ] || die "p11-kit server: no PID in its output: $env"
for _ in $(seq 1 100); do
    [ -S p11.sock ] && break
    sleep 0.05
done
[ -S p11.sock ] || die "p11-kit server: $PWD/p11.sock did not appear"
profile_batch remote "$n2" P11_KIT_SERVER_ADDRESS="unix:path=$PWD/p11.sock"
stop_server
scenario_done

# ---- report ------------------------------------------------------------------------------
mi() { awk -v v="$1" 'BEGIN { printf "%.1f", v / 1e6 }'; }
echo "callgrind, batch --jobs 1 on one SoftHSM2 token on tmpfs (millions of instructions)"
echo
echo "| devices | total | inside the PKCS#11 module | outside (the tool) |"
echo "|---|---|---|---|"
for n in "$n1" "$n2"; do
    echo "| $n | $(mi "${TOTAL[$n]}") | $(mi "${INSIDE[$n]}") | $(mi $((TOTAL[$n] - INSIDE[$n]))) |"
done
d=$((n2 - n1))
echo "| per device ($n2 − $n1 runs ÷ $d) | $(mi $(((TOTAL[$n2] - TOTAL[$n1]) / d))) | $(mi $(((INSIDE[$n2] - INSIDE[$n1]) / d))) | $(mi $(((TOTAL[$n2] - INSIDE[$n2] - TOTAL[$n1] + INSIDE[$n1]) / d))) |"
echo "| start-up and end (the $n1 run − $n1 × per device) | | | $(mi $((TOTAL[$n1] - INSIDE[$n1] - n1 * (TOTAL[$n2] - INSIDE[$n2] - TOTAL[$n1] + INSIDE[$n1]) / d))) |"
echo
echo "With SoftHSM2 out of the process, $n2 devices: $(mi "$(awk '/^totals:/ { print $2 }' "$work/remote.cg")" ) M instructions; by object (self cost):"
echo
awk '/^ob=/ { ob = substr($0, 4); next } /^calls=/ { skip = 1; next }
     /^[0-9+-]/ { if (skip) { skip = 0 } else { self[ob] += $2 }; next }
     END { for (o in self) printf "%d %s\n", self[o], o }' "$work/remote.cg" |
    sort -rn | head -n 8 | awk '{ printf "  %8.1f M  %s\n", $1 / 1e6, $2 }'
echo
echo "Most expensive functions of that run, inclusive (callgrind_annotate):"
callgrind_annotate --inclusive=yes "$work/remote.cg" 2>/dev/null | sed -n '/^Ir/,$p' | sed -n '3,32p'
echo
echo "callgrind files: $work/*.cg"
