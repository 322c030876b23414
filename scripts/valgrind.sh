#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The integration suite with every run of the tool under valgrind's memcheck: any memory
# error or definite/indirect leak makes that run exit 99 and fails its test
# (tests/integration/lib.sh valgrind_wrap; third-party suppressions in tests/valgrind.supp).
# Not part of scripts/test.sh (it takes far longer than the 15-minute CI budget allows);
# the sanitizer pass there covers the same ground at CI speed.
#
#   scripts/valgrind.sh                       # all integration tests, build dir <repo>/build-vg
#   scripts/valgrind.sh it-enroll it-batch-lot  # only these
#   VG_BUILD_DIR=/tmp/vg scripts/valgrind.sh
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${VG_BUILD_DIR:-$repo/build-vg}
cd "$repo"
# shellcheck source=scripts/deps.sh
. "$repo/scripts/deps.sh"
prov_deps

if [ -f "$build/meson-private/coredata.dat" ]; then
    meson setup --reconfigure --werror "$build" "$repo" >/dev/null
else
    meson setup --werror "$build" "$repo" >/dev/null
fi
meson compile -C "$build" >/dev/null
start=$(date +%s)
if [ $# -gt 0 ]; then
    meson test -C "$build" --setup valgrind --print-errorlogs --num-processes "$(nproc)" "$@"
else
    meson test -C "$build" --setup valgrind --print-errorlogs --num-processes "$(nproc)" \
        --suite integration
fi
echo "== valgrind run passed in $(( $(date +%s) - start )) s"
