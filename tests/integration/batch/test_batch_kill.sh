#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The kill test (doc/journal.md, "The promise"). A lot of a few hundred SoftHSM2 devices over
# many small tokens (SoftHSM2 reads every object of every token at start-up and slows down
# with the objects on a token: small tokens keep the test fast) is stopped again and again and
# resumed with the same command each time:
# - at every journal state boundary through the test-only hook
#   PROVISIONER_TEST_CRASH_AT=<state>:<n> (exit 137 right after the n-th transition),
#   including "superseded" and the states after it during a --reissue, and a reissue whose
#   old storage is gone stopped right after proven, and one stopped right after the run's end;
# - with SIGKILL at random instants, at least 10 of them landing on a running batch.
# At the end:
# - every row proven, certified exactly once (plus the three reissues' superseded certificates);
# - every certificate serial and every public key distinct;
# - every storage directory complete, holding the journal's certificate, and passing
#   `provisioner check` (the key on the token signs a fresh challenge);
# - the private keys, public keys and certificates on every token are exactly the journal's
#   keys (no orphan from an interrupted attempt or a superseded key), besides objects without
#   any CKA_ID that a SIGKILL inside SoftHSM2's C_GenerateKeyPair can leave (no row can name
#   them, so no resume can delete them): `batch status --tokens` lists each of those;
# - no temp file in any storage directory; the audit chain verifies.
# BATCH_KILL_TOKENS / BATCH_KILL_PER_TOKEN / BATCH_KILL_KILLS change the size (16 x 20, 12).
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/batch_lib.sh"
it_setup
need sqlite3 jq
tokens=${BATCH_KILL_TOKENS:-16}
per_token=${BATCH_KILL_PER_TOKEN:-20}
kills_wanted=${BATCH_KILL_KILLS:-12}
total=$((tokens * per_token))
batch_ca
make_lot kill.csv "$tokens" "$per_token"
JOURNAL=$WORK/kill.journal.sqlite
start=$SECONDS
extra=()

softhsm_backup
# run HOOK: the same command once more ("" for no crash hook); its exit code in $rc. A crash
# hook ends the process like a kill: with --jobs 2 the other worker may be inside SoftHSM2
# rewriting a token.object, so the repair follows it as it follows a SIGKILL (seen once: a
# token "not found" by the next five runs, until the first kill's repair).
run() {
    rc=0
    PROVISIONER_TEST_CRASH_AT=$1 "$PROVISIONER" -q batch kill.csv --jobs 2 "${extra[@]}" \
        >>"$WORK/log/runs.out" 2>>"$WORK/log/runs.err" </dev/null || rc=$?
    [ "$rc" -eq 0 ] || softhsm_repair
}

proven() {
    journal_q "SELECT count(*) FROM device WHERE state = 'proven'"
}

# Every state boundary, at small counts so that most of the lot is left for the kills.
for spec in intent:1 issued:1 stored:1 proven:1 intent:4 issued:3 stored:5 proven:2; do
    run "$spec"
    assert_eq "$rc" 137 "crash hook $spec: exit"
    it_log "crash hook $spec: stopped, $(proven)/$total proven"
done

# SIGKILL at random instants until enough kills landed on a running batch.
# The pause before a kill is drawn between 0.05 s and twice the time per kill left (at most
# 0.9 s), that time estimated from the rows proven since the kills began, so that the kills
# spread over what is left of the lot whatever this machine's speed.
now_ms() { echo $(($(date +%s%N) / 1000000)); }
landed=0
t0=$(now_ms)
p0=$(proven)
done_rows=$p0
for ((attempt = 1; landed < kills_wanted && attempt <= 3 * kills_wanted; attempt++)); do
    pause_ms=900
    if [ "$done_rows" -gt "$p0" ]; then
        pause_ms=$((($(now_ms) - t0) * (total - done_rows) * 2 / (done_rows - p0) / (kills_wanted - landed)))
        [ "$pause_ms" -le 900 ] || pause_ms=900
        [ "$pause_ms" -ge 100 ] || pause_ms=100
    fi
    "$PROVISIONER" -q batch kill.csv --jobs 2 >>"$WORK/log/runs.out" 2>>"$WORK/log/runs.err" </dev/null &
    pid=$!
    it_track "$pid"
    sleep "$(awk -v r="$(od -An -N2 -tu2 /dev/urandom)" -v p="$pause_ms" 'BEGIN { printf "%.3f", (50 + r % (p - 49)) / 1000 }')"
    if kill -KILL "$pid" 2>/dev/null; then
        landed=$((landed + 1))
    fi
    rc=0
    wait "$pid" 2>/dev/null || rc=$?
    softhsm_repair
    done_rows=$(proven)
    it_log "kill $attempt: exit $rc, $done_rows/$total proven"
done
[ "$landed" -ge 10 ] || fail "only $landed SIGKILLs landed on a running batch"

run ""
assert_eq "$rc" 0 "completing run: exit"
# A reissue interrupted at its own boundaries, resumed each time with the same command.
extra=(--reissue SN-00001)
for spec in superseded:1 intent:1 issued:1 stored:1; do
    run "$spec"
    assert_eq "$rc" 137 "reissue crash hook $spec: exit"
    it_log "reissue crash hook $spec: stopped"
