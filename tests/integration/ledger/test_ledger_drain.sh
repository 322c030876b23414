#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Four batch processes (stations s1..s4) drain one lot of 4 SoftHSM2 tokens x 6 rows on one
# ledger (doc/ledger.md, "Work distribution"): each row is claimed by a lease, so
# - every row is issued exactly once: the issued counts of the four add up to the lot, one
#   certificate per row, one current certificate per serial;
# - each token's objects are exactly the ledger's keys;
# - every station's audit chain verifies on its own (ledger verify).
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../batch/batch_lib.sh"
. "$(dirname "$0")/ledger_lib.sh"
it_setup
need jq
batch_ca
pg_start main
ledger_config
make_lot lot.csv 4 6
p11_server
prov 0 ledger init

pids=()
for s in s1 s2 s3 s4; do
    "$PROVISIONER" batch lot.csv --station "$s" --jobs 2 --no-progress --json \
        --results "results-$s.csv" >"log/drain-$s.json" 2>"log/drain-$s.err" </dev/null &
    pids+=($!)
done
for i in 0 1 2 3; do
    rc=0
    wait "${pids[$i]}" || rc=$?
    assert_eq "$rc" 0 "station s$((i + 1)) exit ($(head -c 300 "log/drain-s$((i + 1)).err"))"
done
issued=0
for s in s1 s2 s3 s4; do
    n=$(jq -r '.issued' "log/drain-$s.json")
    issued=$((issued + n))
    it_log "station $s issued $n"
done
assert_eq "$issued" 24 "rows issued by the four stations together"
assert_eq "$(pg_q "SELECT count(*) FROM device WHERE state = 'proven'")" 24 "proven rows"
assert_eq "$(pg_q "SELECT count(*) FROM certificate")" 24 "certificates (none twice)"
assert_eq "$(pg_q "SELECT count(DISTINCT device_serial) FROM certificate WHERE superseded IS NULL")" 24 \
    "serials with a current certificate"
assert_eq "$(pg_q "SELECT count(*) FROM work WHERE station IS NOT NULL OR NOT done")" 0 \
    "leases left behind"
for t in dev-01 dev-02 dev-03 dev-04; do
    pg_q "SELECT encode(key_id, 'hex') FROM device WHERE device_uri = 'pkcs11:token=$t' ORDER BY 1" \
        >"$WORK/log/want-$t"
    token_objects "$t" >"$WORK/log/objects-$t"
    for k in privkey pubkey cert; do
        awk -v k=$k '$1 == k { print $2 }' "$WORK/log/objects-$t" | sort >"$WORK/log/got-$t-$k"
        cmp -s "$WORK/log/got-$t-$k" "$WORK/log/want-$t" || fail "token $t: $k objects are not the ledger's keys"
    done
done
prov 0 ledger verify
assert_grep "$PROV_OUT" 'every audit chain verifies'
it_log "audit chains: $(pg_q "SELECT string_agg(chain || '=' || seq, ' ' ORDER BY chain) FROM audit_head")"
