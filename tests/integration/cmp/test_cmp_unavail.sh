#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# "CA unavailable" from the first request on (doc/ca-service.md, "The CA token comes and
# goes"), with the CA token behind tests/integration/pkcs11/fault_module.c (FAULT_PULLED):
# (a) the first request that meets a freshly pulled token is answered as the ones after it:
#     CMP systemUnavail (HTTP 200, Retry-After), never an HTTP 500; the same for a genm and
#     for an EST simpleenroll (503); a request answered so and replayed once the CA is back
#     is refused as a replay;
# (b) the tool's own client reports such an answer (unprotected: the CMP signer's key is on
#     the token that is gone) as one line, "CA service unavailable: ...", exit 4: `enroll`
#     when the service is unavailable at the start; in a `batch` the rows in flight fail with
#     that line and the next run, with the token back, finishes the lot, each device once;
# (c) a pkiConf whose protection does not verify (tamper_proxy.py) confirms nothing;
# (d) a refusal whose protection does not verify is not taken for the service's word: the row
#     fails as "unavailable" (resumed by the next run), its text quoted as unverified.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../batch/batch_lib.sh"
. "$(dirname "$0")/cmp_lib.sh"
it_setup
need sqlite3 curl
[ -n "${PROV_FAULT_MODULE:-}" ] || fail "PROV_FAULT_MODULE is not set (run through meson test)"
need_file "$PROV_FAULT_MODULE"
batch_ca
cmp_profiles
CA_CONFIG=$PROVISIONER_CONFIG
INDEX=$IT_CA_DIR/index.sqlite
sed "s|^pkcs11_module = .*|pkcs11_module = $PROV_FAULT_MODULE|" "$CA_CONFIG" >"$WORK/fault.cnf"
cmp_station OSS
prov 0 ca lot add LOT-OSS --count 50 --station OSS

# serve_pulled [ARGS...]: the service over the fault module, the token in
serve_pulled() {
    FAULT_TARGET=$SOFTHSM_MODULE FAULT_PULLED=$WORK/pulled PROVISIONER_CONFIG=$WORK/fault.cnf \
        cmp_serve "$@"
}

# assert_first_unavailable WHAT PATTERN: the service's first request line since the token was
# pulled (log lines from $mark on) is PATTERN and "unavailable"; no HTTP 500 anywhere.
assert_first_unavailable() {
    local first
    first=$(tail -n +"$mark" "$CMP_LOG" | grep -E '^.*127\.0\.0\.1:[0-9]+ [0-9]{3} ' | head -n1)
    printf '%s\n' "$first" | grep -qE -- "$2.*outcome=\"unavailable: the CA token does not answer" ||
        fail "$1: the first request after the pull was not answered \"unavailable\": $first"
    assert_no_grep "$CMP_LOG" '127\.0\.0\.1:[0-9]+ 500 ' "$1: an HTTP 500"
}

# pull: the token out; $mark the first log line after it
pull() {
    mark=$(($(wc -l <"$CMP_LOG") + 1))
    touch "$WORK/pulled"
}

# put_back: the token in, and the service serving again (a genm answered)
put_back() {
    rm -f "$WORK/pulled"
    for _ in $(seq 1 50); do
        sleep 0.2
        cmp_client genm-back OSS -cmd genm && return 0
    done
    fail "the service did not serve again: $(tail -n3 "$CMP_LOG" | tr '\n' ' ')"
}

new_key() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$WORK/$1.key" \
        2>/dev/null || fail "openssl genpkey"
}

# ==== (a) the first request after the pull ==================================================
serve_pulled
new_key K0
cmp_client ok OSS -cmd ir -newkey "$WORK/K0.key" -subject /CN=K0 -certout "$WORK/K0.crt" ||
    fail "ir before the pull: $(tail -n3 "$WORK/log/cmp-ok.log" | tr '\n' ' ')"
before=$(cmp_issued)

# an ir
pull
new_key K1
if cmp_client ir-pulled OSS -cmd ir -newkey "$WORK/K1.key" -subject /CN=K1 \
    -certout "$WORK/K1.crt" -unprotected_errors; then
    fail "ir with the token pulled: a certificate"
