#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Revocation with the CA index on PostgreSQL ([ca] index, doc/revocation.md), on a lot of 10
# devices in SoftHSM2 tokens and a PostgreSQL this test starts (tests/integration/pg_lib.sh):
# - `ca init` creates the index's schema in the database (no index.sqlite in the CA dir);
#   a wrong index password stops it with one line and exit 6, no key made, no password shown;
# - `batch` with the local CA records its 10 certificates there, `sign` one more, `enroll`
#   one more (its attempt recorded; the same serial again refused, exit 5);
# - 3 revoked (scrap, RMA, key compromise with an invalidity date); an unknown serial exits 5
#   and records nothing;
# - `ca crl`: the intermediate's CRL lists exactly those 3 with their reasons and verifies
#   against the intermediate (openssl crl -verify); `openssl verify -crl_check` rejects the
#   revoked and accepts the rest; `lot export` marks the revoked devices; `ca show` names the
#   index by its URI.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../batch/batch_lib.sh"
. "$(dirname "$0")/crl_lib.sh"
. "$(dirname "$0")/../pg_lib.sh"
it_setup
pg_start main
ca_prepare pkcs11
CA=$WORK/ca

# ---- ca init: a wrong password first, then the schema ---------------------------------
write_secret "$WORK/wrong.pass" "not-the-password-$RANDOM"
sed -i "s|^\[ca\]\$|[ca]\nindex = $PG_URI\nindex_password = file:$WORK/wrong.pass|" \
    "$PROVISIONER_CONFIG"
prov 6 ca init
assert_one_error "CA index postgresql://postgres@127.0.0.1:$PG_PORT/postgres" "cannot connect"
assert_no_grep "$PROV_ERR" "$(cat "$WORK/wrong.pass")" "the password is printed"
assert_no_file "$CA/root.crt"
sed -i "s|^index_password = .*|index_password = file:$WORK/ledger.pass|" "$PROVISIONER_CONFIG"
prov 0 ca init
assert_eq "$(pg_q "SELECT value FROM meta WHERE name = 'schema_version'")" 7 "schema on PostgreSQL"
assert_no_file "$CA/index.sqlite"

# ---- issue: batch (10) and sign (1) ---------------------------------------------------
batch_profile >>"$PROVISIONER_CONFIG"
make_lot lot.csv 2 5
prov 0 batch lot.csv --no-progress
for i in 01 02 03 04 05 06 07 08 09 10; do
    assert_file "$WORK/devices/SN-000$i/client.crt"
done
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/s.key" \
    -subj "/CN=SIGN-1" -out "$WORK/s.csr" >"$WORK/log/req.log" 2>&1 || fail "openssl req"
prov 0 sign --serial SIGN-1 --csr "$WORK/s.csr" --out "$WORK/s.crt"
token_init dev-e
prov 0 enroll --serial SN-ENR --device pkcs11:token=dev-e
assert_eq "$(pg_q "SELECT issued_by || ' ' || status FROM certificate WHERE serial = 'SN-ENR'")" \
    "enroll delivered" "enroll's certificate in PostgreSQL"
assert_eq "$(pg_q "SELECT outcome FROM attempt WHERE serial = 'SN-ENR'")" delivered "enroll's attempt"
prov 5 enroll --serial SN-ENR --device pkcs11:token=dev-e --storage "$WORK/elsewhere"
assert_one_error SN-ENR "already certified"
assert_eq "$(pg_q "SELECT count(*) FROM certificate")" 12 "certificates recorded in PostgreSQL"
assert_eq "$(pg_q "SELECT count(DISTINCT pubkey_sha256) FROM certificate")" 12 "distinct keys"
assert_no_file "$CA/index.sqlite"

# ---- revoke 3 of 10 -------------------------------------------------------------------
prov 0 revoke SN-00002 --reason cessationOfOperation
prov 0 revoke SN-00005 --reason affiliationChanged --by rma-desk
prov 0 revoke SN-00009 --reason keyCompromise --invalidity-date 2026-01-15
prov 0 revoke SN-00002 --reason cessationOfOperation
prov 5 revoke SN-99999 --reason keyCompromise
assert_one_error SN-99999 "nothing revoked"
assert_eq "$(pg_q 'SELECT count(*) FROM revocation')" 3 "revocations recorded"
assert_eq "$(pg_q 'SELECT count(*) FROM audit')" 3 "audit records"

# ---- ca crl ---------------------------------------------------------------------------
prov 0 ca crl
openssl crl -in "$CA/intermediate.crl" -inform DER -noout -text >"$WORK/log/crl.txt" ||
    fail "openssl crl cannot read intermediate.crl"
openssl crl -in "$CA/intermediate.crl.pem" -noout -verify -CAfile "$CA/intermediate.crt" \
    >"$WORK/log/crl-verify.txt" 2>&1 || fail "openssl crl -verify: $(cat "$WORK/log/crl-verify.txt")"
assert_grep "$WORK/log/crl-verify.txt" 'verify OK' "the intermediate's CRL does not verify"
assert_eq "$(revoked_list)" "$(revoked_three)" "the CRL's entries and reasons"
assert_eq "$(grep -c 'Serial Number:' "$WORK/log/crl.txt")" 3 "CRL entries"
for i in 01 02 03 04 05 06 07 08 09 10; do
    sn=SN-000$i
    case $i in 02 | 05 | 09) want=revoked ;; *) want=good ;; esac
    if openssl verify -crl_check -CAfile "$CA/root.crt" -untrusted "$CA/intermediate.crt" \
        -CRLfile "$CA/intermediate.crl.pem" "$WORK/devices/$sn/client.crt" \
        >"$WORK/log/verify-$sn.txt" 2>&1; then
        got=good
    else
        got=revoked
        assert_grep "$WORK/log/verify-$sn.txt" 'certificate revoked' "$sn: openssl verify failed otherwise"
    fi
    assert_eq "$got" "$want" "$sn: openssl verify -crl_check"
done

# ---- lot export reads the revocations from PostgreSQL ----------------------------------
prov 0 lot export LOT-IT-1 --format csv --journal "$WORK/lot.journal.sqlite" --output revoked.csv
python3 - revoked.csv <<'PY' || fail "lot export: the revoked devices from the PostgreSQL index"
import csv, sys
rows = {r["serial"]: r for r in csv.DictReader(open(sys.argv[1], newline=""))}
want = {"SN-00002": "cessationOfOperation", "SN-00005": "affiliationChanged",
        "SN-00009": "keyCompromise"}
assert {s: r["revoked"] for s, r in rows.items() if r["revoked"]} == want, rows
PY

# ---- ca show names the index by its URI -----------------------------------------------
prov 0 ca show
assert_grep "$PROV_OUT" "postgresql://postgres@127.0.0.1:$PG_PORT/postgres" "ca show: the index"
