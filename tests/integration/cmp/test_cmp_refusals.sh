#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Refusals of the CA service (doc/ca-service.md, "Who may ask") against `openssl cmp`, each
# a CMP error from the service, one more 'refuse' record in the CA index's audit table and
# nothing issued (the index's certificates counted before and after):
# - an unprotected request (-unprotected_requests);
# - a message signed by the wrong key: a station's request whose protection was altered
#   after signing (openssl cmp itself refuses -cert of one station with -key of another);
# - a CSR that fails policy: p10cr with an RSA 2048 and with a P-384 key where the profile
#   allows ec-p256 only;
# - an expired station: its certificate (30 days) presented to `ca serve` running 40 days
#   ahead under libfaketime (package faketime); the log line and the audit record name the
#   station the message claims to be (read from its extraCerts, unverified) and why its
#   certificate does not do;
# - a replayed message of a finished transaction after the service restarted (the ir and
#   certConf openssl cmp wrote with -reqout, sent again with curl): the CA index remembers
#   the transaction (and prunes what has expired); also when the service stopped right after
#   the certificate reached the index (the transactionID is remembered in that transaction).
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../batch/batch_lib.sh"
. "$(dirname "$0")/cmp_lib.sh"
it_setup
need sqlite3 dpkg python3
batch_ca
cmp_profiles
# the device profile admits its own key type only (allowed_keys defaults to all four;
# doc/provisioner.cnf.5.scd)
sed -i 's/^\[profile_device\]$/&\nallowed_keys = ec-p256/' "$PROVISIONER_CONFIG"
cmp_station ST-1
cmp_station ST-2
prov 0 ca lot add LOT-A --count 20 --station ST-1 --station ST-2
IX=$IT_CA_DIR/index.sqlite
# PROVISIONER_DEBUG=service: a line each time the service looks at the CA token after a request
cmp_serve PROVISIONER_DEBUG=service

refusals() { sql_q "$IX" "SELECT count(*) FROM audit WHERE event = 'refuse'"; }

# refused NAME REASON STATION ARGS...: openssl cmp as STATION fails; the service answered a
# CMP error (its error message in the client's log) naming REASON; one more refusal in the
# audit table; nothing issued.
refused() {
    local name=$1 why=$2 st=$3 before audit
    shift 3
    before=$(cmp_issued)
    audit=$(refusals)
    rm -f "$WORK/$name.crt"
    if cmp_client "$name" "$st" -certout "$WORK/$name.crt" "$@"; then
        fail "$name: a certificate was issued"
    fi
    assert_grep "$WORK/log/cmp-$name.log" "$why" "$name: the CMP error names the reason"
    assert_no_file "$WORK/$name.crt"
    assert_eq "$(cmp_issued)" "$before" "$name: nothing issued"
    assert_eq "$(refusals)" $((audit + 1)) "$name: an audit record"
}

# new_key NAME [ALGORITHM OPTIONS...]: a key in $WORK/NAME.key (default P-256)
new_key() {
    local n=$1
    shift
    [ $# -gt 0 ] || set -- EC -pkeyopt ec_paramgen_curve:P-256
    openssl genpkey -algorithm "$@" -out "$WORK/$n.key" 2>/dev/null || fail "openssl genpkey"
}

# the service issues to a station that asks properly (the refusals below are not blanket)
new_key OK-1
cmp_client ok ST-1 -cmd ir -newkey "$WORK/OK-1.key" -subject /CN=OK-1 -certout "$WORK/OK-1.crt" ||
    fail "ir: $(tail -n3 "$WORK/log/cmp-ok.log" | tr '\n' ' ')"
assert_strict_cert "$WORK/OK-1.crt"

# ---- an unprotected request ----------------------------------------------------------------
new_key UNPROT
refused unprotected 'StatusString: "missing protection"' ST-1 -cmd ir -newkey "$WORK/UNPROT.key" \
    -subject /CN=UNPROT -unprotected_requests
assert_grep "$CMP_LOG" 'outcome="refused: the message does not verify' "unprotected: the log line"

# ---- a message signed by the wrong key -----------------------------------------------------
new_key WRONG
cmp_forged_ir ST-1 WRONG "$WORK/wrong.der"
refused wrong-key 'PKIStatus: rejection' ST-1 -cmd ir -newkey "$WORK/WRONG.key" \
    -subject /CN=WRONG -reqin "$WORK/wrong.der"
assert_grep "$CMP_LOG" 'ir station=- serial=- outcome="refused: the message does not verify' \
    "wrong key: the log line"

# ---- a CSR that fails policy: the profile allows ec-p256 only ------------------------------
for kt in RSA-2048 P-384; do
    case "$kt" in
    RSA-2048) new_key "$kt" RSA -pkeyopt rsa_keygen_bits:2048 ;;
    P-384) new_key "$kt" EC -pkeyopt ec_paramgen_curve:P-384 ;;
    esac
    openssl req -new -key "$WORK/$kt.key" -subj "/O=Batch Test/CN=$kt" -out "$WORK/$kt.csr" \
        2>/dev/null || fail "openssl req ($kt)"
    refused "policy-$kt" 'PKIFailureInfo: badCertTemplate' ST-1 -cmd p10cr -csr "$WORK/$kt.csr"
    assert_grep "$CMP_LOG" "p10cr station=ST-1 serial=$kt outcome=\"refused: .*key" \
        "policy $kt: the log line"