fi
assert_grep "$WORK/log/cmp-ir-pulled.log" 'systemUnavail' "ir: openssl cmp got systemUnavail"
assert_first_unavailable ir '200 ir station=- '
cmp_client ir-pulled-2 OSS -cmd ir -newkey "$WORK/K1.key" -subject /CN=K1 \
    -certout "$WORK/K1.crt" -unprotected_errors -reqout "$WORK/ir-pulled-2.der" || true
assert_grep "$WORK/log/cmp-ir-pulled-2.log" 'systemUnavail' "ir again: systemUnavail"
put_back
# that request, answered "unavailable", replayed once the CA is back: refused, nothing issued
assert_file "$WORK/ir-pulled-2.der"
curl -sS -o "$WORK/ir-replay.rsp" -H 'Content-Type: application/pkixcmp' \
    --data-binary "@$WORK/ir-pulled-2.der" "http://127.0.0.1:$CMP_PORT/.well-known/cmp" ||
    fail "curl: the replay"
assert_grep "$CMP_LOG" '200 ir station=.*outcome="refused: replay of a finished transaction' \
    "an ir answered unavailable, replayed: refused"
assert_eq "$(cmp_issued)" "$before" "the replay: nothing issued"
# and it is in the CA index too (written when the CA came back): a restart does not forget it
tid=$(python3 - "$WORK/ir-pulled-2.der" <<'PY'
import sys
der = open(sys.argv[1], "rb").read()
def tlv(at):
    tag, n = der[at], der[at + 1]
    at += 2
    if n & 0x80:
        k = n & 0x7F
        n, at = int.from_bytes(der[at:at + k], "big"), at + k
    return tag, at, at + n
_, at, _ = tlv(0)            # PKIMessage
_, at, end = tlv(at)         # PKIHeader
i = 0
while at < end:
    tag, start, stop = tlv(at)
    if i >= 3 and tag == 0xA4:  # after pvno, sender, recipient: transactionID [4] OCTET STRING
        _, v, w = tlv(start)
        print(der[v:w].hex())
    at, i = stop, i + 1
PY
)
[ -n "$tid" ] || fail "no transactionID in the captured request"
assert_eq "$(sql_q "$INDEX" "SELECT count(*) FROM cmp_transaction WHERE lower(id) = '$tid'")" 1 \
    "the transaction answered unavailable, remembered in the CA index"

# a genm
pull
cmp_client genm-pulled OSS -cmd genm -unprotected_errors || true
assert_grep "$WORK/log/cmp-genm-pulled.log" 'unavailable' "genm: openssl cmp got \"unavailable\""
assert_first_unavailable genm '200 genm '
put_back

# an EST simpleenroll (over TLS): 503 with Retry-After
stop_pid "$CMP_PID"
serve_pulled --tls-cert "$WORK/server-ca/server.crt" --tls-key "$WORK/server-ca/server.key"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/E1.key" \
    -subj /CN=E1 -outform DER -out "$WORK/E1.der" 2>/dev/null || fail "openssl req E1"
base64 "$WORK/E1.der" >"$WORK/E1.b64"
pull
code=$(curl -sS -o "$WORK/est-pulled.body" -D "$WORK/est-pulled.hdr" -w '%{http_code}' \
    --cacert "$WORK/server-ca/ca.crt" --cert "$WORK/stations/OSS.crt" \
    --key "$WORK/stations/OSS.key" -H 'Content-Type: application/pkcs10' \
    --data-binary "@$WORK/E1.b64" "https://127.0.0.1:$CMP_PORT/.well-known/est/simpleenroll")
assert_eq "$code" 503 "EST simpleenroll with the token just pulled"
assert_grep "$WORK/est-pulled.hdr" '^Retry-After: 1' "EST: Retry-After"
assert_first_unavailable est '503 est '
rm -f "$WORK/pulled"
assert_eq "$(cmp_issued)" "$before" "nothing issued while the token was out"
stop_pid "$CMP_PID"

