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
# - lots as the CA's data: from a manifest (only its serials, its count the cap), the
#   profiles a lot may use, a station's rate per lot; a request naming its lot
#   (/.well-known/cmp/p/LOT, by openssl cmp and by the tool's own client from [ca] url);
#   a reissue (cr) honoured only where the lot allows it, from openssl cmp and from the
#   tool's `enroll --reissue` (a cr with raVerified: the station is the device's RA);
#   `ca lot list [--json]`;
# every refusal a CMP error, an audit record, nothing issued (the CA index's certificates
# counted before and after).
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../batch/batch_lib.sh"
. "$(dirname "$0")/cmp_lib.sh"
it_setup
need sqlite3 curl jq
batch_ca
cmp_profiles
# a reissue revokes the certificate it supersedes (doc/provisioner.cnf.5.scd)
sed -i 's/^\[profile_device\]$/&\nrevoke_superseded = true/' "$PROVISIONER_CONFIG"
for s in STATION-1 STATION-2 STATION-3; do
    cmp_station "$s"
done
prov 0 ca lot add LOT-A --count 20 --station STATION-1 --station STATION-2 --station STATION-3
cmp_serve
IX=$IT_CA_DIR/index.sqlite

# hex_of CERT: its serial, lower-case hex as the CA index keeps it
hex_of() { openssl x509 -in "$1" -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f'; }

# new_key NAME: a fresh P-256 key in $WORK/NAME.key
new_key() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$WORK/$1.key" \
        2>/dev/null || fail "openssl genpkey"
}

# cmp_lot NAME STATION LOT ARGS...: cmp_client on the lot's path (/.well-known/cmp/p/LOT;
# LOT "-": the service's own path)
cmp_lot() {
    local name=$1 st=$2 path=/.well-known/cmp
    [ "$3" = - ] || path=/.well-known/cmp/p/$3
    shift 3
    openssl cmp -server "127.0.0.1:$CMP_PORT" -path "$path" \
        -cert "$WORK/stations/$st.crt" -key "$WORK/stations/$st.key" \
        -trusted "$IT_CA_DIR/root.crt" -msg_timeout 20 -total_timeout 40 \
        "$@" >"$WORK/log/cmp-$name.log" 2>&1
}

# lot_ok NAME STATION LOT SERIAL [CMD]: a CMD (default ir) by STATION for SERIAL on LOT's
# path gets a certificate for a fresh key.
lot_ok() {
    new_key "$4"
    cmp_lot "$1" "$2" "$3" -cmd "${5:-ir}" -newkey "$WORK/$4.key" -subject "/CN=$4" \
        -certout "$WORK/$4.crt" ||
        fail "$1: openssl cmp on $3: $(tail -n3 "$WORK/log/cmp-$1.log" | tr '\n' ' ')"
    assert_strict_cert "$WORK/$4.crt"
}

# lot_refused NAME STATION LOT SERIAL REASON [CMD]: refused with REASON in the CMP answer,
# one more audit record, and nothing issued (the CA index's certificates counted).
lot_refused() {
    local before audit
    before=$(cmp_issued)
    audit=$(sql_q "$IX" "SELECT count(*) FROM audit WHERE event = 'refuse'")
    new_key "$4"
    rm -f "$WORK/$4.crt"
    if cmp_lot "$1" "$2" "$3" -cmd "${6:-ir}" -newkey "$WORK/$4.key" -subject "/CN=$4" \
        -certout "$WORK/$4.crt"; then
        fail "$1: a certificate was issued"
    fi
    assert_grep "$WORK/log/cmp-$1.log" "$5" "$1: the CMP error names the reason"
    assert_no_file "$WORK/$4.crt"
    assert_eq "$(cmp_issued)" "$before" "$1: nothing issued"
    assert_eq "$(sql_q "$IX" "SELECT count(*) FROM audit WHERE event = 'refuse'")" \
        $((audit + 1)) "$1: an audit record"
}
issued() { lot_ok "$1" "$2" - "$3"; }
refused() { lot_refused "$1" "$2" - "$3" "$4"; }

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

