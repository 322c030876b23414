#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The CA service over CMP (doc/ca-service.md) against a client nobody here wrote, `openssl cmp`:
# - p10cr with a CSR made on a SoftHSM2 token (`provisioner csr`), sent again (a retry: the same
#   certificate, nothing more issued), ir with a fresh key, genm
#   caCerts; every certificate passes `openssl verify -x509_strict`, and the CA index holds
#   each, with the station and the lot;
# - refusals, each a CMP error, an audit record where a station was refused, and nothing
#   issued: a key certified before, a station certificate from another CA, a station this CA
#   certified but nobody registered, a revoked station, a station with no lot, the lot's cap
#   reached, a message of a finished transaction sent again, garbage, an oversized body;
# - rr: a station revokes a certificate it asked for (then on the CRL), not another's;
# - kur: a device renews with its current certificate; a superseded or revoked one cannot,
#   nor a request without proof of possession of the new key (raVerified, accepted from a
#   station in a reissue's cr only: an ir claiming it is refused too);
# - HTTPS with --tls-cert/--tls-key (genm over TLS; plain HTTP on that port gets nothing);
# - one log line per request; SIGTERM stops the service cleanly;
# - the CMP signer's certificate carries id-kp-cmcCA (the tool's client requires it, doc/
#   ca-service.md "Who signs the answers"); one an older version made without it, for the same
#   key, is replaced at the next start.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../batch/batch_lib.sh"
. "$(dirname "$0")/cmp_lib.sh"
it_setup
need sqlite3 curl xxd
batch_ca
cmp_profiles
for s in STATION-1 STATION-2 STATION-3; do
    cmp_station "$s"
done
cmp_station STATION-4 sign
prov 0 ca lot add LOT-A --count 4 --station STATION-1 --station STATION-2
prov 2 ca lot add LOT-B --count 4 --station NOBODY
assert_one_error NOBODY "not registered"
prov 0 revoke STATION-2 --reason keyCompromise
cmp_serve --max-body 65536
# the CMP signer, made on the first start, is in the CA index and on file
assert_file "$IT_CA_DIR/cmp-signer.crt"
assert_strict_cert "$IT_CA_DIR/cmp-signer.crt"
openssl x509 -in "$IT_CA_DIR/cmp-signer.crt" -noout -ext extendedKeyUsage |
    grep -q 'CMC Certificate Authority' || fail "the CMP signer's certificate lacks id-kp-cmcCA"
assert_eq "$(sql_q "$IT_CA_DIR/index.sqlite" "SELECT count(*) FROM certificate
    WHERE serial = 'ca:cmp-signer'")" 1 "the CMP signer in the CA index"
BEFORE=$(cmp_issued)
AUDIT_BEFORE=$(sql_q "$IT_CA_DIR/index.sqlite" "SELECT count(*) FROM audit WHERE event = 'refuse'")

# new_key NAME: a fresh P-256 key in $WORK/NAME.key
new_key() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$WORK/$1.key" \
        2>/dev/null || fail "openssl genpkey"
}

# refused NAME STATION SERIAL REASON: an ir by STATION for SERIAL is refused with REASON in
# the CMP answer, and nothing is issued.
refused() {
    local before
    before=$(cmp_issued)
    new_key "$3"
    if cmp_client "$1" "$2" -cmd ir -newkey "$WORK/$3.key" -subject "/CN=$3" \
        -certout "$WORK/$3.crt"; then
        fail "$1: a certificate was issued"
    fi
    assert_grep "$WORK/log/cmp-$1.log" "$4" "$1: the CMP error names the reason"
    assert_no_file "$WORK/$3.crt"
    assert_eq "$(cmp_issued)" "$before" "$1: nothing issued"
}

# ---- p10cr: a CSR whose key is on a SoftHSM2 token ------------------------------------
token_init dev-01
prov 0 csr --serial SN-00001 --device pkcs11:token=dev-01 --out "$WORK/SN-00001.csr"
cmp_client p10cr STATION-1 -cmd p10cr -csr "$WORK/SN-00001.csr" -certout "$WORK/SN-00001.crt" ||
    fail "openssl cmp p10cr: $(tail -n3 "$WORK/log/cmp-p10cr.log" | tr '\n' ' ')"