# ==== (b) the tool's own client =============================================================
token_init id-S1
prov 0 csr --serial S1 --device pkcs11:token=id-S1 --profile station --out "$WORK/S1.csr"
prov 0 ca station add S1 --csr "$WORK/S1.csr" --out "$WORK/S1.pem"
prov 0 ca lot add LOT-S1 --count 100 --station S1
serve_pulled
station_dir "$WORK/S1.pem" "cmp://127.0.0.1:$CMP_PORT/.well-known/cmp" id-S1 S1
cd "$WORK/station" || fail "cd $WORK/station"
export PROVISIONER_CONFIG=$WORK/station/provisioner.cnf

# unavailable at the start: exit 4, one line, nothing on the device
token_init dev-e
pull
prov 4 enroll --serial SN-E-1 --device pkcs11:token=dev-e
assert_one_error "CA service unavailable: cmp://127.0.0.1:$CMP_PORT/.well-known/cmp" \
    "genm caCerts" "unverified" "the CA token does not answer"
assert_no_grep "$PROV_ERR" 'missing protection' "enroll: the reason, not the missing protection"
assert_no_file devices/SN-E-1
put_back

# a batch with the token pulled under it: the rows in flight fail with the line
make_lot lot.csv 2 10
(PROVISIONER_CONFIG=$WORK/station/provisioner.cnf "$PROVISIONER" batch lot.csv --no-progress \
    >"$WORK/log/batch-1.out" 2>"$WORK/log/batch-1.err") &
batch=$!
it_track "$batch"
for _ in $(seq 1 400); do
    [ "$(sql_q "$INDEX" "SELECT count(*) FROM certificate WHERE issued_by = 'cmp:S1'")" -ge 2 ] &&
        break
    sleep 0.05
done
pull
rc=0
wait "$batch" || rc=$?
assert_eq "$rc" 1 "the batch with the token pulled under it"
assert_grep "$WORK/log/batch-1.err" "lot.csv:[0-9]+: CA service unavailable: cmp://127\.0\.0\.1:$CMP_PORT/.*the CA token does not answer" \
    "the failed rows name the service unavailable"
assert_no_grep "$WORK/log/batch-1.err" 'missing protection' "the rows' reason"
put_back
prov 0 batch lot.csv --no-progress
for d in devices/SN-*; do
    assert_strict_cert "$d/client.crt"
done
assert_eq "$(sql_q "$INDEX" "SELECT count(*) FROM certificate WHERE serial LIKE 'SN-000%'")" 20 \
    "the lot's certificates in the CA index"
assert_eq "$(sql_q "$INDEX" "SELECT count(*) FROM (SELECT serial FROM certificate
    WHERE serial LIKE 'SN-000%' GROUP BY serial HAVING count(*) > 1)")" 0 "serials certified twice"

# (c) a pkiConf whose protection does not verify (spoiled by a proxy on the way) confirms
# nothing: the station's batch row fails (nothing stored, the key kept), and the next run
# through the service itself gets the same certificate for that key
python3 "$PROV_SOURCE_ROOT/tests/integration/cmp/tamper_proxy.py" "$WORK/tamper.port" "$CMP_PORT" \
    "$WORK/tamper.marks" >"$WORK/log/tamper.log" 2>&1 &
it_track $!
for _ in $(seq 1 200); do [ -s "$WORK/tamper.port" ] && break; sleep 0.05; done
[ -s "$WORK/tamper.port" ] || fail "the tampering proxy did not start: $(cat "$WORK/log/tamper.log")"
sed -i "s|^url = .*|url = cmp://127.0.0.1:$(cat "$WORK/tamper.port")/.well-known/cmp|" provisioner.cnf
token_init dev-t
printf 'serial,device\nSN-T-1,pkcs11:token=dev-t\n' >lot-t.csv
rc=0
"$PROVISIONER" batch lot-t.csv --no-progress >"$WORK/log/tamper.out" 2>"$WORK/log/tamper.err" ||
    rc=$?
