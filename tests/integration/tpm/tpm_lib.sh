# SPDX-License-Identifier: Apache-2.0
#
# Helpers for the TPM CLI tests (sourced after ../lib.sh and it_setup): swtpm instances on
# free ports, stopped by PID through it_track; tpm2-tools checks of what the tool left.

KEY_HANDLE=0x81000101
NV_INDEX=0x01800101

# swtpm_port: P with P and P+1 free, below the ephemeral range. The swtpm TCTI opens a
# connection per command, so a busy run leaves thousands of TIME-WAIT sockets on ephemeral
# local ports, and swtpm cannot bind a port one of them holds.
swtpm_port() {
    common_free_port pair || fail "no free port pair below the ephemeral range on 127.0.0.1"
}

# swtpm_start NAME: a fresh TPM in $WORK/tpm-NAME; sets TCTI (swtpm:host=...,port=...).
swtpm_start() {
    local dir=$WORK/tpm-$1 port try pid
    mkdir -p "$dir/state"
    for try in 1 2 3; do
        port=$(swtpm_port)
        rm -f "$dir/swtpm.pid"
        swtpm socket --tpm2 \
            --server "type=tcp,port=$port,bindaddr=127.0.0.1" \
            --ctrl "type=tcp,port=$((port + 1)),bindaddr=127.0.0.1" \
            --tpmstate "dir=$dir/state" --flags not-need-init,startup-clear \
            --pid "file=$dir/swtpm.pid" >"$dir/swtpm.log" 2>&1 &
        pid=$!
        it_track "$pid"
        if wait_port "$port" "$pid"; then
            TCTI="swtpm:host=127.0.0.1,port=$port"
            it_log "swtpm $1 pid $pid on 127.0.0.1:$port"
            return 0
        fi
        stop_pid "$pid"
    done
    fail "swtpm $1 did not start: $(tail -n2 "$dir/swtpm.log" | tr '\n' ' ')"
}

# tpm TCTI CMD ARGS...: a tpm2-tools command against that TPM (output in $WORK/log/tpm.out).
tpm() {
    local tcti=$1
    shift
    TPM2TOOLS_TCTI=$tcti "$@" >"$WORK/log/tpm.out" 2>&1 ||
        fail "$*: $(tail -n3 "$WORK/log/tpm.out" | tr '\n' ' ')"
}

# tpm_sha256 TCTI CMD ARGS...: the SHA-256 of what a tpm2-tools command prints; the command
# failing fails the test (two failed reads must never compare equal).
tpm_sha256() {
    local tcti=$1
    shift
    TPM2TOOLS_TCTI=$tcti "$@" >"$WORK/log/tpm-sha.out" 2>"$WORK/log/tpm-sha.err" ||
        fail "$*: $(tail -n3 "$WORK/log/tpm-sha.err" | tr '\n' ' ')"
    sha256sum <"$WORK/log/tpm-sha.out" | cut -d' ' -f1
}

# persistent_count TCTI RE: how many persistent handles match the extended regex RE.
persistent_count() {
    local out
    out=$(TPM2TOOLS_TCTI=$1 tpm2_getcap handles-persistent) || fail "tpm2_getcap on $1 failed"
    printf '%s\n' "$out" | count_re "$2"
}

# has_persistent TCTI PATTERN / has_nv TCTI PATTERN (output captured first: with pipefail,
# grep -q closing the pipe early would make the pipeline fail)
has_persistent() {
    local out
    out=$(TPM2TOOLS_TCTI=$1 tpm2_getcap handles-persistent) || fail "tpm2_getcap on $1 failed"
    printf '%s\n' "$out" | grep -qi -- "$2"
}

has_nv() {
    local out
    out=$(TPM2TOOLS_TCTI=$1 tpm2_getcap handles-nv-index) || fail "tpm2_getcap on $1 failed"
    printf '%s\n' "$out" | grep -qi -- "$2"
}

