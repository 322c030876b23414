#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# SIGINT and SIGTERM never cut a token operation short (provisioner/support/interrupt.h). SoftHSM2
# rewrites token.object in place on every C_Login, and a process killed in that instant loses
# the token - the CA token too. Real signals are sent to a real batch (20 rows on 4 tokens,
# --jobs 2) and to real enrollments, each at a random instant once the process has installed
# its handlers (read from /proc/PID/status, so no signal lands before them), within the time an
# unsignalled run of the lot took, until 6 have landed on a running batch (4 at least, of at
# most 24 tries). After every one:
# - the exit code is 0 (done before the signal) or 1 with exactly one stderr line,
#   "interrupted by SIGINT|SIGTERM ... run the same command" (batch) or "... nothing was
#   issued: run the same command again" (enroll);
# - every token is intact: each token.object non-empty, every label listed, and the CA token
#   logs in with its PIN (no SoftHSM2 file is ever restored in this test);
# - the journal verifies (`batch report --verify-audit`), no storage directory is empty and
#   none holds a temp file; an interrupted enrollment left no storage and no key.
# Then the same command completes every row exactly once: one certificate per row, distinct
# serials and keys, each token holding exactly the journal's keys, `check` passing. Before
# that, two exact points through the test-only pause hook: SIGTERM right after a row's intent
# rolls it back (no key), SIGINT right after its certificate is recorded finishes it.
# Last, a full disk: a batch whose output_dir is a 64 KiB tmpfs (in a private mount
# namespace) fails the rows that do not fit and leaves no empty storage directory there.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/batch/batch_lib.sh"
it_setup
need sqlite3 unshare mount
batch_ca
make_lot sig.csv 4 5
JOURNAL=$WORK/sig.journal.sqlite
token_init dev-e
labels="provisioner-ca dev-01 dev-02 dev-03 dev-04 dev-e"

