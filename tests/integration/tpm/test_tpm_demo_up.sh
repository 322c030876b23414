#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The demo's TPMs after the demo (scripts/demo-tpm-up.sh), on a demo directory of this test
# (DEMO_DIR): a TPM started with the demo's own functions (swtpm behind tpm2-abrmd on a
# private session D-Bus) and a device enrolled on it; then everything stopped, as the demo
# stops what it started: `check` exits 4 with one line (the tabrmd TCTI's GLib CRITICAL line
# stays off stderr); `scripts/demo-tpm-up.sh` brings the TPM back under the same bus name over
# the same state and `check` passes again; `--stop` stops exactly what it started.
. "$(dirname "$0")/../lib.sh"
it_setup
need swtpm tpm2-abrmd dbus-daemon tpm2_getcap
ca_fixture
UP=$PROV_SOURCE_ROOT/scripts/demo-tpm-up.sh
export DEMO_DIR=$WORK/demo
# shellcheck source=scripts/demo-tpm-up.sh
. "$UP"

# what the demo does: the bus, one TPM, an enrollment through its resource manager
DEMO_TPM_PIDS=()
demo_tpm_start_bus || fail "the demo D-Bus did not start"
demo_tpm_start tpm-a || fail "the demo TPM did not start"
for pid in "${DEMO_TPM_PIDS[@]}"; do
    it_track "$pid"
done
DBUS_SESSION_BUS_ADDRESS=$(demo_tpm_bus_address)
export DBUS_SESSION_BUS_ADDRESS
prov 0 enroll --serial SN-DEMO-T1 --device "tpm2:$(demo_tpm_tcti tpm-a)"
assert_grep devices/SN-DEMO-T1/key.uri "^tpm2:tabrmd:bus_name=com.intel.tss2.Tabrmd.demo_tpm_a,"
prov 0 check devices/SN-DEMO-T1

# the demo ends: everything it started stops
for ((i = ${#DEMO_TPM_PIDS[@]} - 1; i >= 0; i--)); do
    stop_pid "${DEMO_TPM_PIDS[$i]}"
done
prov 4 check devices/SN-DEMO-T1
assert_one_error 'Tabrmd.demo_tpm_a'

# one command brings the TPM back
"$UP" >"$WORK/log/up.out" 2>"$WORK/log/up.err" || fail "demo-tpm-up.sh: $(cat "$WORK/log/up.err")"
assert_file "$DEMO_DIR/tpm/pids"
mapfile -t UP_PIDS <"$DEMO_DIR/tpm/pids"
[ "${#UP_PIDS[@]}" -eq 3 ] || fail "demo-tpm-up.sh saved ${#UP_PIDS[@]} PIDs, expected 3"
for pid in "${UP_PIDS[@]}"; do
    it_track "$pid"
    kill -0 "$pid" 2>/dev/null || fail "demo-tpm-up.sh: PID $pid is not running"
done
prov 0 check devices/SN-DEMO-T1

# and stops it again
"$UP" --stop >"$WORK/log/stop.out" 2>&1 || fail "demo-tpm-up.sh --stop: $(cat "$WORK/log/stop.out")"
for pid in "${UP_PIDS[@]}"; do
    ! kill -0 "$pid" 2>/dev/null || fail "demo-tpm-up.sh --stop left PID $pid running"
done
assert_no_file "$DEMO_DIR/tpm/pids"
prov 4 check devices/SN-DEMO-T1
assert_one_error 'Tabrmd.demo_tpm_a'