assert_strict_cert "$WORK/SN-00001.crt"
openssl x509 -in "$WORK/SN-00001.crt" -noout -subject | grep -q 'CN *= *SN-00001' ||
    fail "p10cr: the certificate is not for SN-00001"
assert_eq "$(cmp_issued)" $((BEFORE + 1)) "p10cr: certificates in the CA index"
assert_eq "$(sql_q "$IT_CA_DIR/index.sqlite" "SELECT issued_by || ' ' || lot || ' ' || status
    FROM certificate WHERE serial = 'SN-00001'")" "cmp:STATION-1 LOT-A delivered" \
    "p10cr: the index's record"
# the same request again (a lost answer): the same certificate, nothing more issued
cmp_client retry STATION-1 -cmd p10cr -csr "$WORK/SN-00001.csr" -certout "$WORK/SN-00001.again.crt" ||
    fail "openssl cmp p10cr (retry): $(tail -n3 "$WORK/log/cmp-retry.log" | tr '\n' ' ')"
assert_same_file "$WORK/SN-00001.crt" "$WORK/SN-00001.again.crt"
assert_eq "$(cmp_issued)" $((BEFORE + 1)) "a retry issues nothing new"
assert_grep "$CMP_LOG" 'serial=SN-00001 .*outcome="issued before' "the retry's log line"

# ---- ir: a fresh key, the CRMF template ---------------------------------------------
new_key SN-00002
cmp_client ir STATION-1 -cmd ir -newkey "$WORK/SN-00002.key" -subject /CN=SN-00002 \
    -certout "$WORK/SN-00002.crt" ||
    fail "openssl cmp ir: $(tail -n3 "$WORK/log/cmp-ir.log" | tr '\n' ' ')"
assert_strict_cert "$WORK/SN-00002.crt"
[ "$(openssl x509 -in "$WORK/SN-00002.crt" -noout -pubkey)" = \
    "$(openssl pkey -in "$WORK/SN-00002.key" -pubout)" ] || fail "ir: not the key asked for"
assert_eq "$(cmp_issued)" $((BEFORE + 2)) "ir: certificates in the CA index"

# ---- the same key again: refused (no public key certified twice) --------------------
if cmp_client ir-again STATION-1 -cmd ir -newkey "$WORK/SN-00002.key" -subject /CN=SN-00003 \
    -certout "$WORK/SN-00003.crt"; then
    fail "a key certified before was certified again"
fi
assert_no_file "$WORK/SN-00003.crt"
assert_eq "$(cmp_issued)" $((BEFORE + 2)) "a key certified before: nothing issued"

# ---- genm: the CA certificates ------------------------------------------------------
cmp_client genm STATION-1 -cmd genm -infotype caCerts -rspout "$WORK/genp.der" ||
    fail "openssl cmp genm: $(tail -n3 "$WORK/log/cmp-genm.log" | tr '\n' ' ')"
assert_grep "$WORK/log/cmp-genm.log" 'ITAV of type: id-it-caCerts' "genm: the caCerts answer"
genp_hex=$(xxd -p "$WORK/genp.der" | tr -d '\n')
for c in intermediate root; do
    openssl x509 -in "$IT_CA_DIR/$c.crt" -outform DER -out "$WORK/$c.der"
    case "$genp_hex" in
    *"$(xxd -p "$WORK/$c.der" | tr -d '\n')"*) ;;
    *) fail "genm: the $c certificate is not in the caCerts answer" ;;
    esac
done
assert_strict_cert "$IT_CA_DIR/intermediate.crt"

# ---- who may ask: refusals with a CMP error, an audit record, nothing issued ---------
mkdir -p "$WORK/stations"
openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 5 \
    -keyout "$WORK/stations/STRANGER.key" -out "$WORK/stations/STRANGER.crt" \
    -subj /CN=STRANGER >/dev/null 2>&1 || fail "openssl req (stranger)"