# ---- a lot's terms, and a request naming its lot (/.well-known/cmp/p/LOT) -------------------
printf 'serial,device\nM-00001,pkcs11:token=m1\nM-00002,pkcs11:token=m2\n' >"$WORK/lot-m.csv"
prov 0 ca lot add LOT-M --manifest "$WORK/lot-m.csv" --station STATION-3
prov 2 ca lot add LOT-X --manifest "$WORK/lot-m.csv" --count 5 --station STATION-3
printf 'serial,device\nbad serial,pkcs11:token=m1\n' >"$WORK/lot-bad.csv"
prov 2 ca lot add LOT-X --manifest "$WORK/lot-bad.csv" --station STATION-3
assert_one_error "lot-bad.csv:2:"
prov 2 ca lot add LOT/X --count 1 --station STATION-3
assert_one_error 'lot "LOT/X": must be 1 to 64 of'
prov 2 ca lot add LOT-X --count 1 --station STATION-3 --profile nosuch
assert_one_error "nosuch"
assert_eq "$(sql_q "$IX" "SELECT count(*) FROM lot WHERE name = 'LOT-X'")" 0 "refused lots: none"
prov 0 ca lot add LOT-P --count 5 --station STATION-3 --profile station
prov 0 ca lot add LOT-R --count 5 --station STATION-3 --profile device --reissue --rate 2
assert_eq "$(sql_q "$IX" "SELECT cap || ' ' || reissue FROM lot WHERE name = 'LOT-M'")" "2 0" \
    "LOT-M: its cap is the manifest's devices"
assert_eq "$(sql_q "$IX" "SELECT group_concat(serial, ' ') FROM lot_serial WHERE lot = 'LOT-M'")" \
    "M-00001 M-00002" "LOT-M: the manifest's serials"
assert_eq "$(sql_q "$IX" "SELECT reissue || ' ' || per_minute FROM lot l JOIN lot_station s
    ON s.lot = l.name WHERE l.name = 'LOT-R'")" "1 2" "LOT-R: reissue and rate"

for u in /.well-known/cmp/p/.. /.well-known/cmp/p/ /.well-known/cmp/p/LOT-R/x /.well-known/cmp/pLOT-R; do
    assert_eq "$(curl -sS --path-as-is -o /dev/null -w '%{http_code}' --data-binary x \
        -H 'Content-Type: application/pkixcmp' "http://127.0.0.1:$CMP_PORT$u")" 404 "POST $u: no such path"
done
lot_refused unknown-lot STATION-3 LOT-NONE SN-00040 'station STATION-3 may not serve lot LOT-NONE'
lot_refused other-station STATION-1 LOT-M M-00001 'station STATION-1 may not serve lot LOT-M'
lot_refused not-in-manifest STATION-3 LOT-M SN-00041 'lot LOT-M: device SN-00041 is not in its manifest'
lot_refused profile STATION-3 LOT-P SN-00042 'lot LOT-P may not use profile device'
lot_ok manifest-1 STATION-3 LOT-M M-00001
lot_ok manifest-2 STATION-3 LOT-M M-00002
assert_eq "$(sql_q "$IX" "SELECT group_concat(lot, ' ') FROM certificate WHERE serial LIKE 'M-%'")" \
    "LOT-M LOT-M" "the manifest's devices recorded with LOT-M"
prov 0 ca lot add LOT-C --count 1 --station STATION-3
lot_ok cap-1 STATION-3 LOT-C C-00001
lot_refused lot-cap STATION-3 LOT-C C-00002 'lot LOT-C: its cap .1. is reached'
# without a lot in the path, the oldest lot that admits the serial: LOT-A for SN-*, none for
# a manifest serial LOT-M has done
issued any-lot STATION-3 SN-00043
assert_eq "$(sql_q "$IX" "SELECT lot FROM certificate WHERE serial = 'SN-00043'")" LOT-A \
    "no lot named: the oldest that admits it"

# a key certified before, for another serial: the CA index refuses, audited, nothing issued
BEFORE=$(cmp_issued)
AUDIT=$(sql_q "$IX" "SELECT count(*) FROM audit WHERE event = 'refuse'")
if cmp_lot dup-key STATION-3 - -cmd ir -newkey "$WORK/SN-00043.key" -subject /CN=SN-00050 \
    -certout "$WORK/SN-00050.crt"; then
    fail "dup-key: a key certified before was certified again"
