#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Who may ask the CA service (doc/ca-service.md, "Who may ask") against `openssl cmp`:
# - `ca station renew`: the new certificate is registered, the old one is superseded in the
#   CA index and refused by the service; `ca station revoke`: a revocation record (reason,
#   audit), the station refused afterwards; `ca station list [--json]`;
# - rr with its reason (`-revreason 1`): recorded, and on the next `ca crl` with it; a CA
#   reason refused;
# - the CRLs at /crl/intermediate.crl and /crl/root.crl (curl; `openssl crl -verify`);
# every refusal a CMP error, an audit record, nothing issued (the CA index's certificates
# counted before and after).
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../batch/batch_lib.sh"
. "$(dirname "$0")/cmp_lib.sh"
it_setup
need sqlite3 curl jq
batch_ca
cmp_profiles
for s in STATION-1 STATION-2 STATION-3; do
    cmp_station "$s"
done
prov 0 ca lot add LOT-A --count 20 --station STATION-1 --station STATION-2 --station STATION-3
cmp_serve
IX=$IT_CA_DIR/index.sqlite

# new_key NAME: a fresh P-256 key in $WORK/NAME.key
new_key() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$WORK/$1.key" \
        2>/dev/null || fail "openssl genpkey"
}

# issued NAME STATION SERIAL [ARGS...]: an ir by STATION for SERIAL gets a certificate.
issued() {
    local name=$1 st=$2 sn=$3
    shift 3
    new_key "$sn"
    cmp_client "$name" "$st" -cmd ir -newkey "$WORK/$sn.key" -subject "/CN=$sn" \
        -certout "$WORK/$sn.crt" "$@" ||
        fail "$name: openssl cmp ir: $(tail -n3 "$WORK/log/cmp-$name.log" | tr '\n' ' ')"
    assert_strict_cert "$WORK/$sn.crt"
}

# refused NAME STATION SERIAL REASON [ARGS...]: an ir by STATION for SERIAL is refused with
# REASON in the CMP answer, one more audit record, and nothing is issued.
refused() {
    local name=$1 st=$2 sn=$3 why=$4 before audit
    shift 4
    before=$(cmp_issued)
    audit=$(sql_q "$IX" "SELECT count(*) FROM audit WHERE event = 'refuse'")
    new_key "$sn"
    if cmp_client "$name" "$st" -cmd ir -newkey "$WORK/$sn.key" -subject "/CN=$sn" \
        -certout "$WORK/$sn.crt" "$@"; then
        fail "$name: a certificate was issued"
    fi
    assert_grep "$WORK/log/cmp-$name.log" "$why" "$name: the CMP error names the reason"
    assert_no_file "$WORK/$sn.crt"
    assert_eq "$(cmp_issued)" "$before" "$name: nothing issued"
    assert_eq "$(sql_q "$IX" "SELECT count(*) FROM audit WHERE event = 'refuse'")" \
        $((audit + 1)) "$name: an audit record"
}

# ---- ca station renew: the new certificate in, the old one superseded and refused ----------
issued before-renew STATION-1 SN-00001
cp "$WORK/stations/STATION-1.crt" "$WORK/stations/STATION-1-OLD.crt"
cp "$WORK/stations/STATION-1.key" "$WORK/stations/STATION-1-OLD.key"
OLD_HEX=$(openssl x509 -in "$WORK/stations/STATION-1-OLD.crt" -noout -serial | cut -d= -f2 |
    tr 'A-F' 'a-f')
prov 2 ca station renew NOBODY --csr "$WORK/stations/STATION-1.csr" --out "$WORK/nobody.pem"
assert_one_error NOBODY "not registered"
assert_no_file "$WORK/nobody.pem"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$WORK/stations/STATION-1.key" -subj /CN=STATION-1 \
    -out "$WORK/stations/STATION-1.csr" >/dev/null 2>&1 || fail "openssl req (renew)"
prov 0 ca station renew STATION-1 --csr "$WORK/stations/STATION-1.csr" \
    --out "$WORK/stations/STATION-1.bundle.pem"
openssl x509 -in "$WORK/stations/STATION-1.bundle.pem" -out "$WORK/stations/STATION-1.crt"
NEW_HEX=$(openssl x509 -in "$WORK/stations/STATION-1.crt" -noout -serial | cut -d= -f2 |
    tr 'A-F' 'a-f')
