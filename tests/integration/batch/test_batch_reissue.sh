#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# A --reissue request is carried out once, however often its command is run:
# - a 4-row lot; one device token moved away; `--reissue SN-00001 --reissue SN-00002` exits 1
#   (SN-00002 fails); the token put back, the same command completes SN-00002 without
#   reissuing SN-00001 again; the same command once more changes nothing, also with the
#   serials in another order;
# - `--again` is a new request: each serial is reissued once more, and running that command
#   again (after it completed) reissues once more again;
# - the kill test: `--reissue SN-00003 --reissue SN-00004` with SN-00004's token away, stopped
#   by the crash hook (after the first supersede, intent, proven, and the run's end) and by
#   SIGKILL at random instants, run again until it exits 1, then with the token back until it
#   exits 0: each serial has exactly one superseded certificate, the tokens hold exactly the
#   journal's keys, the audit verifies.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/batch_lib.sh"
it_setup
need sqlite3
batch_ca
make_lot rr.csv 4 1
JOURNAL=$WORK/rr.journal.sqlite

# certs SERIAL: "current superseded" certificate counts of a serial
certs() {
    journal_q "SELECT count(*) - count(c.superseded), count(c.superseded) FROM certificate c
               JOIN device d ON d.id = c.device_id WHERE d.serial = '$1'" | tr '|' ' '
}

# token_dir LABEL: the SoftHSM2 directory of the token labelled LABEL
token_dir() {
    local f
    for f in "$WORK"/softhsm/tokens/*/token.object; do
        if grep -qa -- "$1 " "$f"; then
            dirname "$f"
            return
        fi
    done
    fail "no token directory for $1"
}

prov 0 batch rr.csv --no-progress
dir2=$(token_dir dev-02)
mv "$dir2" "$WORK/away-dev-02"
prov 1 batch rr.csv --reissue SN-00001 --reissue SN-00002 --no-progress
assert_grep "$PROV_ERR" 'SN-00002' "the failed row"
assert_eq "$(certs SN-00001)" "1 1" "SN-00001 after the first run"
mv "$WORK/away-dev-02" "$dir2"
prov 0 batch rr.csv --reissue SN-00001 --reissue SN-00002 --no-progress
assert_grep "$PROV_OUT" '^4 rows: 1 issued, 3 already-issued, 0 failed '
assert_eq "$(certs SN-00001)" "1 1" "SN-00001 after the same command again"
assert_eq "$(certs SN-00002)" "1 1" "SN-00002 after the same command again"
assert_grep "$PROV_ERR" 'SN-00001: already reissued by this request' "why SN-00001 was not reissued"
prov 0 batch rr.csv --reissue SN-00002 --reissue SN-00001 --no-progress
assert_grep "$PROV_OUT" '^4 rows: 0 issued, 4 already-issued, 0 failed '
assert_eq "$(certs SN-00001) $(certs SN-00002)" "1 1 1 1" "after the same request a third time"

# --again: a new request, once more for each serial (and again after it completed)
prov 0 batch rr.csv --reissue SN-00001 --reissue SN-00002 --again --no-progress
assert_grep "$PROV_OUT" '^4 rows: 2 issued, 2 already-issued, 0 failed '
assert_eq "$(certs SN-00001) $(certs SN-00002)" "1 2 1 2" "after --again"
prov 0 batch rr.csv --reissue SN-00001 --again --no-progress
assert_eq "$(certs SN-00001) $(certs SN-00002)" "1 3 1 2" "after --again for SN-00001"
prov 2 batch rr.csv --again --no-progress
assert_one_error "--again"

# The kill test: SN-00004's token away, the request stopped at random instants.
dir4=$(token_dir dev-04)
softhsm_backup
mv "$dir4" "$WORK/away-dev-04"
run() {
    rc=0
    PROVISIONER_TEST_CRASH_AT=$1 "$PROVISIONER" -q batch rr.csv --reissue SN-00003 \
        --reissue SN-00004 >>"$WORK/log/runs.out" 2>>"$WORK/log/runs.err" </dev/null || rc=$?
}
for spec in superseded:1 intent:1 proven:1 run:1; do
    run "$spec"
    assert_eq "$rc" 137 "crash hook $spec: exit"
    it_log "crash hook $spec: SN-00003 $(certs SN-00003), SN-00004 $(certs SN-00004)"
done
landed=0
# SN-00003's reissue is done by now and SN-00004's token is away, so a run is short (tens of
# milliseconds): kills are aimed inside that, wherever they land in it.
for ((attempt = 1; landed < 4 && attempt <= 80; attempt++)); do
    "$PROVISIONER" -q batch rr.csv --reissue SN-00003 --reissue SN-00004 \
        >>"$WORK/log/runs.out" 2>>"$WORK/log/runs.err" </dev/null &
    pid=$!
    it_track "$pid"
    sleep "$(awk -v r="$(od -An -N2 -tu2 /dev/urandom)" 'BEGIN { printf "%.3f", 0.005 + (r % 45) / 1000 }')"
    kill -KILL "$pid" 2>/dev/null || true
    rc=0
    wait "$pid" 2>/dev/null || rc=$?
    [ "$rc" -eq 137 ] && landed=$((landed + 1))
    softhsm_repair
    it_log "kill $attempt: exit $rc, SN-00003 $(certs SN-00003), SN-00004 $(certs SN-00004)"
done
[ "$landed" -ge 4 ] || fail "only $landed SIGKILLs landed on a running batch"
run ""
assert_eq "$rc" 1 "run with SN-00004's token away: exit"
assert_eq "$(certs SN-00003)" "1 1" "SN-00003 after $landed kills and two more runs"
mv "$WORK/away-dev-04" "$dir4"
run ""
assert_eq "$rc" 0 "run with the token back: exit"
run ""
assert_eq "$rc" 0 "the same command once more: exit"
assert_eq "$(certs SN-00003) $(certs SN-00004)" "1 1 1 1" "the request of the kill test, done once"
assert_eq "$(certs SN-00001) $(certs SN-00002)" "1 3 1 2" "the other rows untouched"

for t in dev-01 dev-02 dev-03 dev-04; do
    assert_token_matches_journal "$JOURNAL" "$t"
done
prov 0 batch report rr.csv --verify-audit
assert_grep "$PROV_ERR" 'audit chain verifies'
it_log "$landed SIGKILLs landed on the reissue request ($SOFTHSM_REPAIRED SoftHSM2 token.object restored)"