fi
assert_eq "$(cmp_issued)" "$BEFORE" "dup-key: nothing issued"
assert_eq "$(sql_q "$IX" "SELECT count(*) FROM audit WHERE event = 'refuse' AND serial = 'SN-00050'")" \
    1 "dup-key: an audit record"
assert_eq "$(sql_q "$IX" "SELECT count(*) FROM audit WHERE event = 'refuse'")" $((AUDIT + 1)) \
    "dup-key: one audit record"

# ---- reissue: honoured only where the lot allows it (a cr asks for it) ----------------------
lot_refused reissue-refused STATION-3 LOT-A SN-00043 'lot LOT-A does not allow a reissue' cr
lot_ok first-r STATION-3 LOT-R R-00001
R1_OLD=$(hex_of "$WORK/R-00001.crt")
cp "$WORK/R-00001.crt" "$WORK/R-00001.old.crt"
lot_ok reissue STATION-3 LOT-R R-00001 cr
[ "$(hex_of "$WORK/R-00001.crt")" != "$R1_OLD" ] || fail "reissue: the same certificate"
assert_grep "$CMP_LOG" 'cr station=STATION-3 serial=R-00001 cert_serial=[0-9a-f]* outcome="reissued"' \
    "the reissue's log line"
assert_eq "$(sql_q "$IX" "SELECT group_concat(status, ' ') FROM (SELECT status FROM certificate
    WHERE serial = 'R-00001' ORDER BY id)")" "superseded delivered" "reissue: the old one superseded"
assert_eq "$(sql_q "$IX" "SELECT reason FROM revocation WHERE cert_serial = '$R1_OLD'")" 4 \
    "reissue: the superseded certificate revoked (superseded), as the profile says"
assert_eq "$(sql_q "$IX" "SELECT count(DISTINCT serial) || ' ' || count(*) FROM certificate
    WHERE lot = 'LOT-R'")" "1 2" "reissue: one device of the cap, two certificates"

# ---- the station's rate on LOT-R (2 per minute): the third is refused -------------------
lot_refused rate STATION-3 LOT-R R-00002 'systemUnavail; StatusString: .station STATION-3: its rate for lot LOT-R .2 per minute. is reached; retry in [0-9]* s'

# ---- ca station list ------------------------------------------------------------------
prov 0 ca station list
"$PROVISIONER" ca station list >"$WORK/list.txt" || fail "ca station list"
assert_grep "$WORK/list.txt" "^STATION-1 *$NEW_HEX .*lots=LOT-A" "list: STATION-1"
assert_grep "$WORK/list.txt" "^STATION-2 *$ST2_HEX *revoked " "list: STATION-2 revoked"
"$PROVISIONER" ca station list --json >"$WORK/list.json" || fail "ca station list --json"
assert_eq "$(jq -r 'length' "$WORK/list.json")" 3 "list --json: three stations"
assert_eq "$(jq -r '.[] | select(.name == "STATION-2") | .revoked_at != null' "$WORK/list.json")" \
    true "list --json: STATION-2 revoked"
assert_eq "$(jq -r '.[] | select(.name == "STATION-3") | .lots' "$WORK/list.json")" LOT-A,LOT-C,LOT-M,LOT-P,LOT-R \
    "list --json: STATION-3's lots"

# ---- the tool's own client: [ca] url = cmp://HOST:PORT/.well-known/cmp/p/LOT ------------
token_init station-t
prov 0 csr --serial STATION-T --device pkcs11:token=station-t --profile station \
    --out "$WORK/station-t.csr"