done

# a refusal the service answered (signed by the CMP signer, on the CA token) says nothing of
# the token: the service does not look at it for any of those (doc/ca-service.md, "The CA
# token comes and goes"); a flood of refusals would otherwise hold the event loop
assert_eq "$(grep -c 'looking at the CA token' "$CMP_LOG")" 0 \
    "no look at the CA token after the refusals"

# ---- a replayed message of a finished transaction, after the service restarted ------------
# the ir and certConf as openssl cmp sent them (-reqout), the transaction finished; the CA
# index remembers its ID (ca_replay.c), and drops what has expired: a row planted with a
# time long over is gone after the next transaction
sql_q "$IX" "INSERT INTO cmp_transaction(id, seen_at, expires_at) VALUES ('00', 0, 1)"
new_key REPLAY
cmp_client replay-first ST-1 -cmd ir -newkey "$WORK/REPLAY.key" -subject /CN=REPLAY \
    -certout "$WORK/REPLAY.crt" -reqout "$WORK/replay-ir.der,$WORK/replay-cc.der" ||
    fail "replay: the first ir: $(tail -n3 "$WORK/log/cmp-replay-first.log" | tr '\n' ' ')"
assert_strict_cert "$WORK/REPLAY.crt"
assert_file "$WORK/replay-ir.der" "$WORK/replay-cc.der"
assert_eq "$(sql_q "$IX" "SELECT count(*) FROM cmp_transaction WHERE id = '00'")" 0 \
    "replay: an expired transaction pruned"
cmp_stop
cmp_serve
for m in ir cc; do
    before=$(cmp_issued)
    audit=$(refusals)
    code=$(curl -sS -o "$WORK/replay-$m.answer" -w '%{http_code}' \
        -H 'Content-Type: application/pkixcmp' --data-binary "@$WORK/replay-$m.der" \
        "http://127.0.0.1:$CMP_PORT/.well-known/cmp") || fail "replay $m: curl"
    assert_eq "$code" 200 "replay $m: a CMP answer"
    assert_eq "$(cmp_issued)" "$before" "replay $m: nothing issued"
    assert_eq "$(refusals)" $((audit + 1)) "replay $m: an audit record"
done
grep -aqF 'replay of a finished transaction' "$WORK/replay-ir.answer" ||
    fail "replay ir: the CMP answer does not name the replay"
assert_grep "$CMP_LOG" 'ir station=- serial=- outcome="refused: replay of a finished transaction \(remembered in the CA index\)"' \
    "replay ir: the log line"
assert_grep "$CMP_LOG" 'certConf station=- serial=- outcome="refused: certConf for an unknown transaction"' \
    "replay certConf: the log line"
assert_eq "$(sql_q "$IX" "SELECT count(*) FROM certificate WHERE serial = 'REPLAY'")" 1 \
    "replay: one certificate for the device"
cmp_stop

