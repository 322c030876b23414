#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# A lot of 2 SoftHSM2 tokens x 10 devices, two rows whose cn looks like DN syntax, and one
# row whose token does not exist, enrolled with --jobs 2:
# - exit 1 (one row failed), the failed row named on stderr, every other row issued;
# - the results CSV field by field against client.crt on disk (serial, SHA-256, notAfter),
#   the x_ column carried through, `provisioner check` passing on every storage directory;
# - the JSON report agreeing with the certificates too;
# - a cn of "/CN=x" or ",O=evil" is one literal CN value: exactly one CN, no extra O;
# - the objects on each token are exactly the journal's keys (key pair and certificate);
# - a second run issues nothing (already-issued); --reissue supersedes one row and its old
#   key leaves the token; status --json counts; the audit chain verifies;
# - a lot runs, and `check` passes, where libpq, libcurl, libsystemd and tpm2-tss cannot be
#   loaded.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/batch_lib.sh"
it_setup
need jq sqlite3
batch_ca
make_lot lot.csv 2 10
{
    echo 'SN-90001,pkcs11:token=dev-01,/CN=x,dev-01'
    echo 'SN-90002,pkcs11:token=dev-02,",O=evil",dev-02'
    echo 'SN-99999,pkcs11:token=no-such-token,,none'
} >>lot.csv
JOURNAL=$WORK/lot.journal.sqlite

prov 1 batch lot.csv --jobs 2 --no-progress
assert_grep "$PROV_OUT" '^23 rows: 22 issued, 0 already-issued, 1 failed '
assert_grep "$PROV_ERR" '^provisioner: lot\.csv:24: .*SN-99999.*no-such-token' "failed row not named"
assert_eq "$(wc -l <"$PROV_ERR")" 1 "stderr lines"
# a run that ended leaves its journal and nothing beside it: no lock file, no SQLite WAL
for f in lot.journal.sqlite.lock lot.journal.sqlite-wal lot.journal.sqlite-shm; do
    assert_no_file "$f"
done

prov 0 batch report lot.csv --json
cp "$PROV_OUT" report.json
n_checked=0
while IFS=, read -r serial status cert_serial sha256 not_after storage error x_token; do
    if [ "$serial" = SN-99999 ]; then
        assert_eq "$status" failed "$serial status"
        [ -n "$error" ] && [ -z "$cert_serial" ] || fail "$serial: error or certificate fields"
        continue
    fi
    assert_eq "$status" issued "$serial status"
    assert_eq "$error" "" "$serial error"
    crt=$storage/client.crt
    assert_file "$crt"
    assert_eq "$cert_serial" "$(openssl x509 -in "$crt" -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f')" \
        "$serial: cert_serial vs client.crt"
    assert_eq "$sha256" "$(fingerprint "$crt")" "$serial: sha256 vs client.crt"
    assert_eq "$not_after" \
        "$(date -u -d "$(openssl x509 -in "$crt" -noout -enddate | cut -d= -f2)" +%Y-%m-%dT%H:%M:%SZ)" \
        "$serial: not_after vs client.crt"
    grep -q "^$serial,pkcs11:token=$x_token," lot.csv || fail "$serial: x_token $x_token"
    jq -e --arg s "$serial" --arg c "$cert_serial" --arg h "$sha256" --arg a "$not_after" \
        --arg d "$storage" '.[] | select(.serial == $s) | select(.state == "proven"
         and .cert_serial == $c and .sha256 == $h and .not_after == $a and .storage == $d)' \
        report.json >/dev/null || fail "$serial: the JSON report disagrees"
    prov 0 check "$storage"
    n_checked=$((n_checked + 1))
done < <(tail -n +2 lot.results.csv)
assert_eq "$n_checked" 22 "rows checked against client.crt"

# A DN-looking cn is one literal CN value (the core never parses it as a DN).
for pair in "SN-90001|/CN=x" "SN-90002|,O=evil"; do
    serial=${pair%%|*}
    subj=$(openssl x509 -in "devices/$serial/client.crt" -noout -subject -nameopt multiline)
    assert_eq "$(count_re commonName <<<"$subj")" 1 "$serial: CN attributes"
    assert_eq "$(sed -n 's/^ *commonName *= //p' <<<"$subj")" "${pair#*|}" "$serial: CN value"
    assert_eq "$(count_re organizationName <<<"$subj")" 1 "$serial: O attributes"
    assert_eq "$(sed -n 's/^ *organizationName *= //p' <<<"$subj")" "Batch Test" "$serial: O value"
done

assert_token_matches_journal "$JOURNAL" dev-01
assert_token_matches_journal "$JOURNAL" dev-02

