#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Rows of one token overlap where the token is not used (factory/README.md, "Concurrency"):
# with --jobs 2 and one token, the next row's key is made, signed into a CSR and certified while the first
# row waits right after its certificate's record (the journal's test-only pause hook,
# PROVISIONER_TEST_PAUSE_AT=issued:PATH), before the first row is back on the token to write
# its certificate object. With --jobs 1 the next row does not start meanwhile, nor with
# --jobs 2 when the token's rows carry their own PIN sources (which row logs in first would
# then decide whether a wrong one is noticed) or when the token allows one read-write session
# only (the fault module's FAULT_MAX_RW_SESSIONS=1: a second worker's session would be
# refused). Either way every row ends proven, once, and the token holds exactly the journal's
# keys.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/batch_lib.sh"
it_setup
need sqlite3
batch_ca

# run_paused NAME JOBS [PIN_COLUMN [CONFIG]]: `batch NAME.csv` (4 rows on token NAME; with
# PIN_COLUMN, each row's pin column says it) held at every issued record until the test lets it
# go; sets ISSUED_WHILE_HELD to the rows the journal had issued (or further) during the first
# hold, once that count stayed the same for 2 s.
run_paused() {
    local name=$1 jobs=$2 pin=${3:-} config=${4:-$PROVISIONER_CONFIG} pid w n last=-1 same=0
    token_init "$name"
    {
        echo "serial,device${pin:+,pin}"
        for i in 1 2 3 4; do echo "$name-$i,pkcs11:token=$name${pin:+,$pin}"; done
    } >"$name.csv"
    rm -f "$WORK/hold"
    PROVISIONER_TEST_PAUSE_AT=issued:$WORK/hold "$PROVISIONER" -q --config "$config" \
        batch "$name.csv" --jobs "$jobs" --no-progress \
        >"$WORK/log/$name.out" 2>"$WORK/log/$name.err" </dev/null &
    pid=$!
    it_track "$pid"
    wait_file "$WORK/hold" "$pid" 600 ||
        fail "$name: batch did not reach issued (ended, or 60 s): $(tail -n1 "$WORK/log/$name.err")"
    # held: count the rows at issued or beyond until the count settles (the next row, when it
    # may run, goes through its key, CSR and certificate and then waits at the same hook)
    for ((w = 0; w < 300 && same < 20; w++)); do
        n=$(sqlite3 "$name.journal.sqlite" \
            "SELECT count(*) FROM device WHERE state IN ('issued', 'stored', 'proven')" 2>/dev/null) ||
            n=$last
        if [ "$n" = "$last" ]; then same=$((same + 1)); else same=0; last=$n; fi
        sleep 0.1
    done
    ISSUED_WHILE_HELD=$last
    # let every later hold go too, until the run ends
    while kill -0 "$pid" 2>/dev/null; do
        rm -f "$WORK/hold"
        sleep 0.05
    done
    rc=0
    wait "$pid" || rc=$?
    assert_eq "$rc" 0 "$name: batch --jobs $jobs exit"
    assert_eq "$(sqlite3 "$name.journal.sqlite" "SELECT group_concat(serial || ' ' || state || ' ' || attempts, ',')
                                                 FROM (SELECT * FROM device ORDER BY serial)")" \
        "$name-1 proven 1,$name-2 proven 1,$name-3 proven 1,$name-4 proven 1" "$name: journal"
    assert_token_matches_journal "$WORK/$name.journal.sqlite" "$name"
}

run_paused pipe 2
assert_eq "$ISSUED_WHILE_HELD" 2 "--jobs 2: rows issued while the first waited after its record"
run_paused one 1
assert_eq "$ISSUED_WHILE_HELD" 1 "--jobs 1: rows issued while the first waited after its record"
run_paused pins 2 "file:$WORK/device.pin"
assert_eq "$ISSUED_WHILE_HELD" 1 "rows with their own PIN source: rows issued while the first waited"
[ -n "${PROV_FAULT_MODULE:-}" ] || fail "PROV_FAULT_MODULE is not set (run through meson test)"
sed "s|^pkcs11_module = .*|pkcs11_module = $PROV_FAULT_MODULE|" "$PROVISIONER_CONFIG" >one-rw.cnf
FAULT_TARGET=$SOFTHSM_MODULE FAULT_MAX_RW_SESSIONS=1 run_paused onerw 2 "" "$WORK/one-rw.cnf"
assert_eq "$ISSUED_WHILE_HELD" 1 "a token of one read-write session: rows issued while the first waited"
