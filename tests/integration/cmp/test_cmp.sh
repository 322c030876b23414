#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The CA service over CMP (doc/ca-service.md) against a client nobody here wrote, `openssl cmp`:
# - p10cr with a CSR made on a SoftHSM2 token (`provisioner csr`), ir with a fresh key, genm;
#   every certificate passes `openssl verify -x509_strict`, and the CA index holds each;
# - refusals, each a CMP error and nothing issued: a station certificate from another CA, a
#   garbage body, an oversized body, a message of a finished transaction sent again;
# - one log line per request; SIGTERM stops the service cleanly.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../batch/batch_lib.sh"
. "$(dirname "$0")/cmp_lib.sh"
it_setup
need sqlite3 curl
batch_ca
cmp_station STATION-1
cmp_serve --max-body 65536
# the CMP signer, made on the first start, is in the CA index and on file
assert_file "$IT_CA_DIR/cmp-signer.crt"
assert_strict_cert "$IT_CA_DIR/cmp-signer.crt"
assert_eq "$(sql_q "$IT_CA_DIR/index.sqlite" "SELECT count(*) FROM certificate
    WHERE serial = 'ca:cmp-signer'")" 1 "the CMP signer in the CA index"
BEFORE=$(cmp_issued)

# ---- p10cr: a CSR whose key is on a SoftHSM2 token ------------------------------------
token_init dev-01
prov 0 csr --serial SN-00001 --device pkcs11:token=dev-01 --out "$WORK/SN-00001.csr"
cmp_client p10cr STATION-1 -cmd p10cr -csr "$WORK/SN-00001.csr" -certout "$WORK/SN-00001.crt" ||
    fail "openssl cmp p10cr: $(tail -n3 "$WORK/log/cmp-p10cr.log" | tr '\n' ' ')"
assert_strict_cert "$WORK/SN-00001.crt"
openssl x509 -in "$WORK/SN-00001.crt" -noout -subject | grep -q 'CN *= *SN-00001' ||
    fail "p10cr: the certificate is not for SN-00001"
assert_eq "$(cmp_issued)" $((BEFORE + 1)) "p10cr: certificates in the CA index"
assert_eq "$(sql_q "$IT_CA_DIR/index.sqlite" "SELECT issued_by || ' ' || status FROM certificate
    WHERE serial = 'SN-00001'")" "cmp:STATION-1 delivered" "p10cr: the index's record"

# ---- ir: a fresh key, the CRMF template ---------------------------------------------
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$WORK/SN-00002.key" \
    2>/dev/null || fail "openssl genpkey"
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
cmp_client genm STATION-1 -cmd genm -infotype signKeyPairTypes ||
    fail "openssl cmp genm: $(tail -n3 "$WORK/log/cmp-genm.log" | tr '\n' ' ')"

# ---- a station certificate from another CA: refused, nothing issued ----------------
mkdir -p "$WORK/stations"
openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 5 \
    -keyout "$WORK/stations/STRANGER.key" -out "$WORK/stations/STRANGER.crt" \
    -subj /CN=STRANGER >/dev/null 2>&1 || fail "openssl req (stranger)"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$WORK/SN-00004.key" \
    2>/dev/null || fail "openssl genpkey"
if cmp_client stranger STRANGER -cmd ir -newkey "$WORK/SN-00004.key" -subject /CN=SN-00004 \
    -certout "$WORK/SN-00004.crt"; then
    fail "a stranger's request was served"
fi
assert_no_file "$WORK/SN-00004.crt"
assert_eq "$(cmp_issued)" $((BEFORE + 2)) "a stranger: nothing issued"

# ---- a replayed message of a finished transaction -----------------------------------
cmp_client record STATION-1 -cmd ir -newkey "$WORK/SN-00004.key" -subject /CN=SN-00004 \
    -certout "$WORK/SN-00004.crt" -reqout "$WORK/ir.der,$WORK/certconf.der" ||
    fail "openssl cmp ir (recorded): $(tail -n3 "$WORK/log/cmp-record.log" | tr '\n' ' ')"
assert_eq "$(cmp_issued)" $((BEFORE + 3)) "recorded ir issued"
for m in ir certconf; do
    code=$(curl -sS -o "$WORK/replay-$m.der" -w '%{http_code}' --data-binary "@$WORK/$m.der" \
        -H 'Content-Type: application/pkixcmp' "http://127.0.0.1:$CMP_PORT/.well-known/cmp") ||
        fail "curl (replay $m)"
    assert_eq "$code" 200 "replayed $m: HTTP status (a CMP answer)"
    # the answer is a PKIMessage whose body is an error (23) or a rejection, never a certificate
    openssl asn1parse -inform DER -in "$WORK/replay-$m.der" >"$WORK/log/replay-$m.txt" 2>&1 ||
        fail "replayed $m: the answer is not DER"
done
assert_eq "$(cmp_issued)" $((BEFORE + 3)) "replays: nothing issued"
assert_grep "$CMP_LOG" 'ir station=[^ ]* serial=- outcome="refused: replay of a finished transaction"' \
    "the replayed ir is logged as refused"
assert_grep "$CMP_LOG" 'certConf .*refused: certConf for a finished transaction' \
    "the replayed certConf is logged as refused"

# ---- garbage and an oversized body ----------------------------------------------------
head -c 300 /dev/urandom >"$WORK/garbage.bin"
code=$(curl -sS -o /dev/null -w '%{http_code}' --data-binary "@$WORK/garbage.bin" \
    -H 'Content-Type: application/pkixcmp' "http://127.0.0.1:$CMP_PORT/.well-known/cmp") ||
    fail "curl (garbage)"
assert_eq "$code" 400 "garbage body: HTTP status"
head -c 200000 /dev/zero >"$WORK/big.bin"
code=$(curl -sS -o /dev/null -w '%{http_code}' --data-binary "@$WORK/big.bin" \
    -H 'Content-Type: application/pkixcmp' "http://127.0.0.1:$CMP_PORT/.well-known/cmp") || true
assert_eq "$code" 413 "oversized body: HTTP status"
code=$(curl -sS -o /dev/null -w '%{http_code}' --data-binary "@$WORK/ir.der" \
    -H 'Content-Type: text/plain' "http://127.0.0.1:$CMP_PORT/.well-known/cmp") || fail "curl"
assert_eq "$code" 415 "wrong Content-Type: HTTP status"
assert_eq "$(cmp_issued)" $((BEFORE + 3)) "bad bodies: nothing issued"
kill -0 "$CMP_PID" || fail "the service died"

# ---- one line per request; SIGTERM ends it with 0 -------------------------------------
assert_grep "$CMP_LOG" 'p10cr station=STATION-1 serial=SN-00001 cert_serial=[0-9a-f]* outcome="issued"' \
    "the p10cr log line"
kill -TERM "$CMP_PID"
rc=0
wait "$CMP_PID" || rc=$?
assert_eq "$rc" 0 "ca serve exit status after SIGTERM"