# Again: nothing is issued twice.
prov 1 batch lot.csv --jobs 2 --no-progress
assert_grep "$PROV_OUT" '^23 rows: 0 issued, 22 already-issued, 1 failed '
assert_eq "$(journal_q 'SELECT count(*) FROM certificate')" 22 "certificates in the journal"

# --reissue: a new certificate and key; the old one superseded, its key gone from the token.
old=$(sed -n 's/^SN-00003,[^,]*,\([^,]*\),.*/\1/p' lot.results.csv)
prov 1 batch lot.csv --reissue SN-00003 --no-progress
assert_grep "$PROV_OUT" '^23 rows: 1 issued, 21 already-issued, 1 failed '
new=$(sed -n 's/^SN-00003,issued,\([^,]*\),.*/\1/p' lot.results.csv)
[ -n "$new" ] && [ "$new" != "$old" ] || fail "reissue: certificate serial $old -> '$new'"
assert_eq "$(journal_q "SELECT count(*) FROM certificate WHERE cert_serial = '$old'
            AND superseded IS NOT NULL")" 1 "the old certificate superseded"
prov 0 check devices/SN-00003
assert_token_matches_journal "$JOURNAL" dev-01
prov 2 batch lot.csv --reissue SN-77777 --no-progress
assert_one_error "--reissue SN-77777" "not in lot.csv"

prov 0 batch status lot.csv --json
jq -e '.lots[0].states.proven == 22 and .lots[0].states.failed == 1 and
       .lots[0].superseded_certificates == 1 and (.lots[0].not_proven | length) == 1' \
    "$PROV_OUT" >/dev/null || fail "status --json: $(tr '\n' ' ' <"$PROV_OUT")"
prov 0 batch report --journal "$JOURNAL" --verify-audit
assert_grep "$PROV_ERR" 'audit chain verifies: [0-9]+ records, head [0-9a-f]{64}$'
assert_grep "$PROV_OUT" '^lot,serial,state,device,cert_serial,sha256,not_after,storage,'

# A journal whose first run was killed while it made the tables (an older provisioner made
# them one statement at a time: here all but the audit trail) is completed by the readers,
# never reported as empty or broken.
sqlite3 half.journal.sqlite <<'EOSQL'
PRAGMA journal_mode=WAL;
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE lot(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, manifest TEXT, created TEXT NOT NULL);
CREATE TABLE run(id INTEGER PRIMARY KEY, lot_id INTEGER NOT NULL REFERENCES lot(id), reissue TEXT NOT NULL, started TEXT NOT NULL, finished TEXT);
EOSQL
prov 0 batch report --journal half.journal.sqlite --verify-audit
assert_grep "$PROV_ERR" 'audit chain verifies: 0 records'
prov 0 batch status --journal half.journal.sqlite
assert_grep "$PROV_OUT" '^no lot recorded yet$'

# A probe file a kill left inside the storage pre-check (right after the row's intent) goes
# with the next run, the one that completes the row; a failed row's storage directory keeps
# no probe and, empty, is removed.
printf 'serial,device\nPR-1,pkcs11:token=dev-01\nPR-2,pkcs11:token=no-such-token\n' >probe.csv
rc=0
PROVISIONER_TEST_CRASH_AT=intent:1 "$PROVISIONER" -q batch probe.csv --no-progress \
    >"$WORK/log/probe-crash.out" 2>&1 </dev/null || rc=$?
assert_eq "$rc" 137 "probe.csv stopped right after PR-1's intent"
mkdir -p devices/PR-1 devices/PR-2
: >devices/PR-1/.provisioner-probe.Ab12Cd
: >devices/PR-2/.provisioner-probe.Ef34Gh
prov 1 batch probe.csv --no-progress
assert_grep probe.results.csv '^PR-1,issued,' "PR-1 completed"
assert_no_file devices/PR-1/.provisioner-probe.Ab12Cd
assert_no_file devices/PR-2

# The tool loads libpq and libcurl only where it reaches PostgreSQL or an HTTPS peer,
# libsystemd only for `ca serve` under a service manager, tpm2-tss at the first TPM
# (provisioner/support/lazy_lib.h): a lot of PKCS#11 tokens on SQLite with the local CA runs,
# and checks, on a machine where none can be loaded.
nolibs=(libpq.so.5 libcurl.so.4 libsystemd.so.0 libtss2-esys.so.0 libtss2-tctildr.so.0
    libtss2-rc.so.0)
printf 'serial,device\nNL-1,pkcs11:token=dev-01\nNL-2,pkcs11:token=dev-02\n' >nolib.csv
prov_without 0 "${nolibs[@]}" -- batch nolib.csv --jobs 2 --no-progress
assert_grep "$PROV_OUT" '^2 rows: 2 issued, 0 already-issued, 0 failed '
prov_without 0 "${nolibs[@]}" -- check devices/NL-1
