#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# PKCS#11 fault injection through the real binary. The config's pkcs11_module is the fault
# module (pkcs11/fault_module.c), which forwards to SoftHSM2 (CA token and device tokens) and
# fails one chosen call with one chosen CK_RV.
#
# How the sites are chosen: a normal `enroll` and a normal 3-row `batch --jobs 1` (one
# token) are recorded first (FAULT_LOG: every call in order). For enroll EVERY call site
# (function, n-th call) is failed once; the CK_RV rotates through the seven below, and C_Login, C_GenerateKeyPair,
# C_CreateObject and C_Sign (first call) get all seven. For batch (about 160 calls) each
# function is failed at its first, middle and last call, the CK_RV rotating, plus a few
# "token pulled" runs where the failure stays (FAULT_STICKY). That covers every function
# the tool calls, every rv, and the start/middle/end of the lot.
#
# Each faulted run must: exit 0 with a complete identity, or exit with the documented code
# for that CK_RV (batch: or 1, "some devices failed") - never a crash or a sanitizer exit;
# write only "provisioner: " lines, the last naming the failure; leave no storage directory
# behind on failure; leave no key on the token that is not accounted for (enroll: token
# objects unchanged on failure; batch: token objects == journal after the re-run); never call
# C_Login again after CKR_PIN_INCORRECT. Then the same command without the fault completes,
# every row exactly once.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/batch/batch_lib.sh"
it_setup
need sqlite3
[ -n "${PROV_FAULT_MODULE:-}" ] || fail "PROV_FAULT_MODULE is not set (run through meson test)"
need_file "$PROV_FAULT_MODULE"

batch_ca
sed "s|^pkcs11_module = .*|pkcs11_module = $PROV_FAULT_MODULE|" provisioner.cnf >fault.cnf
export FAULT_TARGET=$SOFTHSM_MODULE
unset FAULT_FUNC FAULT_CALL FAULT_RV FAULT_STICKY FAULT_LOG || true

RVS=(0x32 0x30 0xe0 0xa0 0xb3 0x6 0x31)
declare -A RV_NAME=([0x32]=CKR_DEVICE_REMOVED [0x30]=CKR_DEVICE_ERROR [0xe0]=CKR_TOKEN_NOT_PRESENT
    [0xa0]=CKR_PIN_INCORRECT [0xb3]=CKR_SESSION_HANDLE_INVALID [0x6]=CKR_FUNCTION_FAILED
    [0x31]=CKR_DEVICE_MEMORY)
TABLE=$WORK/fault-table.txt
: >"$TABLE"

# expected_rc RV: doc/exit-codes.md for what the token said: removed/absent/lost session 4, PIN 3,
# any other device failure 1.
expected_rc() {
    case "$1" in
    0x32 | 0xe0 | 0xb3) echo 4 ;;
    0xa0) echo 3 ;;
    *) echo 1 ;;
    esac
}

# faulted NAME FUNC N RV STICKY ARGS...: runs the binary with the fault; sets RC, OUT, ERR, CALLS.
faulted() {
    local name=$1
    OUT=$WORK/log/$name.out ERR=$WORK/log/$name.err CALLS=$WORK/log/$name.calls
    RC=0
    : >"$CALLS"
    FAULT_FUNC=$2 FAULT_CALL=$3 FAULT_RV=$4 FAULT_STICKY=$5 FAULT_LOG=$CALLS \
        "$PROVISIONER" --config fault.cnf "${@:6}" >"$OUT" 2>"$ERR" </dev/null || RC=$?
    assert_no_secret "$OUT" "$ERR"
    [ "$RC" -lt 128 ] || fail "$name: crashed (exit $RC): $(tail -n3 "$ERR" | tr '\n' '|')"
    # only the tool's own one-line messages (a sanitizer report would be more lines)
    assert_no_grep "$ERR" '^([^p]|p[^r])' "$name: stderr lines not from the tool"
    # never a second C_Login once the token said the PIN is wrong
    if awk '$1 == "C_Login" && $2 == "0xa0" { bad = 1; next } bad && $1 == "C_Login" { exit 1 }' \
        "$CALLS"; then :; else
        fail "$name: C_Login called again after CKR_PIN_INCORRECT"
    fi
}

# ---- enroll: every call site -------------------------------------------------------------
token_init dev-e
FAULT_LOG=$WORK/log/rec-enroll.calls "$PROVISIONER" --config fault.cnf enroll --serial SN-REC \
    --device pkcs11:token=dev-e >"$WORK/log/rec-enroll.out" 2>&1 ||
    fail "recording enroll failed: $(tail -n2 "$WORK/log/rec-enroll.out")"
mapfile -t ENROLL_SITES < <(awk '{ n[$1]++; print $1, n[$1] }' "$WORK/log/rec-enroll.calls")
# The new key's public half and its protection attributes cost one C_GetAttributeValue each
# (on a smart card every call is a round trip): the calls between the key's generation and
# the CSR's signature.
assert_eq "$(awk '$1 == "C_GenerateKeyPair" { on = 1; next } on && $1 ~ /^C_Sign/ { exit }
        on && $1 == "C_GetAttributeValue" { n++ } END { print n + 0 }' \
    "$WORK/log/rec-enroll.calls")" 2 "C_GetAttributeValue calls between keygen and the CSR"
