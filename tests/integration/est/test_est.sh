#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# EST (RFC 7030) on the CA service (doc/ca-service.md) against a client nobody here wrote,
# curl, sending what RFC 7030's examples send:
# - cacerts (PKCS#7 certs-only, base64) holds the CA chain; csrattrs names the profile's key;
# - simpleenroll with the station's TLS client certificate and a base64 PKCS#10 made on a
#   SoftHSM2 token; the same CSR again gets the same certificate; a named lot
#   (/.well-known/est/LOT/simpleenroll);
# - simplereenroll with the certificate issued (and its key): a renewed certificate;
# - refusals, each an HTTP status with a text line and nothing issued: no client certificate,
#   a stranger's certificate, a station with no lot, a lot the station may not serve, the cap
#   reached, garbage and non-base64 bodies, a 10 MiB body, a CSR the policy refuses, the
#   same key asked by another station, a renewal with a certificate that is not current;
# - every certificate passes `openssl verify -x509_strict`; one log line per request; two
#   requests on one kept-alive connection.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../batch/batch_lib.sh"
. "$(dirname "$0")/../cmp/cmp_lib.sh"
. "$(dirname "$0")/est_lib.sh"
it_setup
need sqlite3 curl
batch_ca
cmp_profiles
for s in STATION-1 STATION-2 STATION-3; do
    cmp_station "$s"
done
prov 0 ca lot add LOT-A --count 3 --station STATION-1 --station STATION-2
prov 0 ca lot add LOT-B --count 5 --station STATION-2
cmp_serve --tls-cert "$WORK/server-ca/server.crt" --tls-key "$WORK/server-ca/server.key" \
    --max-body 65536
EST=https://127.0.0.1:$CMP_PORT/.well-known/est
BEFORE=$(cmp_issued)

# ---- cacerts, csrattrs ----------------------------------------------------------------
code=$(est cacerts - "$EST/cacerts")
assert_eq "$code" 200 "cacerts: HTTP status"
p7_certs cacerts
cat "$IT_CA_DIR/intermediate.crt" "$IT_CA_DIR/root.crt" >"$WORK/chain.pem"
assert_eq "$(fingerprints "$WORK/est-cacerts.pem" | sort)" \
    "$(fingerprints "$WORK/chain.pem" | sort)" \
    "cacerts: the intermediate and the root"
code=$(est csrattrs - "$EST/csrattrs")
assert_eq "$code" 200 "csrattrs: HTTP status"
base64 -d "$WORK/est-csrattrs.out" | openssl asn1parse -inform DER >"$WORK/csrattrs.txt" ||
    fail "csrattrs: not base64 DER"
assert_grep "$WORK/csrattrs.txt" "prime256v1" "csrattrs: the profile's curve"
assert_grep "$WORK/csrattrs.txt" "ecdsa-with-SHA256" "csrattrs: the signature"

# ---- simpleenroll: a CSR whose key is on a SoftHSM2 token ------------------------------
token_init dev-01
prov 0 csr --serial SN-00001 --device pkcs11:token=dev-01 --out "$WORK/SN-00001.csr"
openssl req -in "$WORK/SN-00001.csr" -outform DER | base64 >"$WORK/SN-00001.b64"
enroll_ok enroll-1 STATION-1 SN-00001
assert_eq "$(cmp_issued)" $((BEFORE + 1)) "simpleenroll: certificates in the CA index"
assert_eq "$(sql_q "$IT_CA_DIR/index.sqlite" "SELECT issued_by || ' ' || lot FROM certificate
    WHERE serial = 'SN-00001'")" "est:STATION-1 LOT-A" "simpleenroll: the index's record"
# the same CSR again (a lost answer): the same certificate, nothing more issued
enroll_ok enroll-1-again STATION-1 SN-00001
assert_same_file "$WORK/est-enroll-1.pem" "$WORK/est-enroll-1-again.pem"
assert_eq "$(cmp_issued)" $((BEFORE + 1)) "a retry issues nothing new"
# ...from another station: refused, never a second certificate
refused replay-other 409 "SN-00001" STATION-2 "$EST/simpleenroll" \
    -H 'Content-Type: application/pkcs10' --data-binary "@$WORK/SN-00001.b64"