# assert_tpm_identity TCTI DIR: storage, key.uri, attributes, public key and NV content.
assert_tpm_identity() {
    local tcti=$1 d=$2 attrs
    assert_storage "$d"
    assert_eq "$(cat "$d/key.uri")" "tpm2:$tcti;handle=$KEY_HANDLE" "key.uri"
    assert_grep "$d/identity.json" '"backend": ?"tpm2"' "identity.json backend"
    tpm "$tcti" tpm2_readpublic -c "$KEY_HANDLE" -f pem -o "$WORK/log/tpm-key.pem"
    attrs=$(sed -n '/^attributes:/,/raw:/s/^ *value: *//p' "$WORK/log/tpm.out")
    for a in fixedtpm fixedparent sensitivedataorigin userwithauth sign; do
        case "|$attrs|" in *"|$a|"*) ;; *) fail "key at $KEY_HANDLE lacks $a: $attrs" ;; esac
    done
    case "|$attrs|" in *decrypt* | *restricted*) fail "key at $KEY_HANDLE may decrypt: $attrs" ;; esac
    # the certificate is for the key at the handle
    openssl x509 -in "$d/client.crt" -pubkey -noout | openssl pkey -pubin -outform DER >"$WORK/log/cert-pub.der"
    openssl pkey -pubin -in "$WORK/log/tpm-key.pem" -outform DER >"$WORK/log/tpm-pub.der"
    assert_same_file "$WORK/log/cert-pub.der" "$WORK/log/tpm-pub.der" \
        "client.crt does not certify the key at $KEY_HANDLE"
    # NV holds exactly client.der, read as firmware reads it (the index's own authorization)
    tpm "$tcti" tpm2_nvread "$NV_INDEX" -C "$NV_INDEX" -o "$WORK/log/nv.der"
    assert_same_file "$WORK/log/nv.der" "$d/client.der" "NV index $NV_INDEX is not client.der"
}

# abrmd_start TCTI: a private session D-Bus in $WORK/dbus and tpm2-abrmd on it in front of the
# TPM at TCTI (doc/platform.md: a TLS handshake with a TPM key needs a resource manager).
# Exports DBUS_SESSION_BUS_ADDRESS; sets TCTI_RM (tabrmd:...) and ABRMD_PID.
abrmd_start() {
    local tcti=$1 i bus_name
    need dbus-daemon tpm2-abrmd tpm2_getcap
    mkdir -p "$WORK/dbus"
    dbus-daemon --session --nofork --address="unix:path=$WORK/dbus/bus" \
        >"$WORK/dbus/dbus.log" 2>&1 &
    it_track $!
    export DBUS_SESSION_BUS_ADDRESS="unix:path=$WORK/dbus/bus"
    for i in $(seq 1 100); do
        [ -S "$WORK/dbus/bus" ] && break
        sleep 0.1
    done
    [ -S "$WORK/dbus/bus" ] || fail "dbus-daemon did not start: $(cat "$WORK/dbus/dbus.log")"

    bus_name=com.intel.tss2.Tabrmd.provtest$$
    # --allow-root: the factory station may run as root; the bus is private to this test.
    tpm2-abrmd --session --allow-root --dbus-name="$bus_name" --tcti="$tcti" \
        >"$WORK/log/abrmd.log" 2>&1 &
    ABRMD_PID=$!
    it_track "$ABRMD_PID"
    TCTI_RM="tabrmd:bus_name=$bus_name,bus_type=session"
    for i in $(seq 1 100); do
        TPM2TOOLS_TCTI=$TCTI_RM tpm2_getcap properties-fixed >/dev/null 2>&1 && break
        kill -0 "$ABRMD_PID" 2>/dev/null || fail "tpm2-abrmd exited: $(tail -n3 "$WORK/log/abrmd.log" | tr '\n' ' ')"
        sleep 0.1
    done
    TPM2TOOLS_TCTI=$TCTI_RM tpm2_getcap properties-fixed >/dev/null 2>&1 ||
        fail "tpm2-abrmd does not answer on $TCTI_RM: $(tail -n3 "$WORK/log/abrmd.log" | tr '\n' ' ')"
    it_log "tpm2-abrmd pid $ABRMD_PID as $bus_name in front of $tcti"
}