for f in C_Login C_GenerateKeyPair C_CreateObject C_Sign; do
    for rv in "${RVS[@]}"; do
        [ "$rv" != 0xa0 ] || [ "$f" = C_Login ] || continue
        ENROLL_EXTRA+=("$f 1 $rv")
    done
done
it_log "enroll: ${#ENROLL_SITES[@]} call sites recorded, plus ${#ENROLL_EXTRA[@]} rv sweeps"

i=0
run_enroll_site() {
    local f=$1 n=$2 rv=$3 sn before want
    i=$((i + 1))
    sn=SN-EF-$i
    before=$(token_objects dev-e | sort)
    faulted "enroll-$i-$f-$n-$rv" "$f" "$n" "$rv" 0 enroll --serial "$sn" --device pkcs11:token=dev-e
    want=$(expected_rc "$rv")
    # a slot whose token cannot be read while looking for the token: "not found" (4)
    case "$f" in C_GetSlotList | C_GetTokenInfo) [ "$RC" -ne 4 ] || want=4 ;; esac
    # ... and says that a slot could not be read, not just "not found"
    if [ "$f" = C_GetTokenInfo ] && grep -q ' not found (module' "$ERR"; then
        assert_grep "$ERR" "not found .*1 slot unreadable: ${RV_NAME[$rv]}"
    fi
    if [ "$RC" -eq 0 ]; then
        assert_storage "devices/$sn"
        printf 'enroll | %s #%s | %s | exit 0, identity complete (fault tolerated)\n' \
            "$f" "$n" "${RV_NAME[$rv]}" >>"$TABLE"
        return 0
    fi
    [ "$RC" -eq "$want" ] ||
        fail "enroll $f #$n ${RV_NAME[$rv]}: exit $RC, expected $want: $(tr '\n' '|' <"$ERR")"
    [ "$(wc -l <"$ERR")" -eq 1 ] || fail "enroll $f #$n ${RV_NAME[$rv]}: not one stderr line: $(tr '\n' '|' <"$ERR")"
    assert_eq "$(tree_digest "devices/$sn")" "(absent)" "enroll $f #$n ${RV_NAME[$rv]}: storage"
    assert_eq "$(token_objects dev-e | sort)" "$before" \
        "enroll $f #$n ${RV_NAME[$rv]}: objects on the device token (orphan key?)"
    printf 'enroll | %s #%s | %s | exit %s: %s\n' "$f" "$n" "${RV_NAME[$rv]}" "$RC" \
        "$(cut -c1-150 "$ERR")" >>"$TABLE"
    # the same enrollment without the fault completes
    "$PROVISIONER" --config fault.cnf enroll --serial "$sn" --device pkcs11:token=dev-e \
        >"$WORK/log/enroll-$i.rerun" 2>&1 ||
        fail "enroll $f #$n ${RV_NAME[$rv]}: the re-run failed: $(tail -n1 "$WORK/log/enroll-$i.rerun")"
    assert_storage "devices/$sn"
}
# rotate_rv K FUNC: the K-th rv of the rotation; CKR_PIN_INCORRECT only where a PIN is checked.
rotate_rv() {
    local rv=${RVS[$(($1 % ${#RVS[@]}))]}
    [ "$rv" != 0xa0 ] || [ "$2" = C_Login ] || rv=0x30
    echo "$rv"
}
# PROV_FAULTS_PARTS="enroll batch" (default): which halves run, to rerun one by hand.
PARTS=${PROV_FAULTS_PARTS:-enroll batch}
# PROV_FAULTS_STRIDE=N runs every N-th recorded site only (rv sweeps and "stays failed" runs
# always run). The sanitizer pass (PROV_TEST_SANITIZED=1, tests/meson.build) uses 3: the
# full cross product runs in the normal pass, the sanitized binary sees a third of it.
STRIDE=${PROV_FAULTS_STRIDE:-1}
[ "${PROV_TEST_SANITIZED:-0}" != 1 ] || STRIDE=${PROV_FAULTS_STRIDE:-3}
[[ " $PARTS " == *" enroll "* ]] || ENROLL_SITES=() ENROLL_EXTRA=()
k=0
for site in "${ENROLL_SITES[@]}"; do
    read -r f n <<<"$site"
    k=$((k + 1))
    [ $(((k - 1) % STRIDE)) -eq 0 ] || continue
    run_enroll_site "$f" "$n" "$(rotate_rv "$((k - 1))" "$f")"

done
for site in "${ENROLL_EXTRA[@]+"${ENROLL_EXTRA[@]}"}"; do
    read -r f n rv <<<"$site"
    run_enroll_site "$f" "$n" "$rv"
done

# ---- batch: first, middle and last call of each function ---------------------------------
# One token, three rows (one at a time: --jobs 1): the CA and
# device call sites are all there, at a third of the token setup and listing cost. Each
# site is a lot of its own devices: its serials carry the site's name (the CA index refuses
# a serial another lot certified), and its storage is its own directory under output_dir.
batch_tokens() {
    softhsm2-util --delete-token --token dev-01 >/dev/null 2>&1 || true
    make_lot "$1.lot" 1 3
    awk -F, -v d="$(dirname "$1")" -v OFS=, \
        'NR == 1 { print $0, "storage"; next } { st = d "/" $1; $1 = d "-" $1; print $0, st }' \
        "$1.lot" >"$1"
}
[[ " $PARTS " == *" batch "* ]] || { sed 's/^/    /' "$TABLE"; exit 0; }
mkdir -p b-rec
batch_tokens b-rec/m.csv
FAULT_LOG=$WORK/log/rec-batch.calls "$PROVISIONER" --config fault.cnf batch b-rec/m.csv \
    --jobs 1 --no-progress >"$WORK/log/rec-batch.out" 2>&1 ||
    fail "recording batch failed: $(tail -n2 "$WORK/log/rec-batch.out")"
mapfile -t BATCH_SITES < <(awk '{ n[$1]++ } END { for (f in n) { print f, 1;
        if (n[f] > 2) print f, int((n[f] + 1) / 2); if (n[f] > 1) print f, n[f] } }' \
    "$WORK/log/rec-batch.calls" | sort)
BATCH_SITES+=("C_GenerateKeyPair 2 0x32 1" "C_CreateObject 2 0xe0 1" "C_Sign 4 0x32 1")
it_log "batch: ${#BATCH_SITES[@]} call sites"

k=0
for site in "${BATCH_SITES[@]}"; do
    read -r f n rv sticky <<<"$site"
    k=$((k + 1))
    [ -n "$sticky" ] || [ $(((k - 1) % STRIDE)) -eq 0 ] || continue
    rv=${rv:-$(rotate_rv "$((k - 1))" "$f")}
    sticky=${sticky:-0}
    d=b-$k
    mkdir -p "$d"
    batch_tokens "$d/m.csv"
    JOURNAL=$d/m.journal.sqlite
    faulted "batch-$k-$f-$n-$rv" "$f" "$n" "$rv" "$sticky" batch "$d/m.csv" --jobs 1 \
        --no-progress
    want=$(expected_rc "$rv")
    # as for enroll: a slot that cannot be read while looking for a token (the CA's or a
    # device's; SoftHSM2's slot order changes from run to run) is "not found" (4)
    case "$f" in C_GetSlotList | C_GetTokenInfo) [ "$RC" -ne 4 ] || want=4 ;; esac
    # ... and says that a slot could not be read, not just "not found"
    if [ "$f" = C_GetTokenInfo ] && grep -q ' not found (module' "$ERR"; then
        assert_grep "$ERR" "not found .*1 slot unreadable: ${RV_NAME[$rv]}"
    fi
    case "$RC" in
    0 | 1 | "$want") ;;
    *) fail "batch $f #$n ${RV_NAME[$rv]}: exit $RC, expected 0, 1 or $want: $(tr '\n' '|' <"$ERR")" ;;
    esac
    if [ "$RC" -ne 0 ]; then
        grep -v ': batch: [0-9]*/[0-9]* done' "$ERR" | grep -q . ||
            fail "batch $f #$n ${RV_NAME[$rv]}: exit $RC without an error line"
    fi
    # a storage directory is complete or absent
    for s in SN-00001 SN-00002 SN-00003; do
        [ -e "devices/$d/$s" ] || continue
        if [ -n "$(ls -A "devices/$d/$s")" ]; then
            assert_storage "devices/$d/$s"
        fi
    done
    printf 'batch  | %s #%s%s | %s | exit %s: %s\n' "$f" "$n" "$([ "$sticky" = 1 ] && echo ' (stays failed)')" \
        "${RV_NAME[$rv]}" "$RC" \
        "$(grep -v ': batch: [0-9]*/[0-9]* done' "$ERR" | head -n1 | cut -c1-150)" >>"$TABLE"
    # the same command without the fault finishes the lot, every row exactly once
    "$PROVISIONER" --config fault.cnf batch "$d/m.csv" --jobs 1 --no-progress \
        >"$WORK/log/batch-$k.rerun" 2>&1 ||
        fail "batch $f #$n ${RV_NAME[$rv]}: the re-run failed: $(grep -v 'done (' "$WORK/log/batch-$k.rerun" | tail -n1)"
    assert_eq "$(journal_q "SELECT count(*) FROM device WHERE state = 'proven'")" 3 \
        "batch $f #$n: rows proven after the re-run"
    assert_eq "$(journal_q "SELECT count(*) FROM certificate WHERE superseded IS NULL")" 3 \
        "batch $f #$n: certificates issued (exactly once each)"
    for s in SN-00001 SN-00002 SN-00003; do
        assert_storage "devices/$d/$s"
    done
    assert_token_matches_journal "$JOURNAL" dev-01
done

it_log "fault table ($(wc -l <"$TABLE") runs):"
sed 's/^/    /' "$TABLE"
