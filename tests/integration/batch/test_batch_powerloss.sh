#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# A power cut, not only a kill (doc/journal.md, "Which commits are synced"). The crash hooks
# end the process at a state boundary; preloaded, powerloss.so (built from powerloss.c here)
# also drops from each SQLite WAL what was appended after its last sync, as a disk with a
# volatile write cache may, so a commit that was not synced is lost as a power cut loses it.
# - Cut right after the second row's stored+proven commit, the one transition the batch does
#   not sync: that commit is lost (the row is left issued, with its storage written and the CA
#   index saying delivered), and the same command again resumes it with the same certificate.
# - Cut right after the run's end: everything the journal says is on disk is backed by the
#   CA index and the storage, which were synced before it (a proven row whose certificate the
#   index does not have as delivered would show here if that commit were deferred too).
# Then every row is proven exactly once, the index holds each certificate once, delivered,
# and the audit chain verifies.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/batch_lib.sh"
it_setup
need sqlite3 ldd
[ -r "${PROV_POWERLOSS:-}" ] || fail "PROV_POWERLOSS (powerloss.so) is not set (run through meson test)"
if [ "${PROV_VALGRIND:-}" = 1 ]; then
    it_log "skipped under valgrind: the tool runs inside valgrind, which the preload cannot cut"
    exit 77
fi
# A sanitizer's runtime must come first in the preload list.
asan=$(ldd "$PROVISIONER" | awk '/libasan/ { print $3 }')
preload=${asan:+$asan:}$PROV_POWERLOSS
batch_ca
INDEX=$WORK/ca/index.sqlite
CUT_LOG=$WORK/log/cut.log

# cut_run MANIFEST HOOK: the batch under the preload, stopped by HOOK (exit 137).
cut_run() {
    local rc=0
    it_log "batch $1, cut at $2"
    LD_PRELOAD=$preload POWERLOSS_LOG=$CUT_LOG PROVISIONER_TEST_CRASH_AT=$2 \
        "$PROVISIONER" -q batch "$1" --jobs 1 >>"$WORK/log/cut.out" 2>>"$WORK/log/cut.err" \
        </dev/null || rc=$?
    assert_eq "$rc" 137 "batch $1 cut at $2: exit"
    ! grep -q '^not-modelled' "$CUT_LOG" || fail "powerloss.so: $(grep '^not-modelled' "$CUT_LOG")"
}

# cert_of SERIAL: the certificate serial the journal holds for the row (empty: none).
cert_of() {
    journal_q "SELECT c.cert_serial FROM device d JOIN certificate c ON c.id = d.cert_id
        WHERE d.serial = '$1'"
}

# index_status CERT_SERIAL: its status in the CA index.
index_status() {
    sql_q "$INDEX" "SELECT status FROM certificate WHERE lower(cert_serial) = lower('$1')"
}

make_lot a.csv 1 6
JOURNAL=$WORK/a.journal.sqlite
cut_run a.csv proven:2
# the journal's WAL lost the unsynced commit: the cut took bytes off it
awk -v j="$JOURNAL-wal" '$1 == "cut" && $2 == j && $4 > $3 { n++ } END { exit n != 1 }' \
    "$CUT_LOG" || fail "the cut did not take the unsynced stored+proven commit off the journal: $(cat "$CUT_LOG")"
assert_eq "$(journal_q "SELECT state FROM device WHERE serial = 'SN-00002'")" issued \
    "SN-00002 after losing its stored+proven commit"
cert=$(cert_of SN-00002)
[ -n "$cert" ] || fail "SN-00002: no certificate in the journal after the cut"
assert_eq "$(index_status "$cert")" delivered "SN-00002's certificate in the CA index"
assert_file "$WORK/devices/SN-00002/client.crt"
assert_eq "$(openssl x509 -in "$WORK/devices/SN-00002/client.crt" -noout -serial | cut -d= -f2 | tr A-F a-f)" \
    "$(tr A-F a-f <<<"$cert")" "SN-00002's stored certificate"
prov 0 batch a.csv --jobs 1 --no-progress
# SN-00002 and any row whose proven had not reached the disk yet are resumed: not a count
assert_grep "$PROV_OUT" '^6 rows: .*, 0 failed '
assert_eq "$(journal_q "SELECT count(*) FROM device WHERE state = 'proven'")" 6 "a: rows proven"
assert_eq "$(cert_of SN-00002)" "$cert" "SN-00002 resumed with its certificate"
assert_eq "$(journal_q "SELECT count(*) FROM certificate")" 6 "a: certificates in the journal"
prov 0 batch report a.csv --verify-audit

token_init dev-02
{
    echo "serial,device,cn,x_token"
    for n in 1 2 3 4 5; do
        printf 'SN-1000%d,pkcs11:token=dev-02,,dev-02\n' "$n"
    done
} >b.csv
JOURNAL=$WORK/b.journal.sqlite
: >"$CUT_LOG"
cut_run b.csv run:1
assert_eq "$(journal_q "SELECT count(*) FROM device WHERE state = 'proven'")" 5 "b: proven after the cut"
journal_q "SELECT d.serial || ' ' || c.cert_serial FROM device d JOIN certificate c ON c.id = d.cert_id" |
    while read -r serial c; do
        assert_eq "$(index_status "$c")" delivered "$serial: proven in the journal, its certificate in the CA index"
        assert_file "$WORK/devices/$serial/client.crt"
    done
prov 0 batch b.csv --jobs 1 --no-progress
assert_grep "$PROV_OUT" '^5 rows: 0 issued, 5 already-issued, 0 failed '

# every row's certificate delivered in the index; any other one there is one the CA signed
# for a row whose issued the first cut caught before its commit (the worker goes on beside
# the storage stage), which the resume's new certificate superseded (doc/journal.md)
assert_eq "$(sql_q "$INDEX" "SELECT count(*) FROM certificate WHERE serial LIKE 'SN-%' AND status = 'delivered'")" \
    11 "delivered certificates in the CA index"
assert_eq "$(sql_q "$INDEX" "SELECT count(*) FROM certificate WHERE serial LIKE 'SN-%'
    AND status NOT IN ('delivered', 'superseded')")" 0 "certificates neither delivered nor superseded"
it_log "pass"
