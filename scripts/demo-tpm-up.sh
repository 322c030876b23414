#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The demo's TPMs after scripts/demo.sh has ended. The demo stops every process it started,
# so its TPM devices cannot be used afterwards: their key.uri names a tpm2-abrmd on the
# demo's private session D-Bus. This brings them back, with the same bus names over the same
# TPM state, so that `. demo/env` and then `provisioner check demo/devices/DEMO-T001` (or
# --connect, or openssl with the tpm2 provider) work again:
#
#   scripts/demo-tpm-up.sh          the session D-Bus (demo/tpm/dbus/bus), and per TPM in
#                                   demo/tpm/NAME/state a swtpm on free 127.0.0.1 ports and
#                                   its tpm2-abrmd; they run in the background until
#   scripts/demo-tpm-up.sh --stop   stops them, by the PIDs saved in demo/tpm/pids
#
# DEMO_DIR overrides the demo directory (default: demo/ in the repository). scripts/demo.sh
# sources this file and starts its TPMs with the same functions, so names and paths agree.
# Logs: demo/log/{dbus,swtpm-NAME,abrmd-NAME}.log.

demo_tpm_dir() {
    printf '%s\n' "${DEMO_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/demo}"
}

# demo_tpm_bus_address: the demo's private session D-Bus (exported as DBUS_SESSION_BUS_ADDRESS).
demo_tpm_bus_address() {
    printf 'unix:path=%s/tpm/dbus/bus\n' "$(demo_tpm_dir)"
}

# demo_tpm_bus_name NAME: the D-Bus name of the tpm2-abrmd of the demo TPM NAME.
demo_tpm_bus_name() {
    printf 'com.intel.tss2.Tabrmd.demo_%s\n' "${1//-/_}"
}

# demo_tpm_tcti NAME: the TCTI of the demo TPM NAME; fixed, because key.uri names it.
demo_tpm_tcti() {
    printf 'tabrmd:bus_name=%s,bus_type=session\n' "$(demo_tpm_bus_name "$1")"
}

# demo_tpm_wait WHAT PID CMD...: until CMD succeeds (10 s); fails when PID exits first.
demo_tpm_wait() {
    local what=$1 pid=$2 i
    shift 2
    for i in $(seq 1 100); do
        "$@" >/dev/null 2>&1 && return 0
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "demo-tpm: $what exited; see $(demo_tpm_dir)/log/" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "demo-tpm: $what did not come up in 10 s; see $(demo_tpm_dir)/log/" >&2
    return 1
}

# demo_tpm_start_bus: the session D-Bus; its PID is appended to DEMO_TPM_PIDS.
demo_tpm_start_bus() {
    local d
    d=$(demo_tpm_dir)
    mkdir -p "$d/tpm/dbus" "$d/log"
    rm -f "$d/tpm/dbus/bus" # a socket file a killed daemon left
    dbus-daemon --session --nofork --address="$(demo_tpm_bus_address)" \
        >"$d/log/dbus.log" 2>&1 </dev/null &
    DEMO_TPM_PIDS+=("$!")
    demo_tpm_wait dbus-daemon "$!" test -S "$d/tpm/dbus/bus"
}

# demo_tpm_start NAME: swtpm over demo/tpm/NAME/state (made if new) on a free port pair,
# and tpm2-abrmd in front of it on the demo bus; PIDs appended to DEMO_TPM_PIDS.
demo_tpm_start() {
    local name=$1 d port
    d=$(demo_tpm_dir)
    mkdir -p "$d/tpm/$name/state" "$d/log"
    port=$(common_free_port pair) || {
        echo "demo-tpm: no free port pair below the ephemeral range on 127.0.0.1" >&2
        return 1
    }
    swtpm socket --tpm2 --server "type=tcp,port=$port,bindaddr=127.0.0.1" \
        --ctrl "type=tcp,port=$((port + 1)),bindaddr=127.0.0.1" \
        --tpmstate "dir=$d/tpm/$name/state" --flags not-need-init,startup-clear \
        >"$d/log/swtpm-$name.log" 2>&1 </dev/null &
    DEMO_TPM_PIDS+=("$!")
    demo_tpm_wait "swtpm $name" "$!" bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" || return 1
    DBUS_SESSION_BUS_ADDRESS=$(demo_tpm_bus_address) tpm2-abrmd --session --allow-root \
        --dbus-name="$(demo_tpm_bus_name "$name")" --tcti="swtpm:host=127.0.0.1,port=$port" \
        >"$d/log/abrmd-$name.log" 2>&1 </dev/null &
    DEMO_TPM_PIDS+=("$!")
    demo_tpm_wait "tpm2-abrmd $name" "$!" env DBUS_SESSION_BUS_ADDRESS="$(demo_tpm_bus_address)" \
        TPM2TOOLS_TCTI="$(demo_tpm_tcti "$name")" tpm2_getcap properties-fixed || return 1
    echo "  $name: swtpm on 127.0.0.1:$port behind tpm2-abrmd ($(demo_tpm_tcti "$name"))"
}

# demo_tpm_is_ours PID: PID still runs one of the demo's TPM processes (a PID can be reused).
demo_tpm_is_ours() {
    tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$(demo_tpm_dir)/tpm" ||
        tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "Tabrmd.demo_"
}

# demo_tpm_stop_saved: stops what an earlier `demo-tpm-up.sh` started, by its saved PIDs.
demo_tpm_stop_saved() {
    local f pid i
    f=$(demo_tpm_dir)/tpm/pids
    [ -f "$f" ] || return 0
    while read -r pid; do
        if [ -z "$pid" ] || ! demo_tpm_is_ours "$pid"; then
            continue
        fi
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    done < <(tac "$f")
    rm -f "$f"
}

demo_tpm_main() {
    local d name dir started=0
    set -euo pipefail
    d=$(demo_tpm_dir)
    # shellcheck source=scripts/common.sh
    . "$(dirname "${BASH_SOURCE[0]}")/common.sh"
    case "${1:-}" in
    --stop)
        demo_tpm_stop_saved
        echo "demo TPMs stopped"
        return 0
        ;;
    "") ;;
    *)
        echo "usage: scripts/demo-tpm-up.sh [--stop]" >&2
        return 2
        ;;
    esac
    for t in dbus-daemon swtpm tpm2-abrmd tpm2_getcap; do
        command -v "$t" >/dev/null || {
            echo "demo-tpm: $t is not installed (scripts/deps.sh)" >&2
            return 1
        }
    done
    compgen -G "$d/tpm/*/state" >/dev/null || {
        echo "demo-tpm: no demo TPM in $d/tpm: run scripts/demo.sh first" >&2
        return 1
    }
    demo_tpm_stop_saved # a second start replaces the first
    DEMO_TPM_PIDS=()
    # Every PID is saved, also of a start that failed half-way, so that --stop finds it.
    DEMO_TPM_PIDS_FILE=$d/tpm/pids
    trap 'printf "%s\n" "${DEMO_TPM_PIDS[@]}" >"$DEMO_TPM_PIDS_FILE"' EXIT
    demo_tpm_start_bus
    for dir in "$d"/tpm/*/state; do
        name=$(basename "$(dirname "$dir")")
        [ "$name" = dbus ] && continue
        demo_tpm_start "$name"
        started=$((started + 1))
    done
    echo "$started demo TPM(s) up; stop them with: scripts/demo-tpm-up.sh --stop"
    echo "use them:  . demo/env && provisioner check demo/devices/DEMO-T001"
}

DEMO_TPM_PIDS=()
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    demo_tpm_main "$@"
fi
