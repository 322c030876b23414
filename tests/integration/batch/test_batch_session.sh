#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# A batch worker keeps its device open from one row to the next on the same token
# (factory/batch_row.h, struct batch_kept_device): the sessions a batch opens and closes do
# not grow with its rows (before, every row opened one and closed it, and SoftHSM2 walks
# every object handle of the token to close a session: a per-device cost that grew with the
# keys on the token). A kept session that no longer answers (C_GetSessionInfo fails, as
# after a token was pulled and put back) is not used: the row opens the token again and is
# issued. Every session opened is closed by the end of the run. On a token that allows one
# read-write session nothing is kept (another group's worker may need that session: two
# device strings naming one token). PKCS#11 calls are counted by the forwarding fault module
# (pkcs11/fault_module.c).
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
# opened_later LOG: the sessions opened after the first key generation
opened_later() {
    awk '/^C_GenerateKeyPair / { on = 1 }
         on && /^C_OpenSession 0x0/ { n++ } END { print n + 0 }' "$1"
}
# open_at_keys LOG: the sessions open at each key generation, one line each
open_at_keys() {
    awk '/^C_OpenSession 0x0/ { n++ } /^C_CloseSession 0x0/ { n-- }
         /^C_GenerateKeyPair / { print n }' "$1"
}
# all_closed LOG: every session opened was closed before the process ended (the kept too)
all_closed() {
    assert_eq "$(calls "$1" 'C_CloseSession 0x0')" "$(calls "$1" 'C_OpenSession 0x0')" \
        "sessions closed against opened in $(basename "$1")"
}

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
assert_eq "$(opened_later "$WORK/log/eight.calls")" 0 "sessions opened after the first row's key"
all_closed "$WORK/log/three.calls"
all_closed "$WORK/log/eight.calls"
it_log "two workers on the token: one session more at most (the partner's)"
run pair 8 2
# the partner's own session, and maybe its look at the token (batch.c, group_may_share)
[ "$(opened_later "$WORK/log/pair.calls")" -le 2 ] ||
    fail "8 rows on two workers opened $(opened_later "$WORK/log/pair.calls") sessions" \
        "after the first key"
all_closed "$WORK/log/pair.calls"

it_log "a token that allows one read-write session: nothing kept, a session per row as before"
lot single 8
FAULT_MAX_RW_SESSIONS=1 FAULT_LOG=$WORK/log/single.calls \
    prov 0 --config fault.cnf batch single.csv --no-progress --jobs 1
assert_grep "$PROV_OUT" '^8 rows: 8 issued, 0 already-issued, 0 failed '
assert_eq "$(opened_later "$WORK/log/single.calls")" 7 "sessions opened after the first row's key"
all_closed "$WORK/log/single.calls"
# Two device strings naming that token are two groups with one lock: two workers, each row
# of either must find no session of the other's left open (the same count at every key).
echo "serial,device" >twin.csv
for r in 01 02 03 04 05 06; do
    printf 'twin-a%s,pkcs11:token=dev-a\n' "$r" >>twin.csv
    printf 'twin-b%s,pkcs11:token=dev-a;manufacturer=SoftHSM%%20project\n' "$r" >>twin.csv
done
FAULT_MAX_RW_SESSIONS=1 FAULT_LOG=$WORK/log/twin.calls \
    prov 0 --config fault.cnf batch twin.csv --no-progress --jobs 2
assert_grep "$PROV_OUT" '^12 rows: 12 issued, 0 already-issued, 0 failed '
open_at_keys "$WORK/log/twin.calls" >twin.open
assert_eq "$(wc -l <twin.open)" 12 "key generations of the twin lot"
assert_eq "$(sort -u twin.open | wc -l)" 1 \
    "different counts of sessions open at the key generations ($(tr '\n' ' ' <twin.open))"
all_closed "$WORK/log/twin.calls"

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
all_closed "$WORK/log/gone.calls"
for r in 01 02 03; do
    prov 0 check "devices/gone-$r"
done
