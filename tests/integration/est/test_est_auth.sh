#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Who may ask the CA service over EST (doc/ca-service.md, "Who may ask") against curl:
# - a station revoked with `ca station revoke` is refused (403);
# - a lot's terms: a lot from a manifest admits only its serials; a lot's profiles; a lot the
#   station may not serve; the station's rate on a lot (429 with Retry-After);
# - a station's reissue (simplereenroll with the station's own certificate) honoured only in
#   a lot that allows it, the old certificate superseded (and revoked, as the profile says);
#   the tool's own EST client sends `enroll --reissue` so, on the lot its [ca] url names;
# every refusal an HTTP status with the reason, an audit record, and nothing issued (the CA
# index's certificates counted before and after).
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../batch/batch_lib.sh"
. "$(dirname "$0")/../cmp/cmp_lib.sh"
. "$(dirname "$0")/est_lib.sh"
it_setup
need sqlite3 curl
batch_ca
cmp_profiles
# a reissue revokes the certificate it supersedes (doc/provisioner.cnf.5.scd)
sed -i 's/^\[profile_device\]$/&\nrevoke_superseded = true/' "$PROVISIONER_CONFIG"
for s in STATION-1 STATION-2; do
    cmp_station "$s"
done
printf 'serial,device\nM-00001,pkcs11:token=m1\nM-00002,pkcs11:token=m2\n' >"$WORK/lot-m.csv"
prov 0 ca lot add LOT-A --count 10 --station STATION-1 --station STATION-2
prov 0 ca lot add LOT-M --manifest "$WORK/lot-m.csv" --station STATION-1
prov 0 ca lot add LOT-P --count 10 --station STATION-1 --profile station
prov 0 ca lot add LOT-R --count 10 --station STATION-1 --reissue --rate 2
cmp_serve --tls-cert "$WORK/server-ca/server.crt" --tls-key "$WORK/server-ca/server.key"
EST=https://127.0.0.1:$CMP_PORT/.well-known/est
IX=$IT_CA_DIR/index.sqlite

# audited_refusal NAME STATUS REASON STATION PATH SERIAL [OP]: OP (default simpleenroll) on
# $EST/PATH by STATION for a fresh key of SERIAL is refused with STATUS and REASON, one more
# audit record, nothing issued.
audited_refusal() {
    local audit
    audit=$(sql_q "$IX" "SELECT count(*) FROM audit WHERE event = 'refuse'")
    csr_b64 "$6"
    refused "$1" "$2" "$3" "$4" "$EST/$5${7:-simpleenroll}" -D "$WORK/est-$1.headers" \
        -H 'Content-Type: application/pkcs10' --data-binary "@$WORK/$6.b64"
    assert_eq "$(sql_q "$IX" "SELECT count(*) FROM audit WHERE event = 'refuse'")" \
        $((audit + 1)) "$1: an audit record"
}

# issued NAME STATION PATH SERIAL [OP]: answered with a certificate for a fresh key of SERIAL.
issued() {
    csr_b64 "$4"
    enroll_ok "$1" "$2" "$4" "$3" "${5:-simpleenroll}"
}