refused stranger STRANGER SN-00010 'no suitable sender cert'
refused unregistered STATION-4 SN-00011 'station STATION-4 is not registered'
refused revoked STATION-2 SN-00012 'station STATION-2: its certificate [0-9a-f]* is revoked'
refused no-lot STATION-3 SN-00013 'station STATION-3: no lot it may serve is registered'
assert_eq "$(sql_q "$IT_CA_DIR/index.sqlite" "SELECT count(*) FROM audit WHERE event = 'refuse'")" \
    $((AUDIT_BEFORE + 5)) "an audit record per refused station, and for the key certified before"
# raVerified is a station's claim for a reissue (cr) only: an ir must prove its key
new_key SN-00014
before=$(cmp_issued)
if cmp_client ir-rav STATION-1 -cmd ir -popo 0 -newkey "$WORK/SN-00014.key" -subject /CN=SN-00014 \
    -certout "$WORK/SN-00014.crt"; then
    fail "an ir without proof of possession was granted"
fi
assert_grep "$WORK/log/cmp-ir-rav.log" 'must prove possession of its key' "ir-rav: the reason"
assert_eq "$(cmp_issued)" "$before" "ir-rav: nothing issued"
# a proof of possession that does not verify (its signature spoiled, the message protected
# again by the station: cmp_badpop.c): OpenSSL's server checks it before the service's
# callback (which no longer verifies it again: service/cmp_requests.c, read_request)
new_key SN-00015
audit_before=$(sql_q "$IT_CA_DIR/index.sqlite" "SELECT count(*) FROM audit WHERE event = 'refuse'")
"$CMP_BADPOP" "127.0.0.1:$CMP_PORT" /.well-known/cmp "$WORK/stations/STATION-1.crt" \
    "$WORK/stations/STATION-1.key" "$IT_CA_DIR/root.crt" "$WORK/SN-00015.key" SN-00015 \
    >"$WORK/log/cmp-ir-badpop.log" 2>&1
rc=$?
[ "$rc" -eq 0 ] || fail "ir-badpop: cmp_badpop exit $rc: $(tr '\n' ' ' <"$WORK/log/cmp-ir-badpop.log")"
assert_grep "$WORK/log/cmp-ir-badpop.log" 'rejection.*badPOP' "ir-badpop: refused for its POP"
assert_eq "$(cmp_issued)" "$before" "ir-badpop: nothing issued"
assert_grep "$CMP_LOG" 'ir station=- serial=- outcome="refused: the proof of possession does not verify"' \
    "ir-badpop: the service's log line says why"
assert_eq "$(sql_q "$IT_CA_DIR/index.sqlite" "SELECT count(*) FROM audit WHERE event = 'refuse'")" \
    $((audit_before + 1)) "ir-badpop: an audit record"

# ---- a replayed message of a finished transaction -----------------------------------
new_key SN-00004
cmp_client record STATION-1 -cmd ir -newkey "$WORK/SN-00004.key" -subject /CN=SN-00004 \
    -certout "$WORK/SN-00004.crt" -reqout "$WORK/ir.der,$WORK/certconf.der" \
    -rspout "$WORK/ip.der,$WORK/pkiconf.der" ||
    fail "openssl cmp ir (recorded): $(tail -n3 "$WORK/log/cmp-record.log" | tr '\n' ' ')"
assert_eq "$(cmp_issued)" $((BEFORE + 3)) "recorded ir issued"
# the ip carries the CMP signer's certificate and chain (extraCerts, [1] of the PKIMessage);
# the pkiConf after it none (service/cmp_server.c, lean_confirmation), and openssl cmp took it
for m in ip pkiconf; do
    openssl asn1parse -inform DER -in "$WORK/$m.der" >"$WORK/log/$m.txt" 2>&1 ||
        fail "$m: not DER"
