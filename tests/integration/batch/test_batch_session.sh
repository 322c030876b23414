#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# A batch worker keeps its device open from one row to the next on the same token
# (factory/batch_row.h, struct batch_kept_device): the sessions a batch opens and closes do
# not grow with its rows (before, every row opened one and closed it, and SoftHSM2 walks
# every object handle of the token to close a session: a per-device cost that grew with the
# keys on the token). A kept session that no longer answers (C_GetSessionInfo fails, as
# after a token was pulled and put back) is not used: the row opens the token again and is
# issued. PKCS#11 calls are counted by the forwarding fault module (pkcs11/fault_module.c).
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/batch_lib.sh"
it_setup
batch_ca
token_init dev-a
[ -n "${PROV_FAULT_MODULE:-}" ] || fail "PROV_FAULT_MODULE is not set (run through meson test)"
sed "s|^pkcs11_module = .*|pkcs11_module = $PROV_FAULT_MODULE|" "$PROVISIONER_CONFIG" >fault.cnf
export FAULT_TARGET=$SOFTHSM_MODULE

# lot NAME ROWS: NAME.csv, ROWS devices on dev-a with serials of their own
lot() {
    local r
    echo "serial,device" >"$1.csv"
    for ((r = 1; r <= $2; r++)); do
        printf '%s-%02d,pkcs11:token=dev-a\n' "$1" "$r" >>"$1.csv"
    done
}
# calls LOG NAME: how many NAME calls LOG records
calls() { grep -cE "^$2( |$)" "$1" || true; }

# run NAME ROWS JOBS: the batch of lot NAME through the fault module, every call logged
run() {
    lot "$1" "$2"
    FAULT_LOG=$WORK/log/$1.calls prov 0 --config fault.cnf batch "$1.csv" --no-progress --jobs "$3"
    assert_grep "$PROV_OUT" "^$2 rows: $2 issued, 0 already-issued, 0 failed "
}

it_log "sessions per run, 3 rows against 8 rows, one worker"
run three 3 1
run eight 8 1
assert_eq "$(calls "$WORK/log/eight.calls" C_GenerateKeyPair)" 8 "keys generated for 8 rows"
assert_eq "$(calls "$WORK/log/eight.calls" C_OpenSession)" \
    "$(calls "$WORK/log/three.calls" C_OpenSession)" "sessions opened by 8 rows against 3"
assert_eq "$(calls "$WORK/log/eight.calls" C_CloseSession)" \
    "$(calls "$WORK/log/three.calls" C_CloseSession)" "sessions closed by 8 rows against 3"
it_log "two workers on the token: one session more at most (the partner's)"
run pair 8 2
[ "$(calls "$WORK/log/pair.calls" C_OpenSession)" -le "$(($(calls "$WORK/log/three.calls" C_OpenSession) + 1))" ] ||
    fail "8 rows on two workers opened $(calls "$WORK/log/pair.calls" C_OpenSession) sessions, 3 rows on one $(calls "$WORK/log/three.calls" C_OpenSession)"

it_log "a kept session that no longer answers is not used: the row opens the token again"
# the C_GetSessionInfo just before the second row's key generation: the kept session's check
n=$(awk '/^C_GetSessionInfo / { k++; last = k } /^C_GenerateKeyPair / && ++g == 2 { print last; exit }' \
    "$WORK/log/three.calls")
[ -n "$n" ] || fail "no C_GetSessionInfo before the second key generation in the recording"
lot gone 3
FAULT_FUNC=C_GetSessionInfo FAULT_CALL=$n FAULT_RV=0x32 FAULT_LOG=$WORK/log/gone.calls \
    prov 0 --config fault.cnf batch gone.csv --no-progress --jobs 1
assert_grep "$PROV_OUT" '^3 rows: 3 issued, 0 already-issued, 0 failed '
assert_eq "$(calls "$WORK/log/gone.calls" 'C_GetSessionInfo 0x32')" 1 "the faulted check"
# after the failed check and before the second key: the kept session closed, a new one opened
assert_eq "$(awk '/^C_GetSessionInfo 0x32/ { on = 1; next }
                  on && /^C_GenerateKeyPair / { exit }
                  on && /^C_CloseSession 0x0/ { c++ } on && /^C_OpenSession 0x0/ && c { o++ }
                  END { print (c >= 1 && o >= 1) ? "reopened" : "used as it was" }' "$WORK/log/gone.calls")" \
    reopened "the session that did not answer"
assert_eq "$(calls "$WORK/log/gone.calls" C_OpenSession)" \
    "$(($(calls "$WORK/log/three.calls" C_OpenSession) + 1))" "sessions opened with one lost"
for r in 01 02 03; do
    prov 0 check "devices/gone-$r"
done