# wait_handlers PID: until PID runs the tool (no longer the forked shell, whose own traps
# show in SigCgt too) and has caught SIGINT and SIGTERM (SigCgt bits 2 and 15)
SHELL_EXE=$(readlink "/proc/$$/exe")
wait_handlers() {
    local mask exe i
    for ((i = 0; i < 500; i++)); do
        exe=$(readlink "/proc/$1/exe" 2>/dev/null) || return 0
        mask=$(awk '/^SigCgt:/ { print $2 }' "/proc/$1/status" 2>/dev/null) || return 0
        if [ "$exe" != "$SHELL_EXE" ] && [ -n "$mask" ] &&
            [ $((16#$mask & 0x4002)) -eq $((0x4002)) ]; then
            return 0
        fi
        sleep 0.01
    done
    fail "process $1 never installed its SIGINT/SIGTERM handlers"
}

random_delay() {
    awk -v r="$(od -An -N2 -tu2 /dev/urandom)" -v max="$1" 'BEGIN { printf "%.3f", (r % max) / 1000 }'
}

# tokens_intact: every token file non-empty, every label there, the CA token logs in
tokens_intact() {
    local f l
    for f in "$WORK"/softhsm/tokens/*/token.object; do
        [ -s "$f" ] || fail "$1: $f is empty: the token is gone"
    done
    pkcs11-tool --module "$SOFTHSM_MODULE" -L >"$WORK/log/tokens.list" 2>&1
    for l in $labels; do
        grep -q "token label *: $l\$" "$WORK/log/tokens.list" || fail "$1: token $l is gone"
    done
    p11 provisioner-ca "$CA_PIN_VALUE" -O >"$WORK/log/ca-login.out" 2>&1 ||
        fail "$1: the CA token no longer logs in: $(tail -n1 "$WORK/log/ca-login.out")"
}

# storage_clean DIR: no empty directory and no temp file under DIR
storage_clean() {
    [ -d "$2" ] || return 0
    [ -z "$(find "$2" -mindepth 1 -type d -empty)" ] ||
        fail "$1: empty storage directories: $(find "$2" -mindepth 1 -type d -empty | head -n3 | tr '\n' ' ')"
    [ -z "$(find "$2" -name '*.tmp.*' -o -name '.provisioner-probe.*')" ] ||
        fail "$1: temp files left: $(find "$2" -name '*.tmp.*' -o -name '.provisioner-probe.*' | head -n3 | tr '\n' ' ')"
}

# signal_run NAME SIGNAL MAX_MS CMD...: CMD in the background, SIGNAL after a random delay
# once its handlers are in place; its exit code in $rc, its stderr in $WORK/log/NAME.err
signal_run() {
    local name=$1 sig=$2 max=$3 pid
    shift 3
    "$PROVISIONER" "$@" >"$WORK/log/$name.out" 2>"$WORK/log/$name.err" </dev/null &
    pid=$!
    it_track "$pid"
    wait_handlers "$pid"
    sleep "$(random_delay "$max")"
    kill "-$sig" "$pid" 2>/dev/null || true
    rc=0
    wait "$pid" || rc=$?
}

# ---- batch, at two exact points --------------------------------------------------------------
# Held by the test-only pause hook right after the first row's intent (SIGTERM there: that row
# is rolled back before its key is made) and right after its certificate is recorded
# (SIGINT: that row is finished); the rows after it are not started.
token_init dev-p
labels="$labels dev-p"
printf 'serial,device\nP-1,pkcs11:token=dev-p\nP-2,pkcs11:token=dev-p\nP-3,pkcs11:token=dev-p\n' \
    >p.csv
for point in intent:TERM issued:INT; do
    rm -f "$WORK/hold"
    PROVISIONER_TEST_PAUSE_AT=${point%:*}:$WORK/hold "$PROVISIONER" -q batch p.csv --jobs 1 \
        >"$WORK/log/p-${point%:*}.out" 2>"$WORK/log/p-${point%:*}.err" </dev/null &
    pid=$!
    it_track "$pid"
    wait_file "$WORK/hold" "$pid" 600 || fail "batch did not pause at ${point%:*} (ended or 60 s)"
    kill "-${point#*:}" "$pid"
    rm -f "$WORK/hold"
    rc=0
    wait "$pid" || rc=$?
    assert_eq "$rc" 1 "batch stopped at ${point%:*} by SIG${point#*:}: exit"
    PROV_ERR=$WORK/log/p-${point%:*}.err
    assert_one_error "p.csv: interrupted by SIG${point#*:}" "run the same command to resume"
    assert_grep p.results.csv '^P-3,failed,,,,[^,]*,not started: the run was interrupted' "P-3 in the results"
    tokens_intact "batch stopped at ${point%:*}"
    storage_clean "batch stopped at ${point%:*}" devices
done
# intent: P-1 rolled back (no key, failed with the reason); then issued: P-1 enrolled anew
# and finished, P-2 and P-3 never started
assert_eq "$(sqlite3 p.journal.sqlite "SELECT serial || ' ' || state || ' ' || attempts FROM device
                                      ORDER BY serial" | tr '\n' ',')" "P-1 proven 2," "journal of p.csv"
assert_eq "$(sqlite3 p.journal.sqlite "SELECT count(*) FROM audit WHERE event = 'failed' AND
                                      detail LIKE '%interrupted by SIGTERM before its key was generated%'")" \
    1 "the rolled-back attempt in the audit trail"
prov 0 batch report p.csv --verify-audit
assert_eq "$(token_objects dev-p | awk '$1 == "privkey"' | wc -l)" 1 "keys on dev-p"
prov 0 batch p.csv --no-progress
assert_grep "$PROV_OUT" '^3 rows: 2 issued, 1 already-issued, 0 failed '
assert_token_matches_journal "$WORK/p.journal.sqlite" dev-p

# ---- batch, at random instants -------------------------------------------------------------
# new_lot N: the finished lot's journal kept as log/sig-N.journal.sqlite, and the same rows
# under new serials on the same tokens, so that the next signal has work to land in
new_lot() {
    mv sig.journal.sqlite "$WORK/log/sig-$1.journal.sqlite"
    rm -f sig.journal.sqlite-wal sig.journal.sqlite-shm sig.results.csv
    rm -rf devices
    sed -i "s/^\(SN-[0-9-]*\),/\1-$1,/" sig.csv
}

# When to signal: a whole run of the lot, unsignalled, says how long one takes on this machine
# now (nothing is asserted on it); each signal then comes at a random instant within the first
# three quarters of that, so most land while the batch runs whatever the machine's speed. A
# batch that ends before its signal is simply not signalled (signal_run's kill finds no process),
# and the window narrows by a fifth (down to 20 ms): a measurement taken while another suite
# loaded the machine overestimates the next runs (it-ca_index's kills have the same rule).
"$PROVISIONER" -q batch sig.csv --jobs 2 >"$WORK/log/batch-0.out" 2>"$WORK/log/batch-0.err" </dev/null &
pid=$!
it_track "$pid"
wait_handlers "$pid"
t0=$(date +%s%N)
wait "$pid" || fail "the unsignalled batch: $(tr '\n' '|' <"$WORK/log/batch-0.err")"
run_ms=$((($(date +%s%N) - t0) / 1000000))
window_ms=$((run_ms * 3 / 4 > 20 ? run_ms * 3 / 4 : 20))
it_log "a whole batch of the lot: $run_ms ms; signals within the first $window_ms ms"
new_lot 0

# Until 6 signals have landed on a running batch (at most 24 tries): each one must leave the
# tokens, the journal and the storage intact, and at least 4 must have landed.
landed=0
tries=0
while [ "$landed" -lt 6 ] && [ "$tries" -lt 24 ]; do
    tries=$((tries + 1))
    i=$tries
    sig=INT
    [ $((i % 2)) -eq 0 ] && sig=TERM
    used_ms=$window_ms
    signal_run "batch-$i" "$sig" "$used_ms" -q batch sig.csv --jobs 2
    case "$rc" in
    0) window_ms=$(narrowed "$window_ms" 20) ;;
    1)
        landed=$((landed + 1))
        PROV_ERR=$WORK/log/batch-$i.err
        assert_one_error "sig.csv: interrupted by SIG$sig" "run the same command to resume"
        ;;
    *) fail "batch $i (SIG$sig): exit $rc: $(tr '\n' '|' <"$WORK/log/batch-$i.err")" ;;
    esac
    tokens_intact "batch $i (SIG$sig, exit $rc)"
    storage_clean "batch $i" devices
    prov 0 batch report sig.csv --verify-audit
    it_log "batch $i: SIG$sig within $used_ms ms, exit $rc, $(journal_q "SELECT count(*) FROM device WHERE state = 'proven'")/20 proven"
    # once done, make the lot anew on the same tokens
    if [ "$rc" -eq 0 ]; then
        new_lot "$i"
    fi
done
[ "$landed" -ge 4 ] || fail "only $landed of $tries signals landed on a running batch"
prov 0 batch sig.csv --jobs 2 --no-progress
prov 0 batch sig.csv --jobs 2 --no-progress
assert_grep "$PROV_OUT" '^20 rows: 0 issued, 20 already-issued, 0 failed '
assert_eq "$(journal_q 'SELECT count(*) FROM certificate')" 20 "certificates in the journal"
assert_eq "$(journal_q 'SELECT count(DISTINCT cert_serial) || count(DISTINCT pubkey_sha256) FROM certificate')" \
    2020 "distinct certificate serials and public keys"
while read -r dir; do
    prov 0 check "$dir"
done < <(journal_q "SELECT storage FROM device")

# Every token holds exactly the keys of the journals' proven rows (each finished lot above
# left its own journal; the last one is $JOURNAL).
for t in dev-01 dev-02 dev-03 dev-04; do
    for j in "$WORK"/log/sig-*.journal.sqlite "$JOURNAL"; do
        [ -f "$j" ] || continue
        sqlite3 "$j" "SELECT lower(hex(key_id)) FROM device WHERE device_uri = 'pkcs11:token=$t'
                      AND state = 'proven'"
    done | sort >"$WORK/log/want-all-$t"
    token_objects "$t" | awk '$1 == "privkey" { print $2 }' | sort >"$WORK/log/got-all-$t"
    cmp -s "$WORK/log/want-all-$t" "$WORK/log/got-all-$t" ||
        fail "token $t: private keys are not the journals' keys: $(diff "$WORK/log/got-all-$t" "$WORK/log/want-all-$t" | grep '^[<>]' | head -n4 | tr '\n' ' ')"
done

# ---- enroll --------------------------------------------------------------------------------
enrolled=0
for ((i = 1; i <= 8; i++)); do
    sig=INT
    [ $((i % 2)) -eq 0 ] && sig=TERM
    sn=EN-$i
    signal_run "enroll-$i" "$sig" 80 -q enroll --serial "$sn" --device pkcs11:token=dev-e
    case "$rc" in
    0) ;;
    1)
        PROV_ERR=$WORK/log/enroll-$i.err
        assert_one_error "serial $sn: interrupted by SIG$sig" "nothing was issued: run the same command again"
        assert_no_file "$WORK/devices/$sn"
        tokens_intact "enroll $i (SIG$sig, exit 1)"
        prov 0 enroll --serial "$sn" --device pkcs11:token=dev-e
        ;;
    *) fail "enroll $i (SIG$sig): exit $rc: $(tr '\n' '|' <"$WORK/log/enroll-$i.err")" ;;
    esac
    tokens_intact "enroll $i (SIG$sig, exit $rc)"
    storage_clean "enroll $i" devices
    prov 0 check "devices/$sn"
    enrolled=$((enrolled + 1))
    it_log "enroll $i: SIG$sig, exit $rc"
done
# one key and one certificate per enrolled serial: nothing left by a rolled-back attempt
assert_eq "$(token_objects dev-e | awk '$1 == "privkey"' | wc -l)" "$enrolled" "keys on dev-e"
assert_eq "$(token_objects dev-e | awk '$1 == "cert"' | wc -l)" "$enrolled" "certificates on dev-e"

# ---- a full disk ---------------------------------------------------------------------------
token_init dev-f
labels="$labels dev-f"
{
    echo "serial,device"
    for ((i = 1; i <= 8; i++)); do
        echo "FULL-$i,pkcs11:token=dev-f"
    done
} >full.csv
mkdir -p "$WORK/full"
sed "s|^output_dir = .*|output_dir = $WORK/full|" provisioner.cnf >full.cnf
# 64 KiB hold a few identities (each file takes a page of the tmpfs) but not eight
unshare --mount --propagation private bash -c '
    mount -t tmpfs -o size=64k tmpfs "$1" || exit 90
    rc=0
    "$2" --config "$3" batch "$4" --no-progress >"$5.out" 2>"$5.err" </dev/null || rc=$?
    find "$1" -mindepth 1 -type d -empty >"$5.empty"
    find "$1" -name "*.tmp.*" -o -name ".provisioner-probe.*" >"$5.temp"
    exit "$rc"' full "$WORK/full" "$PROVISIONER" "$WORK/full.cnf" full.csv "$WORK/log/full" || rc=$?
assert_eq "$rc" 1 "batch on a full disk: exit ($(tr '\n' '|' <"$WORK/log/full.err"))"
assert_grep "$WORK/log/full.err" 'No space left on device' "the rows that did not fit"
[ ! -s "$WORK/log/full.empty" ] || fail "empty storage directories on the full disk: $(tr '\n' ' ' <"$WORK/log/full.empty")"
[ ! -s "$WORK/log/full.temp" ] || fail "temp files on the full disk: $(tr '\n' ' ' <"$WORK/log/full.temp")"
tokens_intact "full disk"
it_log "$landed of $tries signals landed on a running batch; $enrolled enrollments signalled"