hex_of() { openssl x509 -in "$1" -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f'; }

# ---- a lot's terms ----------------------------------------------------------------------
audited_refusal unknown-lot 403 'station STATION-2 may not serve lot LOT-M' STATION-2 LOT-M/ M-00001
audited_refusal manifest 403 'lot LOT-M: device SN-00001 is not in its manifest' STATION-1 LOT-M/ SN-00001
audited_refusal profile 403 'lot LOT-P may not use profile device' STATION-1 LOT-P/ SN-00002
issued manifest-ok STATION-1 LOT-M/ M-00001
assert_eq "$(sql_q "$IX" "SELECT lot || ' ' || issued_by FROM certificate WHERE serial = 'M-00001'")" \
    "LOT-M est:STATION-1" "the manifest's device recorded with LOT-M"

# the same key for another serial: the CA index refuses (409), audited, nothing issued
openssl req -new -key "$WORK/M-00001.key" -subj /CN=SN-00009 -outform DER \
    -out "$WORK/SN-00009.csr.der" 2>/dev/null || fail "openssl req (dup-key)"
base64 "$WORK/SN-00009.csr.der" >"$WORK/SN-00009.b64"
AUDIT=$(sql_q "$IX" "SELECT count(*) FROM audit WHERE event = 'refuse' AND serial = 'SN-00009'")
refused dup-key 409 "" STATION-1 "$EST/simpleenroll" -H 'Content-Type: application/pkcs10' \
    --data-binary "@$WORK/SN-00009.b64"
assert_eq "$(sql_q "$IX" "SELECT count(*) FROM audit WHERE event = 'refuse' AND serial = 'SN-00009'")" \
    $((AUDIT + 1)) "dup-key: an audit record"

# ---- a station's reissue: simplereenroll with the station's certificate -----------------
issued first-a STATION-1 LOT-A/ SN-00003
audited_refusal reissue-refused 403 'lot LOT-A does not allow a reissue' STATION-1 LOT-A/ SN-00003 \
    simplereenroll
issued first-r STATION-1 LOT-R/ R-00001
R1_OLD=$(hex_of "$WORK/est-first-r.pem")
issued reissue STATION-1 LOT-R/ R-00001 simplereenroll
[ "$(hex_of "$WORK/est-reissue.pem")" != "$R1_OLD" ] || fail "reissue: the same certificate"
assert_eq "$(sql_q "$IX" "SELECT group_concat(status, ' ') FROM (SELECT status FROM certificate
    WHERE serial = 'R-00001' ORDER BY id)")" "superseded issued" "reissue: the old one superseded"
assert_eq "$(sql_q "$IX" "SELECT reason FROM revocation WHERE cert_serial = '$R1_OLD'")" 4 \
    "reissue: the superseded certificate revoked (superseded)"
assert_grep "$CMP_LOG" 'station=STATION-1 serial=R-00001 .*outcome="reissued"' "the reissue's log line"

# ---- the rate (2 per minute on LOT-R): 429 with Retry-After -----------------------------
audited_refusal rate 429 'its rate for lot LOT-R .2 per minute. is reached' STATION-1 LOT-R/ R-00002
grep -qiE '^Retry-After: [0-9]+' "$WORK/est-rate.headers" ||
    fail "rate: no Retry-After header: $(tr '\r\n' '  ' <"$WORK/est-rate.headers")"

# ---- the tool's own EST client: enroll --reissue is a simplereenroll -------------------------
token_init station-e
prov 0 csr --serial STATION-E --device pkcs11:token=station-e --profile station \
    --out "$WORK/station-e.csr"
prov 0 ca station add STATION-E --csr "$WORK/station-e.csr" --out "$WORK/station-e.pem"
prov 0 ca lot add LOT-E --count 5 --station STATION-E --reissue
prov 0 ca lot add LOT-F --count 5 --station STATION-E
CA_CONFIG=$PROVISIONER_CONFIG
token_init dev-e1
token_init dev-e2
station_dir "$WORK/station-e.pem" "https://127.0.0.1:$CMP_PORT/.well-known/est/LOT-E" station-e \
    STATION-E
export PROVISIONER_CONFIG=$WORK/station/provisioner.cnf
cd "$WORK/station"
prov 0 enroll --serial E-00001 --device pkcs11:token=dev-e1
E1_OLD=$(hex_of devices/E-00001/client.crt)
prov 0 enroll --serial E-00001 --device pkcs11:token=dev-e1 --reissue
assert_strict_cert devices/E-00001/client.crt
[ "$(hex_of devices/E-00001/client.crt)" != "$E1_OLD" ] || fail "enroll --reissue: the same certificate"
assert_eq "$(sql_q "$IX" "SELECT group_concat(lot || ':' || status, ' ') FROM (SELECT lot, status
    FROM certificate WHERE serial = 'E-00001' ORDER BY id)")" "LOT-E:superseded LOT-E:issued" \
    "enroll --reissue through EST: the old certificate superseded"
sed -i 's|/.well-known/est/LOT-E$|/.well-known/est/LOT-F|' provisioner.cnf
prov 0 enroll --serial E-00002 --device pkcs11:token=dev-e2
BEFORE=$(cmp_issued)
prov 5 enroll --serial E-00002 --device pkcs11:token=dev-e2 --reissue
assert_grep "$PROV_ERR" 'lot LOT-F does not allow a reissue' "enroll --reissue on LOT-F: the reason"
assert_eq "$(cmp_issued)" "$BEFORE" "enroll --reissue on LOT-F: nothing issued"
cd "$WORK"
export PROVISIONER_CONFIG=$CA_CONFIG

# ---- ca station revoke: the station is refused from then on ------------------------------
prov 0 ca station revoke STATION-2 --reason keyCompromise
audited_refusal revoked 403 'station STATION-2: its certificate [0-9a-f]* is revoked' STATION-2 "" SN-00004

kill -TERM "$CMP_PID"
rc=0
wait "$CMP_PID" || rc=$?
assert_eq "$rc" 0 "ca serve exit status after SIGTERM"
