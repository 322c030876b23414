#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# provisioner ledger init | migrate | import | verify (doc/ledger.md):
# - a ledger at schema 1 (schema-v1.sql, that version's DDL, made with psql): init refuses
#   to skip a migration; migrate brings it to the newest; both again do nothing;
# - a ledger at schema 2 (schema-v1.sql, then schema-v2.sql): a batch refuses it, migrate
#   brings it to 3 (the fencing function) and a batch then issues its lot on it;
# - a batch and ledger verify refuse an older schema, and every command refuses a newer one,
#   with one line;
# - a station's SQLite journal with issued, failed and superseded rows is imported: the same
#   counts, the audit chain verifies on its own; a second import is refused;
# - an audit record altered behind the tool's back: verify names its chain and record.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../batch/batch_lib.sh"
. "$(dirname "$0")/ledger_lib.sh"
it_setup
need sqlite3
batch_ca
pg_start main
ledger_config
newest=5 # the newest schema version (factory/journal_pg.c)

PGPASSWORD=$(cat "$WORK/ledger.pass") "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_DIR" \
    -p "$PG_PORT" -U postgres -d postgres -f "$(dirname "$0")/schema-v1.sql" >/dev/null ||
    fail "psql could not create schema version 1"
prov 6 ledger init
assert_one_error 'schema version 1' 'ledger migrate'
prov 6 ledger verify
assert_one_error 'schema version 1 is older' 'ledger migrate'
make_lot lot.csv 2 3
prov 6 batch lot.csv --no-progress
assert_one_error 'schema version 1 is older' 'ledger migrate'
prov 0 ledger migrate
assert_grep "$PROV_OUT" "schema version 1 -> $newest\$"
prov 0 ledger migrate
assert_grep "$PROV_OUT" "schema version $newest, nothing to do\$"
prov 0 ledger init
assert_grep "$PROV_OUT" "schema version $newest, nothing to do\$"
assert_eq "$(pg_q 'SELECT string_agg(version::text, $$,$$ ORDER BY version) FROM schema_version')" "$(seq -s, 1 "$newest")" \
    "versions recorded"

# The version before: a ledger at schema 2 in a database of its own.
pg_q "CREATE DATABASE ledger2" >/dev/null
for v in 1 2; do
    PGPASSWORD=$(cat "$WORK/ledger.pass") "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_DIR" \
        -p "$PG_PORT" -U postgres -d ledger2 -f "$(dirname "$0")/schema-v$v.sql" >/dev/null ||
        fail "psql could not create schema version $v"
done
cp "$PROVISIONER_CONFIG" config.main
sed -i "s|^journal = \(.*\)/postgres\$|journal = \1/ledger2|" "$PROVISIONER_CONFIG"
token_init v2-tok
printf 'serial,device,cn,x_token\nV2-00001,pkcs11:token=v2-tok,,v2-tok\nV2-00002,pkcs11:token=v2-tok,,v2-tok\n' >lot2.csv
prov 6 batch lot2.csv --no-progress
assert_one_error 'schema version 2 is older' 'ledger migrate'
prov 0 ledger migrate
assert_grep "$PROV_OUT" "schema version 2 -> $newest\$"
prov 0 batch lot2.csv --no-progress
assert_eq "$(PGPASSWORD=$(cat "$WORK/ledger.pass") "$PG_BIN/psql" -X -q -At -h "$PG_DIR" -p "$PG_PORT" \
    -U postgres -d ledger2 -c "SELECT count(*) FROM device WHERE state = 'proven'")" 2 \
    "rows issued on the migrated ledger"
cp config.main "$PROVISIONER_CONFIG"

# A station's SQLite journal: issued rows, one failed (no such token), one superseded.
printf 'SN-99999,pkcs11:token=no-such-token,,none\n' >>lot.csv
prov 1 batch lot.csv --journal lot.journal.sqlite --no-progress
prov 1 batch lot.csv --journal lot.journal.sqlite --reissue SN-00002 --no-progress
count_sqlite() { sqlite3 lot.journal.sqlite "$1"; }
want_states=$(count_sqlite "SELECT state || '=' || count(*) FROM device GROUP BY state ORDER BY state" | tr '\n' ' ')
want_certs=$(count_sqlite "SELECT count(*) FROM certificate")
want_audit=$(count_sqlite "SELECT count(*) FROM audit")
assert_eq "$(count_sqlite "SELECT count(*) FROM certificate WHERE superseded IS NOT NULL")" 1 "superseded in SQLite"
prov 0 ledger import lot.journal.sqlite
assert_grep "$PROV_OUT" "7 devices, $want_certs certificates, $want_audit audit records \\(chain import:lot.journal.sqlite\\)"
assert_eq "$(pg_q "SELECT state || '=' || count(*) FROM device GROUP BY state ORDER BY state" | tr '\n' ' ')" \
    "$want_states" "states after the import"
assert_eq "$(pg_q "SELECT count(*) FROM certificate WHERE superseded IS NOT NULL")" 1 "superseded in the ledger"
assert_eq "$(pg_q "SELECT count(*) FROM audit WHERE chain = 'import:lot.journal.sqlite'")" "$want_audit" \
    "imported audit records"
prov 0 ledger verify
assert_grep "$PROV_OUT" 'every audit chain verifies'
prov 6 ledger import lot.journal.sqlite
assert_one_error 'imported already'

# Altered behind the tool's back (the superuser disables the append-only trigger).
pg_q "ALTER TABLE audit DISABLE TRIGGER audit_no_change;
      UPDATE audit SET detail = detail || ' ' WHERE chain = 'import:lot.journal.sqlite' AND seq = 3;
      ALTER TABLE audit ENABLE TRIGGER audit_no_change" >/dev/null
prov 1 ledger verify
assert_one_error 'audit chain import:lot.journal.sqlite record 3' 'altered'

# A newer schema than this provisioner knows: every command says so in one line.
pg_q "INSERT INTO schema_version(version, tool) VALUES (99, 'a newer provisioner')" >/dev/null
prov 6 ledger migrate
assert_one_error 'schema version 99 is newer'
prov 6 batch lot.csv --no-progress
assert_one_error 'schema version 99 is newer'