# ---- the same, when the service stopped right after the certificate reached the index -------
# (the crash hook ca-issued:1, provisioner/pki/ca_index.c): the transactionID is remembered in
# the issuance's own transaction, so the ir sent again once the service is back is a replay,
# refused, and not answered as a retry of a new transaction
PROVISIONER_TEST_CRASH_AT=ca-issued:1 cmp_serve
new_key CRASHED
before=$(cmp_issued)
cmp_client crashed ST-1 -cmd ir -newkey "$WORK/CRASHED.key" -subject /CN=CRASHED \
    -certout "$WORK/CRASHED.crt" -reqout "$WORK/crashed-ir.der" &&
    fail "crashed: openssl cmp got an answer"
for ((i = 0; i < 100; i++)); do
    kill -0 "$CMP_PID" 2>/dev/null || break
    sleep 0.1
done
kill -0 "$CMP_PID" 2>/dev/null &&
    fail "crashed: the service still runs: $(tail -n3 "$WORK/log/cmp-crashed.log" | tr '\n' ' ')"
rc=0
wait "$CMP_PID" || rc=$?
assert_eq "$rc" 137 "crashed: the service stopped at the crash hook"
assert_eq "$(cmp_issued)" $((before + 1)) "crashed: the certificate is in the index"
assert_file "$WORK/crashed-ir.der"
cmp_serve
audit=$(refusals)
code=$(curl -sS -o "$WORK/crashed-ir.answer" -w '%{http_code}' \
    -H 'Content-Type: application/pkixcmp' --data-binary "@$WORK/crashed-ir.der" \
    "http://127.0.0.1:$CMP_PORT/.well-known/cmp") || fail "crashed ir again: curl"
assert_eq "$code" 200 "crashed ir again: a CMP answer"
grep -aqF 'replay of a finished transaction' "$WORK/crashed-ir.answer" ||
    fail "crashed ir again: not refused as a replay: $(tail -n1 "$CMP_LOG")"
assert_eq "$(refusals)" $((audit + 1)) "crashed ir again: an audit record"
assert_eq "$(cmp_issued)" $((before + 1)) "crashed ir again: nothing issued"
cmp_stop

# ---- an expired station: the service 40 days ahead, past ST-2's 30 days ----------------------
openssl x509 -in "$WORK/stations/ST-2.crt" -noout -checkend $((40 * 86400)) >/dev/null &&
    fail "ST-2's certificate would still be valid in 40 days"
# libfaketime preloaded into the service itself (not the faketime wrapper, which would take
# the SIGTERM cmp_stop sends in its stead)
FAKETIME_LIB=$(dpkg -L libfaketime 2>/dev/null | grep '/libfaketime\.so\.1$' | head -n1)
[ -f "$FAKETIME_LIB" ] || fail "libfaketime.so.1 not found (package libfaketime, scripts/deps.sh)"
# (in the sanitizer build ASan must otherwise be the first library: it checks, and refuses a
# preload before it; the order does not matter to what it finds)
cmp_serve "ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0" \
    "LD_PRELOAD=$FAKETIME_LIB" FAKETIME=+40d
new_key EXPIRED
# the answer says so (not OpenSSL's "no suitable sender cert"), with what the operator does
refused expired 'StatusString: "the protection certificate of ST-2 \(serial [0-9a-f]+\) expired on .* GMT: a station renews it on the CA host \(ca station renew ST-2\)"' \
    ST-2 -cmd ir -newkey "$WORK/EXPIRED.key" -subject /CN=EXPIRED
assert_grep "$CMP_LOG" 'ir station=- serial=- outcome="refused: the message does not verify.*claimed station ST-2, certificate [0-9a-f]+: certificate has expired' \
    "expired: the log line names the claimed station"
# the audit record names the station the message claims (OpenSSL drops the expired
# certificate before the service's own check; the name is read from extraCerts, unverified)
ST2_SERIAL=$(openssl x509 -in "$WORK/stations/ST-2.crt" -noout -serial | sed 's/^serial=//' |
    tr 'A-F' 'a-f')
assert_eq "$(sql_q "$IX" "SELECT count(*) FROM audit WHERE event = 'refuse' AND serial = 'ir'
    AND detail LIKE '%claimed station ST-2, certificate $ST2_SERIAL: certificate has expired%'
    AND seq = (SELECT max(seq) FROM audit)")" 1 "expired: the audit record names the claimed station"
cmp_stop
