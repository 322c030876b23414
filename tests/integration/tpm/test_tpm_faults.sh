#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# A TPM that stops mid-operation (tpm_cut.py: a proxy in front of swtpm that closes the
# connection at the N-th TPM command). A normal enroll is recorded through the proxy first
# (T commands); then, each on a fresh swtpm, the TPM stops at command N for N spread over
# 1..T (first, second, every T/6-th, last two). Each run must exit 4 (device gone) or 1, with
# one "provisioner: " line, no crash, no storage directory; and the same enroll straight to
# the TPM afterwards must complete (the identity whole: key at its handle, NV = client.der).
. "$PROV_SOURCE_ROOT/tests/integration/lib.sh"
it_setup
need swtpm python3 tpm2_readpublic tpm2_nvread tpm2_getcap
. "$PROV_SOURCE_ROOT/tests/integration/tpm/tpm_lib.sh"

ca_fixture pkcs11
CUT=$PROV_SOURCE_ROOT/tests/integration/tpm/tpm_cut.py

# cut_start NAME TARGET_TCTI CUT_AT: the proxy; sets CUT_TCTI and CUT_COUNT.
cut_start() {
    local port pid target=${2##*port=}
    port=$(swtpm_port)
    CUT_COUNT=$WORK/log/cut-$1.count
    echo 0 >"$CUT_COUNT"
    python3 "$CUT" "$port" "$target" "$3" "$CUT_COUNT" >"$WORK/log/cut-$1.log" 2>&1 &
    pid=$!
    it_track "$pid"
    wait_port "$port" "$pid" || fail "tpm_cut.py did not start: $(tail -n2 "$WORK/log/cut-$1.log")"
    CUT_PID=$pid
    CUT_TCTI="swtpm:host=127.0.0.1,port=$port"
}

swtpm_start rec
cut_start rec "$TCTI" 0
prov 0 enroll --serial TPM-REC --device "tpm2:$CUT_TCTI"
total=$(cat "$CUT_COUNT")
it_log "a normal TPM enroll sends $total TPM commands"
[ "$total" -gt 4 ] || fail "recording: only $total TPM commands seen"
stop_pid "$CUT_PID"

cuts=$(for ((n = 1; n <= total; n += (total + 5) / 6)); do echo "$n"; done
    echo 2
    echo $((total - 1))
    echo "$total")
for n in $(printf '%s\n' $cuts | sort -n | uniq); do
    sn=TPM-CUT-$n
    swtpm_start "cut$n"
    direct=$TCTI
    cut_start "cut$n" "$direct" "$n"
    rc=0
    "$PROVISIONER" enroll --serial "$sn" --device "tpm2:$CUT_TCTI" >"$WORK/log/$sn.out" \
        2>"$WORK/log/$sn.err" </dev/null || rc=$?
    PROV_ERR=$WORK/log/$sn.err
    it_log "TPM stopped at command $n/$total: exit $rc: $(head -c 200 "$PROV_ERR")"
    case "$rc" in
    1 | 4) ;;
    *) fail "TPM stopped at command $n: exit $rc, expected 4 or 1: $(tr '\n' '|' <"$PROV_ERR")" ;;
    esac
    assert_one_error_after_warnings "$sn"
    assert_no_file "$WORK/devices/$sn"
    stop_pid "$CUT_PID"
    # The TPM is back: the same enrollment completes. When the TPM stopped after the key
    # was made persistent, the handle holds a key without a certificate; the tool cannot
    # tell it from a split-flow key waiting for `install`, so it refuses (exit 5, naming
    # --reissue) and --reissue completes.
    rc=0
    "$PROVISIONER" enroll --serial "$sn" --device "tpm2:$direct" >"$WORK/log/$sn.rerun" 2>&1 || rc=$?
    if [ "$rc" -ne 0 ]; then
        assert_eq "$rc" 5 "re-run after the TPM stopped at command $n ($(cat "$WORK/log/$sn.rerun"))"
        assert_grep "$WORK/log/$sn.rerun" -- '--reissue'
        it_log "TPM stopped at command $n: the key was already persistent; --reissue needed"
        prov 0 enroll --serial "$sn" --device "tpm2:$direct" --reissue
    fi
    assert_tpm_identity "$direct" "$WORK/devices/$sn"
done