[ "$NEW_HEX" != "$OLD_HEX" ] || fail "renew: the same certificate"
assert_eq "$(sql_q "$IX" "SELECT cert_serial FROM station WHERE name = 'STATION-1'")" "$NEW_HEX" \
    "renew: the station is registered with the new certificate"
assert_eq "$(sql_q "$IX" "SELECT status FROM certificate WHERE cert_serial = '$OLD_HEX'")" \
    superseded "renew: the old certificate is superseded"
issued after-renew STATION-1 SN-00002
refused old-cert STATION-1-OLD SN-00003 'station STATION-1: not its registered certificate'

# ---- ca station revoke: a revocation record, then refused -----------------------------
prov 2 ca station revoke NOBODY
assert_one_error NOBODY "not registered"
prov 2 ca station revoke STATION-2 --reason nonsense
ST2_HEX=$(openssl x509 -in "$WORK/stations/STATION-2.crt" -noout -serial | cut -d= -f2 |
    tr 'A-F' 'a-f')
AUDIT=$(sql_q "$IX" "SELECT count(*) FROM audit")
prov 0 ca station revoke STATION-2 --reason keyCompromise
assert_eq "$(sql_q "$IX" "SELECT reason || ' ' || revoked_by FROM revocation
    WHERE cert_serial = '$ST2_HEX'")" "1 ca station revoke" "revoke: the revocation record"
assert_eq "$(sql_q "$IX" "SELECT count(*) FROM audit")" $((AUDIT + 1)) "revoke: an audit record"
refused revoked STATION-2 SN-00004 "station STATION-2: its certificate $ST2_HEX is revoked"
if cmp_client revoked-genm STATION-2 -cmd genm -infotype caCerts; then
    fail "a revoked station was answered a genm"
fi
prov 0 ca crl
openssl crl -in "$IT_CA_DIR/intermediate.crl.pem" -noout -text >"$WORK/crl.txt"
grep -qi "$ST2_HEX" "$WORK/crl.txt" || fail "revoke: the station's certificate is not on the CRL"

