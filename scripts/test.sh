#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# README command 2: installs missing Debian packages, builds with -Werror and runs the whole
# test suite (unit, then integration against real SoftHSM2 / nginx / curl), then the
# benchmark's smoke run (bench/run.sh --quick), then the Debian package suite (builds the
# .deb, installs, uses, removes and purges it on this machine), then the whole suite again on
# an address/undefined-sanitizer build.
#
#   scripts/test.sh                    # from any directory
#   BUILD_DIR=/tmp/b scripts/test.sh   # another build directory (default: <repo>/build)
#   MESON_TEST_ARGS="--suite unit" scripts/test.sh   # only those tests (no bench, no deb suite)
#   SAN=0 scripts/test.sh              # skip the second, sanitizer pass (<build>-asan)
#
# Exits non-zero when anything fails to build or any test fails.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${BUILD_DIR:-$repo/build}
cd "$repo"

# shellcheck source=scripts/deps.sh
. "$repo/scripts/deps.sh"
prov_deps deb

# configure_and_test DIR [meson setup options...]: one full pass in one build directory.
configure_and_test() {
    local dir=$1
    shift
    if [ -f "$dir/meson-private/coredata.dat" ]; then
        meson setup --reconfigure --werror "$@" "$dir" "$repo"
    else
        meson setup --werror "$@" "$dir" "$repo"
    fi
    meson compile -C "$dir"
    # Unit tests first: they are fast and explain most failures; then the integration suites,
    # which create their own token directories under the build tree and may run in parallel.
    # shellcheck disable=SC2086 # MESON_TEST_ARGS is a word list by design
    meson test -C "$dir" --print-errorlogs --num-processes "$(nproc)" ${MESON_TEST_ARGS:-}
}

start=$(date +%s)
echo "== build and test: $build"
configure_and_test "$build"

# == Benchmark smoke run ==
# Every measurement of bench/run.sh at small sizes (about a minute), so that the benchmark
# cannot rot: it must complete, issue every device and emit its JSON with every figure a
# number. No timing is asserted (bench/README.md). Once per full run, with the main build.
if [ -z "${MESON_TEST_ARGS:-}" ]; then
    echo "== benchmark smoke run: bench/run.sh --quick"
    bench_json=$build/bench-quick.json
    rm -f "$bench_json"
    "$repo/bench/run.sh" --quick --build "$build" --json "$bench_json"
    # one figure of each group, besides run.sh's own check that every figure is a number
    jq -e '.figures as $f | ($f | length > 0) and ([$f[] | type == "number"] | all)
           and ([ "batch_tmpfs_large_dev_s", "batch_disk_large_dev_s", "cli_disk_ms_dev",
                  "nosync_disk_small_syncs_dev", "ratio_device_issue_disk_large",
                  "se_jobs16_speedup", "rss_check_kib_100000",
                  "remote_large_rss_kib", "tpm_key_ratio" ] | all(. as $k | $f | has($k)))' \
        "$bench_json" >/dev/null || {
        echo "bench/run.sh --quick: $bench_json lacks figures" >&2
        exit 1
    }
    # the CA service's EST and CMP figures (bench/README.md), 2 certificates per station
    echo "== benchmark smoke run: bench/ca_service.sh"
    "$repo/bench/ca_service.sh" "$build" 2
    echo "== benchmark smoke run: bench/station_cmp.sh"
    "$repo/bench/station_cmp.sh" "$build" 4 1
    # the token's critical path (its lock lines must parse: it fails when they do not)
    echo "== benchmark smoke run: bench/critical.sh"
    "$repo/bench/critical.sh" --build "$build" --runs 1 20
fi

# == Debian package ==
# Not in the default test setup (tests/install/meson.build): it builds the .deb from a copy
# of the tree, installs it onto this machine, enrolls with it, removes and purges it
# (~3 minutes). Once per full run, with the main build only.
if [ -z "${MESON_TEST_ARGS:-}" ]; then
    echo "== Debian package: meson test --suite deb"
    meson test -C "$build" --print-errorlogs --suite deb
fi

# == Sanitizer pass ==
# The whole suite again on an -fsanitize=address,undefined build (doc/style.md, "Tests"). The
# options every test runs with (halt on the first UBSan finding, leaks fail at exit,
# tests/lsan.supp for third-party libraries only) come from the meson test setup in
# tests/meson.build, so `meson test -C build-asan` alone behaves the same. Long workloads
# shrink when PROV_TEST_SANITIZED=1 (tests/integration/README.md). SAN=0 skips this pass.
if [ "${SAN:-1}" != 0 ]; then
    echo "== sanitizer build and test: ${SAN_BUILD_DIR:-$build-asan}"
    configure_and_test "${SAN_BUILD_DIR:-$build-asan}" -Db_sanitize=address,undefined \
        -Db_lundef=false
fi

echo "== all tests passed in $(( $(date +%s) - start )) s"