done
run ""
assert_eq "$rc" 0 "reissue: completing run: exit"
# A reissue whose old storage is gone (enroll then has no key.uri naming the old key), stopped
# right after its proven: the next run must still take the superseded key off the token.
rm -rf "$(journal_q "SELECT storage FROM device WHERE serial = 'SN-00002'")"
extra=(--reissue SN-00002)
run proven:1
assert_eq "$rc" 137 "reissue without storage, crash hook proven:1: exit"
run ""
assert_eq "$rc" 0 "reissue without storage: completing run: exit"
# A run stopped right after its end is recorded has written its results before: a finished
# run whose results are missing would be run again by the operator, and would reissue again.
rm -f kill.results.csv
extra=(--reissue SN-00003)
run run:1
assert_eq "$rc" 137 "reissue, crash hook run:1: exit"
assert_grep kill.results.csv '^SN-00003,issued,' "results of the run stopped after its end"
extra=()
run ""
assert_eq "$rc" 0 "final run: exit"
enroll_seconds=$((SECONDS - start))
assert_no_grep "$WORK/log/runs.err" '.' "the runs wrote errors"

assert_eq "$(proven)" "$total" "rows proven"
assert_eq "$(journal_q 'SELECT count(*) FROM device')" "$total" "device rows"
# Exactly once: one certificate per row, plus the one superseded by each of the three
# reissues, which a resumed run did not repeat.
assert_eq "$(journal_q 'SELECT count(*) FROM certificate')" $((total + 3)) "certificates"
assert_eq "$(journal_q "SELECT count(*) FROM certificate c JOIN device d ON d.id = c.device_id
            WHERE c.superseded IS NOT NULL AND d.serial IN ('SN-00001', 'SN-00002', 'SN-00003')
            GROUP BY d.serial ORDER BY d.serial" | tr '\n' ' ')" "1 1 1 " "superseded, one per reissued serial"
assert_eq "$(journal_q 'SELECT count(DISTINCT cert_serial) FROM certificate')" $((total + 3)) \
    "distinct certificate serials"
assert_eq "$(journal_q 'SELECT count(DISTINCT pubkey_sha256) FROM certificate')" $((total + 3)) \
    "distinct public keys"
assert_eq "$(count_re '^SN-[0-9]+,(issued|already-issued),[0-9a-f]+,' kill.results.csv)" "$total" \
    "results rows issued or already-issued"

# Storage: complete and holding the journal's certificate ...
while IFS='|' read -r dir sha; do
    for f in client.crt client.der fullchain.pem chain.pem server-ca.pem key.uri identity.json; do
        assert_file "$dir/$f"
    done
    assert_eq "$(fingerprint "$dir/client.crt")" "$sha" "$dir: client.crt vs the journal"
done < <(journal_q "SELECT d.storage, c.sha256 FROM device d JOIN certificate c ON c.id = d.cert_id")
temps=$(find devices -name '*.tmp.*' -o -name '.provisioner-probe.*') || fail "find in devices/ failed"
[ -z "$temps" ] || fail "temp files left: $temps"
# ... and proven by the key on the token: two tokens at a time, one device at a time per token.
# The directories are listed here, in the test's shell, where a failed query stops the test
# (in the xargs children it would read as "no directory" and check nothing).
for ((t = 1; t <= tokens; t++)); do
    label=$(printf 'dev-%02d' "$t")
    journal_q "SELECT storage FROM device WHERE device_uri = 'pkcs11:token=$label'" \
        >"$WORK/log/dirs-$label"
    assert_eq "$(count_re . "$WORK/log/dirs-$label")" "$per_token" "storage directories of $label"
done
check_token() {
    local dir
    while read -r dir; do
        "$PROVISIONER" check "$dir" >/dev/null 2>>"$WORK/log/check-$1.err" ||
            { echo "check $dir failed: $(tail -n1 "$WORK/log/check-$1.err")"; return 1; }
    done <"$WORK/log/dirs-$1"
}
export -f check_token
export WORK
for ((t = 1; t <= tokens; t++)); do printf 'dev-%02d\n' "$t"; done |
    xargs -P 2 -I{} bash -c 'check_token {}' >"$WORK/log/check.out" ||
    fail "provisioner check: $(head -n3 "$WORK/log/check.out" | tr '\n' ' ')"

prov 0 batch status kill.csv --tokens --json
cp "$PROV_OUT" "$WORK/log/tokens.json"
idless=0
for ((t = 1; t <= tokens; t++)); do
    label=$(printf 'dev-%02d' "$t")
    n=$(token_objects "$label" | count_re ' -$')
    assert_eq "$(jq --arg d "pkcs11:token=$label" '[.tokens[] | select(.device == $d) |
        .unexplained[] | select(.id == null)] | length' "$WORK/log/tokens.json")" "$n" \
        "$label: objects without a CKA_ID listed by batch status --tokens"
    assert_eq "$(jq --arg d "pkcs11:token=$label" '[.tokens[] | select(.device == $d) |
        .unexplained[] | select(.id != null)] | length' "$WORK/log/tokens.json")" 0 \
        "$label: objects with an id that no journal row explains"
    assert_token_matches_journal "$JOURNAL" "$label" except-idless
    idless=$((idless + n))
done
prov 0 batch report kill.csv --verify-audit
assert_grep "$PROV_ERR" 'audit chain verifies'
it_log "$total devices on $tokens tokens: 14 crash hooks, $landed SIGKILLs ($SOFTHSM_REPAIRED SoftHSM2 token.object restored, $idless objects without a CKA_ID left by kills inside key generation, each listed by batch status --tokens); enrollment phase ${enroll_seconds}s, total ${SECONDS}s"
