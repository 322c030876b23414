#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# README command 2: installs missing Debian packages, builds with -Werror and runs the whole
# test suite (unit, then integration against real SoftHSM2 / nginx / curl), then the Debian
# package suite (builds the .deb, installs, uses, removes and purges it on this machine).
#
#   scripts/test.sh                    # from any directory
#   BUILD_DIR=/tmp/b scripts/test.sh   # another build directory (default: <repo>/build)
#   MESON_TEST_ARGS="--suite unit" scripts/test.sh   # only those tests (no deb suite)
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

# == Debian package ==
# Not in the default test setup (tests/install/meson.build): it builds the .deb from a copy
# of the tree, installs it onto this machine, enrolls with it, removes and purges it
# (~3 minutes). Once per full run, with the main build only.
if [ -z "${MESON_TEST_ARGS:-}" ]; then
    echo "== Debian package: meson test --suite deb"
    meson test -C "$build" --print-errorlogs --suite deb
fi

# == Sanitizer pass ==
# A later issue adds the -Db_sanitize=address,undefined build here (STYLE.md "Tests"):
#   configure_and_test "${SAN_BUILD_DIR:-$build-asan}" -Db_sanitize=address,undefined \
#       -Db_lundef=false
# It must run the same suites; keep the total under ~10 minutes on 2 cores.

echo "== all tests passed in $(( $(date +%s) - start )) s"