prov 0 ca station add STATION-T --csr "$WORK/station-t.csr" --out "$WORK/station-t.pem"
prov 0 ca lot add LOT-T1 --count 5 --station STATION-T
prov 0 ca lot add LOT-T2 --count 5 --station STATION-T
prov 0 ca lot add LOT-TR --count 5 --station STATION-T --reissue
CA_CONFIG=$PROVISIONER_CONFIG
# station_config LOT: the station's directory, its [ca] url naming LOT
station_config() {
    station_dir "$WORK/station-t.pem" "cmp://127.0.0.1:$CMP_PORT/.well-known/cmp/p/$1" \
        station-t STATION-T
}
export PROVISIONER_CONFIG=$WORK/station/provisioner.cnf
token_init dev-t1
token_init dev-t2
station_config LOT-T2
cd "$WORK/station"
prov 0 enroll --serial T-00001 --device pkcs11:token=dev-t1
assert_strict_cert "$WORK/station/devices/T-00001/client.crt"
assert_eq "$(sql_q "$IX" "SELECT lot || ' ' || issued_by FROM certificate WHERE serial = 'T-00001'")" \
    "LOT-T2 cmp:STATION-T" "the tool's client on p/LOT-T2: recorded with LOT-T2, not the oldest"
station_config LOT-A
BEFORE=$(cmp_issued)
prov 5 enroll --serial T-00002 --device pkcs11:token=dev-t2
assert_grep "$PROV_ERR" "station STATION-T may not serve lot LOT-A" "the tool's client: the reason"
assert_eq "$(cmp_issued)" "$BEFORE" "the tool's client on a lot it may not serve: nothing issued"
# enroll --reissue: a cr whose proof of possession the station vouches for (raVerified, the
# CSR's signature checked on the station), honoured only on a lot that allows a reissue
token_init dev-t3
token_init dev-t4
station_config LOT-TR
prov 0 enroll --serial T-00003 --device pkcs11:token=dev-t3
T3_OLD=$(hex_of devices/T-00003/client.crt)
prov 0 enroll --serial T-00003 --device pkcs11:token=dev-t3 --reissue
assert_strict_cert "$WORK/station/devices/T-00003/client.crt"
[ "$(hex_of devices/T-00003/client.crt)" != "$T3_OLD" ] || fail "enroll --reissue: the same certificate"
assert_eq "$(sql_q "$IX" "SELECT group_concat(lot || ':' || status, ' ') FROM (SELECT lot, status
    FROM certificate WHERE serial = 'T-00003' ORDER BY id)")" "LOT-TR:superseded LOT-TR:delivered" \
    "enroll --reissue through CMP: the old certificate superseded"
assert_grep "$CMP_LOG" 'cr station=STATION-T serial=T-00003 cert_serial=[0-9a-f]* outcome="reissued"' \
    "enroll --reissue through CMP: a cr, reissued"
station_config LOT-T1
prov 0 enroll --serial T-00004 --device pkcs11:token=dev-t4
BEFORE=$(cmp_issued)
prov 5 enroll --serial T-00004 --device pkcs11:token=dev-t4 --reissue
assert_grep "$PROV_ERR" 'lot LOT-T1 does not allow a reissue' "enroll --reissue on LOT-T1: the reason"
assert_eq "$(cmp_issued)" "$BEFORE" "enroll --reissue on LOT-T1: nothing issued"
cd "$WORK"
export PROVISIONER_CONFIG=$CA_CONFIG

# ---- ca lot list ------------------------------------------------------------------------
"$PROVISIONER" ca lot list >"$WORK/lots.txt" || fail "ca lot list"
assert_grep "$WORK/lots.txt" '^LOT-R *1/5 devices reissue=yes profiles=device serials=any stations=STATION-3/2$' \
    "lot list: LOT-R"
assert_grep "$WORK/lots.txt" '^LOT-M *2/2 devices reissue=no profiles=any serials=manifest stations=STATION-3/0$' \
    "lot list: LOT-M"
"$PROVISIONER" ca lot list --json >"$WORK/lots.json" || fail "ca lot list --json"
assert_eq "$(jq -r '.[] | select(.name == "LOT-M") | "\(.cap) \(.devices) \(.manifest_serials) \(.reissue)"' \
    "$WORK/lots.json")" "2 2 2 false" "lot list --json: LOT-M"

kill -TERM "$CMP_PID"
rc=0
wait "$CMP_PID" || rc=$?
assert_eq "$rc" 0 "ca serve exit status after SIGTERM"