assert_file "$WORK/tamper.marks"
assert_eq "$rc" 1 "a batch whose pkiConf does not verify"
assert_grep "$WORK/log/tamper.err" 'lot-t.csv:2: CA service unavailable: .*certificate of SN-T-1' \
    "the row names the unverified answer"
assert_no_file devices/SN-T-1/client.crt
assert_eq "$(sql_q "$INDEX" "SELECT count(*) FROM certificate WHERE serial = 'SN-T-1'")" 1 \
    "the spoiled confirmation: one certificate (the service did get the certConf)"
T1=$(sql_q "$INDEX" "SELECT cert_serial FROM certificate WHERE serial = 'SN-T-1'")
sed -i "s|^url = .*|url = cmp://127.0.0.1:$CMP_PORT/.well-known/cmp|" provisioner.cnf
prov 0 batch lot-t.csv --no-progress
assert_eq "$(openssl x509 -in devices/SN-T-1/client.crt -noout -serial | cut -d= -f2 | tr A-F a-f)" \
    "$T1" "the next run (the same key kept): the same certificate"
assert_eq "$(sql_q "$INDEX" "SELECT count(*) FROM certificate WHERE serial = 'SN-T-1'")" 1 \
    "the next run: still one certificate"

# (d) a refusal (the lot's cap reached) whose protection is spoiled on the way: unverified, so
# the station reports the service as unavailable, not as having refused; through the service
# itself the same row is the lot's refusal
PROVISIONER_CONFIG=$CA_CONFIG prov 0 ca lot add LOT-FULL --count 1 --station S1
python3 "$PROV_SOURCE_ROOT/tests/integration/cmp/tamper_proxy.py" "$WORK/refusal.port" "$CMP_PORT" \
    "$WORK/refusal.marks" "is reached" >"$WORK/log/refusal-proxy.log" 2>&1 &
it_track $!
for _ in $(seq 1 200); do [ -s "$WORK/refusal.port" ] && break; sleep 0.05; done
[ -s "$WORK/refusal.port" ] || fail "the tampering proxy did not start: $(cat "$WORK/log/refusal-proxy.log")"
sed -i "s|^url = .*|url = cmp://127.0.0.1:$(cat "$WORK/refusal.port")/.well-known/cmp/p/LOT-FULL|" \
    provisioner.cnf
token_init dev-f
printf 'serial,device\nSN-F-1,pkcs11:token=dev-f\nSN-F-2,pkcs11:token=dev-f\n' >lot-f.csv
rc=0
# --jobs 1: the rows in order, so that the second is the one that meets the cap (two workers
# would send both at once: either could)
"$PROVISIONER" batch lot-f.csv --no-progress --jobs 1 >"$WORK/log/refusal.out" \
    2>"$WORK/log/refusal.err" || rc=$?
assert_eq "$rc" 1 "a batch whose second row meets the cap"
assert_grep "$WORK/refusal.marks" "spoiled" "the proxy spoiled the refusal"
assert_file devices/SN-F-1/client.crt
assert_grep "$WORK/log/refusal.err" \
    'lot-f.csv:3: CA service unavailable: .*without a protection that verifies.*unverified: .*is reached' \
    "the spoiled refusal is reported as unverified"
assert_no_grep "$WORK/log/refusal.err" 'refused' "the spoiled refusal taken for the service's word"
sed -i "s|^url = .*|url = cmp://127.0.0.1:$CMP_PORT/.well-known/cmp/p/LOT-FULL|" provisioner.cnf
rc=0
"$PROVISIONER" batch lot-f.csv --no-progress --jobs 1 >"$WORK/log/refusal2.out" \
    2>"$WORK/log/refusal2.err" || rc=$?
assert_eq "$rc" 1 "the same batch through the service itself"
assert_grep "$WORK/log/refusal2.err" "lot-f.csv:3: CA service .* refused .*LOT-FULL: its cap \\(1\\) is reached" \
    "the service's own refusal"
assert_no_file devices/SN-F-2/client.crt
cmp_stop
