#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The journal's PostgreSQL store behind the seam (doc/ledger.md), chosen by
# `[provisioner] journal = postgresql://...` with the password from a file: source:
# - a lot of 2 SoftHSM2 tokens x 4 devices is issued into the ledger; each token's objects
#   are exactly the ledger's keys; a second run issues nothing;
# - status and report read the ledger (of the config, or --journal URI with PGPASSFILE), the
#   audit chain verifies;
# - the database itself refuses a second certificate for a public key, a certificate serial
#   of the same issuer, and a second current certificate of a device serial (a buggy client
#   writing around the tool), while a superseded one stays recorded;
# - README's station role and grants suffice for a batch, and refuse deleting audit records;
# - a password in the URI is masked in every message;
# - libpq missing (the tool loads it at the first connection): batch exits 6 with one line
#   naming the library and writes nothing to any device;
# - the database away: batch exits 6 with one line and writes nothing to any device.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../batch/batch_lib.sh"
. "$(dirname "$0")/ledger_lib.sh"
it_setup
need jq
batch_ca
pg_start main
ledger_config
make_lot lot.csv 2 4
softhsm_backup

prov 0 batch lot.csv --jobs 2 --no-progress
assert_grep "$PROV_OUT" '^8 rows: 8 issued, 0 already-issued, 0 failed '
assert_no_file lot.journal.sqlite
assert_eq "$(pg_q "SELECT count(*) FROM device WHERE state = 'proven'")" 8 "proven rows in the ledger"
assert_eq "$(pg_q "SELECT count(DISTINCT pubkey_sha256) FROM certificate")" 8 "certificates"
assert_tokens_match_ledger dev-01 dev-02

prov 0 batch lot.csv --jobs 2 --no-progress
assert_grep "$PROV_OUT" '^8 rows: 0 issued, 8 already-issued, 0 failed '

# status and report of the manifest read the config's ledger, as the run did
prov 0 batch status lot.csv --json
assert_eq "$(jq -r '.lots[0].states.proven' "$PROV_OUT")" 8 "status lot.csv: proven"
prov 0 batch report lot.csv --verify-audit --json
assert_eq "$(jq 'length' "$PROV_OUT")" 8 "report lot.csv rows"

export PGPASSFILE=$WORK/pgpass
prov 0 batch status --journal "$PG_URI" --json
assert_eq "$(jq -r '.lots[0].states.proven' "$PROV_OUT")" 8 "status: proven"
prov 0 batch report --journal "$PG_URI" --verify-audit --json
assert_eq "$(jq 'length' "$PROV_OUT")" 8 "report rows"
assert_grep "$PROV_ERR" 'audit chain verifies'
unset PGPASSFILE

# The database's own constraints, against a writer that skips the tool.
dup() {
    local out
    if out=$(pg_q "$1" 2>&1); then
        fail "the database accepted $2"
    fi
    grep -q "$3" <<<"$out" || fail "$2: refused for another reason: $out"
}
copy="INSERT INTO certificate(device_id, device_serial, issuer, cert_serial, pubkey_sha256,
      sha256, not_after, key_id, der, issued, device_uri)
      SELECT device_id, device_serial, issuer, %s, %s, sha256, not_after, key_id, der, issued,
      device_uri FROM certificate ORDER BY id LIMIT 1"
# shellcheck disable=SC2059
dup "$(printf "$copy" "'ff01'" "pubkey_sha256")" "a second certificate of a public key" certificate_pubkey
# shellcheck disable=SC2059
dup "$(printf "$copy" "cert_serial" "'00ff'")" "a certificate serial twice per issuer" certificate_serial_per_issuer
# shellcheck disable=SC2059
dup "$(printf "$copy" "'ff02'" "'00fe'")" "a second current certificate of a device serial" certificate_current
# ... which a superseded one does not break
pg_q "BEGIN; UPDATE certificate SET superseded = 'now' WHERE id = (SELECT min(id) FROM certificate);
      $(printf "$copy" "'ff03'" "'00fd'"); ROLLBACK" >/dev/null ||
    fail "a superseded certificate blocked its serial's next one"
dup "DELETE FROM audit WHERE seq = 1" "deleting an audit record" 'append-only'

# A password in the URI never shows in a message.
secret_uri="postgresql://postgres:$(cat "$WORK/ledger.pass")@127.0.0.1:$PG_PORT/nosuchdb"
prov 6 batch status --journal "$secret_uri"
assert_one_error 'postgres:****@127.0.0.1'

# README's station role, with README's grants (taken from README itself): a batch runs as it,
# and it cannot delete an audit record.
sed -n "/^sudo -u postgres psql ledger <<'SQL'\$/,/^SQL\$/p" "$PROV_SOURCE_ROOT/README.md" |
    sed '1d;$d' >grants.sql
[ -s grants.sql ] || fail "README.md: the grants for the station role are not where this test looks"
pg_q "CREATE ROLE station LOGIN PASSWORD '$(cat "$WORK/ledger.pass")'" >/dev/null
pg_q "$(cat grants.sql)" >/dev/null
make_lot lot4.csv 0 0
printf 'SN-40001,pkcs11:token=dev-01,,dev-01\n' >>lot4.csv
prov 0 batch lot4.csv --journal "postgresql://station@127.0.0.1:$PG_PORT/postgres" --no-progress
assert_grep "$PROV_OUT" '^1 rows: 1 issued, 0 already-issued, 0 failed '
if PGPASSWORD=$(cat "$WORK/ledger.pass") "$PG_BIN/psql" -X -q -h "$PG_DIR" -p "$PG_PORT" -U station \
    -d postgres -c "DELETE FROM audit" >log/station-delete.log 2>&1; then
    fail "the station role deleted audit records"
fi
assert_grep log/station-delete.log 'permission denied'

rm -rf devices
make_lot lot2.csv 0 0
printf 'SN-50001,pkcs11:token=dev-01,,dev-01\n' >>lot2.csv
before=$(token_objects dev-01 | sort | md5sum)
# libpq cannot be loaded (pq_api.h: at the first connection, not at start): the same as a
# ledger that does not answer, with the database up.
prov_without 6 libpq.so.5 -- batch lot2.csv --no-progress
assert_one_error "cannot connect: libpq.so.5 cannot be loaded"
assert_no_file devices/SN-50001
assert_eq "$(token_objects dev-01 | sort | md5sum)" "$before" "dev-01 objects without libpq"

# Database away: fail closed, nothing written to any device.
pg_stop
prov 6 batch lot2.csv --no-progress
assert_one_error "127.0.0.1:$PG_PORT"
assert_no_file devices/SN-50001
assert_eq "$(token_objects dev-01 | sort | md5sum)" "$before" "dev-01 objects with the ledger away"
