#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
#
# Runs a TPM integration test program against a fresh swtpm:
#   swtpm-env.sh WORKDIR PROGRAM [ARGS...]
# WORKDIR (absolute, in the build tree) is wiped; swtpm keeps its state in WORKDIR/state and
# listens on free 127.0.0.1 ports. The program gets:
#   PROV_TEST_TCTI        swtpm:host=127.0.0.1,port=P (also TPM2TOOLS_TCTI for tpm2-tools)
#   PROV_TEST_DEAD_TCTI   the same on a port where nothing listens
#   PROV_TEST_SWTPM_PID   swtpm's PID (a test may stop it to see the TPM vanish)
#   PROV_TEST_WORKDIR     WORKDIR
# swtpm is stopped by its saved PID when the program ends, whatever happens. A missing tool
# is a failure, not a skip: CI installs everything (scripts/deps.sh).
set -euo pipefail

work=$1
shift

for tool in swtpm tpm2_readpublic tpm2_nvread tpm2_nvdefine tpm2_nvwrite tpm2_getcap \
    tpm2_createprimary tpm2_create tpm2_load tpm2_evictcontrol tpm2_flushcontext \
    tpm2_createek openssl; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "swtpm-env.sh: $tool not found (run scripts/deps.sh)" >&2
        exit 1
    fi
done
case $work in
/*) ;;
*)
    echo "swtpm-env.sh: WORKDIR must be absolute" >&2
    exit 1
    ;;
esac

swtpm_pid=
stop_swtpm() {
    local i
    [ -n "$swtpm_pid" ] || return 0
    kill -TERM "$swtpm_pid" 2>/dev/null || return 0
    for i in $(seq 1 50); do
        kill -0 "$swtpm_pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$swtpm_pid" 2>/dev/null || true
}
trap stop_swtpm EXIT
trap "exit 143" TERM INT

is_listening() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# A port P with P and P+1 free (swtpm's server and control channels), below the ephemeral
# range: the swtpm TCTI connects once per command, and the TIME-WAIT sockets a run leaves on
# ephemeral local ports would keep swtpm from binding one of them.
free_port_pair() {
    local i p low
    low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range)
    for i in $(seq 1 100); do
        p=$((10000 + RANDOM % (low - 10002)))
        if ! is_listening "$p" && ! is_listening $((p + 1)); then
            echo "$p"
            return 0
        fi
    done
    echo "swtpm-env.sh: no free port pair on 127.0.0.1" >&2
    return 1
}

rm -rf "$work"
mkdir -p "$work/state"
for try in 1 2 3; do
    port=$(free_port_pair)
    rm -f "$work/swtpm.pid"
    swtpm socket --tpm2 \
        --server "type=tcp,port=$port,bindaddr=127.0.0.1" \
        --ctrl "type=tcp,port=$((port + 1)),bindaddr=127.0.0.1" \
        --tpmstate "dir=$work/state" \
        --flags not-need-init,startup-clear \
        --pid "file=$work/swtpm.pid" >"$work/swtpm.log" 2>&1 &
    swtpm_pid=$!
    for i in $(seq 1 100); do
        if is_listening "$port"; then
            break
        fi
        kill -0 "$swtpm_pid" 2>/dev/null || break
        sleep 0.1
    done
    if is_listening "$port"; then
        break
    fi
    stop_swtpm
    swtpm_pid=
done
if [ -z "$swtpm_pid" ]; then
    echo "swtpm-env.sh: swtpm did not start: $(tail -n3 "$work/swtpm.log" | tr '\n' ' ')" >&2
    exit 1
fi
# The PID swtpm wrote is the one to stop (it is $! unless swtpm forked).
if [ -s "$work/swtpm.pid" ]; then
    swtpm_pid=$(cat "$work/swtpm.pid")
fi

dead=$(free_port_pair)
export PROV_TEST_TCTI="swtpm:host=127.0.0.1,port=$port"
export TPM2TOOLS_TCTI=$PROV_TEST_TCTI
export PROV_TEST_DEAD_TCTI="swtpm:host=127.0.0.1,port=$dead"
export PROV_TEST_SWTPM_PID=$swtpm_pid
export PROV_TEST_WORKDIR=$work
echo "swtpm-env.sh: swtpm pid $swtpm_pid on 127.0.0.1:$port, state $work/state"
rc=0
"$@" || rc=$?
exit "$rc"