# ---- rr with its reason: recorded, and on the next CRL with it -------------------------
hex_of() { openssl x509 -in "$1" -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f'; }
AUDIT=$(sql_q "$IX" "SELECT count(*) FROM audit WHERE event = 'refuse'")
if cmp_client rr-ca STATION-1 -cmd rr -oldcert "$WORK/SN-00001.crt" -revreason 2; then
    fail "rr: cACompromise was accepted for a device certificate"
fi
assert_grep "$WORK/log/cmp-rr-ca.log" 'reason 2 .cACompromise. is not one' "rr-ca: the reason"
assert_eq "$(sql_q "$IX" "SELECT count(*) FROM audit WHERE event = 'refuse'")" $((AUDIT + 1)) \
    "rr-ca: an audit record"
assert_eq "$(sql_q "$IX" "SELECT count(*) FROM revocation WHERE cert_serial = '$(hex_of "$WORK/SN-00001.crt")'")" \
    0 "rr-ca: nothing revoked"
cmp_client rr-kc STATION-1 -cmd rr -oldcert "$WORK/SN-00001.crt" -revreason 1 ||
    fail "openssl cmp rr -revreason 1: $(tail -n3 "$WORK/log/cmp-rr-kc.log" | tr '\n' ' ')"
cmp_client rr-none STATION-1 -cmd rr -oldcert "$WORK/SN-00002.crt" ||
    fail "openssl cmp rr: $(tail -n3 "$WORK/log/cmp-rr-none.log" | tr '\n' ' ')"
assert_eq "$(sql_q "$IX" "SELECT reason || ' ' || revoked_by FROM revocation
    WHERE cert_serial = '$(hex_of "$WORK/SN-00001.crt")'")" "1 cmp:STATION-1" \
    "rr -revreason 1: keyCompromise in the CA index"
assert_eq "$(sql_q "$IX" "SELECT reason FROM revocation
    WHERE cert_serial = '$(hex_of "$WORK/SN-00002.crt")'")" 0 "rr without a reason: unspecified"
assert_grep "$CMP_LOG" 'rr station=STATION-1 serial=SN-00001 .*outcome="revoked .keyCompromise."' \
    "rr: the log line names the reason"
prov 0 ca crl
openssl crl -inform DER -in "$IT_CA_DIR/intermediate.crl" -noout -text >"$WORK/crl.txt" ||
    fail "openssl crl"
grep -i -A4 "Serial Number: *$(hex_of "$WORK/SN-00001.crt")" "$WORK/crl.txt" |
    grep -q 'Key Compromise' || fail "rr: the CRL does not list SN-00001 with Key Compromise"

# ---- the CRLs at a URL: what `ca crl` last wrote, DER, application/pkix-crl ---------------
CRL_URL=http://127.0.0.1:$CMP_PORT/crl
for c in intermediate root; do
    type=$(curl -sS -o "$WORK/got-$c.crl" -w '%{http_code} %{content_type}' "$CRL_URL/$c.crl") ||
        fail "curl $c.crl"
    assert_eq "$type" "200 application/pkix-crl" "GET /crl/$c.crl: status and type"
    cmp -s "$WORK/got-$c.crl" "$IT_CA_DIR/$c.crl" || fail "GET /crl/$c.crl: not the file ca crl wrote"
done
openssl crl -inform DER -in "$WORK/got-intermediate.crl" -CAfile "$IT_CA_DIR/intermediate.crt" \
    -verify -noout >"$WORK/log/crl-verify.log" 2>&1 ||
    fail "the served intermediate CRL does not verify: $(cat "$WORK/log/crl-verify.log")"
assert_grep "$WORK/log/crl-verify.log" 'verify OK' "the intermediate CRL verifies"
openssl crl -inform DER -in "$WORK/got-root.crl" -CAfile "$IT_CA_DIR/root.crt" -verify -noout \
    >"$WORK/log/crl-verify-root.log" 2>&1 ||
    fail "the served root CRL does not verify: $(cat "$WORK/log/crl-verify-root.log")"
for u in /crl/other.crl /crl/../index.sqlite /crl/intermediate.crl.pem /crl/; do
    assert_eq "$(curl -sS --path-as-is -o /dev/null -w '%{http_code}' "http://127.0.0.1:$CMP_PORT$u")" \
        404 "GET $u: not a CRL"
done
assert_eq "$(curl -sS -o /dev/null -w '%{http_code}' --data-binary x "$CRL_URL/root.crl")" 405 \
    "POST /crl/root.crl"
# a new CRL is served at once, without a restart
NUM_BEFORE=$(openssl crl -inform DER -in "$WORK/got-intermediate.crl" -noout -crlnumber)
prov 0 ca crl
curl -sS -o "$WORK/got-next.crl" "$CRL_URL/intermediate.crl" || fail "curl (the next CRL)"
NUM_AFTER=$(openssl crl -inform DER -in "$WORK/got-next.crl" -noout -crlnumber)
[ "$NUM_AFTER" != "$NUM_BEFORE" ] || fail "the served CRL is still $NUM_BEFORE after ca crl"
assert_grep "$CMP_LOG" ' 200 crl station=- serial=- outcome="intermediate.crl"' "the CRL's log line"

# ---- ca station list ------------------------------------------------------------------
prov 0 ca station list
"$PROVISIONER" ca station list >"$WORK/list.txt" || fail "ca station list"
assert_grep "$WORK/list.txt" "^STATION-1 *$NEW_HEX .*lots=LOT-A" "list: STATION-1"
assert_grep "$WORK/list.txt" "^STATION-2 *$ST2_HEX *revoked " "list: STATION-2 revoked"
"$PROVISIONER" ca station list --json >"$WORK/list.json" || fail "ca station list --json"
assert_eq "$(jq -r 'length' "$WORK/list.json")" 3 "list --json: three stations"
assert_eq "$(jq -r '.[] | select(.name == "STATION-2") | .revoked_at != null' "$WORK/list.json")" \
    true "list --json: STATION-2 revoked"
assert_eq "$(jq -r '.[] | select(.name == "STATION-3") | .lots' "$WORK/list.json")" LOT-A \
    "list --json: STATION-3's lots"

kill -TERM "$CMP_PID"
rc=0
wait "$CMP_PID" || rc=$?
assert_eq "$rc" 0 "ca serve exit status after SIGTERM"