done
assert_grep "$WORK/log/ip.txt" 'd=1 .*cont \[ 1 \]' "the ip has extraCerts"
assert_no_grep "$WORK/log/pkiconf.txt" 'd=1 .*cont \[ 1 \]' "the pkiConf has none"
for m in ir certconf; do
    code=$(curl -sS -o "$WORK/replay-$m.der" -w '%{http_code}' --data-binary "@$WORK/$m.der" \
        -H 'Content-Type: application/pkixcmp' "http://127.0.0.1:$CMP_PORT/.well-known/cmp") ||
        fail "curl (replay $m)"
    assert_eq "$code" 200 "replayed $m: HTTP status (a CMP answer)"
    openssl asn1parse -inform DER -in "$WORK/replay-$m.der" >"$WORK/log/replay-$m.txt" 2>&1 ||
        fail "replayed $m: the answer is not DER"
done
assert_eq "$(cmp_issued)" $((BEFORE + 3)) "replays: nothing issued"
assert_grep "$CMP_LOG" 'ir station=[^ ]* serial=- outcome="refused: replay of a finished transaction"' \
    "the replayed ir is logged as refused"
assert_grep "$CMP_LOG" 'certConf .*refused: certConf for a finished transaction' \
    "the replayed certConf is logged as refused"

# ---- the lot's cap (4): the fourth is issued, the fifth refused ---------------------
new_key SN-00005
cmp_client fourth STATION-1 -cmd ir -newkey "$WORK/SN-00005.key" -subject /CN=SN-00005 \
    -certout "$WORK/SN-00005.crt" || fail "openssl cmp ir (the lot's fourth)"
assert_strict_cert "$WORK/SN-00005.crt"
refused cap STATION-1 SN-00006 'the cap of every lot it may serve is reached'
assert_eq "$(sql_q "$IT_CA_DIR/index.sqlite" "SELECT count(*) FROM certificate WHERE lot = 'LOT-A'")" \
    4 "LOT-A holds its cap"

# ---- rr: a station revokes what it asked for, not another station's --------------------
cmp_client rr STATION-1 -cmd rr -oldcert "$WORK/SN-00002.crt" -revreason 1 ||
    fail "openssl cmp rr: $(tail -n3 "$WORK/log/cmp-rr.log" | tr '\n' ' ')"
