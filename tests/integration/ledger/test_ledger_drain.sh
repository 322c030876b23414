#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Four batch processes (stations s1..s4) drain one lot of 4 SoftHSM2 tokens x
# LEDGER_DRAIN_PER_TOKEN rows (default 50: the issue's 200 rows, about 40 s here) on one
# ledger (doc/ledger.md, "Work distribution"): each row is claimed by a lease, so
# - every row is issued exactly once: the issued counts of the four add up to the lot, one
#   certificate per row, one current certificate per serial;
# - each token's objects are exactly the ledger's keys;
# - every station's audit chain verifies on its own (ledger verify), and a chain cut short
#   behind the tool's back is given away by another station's anchor of its head.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../batch/batch_lib.sh"
. "$(dirname "$0")/ledger_lib.sh"
it_setup
need jq
batch_ca
pg_start main
ledger_config
per_token=${LEDGER_DRAIN_PER_TOKEN:-50}
rows=$((4 * per_token))
make_lot lot.csv 4 "$per_token"
p11_server
prov 0 ledger init

# drain_round N: the four stations at once; a row can fail only by the SoftHSM2 hazard below.
issued=0
softhsm_hazard=0
drain_round() {
    local pids=() i s rc n
    for s in s1 s2 s3 s4; do
        "$PROVISIONER" batch lot.csv --station "$s" --jobs 2 --no-progress --json \
            --results "results-$s.csv" >"log/drain-$1-$s.json" 2>"log/drain-$1-$s.err" </dev/null &
        pids+=($!)
    done
    for i in 0 1 2 3; do
        s=s$((i + 1))
        rc=0
        wait "${pids[$i]}" || rc=$?
        n=$(jq -r '.issued' "log/drain-$1-$s.json")
        issued=$((issued + n))
        it_log "round $1: station $s exit $rc, issued $n"
        [ "$rc" -eq 0 ] && continue
        [ "$rc" -eq 1 ] || fail "station $s exit $rc: $(head -c 300 "log/drain-$1-$s.err")"
        # SoftHSM2 rewrites token.object on every C_Login (each p11-kit server connection is
        # a process of its own), and another process reading it meanwhile finds no token: the
        # row fails and is claimable again; the next round works it. Anything else fails.
        if grep -v -E 'token "dev-0[1-4]" not found|token dev-0[1-4]: C_[A-Za-z]+: CKR_GENERAL_ERROR' \
            "log/drain-$1-$s.err" | grep -q .; then
            fail "station $s: $(head -c 300 "log/drain-$1-$s.err")"
        fi
        softhsm_hazard=$((softhsm_hazard + 1))
    done
}
for round in 1 2 3; do
    softhsm_hazard=0
    drain_round "$round"
    [ "$softhsm_hazard" -eq 0 ] && break
    it_log "SoftHSM2 hid a token from $softhsm_hazard station(s) in round $round"
done
assert_eq "$issued" "$rows" "rows issued by the four stations together (all rounds)"
assert_eq "$(pg_q "SELECT count(*) FROM device WHERE state = 'proven'")" "$rows" "proven rows"
assert_eq "$(pg_q "SELECT count(*) FROM certificate")" "$rows" "certificates (none twice)"
assert_eq "$(pg_q "SELECT count(DISTINCT device_serial) FROM certificate WHERE superseded IS NULL")" "$rows" \
    "serials with a current certificate"
assert_eq "$(pg_q "SELECT count(*) FROM work WHERE station IS NOT NULL OR NOT done")" 0 \
    "leases left behind"
assert_tokens_match_ledger dev-01 dev-02 dev-03 dev-04
prov 0 ledger verify
assert_grep "$PROV_OUT" 'every audit chain verifies'
it_log "audit chains: $(pg_q "SELECT string_agg(chain || '=' || seq, ' ' ORDER BY chain) FROM audit_head")"

# The lot's anchors: a station ending its run records the other chains' heads in its own.
# A chain cut short and given a matching head verifies alone; the anchor gives it away.
anchor=$(pg_q "SELECT detail FROM audit WHERE event = 'anchor' ORDER BY at DESC, seq DESC LIMIT 1")
[ -n "$anchor" ] || fail "no anchor record in the ledger"
tok=${anchor%% *}
c=${tok%%:*}
rest=${tok#*:}
seq=${rest%%:*}
[ "$seq" -gt 1 ] || fail "anchored record $tok is the first of its chain"
pg_q "ALTER TABLE audit DISABLE TRIGGER audit_no_change;
      DELETE FROM audit WHERE chain = '$c' AND seq >= $seq;
      UPDATE audit_head SET seq = $seq - 1,
          hash = (SELECT hash FROM audit WHERE chain = '$c' AND seq = $seq - 1) WHERE chain = '$c';
      ALTER TABLE audit ENABLE TRIGGER audit_no_change" >/dev/null
prov 1 ledger verify
assert_one_error "it anchors chain $c record $seq, which is no longer what was anchored"