# ---- a named lot ------------------------------------------------------------------------
csr_b64 SN-00002
enroll_ok enroll-lot STATION-2 SN-00002 LOT-B/
assert_eq "$(sql_q "$IT_CA_DIR/index.sqlite" "SELECT lot FROM certificate
    WHERE serial = 'SN-00002'")" "LOT-B" "the named lot in the index"
csr_b64 SN-00003
refused lot-not-allowed 403 "may not serve lot LOT-B" STATION-1 "$EST/LOT-B/simpleenroll" \
    -H 'Content-Type: application/pkcs10' --data-binary "@$WORK/SN-00003.b64"
refused lot-unknown 403 "may not serve lot NOLOT" STATION-1 "$EST/NOLOT/simpleenroll" \
    -H 'Content-Type: application/pkcs10' --data-binary "@$WORK/SN-00003.b64"

# ---- simplereenroll: the device's certificate and key as the TLS client ------------------
# RFC 7030 section 4.2.2: the subject of the certificate renewed; a new key (the CA index
# certifies a key once: the same key again is refused)
subj=$(openssl x509 -in "$WORK/est-enroll-lot.pem" -noout -subject -nameopt compat)
subj=${subj#subject=}
openssl req -new -key "$WORK/SN-00002.key" -subj "$subj" -outform DER 2>/dev/null |
    base64 >"$WORK/SN-00002.samekey.b64"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$WORK/SN-00002.new.key" -subj "$subj" -outform DER 2>/dev/null |
    base64 >"$WORK/SN-00002.renew.b64"
cp "$WORK/est-enroll-lot.pem" "$WORK/stations/DEV-2.crt"
cp "$WORK/SN-00002.key" "$WORK/stations/DEV-2.key"
refused reenroll-samekey 409 "" DEV-2 "$EST/simplereenroll" \
    -H 'Content-Type: application/pkcs10' --data-binary "@$WORK/SN-00002.samekey.b64"
refused reenroll-subject 400 "subject is not the one" DEV-2 "$EST/simplereenroll" \
    -H 'Content-Type: application/pkcs10' --data-binary "@$WORK/SN-00003.b64"
before=$(cmp_issued)
code=$(est reenroll DEV-2 "$EST/simplereenroll" -H 'Content-Type: application/pkcs10' \
    --data-binary "@$WORK/SN-00002.renew.b64")
assert_eq "$code" 200 "simplereenroll: HTTP status ($(head -c 200 "$WORK/est-reenroll.out"))"
p7_certs reenroll
assert_strict_cert "$WORK/est-reenroll.pem"
assert_eq "$(cmp_issued)" $((before + 1)) "simplereenroll: one certificate more"
assert_eq "$(sql_q "$IT_CA_DIR/index.sqlite" "SELECT status FROM certificate
    WHERE serial = 'SN-00002' ORDER BY id")" "superseded
issued" "simplereenroll: the old certificate superseded"
# the renewed certificate's predecessor is no longer current
refused reenroll-old 403 "not a current device certificate" DEV-2 "$EST/simplereenroll" \
    -H 'Content-Type: application/pkcs10' --data-binary "@$WORK/SN-00002.renew.b64"
# a station's simplereenroll asks for a reissue (doc/ca-service.md), which LOT-A does not allow
refused reenroll-station 403 "lot LOT-A does not allow a reissue" STATION-1 \
    "$EST/simplereenroll" -H 'Content-Type: application/pkcs10' \
    --data-binary "@$WORK/SN-00003.b64"

# ---- refusals, nothing issued ------------------------------------------------------------
refused no-cert 403 "client certificate" - "$EST/simpleenroll" \
    -H 'Content-Type: application/pkcs10' --data-binary "@$WORK/SN-00003.b64"
cp "$WORK/server-ca/server.crt" "$WORK/stations/STRANGER.crt"
cp "$WORK/server-ca/server.key" "$WORK/stations/STRANGER.key"
refused stranger 403 "not a station of this CA" STRANGER "$EST/simpleenroll" \
    -H 'Content-Type: application/pkcs10' --data-binary "@$WORK/SN-00003.b64"
refused no-lot 403 "no lot it may serve" STATION-3 "$EST/simpleenroll" \
    -H 'Content-Type: application/pkcs10' --data-binary "@$WORK/SN-00003.b64"
refused garbage 400 "not a PKCS#10" STATION-1 "$EST/simpleenroll" \
    -H 'Content-Type: application/pkcs10' --data-binary "QUJDRA=="
refused not-base64 400 "not base64" STATION-1 "$EST/simpleenroll" \
    -H 'Content-Type: application/pkcs10' --data-binary "@$WORK/SN-00003.csr.der"
refused wrong-type 415 "application/pkcs10" STATION-1 "$EST/simpleenroll" \
    -H 'Content-Type: text/plain' --data-binary "@$WORK/SN-00003.b64"
refused get-enroll 405 "not a POST" STATION-1 "$EST/simpleenroll"
refused no-such-op 404 "no such EST operation" STATION-1 "$EST/fullcmc"
head -c $((10 * 1024 * 1024)) /dev/zero | tr '\0' 'A' >"$WORK/big.b64"
before=$(cmp_issued)
code=$(est big STATION-1 "$EST/simpleenroll" -H 'Content-Type: application/pkcs10' \
    --data-binary "@$WORK/big.b64")
assert_eq "$code" 413 "a 10 MiB body: HTTP status"
assert_eq "$(cmp_issued)" "$before" "a 10 MiB body: nothing issued"
openssl req -new -newkey rsa:1024 -nodes -keyout "$WORK/weak.key" -subj "/CN=SN-00009" \
    -outform DER -out "$WORK/weak.der" 2>/dev/null || fail "openssl req rsa:1024"
base64 "$WORK/weak.der" >"$WORK/weak.b64"
refused policy 400 "RSA" STATION-1 "$EST/simpleenroll" \
    -H 'Content-Type: application/pkcs10' --data-binary "@$WORK/weak.b64"

# ---- the cap: LOT-A holds 3 ---------------------------------------------------------------
enroll_ok enroll-3 STATION-1 SN-00003
csr_b64 SN-00004
enroll_ok enroll-4 STATION-1 SN-00004
csr_b64 SN-00005
refused cap 403 "cap of every lot it may serve is reached" STATION-1 "$EST/simpleenroll" \
    -H 'Content-Type: application/pkcs10' --data-binary "@$WORK/SN-00005.b64"
assert_eq "$(sql_q "$IT_CA_DIR/index.sqlite" "SELECT count(*) FROM certificate
    WHERE lot = 'LOT-A'")" 3 "the cap holds"

# ---- keep-alive: two requests on one connection; one log line per request ---------------
curl -sS -v --cacert "$WORK/server-ca/ca.crt" -o /dev/null -o /dev/null "$EST/cacerts" \
    "$EST/csrattrs" 2>"$WORK/log/keepalive.err" || fail "curl keep-alive"
assert_grep "$WORK/log/keepalive.err" "Re-using existing connection" "keep-alive"
assert_grep "$CMP_LOG" \
    'simpleenroll station=STATION-1 serial=SN-00001 cert_serial=[0-9a-f]* outcome="issued"' \
    "the simpleenroll log line"
assert_grep "$CMP_LOG" ' 403 simpleenroll station=localhost .*not a station of this CA' \
    "the stranger's log line"
[ "$(grep -c 'ca serve: .* est\|ca serve: .*\(cacerts\|csrattrs\|enroll\)' "$CMP_LOG")" -ge 20 ] ||
    fail "one log line per request"
kill -TERM "$CMP_PID"
rc=0
wait "$CMP_PID" || rc=$?
assert_eq "$rc" 0 "ca serve exit status after SIGTERM"
it_log "ok"