SN2_HEX=$(openssl x509 -in "$WORK/SN-00002.crt" -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f')
assert_eq "$(sql_q "$IT_CA_DIR/index.sqlite" "SELECT revoked_by FROM revocation
    WHERE cert_serial = '$SN2_HEX'")" cmp:STATION-1 "rr: the revocation in the CA index"
if cmp_client rr-other STATION-3 -cmd rr -oldcert "$WORK/SN-00005.crt" -revreason 1; then
    fail "a station revoked another station's certificate"
fi
assert_grep "$WORK/log/cmp-rr-other.log" 'was not issued to station STATION-3' "rr-other: the reason"
assert_eq "$(sql_q "$IT_CA_DIR/index.sqlite" "SELECT count(*) FROM revocation")" 2 \
    "rr: revocations (the station's, and SN-00002)"
prov 0 ca crl
openssl crl -in "$IT_CA_DIR/intermediate.crl.pem" -noout -text | grep -qi "$SN2_HEX" ||
    fail "rr: the revoked certificate is not on the CRL"

# ---- kur: a device renews with its current certificate ---------------------------------
# kur_client NAME OLD NEW: `openssl cmp -cmd kur` signed by the device's OLD certificate and
# key, for the key NEW ($WORK/NEW.key, made here), the certificate into $WORK/NEW.crt.
kur_client() {
    new_key "$3"
    openssl cmp -server "127.0.0.1:$CMP_PORT" -path /.well-known/cmp -cmd kur \
        -cert "$WORK/$2.crt" -key "$WORK/$2.key" -newkey "$WORK/$3.key" \
        -trusted "$IT_CA_DIR/root.crt" -certout "$WORK/$3.crt" -msg_timeout 20 \
        >"$WORK/log/cmp-$1.log" 2>&1
}
# a device is no RA: a kur that does not prove its new key (raVerified) is refused
new_key SN-00005-RAV
before=$(cmp_issued)
if openssl cmp -server "127.0.0.1:$CMP_PORT" -path /.well-known/cmp -cmd kur -popo 0 \
    -cert "$WORK/SN-00005.crt" -key "$WORK/SN-00005.key" -newkey "$WORK/SN-00005-RAV.key" \
    -trusted "$IT_CA_DIR/root.crt" -certout "$WORK/SN-00005-RAV.crt" -msg_timeout 20 \
    >"$WORK/log/cmp-kur-rav.log" 2>&1; then
    fail "a kur without proof of possession renewed"
fi
assert_grep "$WORK/log/cmp-kur-rav.log" 'must prove possession of the new key' "kur-rav: the reason"
assert_eq "$(cmp_issued)" "$before" "kur-rav: nothing issued"
kur_client kur SN-00005 SN-00005-NEW ||
    fail "openssl cmp kur: $(tail -n3 "$WORK/log/cmp-kur.log" | tr '\n' ' ')"
assert_strict_cert "$WORK/SN-00005-NEW.crt"
[ "$(openssl x509 -in "$WORK/SN-00005-NEW.crt" -noout -pubkey)" = \
    "$(openssl pkey -in "$WORK/SN-00005-NEW.key" -pubout)" ] || fail "kur: not the new key"
openssl x509 -in "$WORK/SN-00005-NEW.crt" -noout -subject | grep -q 'CN *= *SN-00005' ||
    fail "kur: the certificate is not for SN-00005"
assert_eq "$(sql_q "$IT_CA_DIR/index.sqlite" "SELECT group_concat(issued_by || ':' || status, ' ')
    FROM (SELECT * FROM certificate WHERE serial = 'SN-00005' ORDER BY id)")" \
    "cmp:STATION-1:superseded cmp:kur:delivered" "kur: the old certificate superseded"
# the superseded certificate, and a revoked one, renew nothing
if kur_client kur-old SN-00005 SN-00005-OLD; then fail "a superseded certificate renewed"; fi
assert_grep "$WORK/log/cmp-kur-old.log" 'no longer current' "kur-old: the reason"
if kur_client kur-revoked SN-00002 SN-00002-NEW; then fail "a revoked certificate renewed"; fi
assert_grep "$WORK/log/cmp-kur-revoked.log" 'is revoked' "kur-revoked: the reason"
assert_eq "$(cmp_issued)" $((before + 1)) "kur: one certificate issued"

# ---- garbage and an oversized body ----------------------------------------------------
head -c 300 /dev/urandom >"$WORK/garbage.bin"
code=$(curl -sS -o /dev/null -w '%{http_code}' --data-binary "@$WORK/garbage.bin" \
    -H 'Content-Type: application/pkixcmp' "http://127.0.0.1:$CMP_PORT/.well-known/cmp") ||
    fail "curl (garbage)"
assert_eq "$code" 400 "garbage body: HTTP status"
# (Expect: 100-continue, as curl sends it by itself for a body over 1 MiB: the service answers
# 413 from the headers and closes without reading the body; a client already sending it may
# meet the closed connection first, "Send failure: Broken pipe", and never read the answer)
head -c 200000 /dev/zero >"$WORK/big.bin"
code=$(curl -sS -o /dev/null -w '%{http_code}' --data-binary "@$WORK/big.bin" \
    -H 'Expect: 100-continue' -H 'Content-Type: application/pkixcmp' \
    "http://127.0.0.1:$CMP_PORT/.well-known/cmp") || true
assert_eq "$code" 413 "oversized body: HTTP status"
code=$(curl -sS -o /dev/null -w '%{http_code}' --data-binary "@$WORK/ir.der" \
    -H 'Content-Type: text/plain' "http://127.0.0.1:$CMP_PORT/.well-known/cmp") || fail "curl"
assert_eq "$code" 415 "wrong Content-Type: HTTP status"
assert_eq "$(cmp_issued)" $((BEFORE + 5)) "bad bodies: nothing issued"
kill -0 "$CMP_PID" || fail "the service died"

# ---- HTTPS: the same service over TLS (--tls-cert, --tls-key) ----------------------------
PLAIN_PORT=$CMP_PORT
PLAIN_PID=$CMP_PID
PLAIN_LOG=$CMP_LOG
cmp_serve --tls-cert "$WORK/server-ca/server.crt" --tls-key "$WORK/server-ca/server.key"
cmp_client tls STATION-1 -cmd genm -infotype caCerts -tls_used \
    -tls_trusted "$WORK/server-ca/ca.crt" -tls_host 127.0.0.1 ||
    fail "openssl cmp genm over TLS: $(tail -n3 "$WORK/log/cmp-tls.log" | tr '\n' ' ')"
assert_grep "$WORK/log/cmp-tls.log" 'ITAV of type: id-it-caCerts' "genm over TLS"
if cmp_client tls-plain STATION-1 -cmd genm -infotype caCerts; then
    fail "plain HTTP was answered on the TLS port"
fi
cmp_stop
CMP_PORT=$PLAIN_PORT
CMP_PID=$PLAIN_PID
CMP_LOG=$PLAIN_LOG

# ---- one line per request; SIGTERM ends it with 0 -------------------------------------
assert_grep "$CMP_LOG" 'p10cr station=STATION-1 serial=SN-00001 cert_serial=[0-9a-f]* outcome="issued"' \
    "the p10cr log line"
kill -TERM "$CMP_PID"
rc=0
wait "$CMP_PID" || rc=$?
assert_eq "$rc" 0 "ca serve exit status after SIGTERM"

# ---- an older version's CMP signer certificate (no id-kp-cmcCA): replaced at start ----------
# The same key, certified again by the intermediate in the CA token (libp11's engine) with the
# extensions the CMP signer had before: all it lacks is the extended key usage.
engine_conf "$WORK/engine.cnf"
cat >"$WORK/old-signer.ext" <<'EOX'
[old]
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
EOX
openssl x509 -in "$IT_CA_DIR/cmp-signer.crt" -noout -pubkey >"$WORK/signer-pub.pem" ||
    fail "the CMP signer's public key"
OPENSSL_CONF=$WORK/engine.cnf openssl x509 -new -subj "/CN=Old CMP Signer" -days 30 \
    -force_pubkey "$WORK/signer-pub.pem" -extfile "$WORK/old-signer.ext" -extensions old \
    -CA "$IT_CA_DIR/intermediate.crt" -engine pkcs11 -CAkeyform engine \
    -CAkey "pkcs11:token=provisioner-ca;object=intermediate;type=private;pin-value=$CA_PIN_VALUE" \
    -out "$WORK/old-signer.crt" >"$WORK/log/old-signer.log" 2>&1 ||
    fail "openssl x509 -CA (old CMP signer): $(tail -n2 "$WORK/log/old-signer.log" | tr '\n' ' ')"
assert_strict_cert "$WORK/old-signer.crt"
if openssl x509 -in "$WORK/old-signer.crt" -noout -ext extendedKeyUsage |
    grep -q 'CMC Certificate Authority'; then
    fail "the old CMP signer's certificate carries id-kp-cmcCA"
fi
cp "$WORK/old-signer.crt" "$IT_CA_DIR/cmp-signer.crt"
cmp_serve
openssl x509 -in "$IT_CA_DIR/cmp-signer.crt" -noout -ext extendedKeyUsage |
    grep -q 'CMC Certificate Authority' ||
    fail "the old CMP signer's certificate (no id-kp-cmcCA) was kept at start"
assert_strict_cert "$IT_CA_DIR/cmp-signer.crt"
assert_eq "$(sql_q "$IT_CA_DIR/index.sqlite" "SELECT count(*) FROM certificate
    WHERE serial = 'ca:cmp-signer'")" 2 "the CMP signers in the CA index: the first and the new"
cmp_client renewed-signer STATION-1 -cmd genm -infotype caCerts ||
    fail "openssl cmp genm (new CMP signer): $(tail -n3 "$WORK/log/cmp-renewed-signer.log" |
        tr '\n' ' ')"
cmp_stop
