#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# CMP requests answered by several workers at once (`ca serve --workers`, doc/ca-service.md
# "Workers"), the CA token slowed (pkcs11/latency_module.c, 300 ms a signature) so that
# requests are held while others arrive:
# - four stations' `openssl cmp` clients at once: /status shows more than one request being
#   answered at the same time, and the CA token (modelled as a network HSM that serves its
#   sessions at once) signed for two workers at once; every certificate issued once,
#   confirmed, each to its station;
# - the CA key signed for the four at once (the CA index's write lock is taken for the rules
#   and the record only, provisioner/pki/issue.h is_signed_unlocked; PROVISIONER_DEBUG=ca);
# - a lot of 2 asked by four stations at once: two certificates, two refusals (the cap is
#   checked when a request is admitted and again inside the issuing transaction,
#   provisioner/pki/ca_index.c, which it-cmp-pair shows for two hosts; a request admitted
#   before the others were recorded is signed, then refused there, its certificate thrown
#   away with a 'discard' audit record);
# - one device's ir from two transactions at once (the same key and serial): one certificate,
#   the later transaction answered as a retry with it;
# - one `ir` sent twice at once (the same bytes, two curl): one transaction, one certificate,
#   the other copy refused as a transactionID in use, with an audit record;
# - SIGHUP while a worker holds a request: the configuration is reloaded at once (the request
#   keeps the configuration it began with; a genm held by a 2 s signature is still held
#   when the reload is logged);
# - four EST simpleenroll at once over TLS: the workers answer them together (the CA key
#   signs for two or more at once), each with its certificate;
# - 24 requests at once on one worker: past 16 queued, 503 with Retry-After, the rest
#   answered;
# - the same with a CA token that opens no more sessions (pkcs11/fault_module.c
#   FAULT_MAX_SESSIONS): the workers' signatures wait for the one it has, and all succeed;
# - a station's own batch at --jobs 2 on one device token (factory/batch.c's second worker):
#   its two workers' requests are held by the service at once (the station's CMP client
#   sends them together: its key's token signs for two threads, provisioner/remote/
#   issuer_cmp.c), and the lot completes;
# - --workers outside 1 to 64: a usage error (exit 2), nothing started.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../batch/batch_lib.sh"
. "$(dirname "$0")/cmp_lib.sh"
. "$(dirname "$0")/../est/est_lib.sh"
it_setup
need sqlite3 python3 curl
batch_ca
cmp_profiles
IX=$IT_CA_DIR/index.sqlite
for s in P-1 P-2 P-3 P-4; do
    cmp_station "$s"
done
prov 0 ca lot add LOT-P --count 20 --station P-1 --station P-2 --station P-3 --station P-4

prov 2 ca serve --workers 0
assert_one_error '--workers 0: not 1 to 64'
prov 2 ca serve --workers 65
assert_one_error '--workers 65: not 1 to 64'

sed "s|^pkcs11_module = .*|pkcs11_module = $PROV_LATENCY_MODULE|" "$PROVISIONER_CONFIG" \
    >"$WORK/slow.cnf"
# the CA token a network HSM that serves sessions at once (LATENCY_PARALLEL); its stats line
# says how many signatures it had at once
PROVISIONER_CONFIG=$WORK/slow.cnf cmp_serve PROVISIONER_DEBUG=ca LATENCY_TARGET="$SOFTHSM_MODULE" \
    LATENCY_SIGN_MS=300 LATENCY_TOKENS=provisioner-ca LATENCY_PARALLEL=1 \
    LATENCY_STATS="$WORK/latency-serve.txt" --workers 4

# answering: the requests the workers hold now (GET /status)
answering() {
    curl -sS "http://127.0.0.1:$CMP_PORT/status" >"$WORK/status.json" ||
        fail "GET /status failed"
    python3 -c 'import json, sys; s = json.load(open(sys.argv[1])); print(s["answering"])' \
        "$WORK/status.json"
}
# watch_answering N PID: polls /status until the workers hold N requests at once, PID has
# ended or 20 s have passed; the most seen into most
watch_answering() {
    local n
    most=0
    for _ in $(seq 1 1000); do
        n=$(answering)
        [ "$n" -gt "$most" ] && most=$n
        [ "$most" -ge "$1" ] && return 0
        kill -0 "$2" 2>/dev/null || return 0
        sleep 0.02
    done
}
python3 -c 'import json, sys; s = json.load(open(sys.argv[1])); assert s["workers"] == 4, s' \
    <(curl -sS "http://127.0.0.1:$CMP_PORT/status") || fail "/status: not 4 workers"
assert_eq "$(answering)" 0 "nothing answered before the clients start"

# four_clients PREFIX [ARGS...]: stations P-1..P-4 each start an ir (openssl cmp with ARGS, in
# the background) for device PREFIX-<station>; their PIDs in pids. four_done PREFIX: each
# exited 0, its certificate passes openssl verify -x509_strict.
four_clients() {
    local s p=$1
    shift
    pids=()
    for s in P-1 P-2 P-3 P-4; do
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$WORK/$p-$s.key" \
            2>/dev/null || fail "openssl genpkey"
        cmp_client "$p-$s" "$s" -cmd ir -newkey "$WORK/$p-$s.key" -subject "/CN=$p-$s" \
            -certout "$WORK/$p-$s.crt" "$@" &
        pids+=($!)
    done
}
four_done() {
    local s i=0
    for s in P-1 P-2 P-3 P-4; do
        wait "${pids[$i]}" || fail "client $1-$s: $(tail -n3 "$WORK/log/cmp-$1-$s.log" | tr '\n' ' ')"
        assert_strict_cert "$WORK/$1-$s.crt"
        i=$((i + 1))
    done
}

# ---- four stations at once -----------------------------------------------------------------
four_clients SN
watch_answering 2 "${pids[3]}"
four_done SN
[ "$most" -ge 2 ] || fail "never more than $most request(s) answered at once"
for s in P-1 P-2 P-3 P-4; do
    assert_eq "$(sql_q "$IX" "SELECT count(*) || ' ' || min(status) || ' ' || min(issued_by)
        FROM certificate WHERE serial = 'SN-$s'")" "1 delivered cmp:$s" "SN-$s: once, to $s"
    assert_grep "$CMP_LOG" "certConf station=$s serial=SN-$s outcome=\"confirmed\"" \
        "SN-$s: confirmed in its own transaction"
done
assert_eq "$(answering)" 0 "nothing held once the clients are done"
# the CA key signed for two requests at once: the CA index is locked for the rules and the
# record only, not across the signature (provisioner/pki/issue.c; PROVISIONER_DEBUG=ca)
signing_at_once=$(grep -E 'debug: serial SN-P-[1-4]: (signing|signed)$' "$CMP_LOG" |
    awk '/signing$/ { n++; if (n > m) m = n } /signed$/ { n-- } END { print m + 0 }')
[ "$signing_at_once" -ge 2 ] ||
    fail "the CA key signed for $signing_at_once request(s) at a time, not two at once"

# ---- a lot's cap with requests at once: the cap holds ------------------------------------------
prov 0 ca lot add LOT-Q --count 2 --station P-1 --station P-2 --station P-3 --station P-4
four_clients CAP -path /.well-known/cmp/p/LOT-Q
ok=0
for p in "${pids[@]}"; do
    wait "$p" && ok=$((ok + 1))
done
assert_eq "$ok" 2 "two of four clients served by a lot of 2"
assert_eq "$(sql_q "$IX" "SELECT count(*) FROM certificate WHERE lot = 'LOT-Q'")" 2 \
    "the lot's cap held with requests at once"
assert_eq "$(grep -c 'outcome="refused: .*cap (2) is reached' "$CMP_LOG")" 2 "two refused on the cap"
# a request admitted before the others were recorded was signed, then refused by the cap
# inside the issuing transaction: its certificate thrown away unsent, an audit record each
discarded=$(grep -c 'debug: serial CAP-P-[1-4]: signed, then refused: lot LOT-Q: its cap (2) is reached' \
    "$CMP_LOG" || true)
assert_eq "$(sql_q "$IX" "SELECT count(*) FROM audit WHERE event = 'discard' AND serial LIKE 'CAP-P-%'
    AND detail LIKE '%cap (2) is reached%' AND cert_serial NOT IN (SELECT cert_serial FROM certificate)")" \
    "$discarded" "a 'discard' audit record for each certificate signed and refused, none issued"

# ---- one device's request from two transactions at once: one certificate, both get it -------
# (a station that timed out and asked again while the service was still signing): the later
# one is signed too, then finds the key certified for it and is answered as a retry
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$WORK/AGAIN.key" \
    2>/dev/null || fail "openssl genpkey"
for c in 1 2; do
    cmp_client "again-$c" P-1 -cmd ir -newkey "$WORK/AGAIN.key" -subject /CN=AGAIN \
        -certout "$WORK/AGAIN-$c.crt" &
    pids[$c]=$!
done
wait "${pids[1]}" || fail "again 1: $(tail -n3 "$WORK/log/cmp-again-1.log" | tr '\n' ' ')"
wait "${pids[2]}" || fail "again 2: $(tail -n3 "$WORK/log/cmp-again-2.log" | tr '\n' ' ')"
cmp -s "$WORK/AGAIN-1.crt" "$WORK/AGAIN-2.crt" || fail "AGAIN: two different certificates"
assert_eq "$(sql_q "$IX" "SELECT count(*) || ' ' || min(status) FROM certificate WHERE serial = 'AGAIN'")" \
    "1 delivered" "AGAIN: one certificate"
assert_eq "$(grep -c ' ir station=P-1 serial=AGAIN .*outcome="issued before (a retry)"' "$CMP_LOG")" 1 \
    "AGAIN: the later transaction answered as a retry"

# ---- one ir, twice at once -------------------------------------------------------------------
# written (-reqout) without a service to answer it (port 1), then sent twice by curl
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$WORK/TWICE.key" \
    2>/dev/null || fail "openssl genpkey"
openssl cmp -server 127.0.0.1:1 -path /.well-known/cmp -cert "$WORK/stations/P-1.crt" \
    -key "$WORK/stations/P-1.key" -trusted "$IT_CA_DIR/root.crt" -msg_timeout 1 \
    -total_timeout 2 -cmd ir -newkey "$WORK/TWICE.key" -subject /CN=TWICE \
    -certout "$WORK/unused.crt" -reqout "$WORK/twice.der" >"$WORK/log/cmp-write-twice.log" 2>&1 ||
    true
assert_file "$WORK/twice.der"
audit=$(sql_q "$IX" "SELECT count(*) FROM audit WHERE event = 'refuse'")
for c in 1 2; do
    curl -sS -o "$WORK/twice-$c.answer" -w '%{http_code}' -H 'Content-Type: application/pkixcmp' \
        --data-binary "@$WORK/twice.der" "http://127.0.0.1:$CMP_PORT/.well-known/cmp" \
        >"$WORK/twice-$c.code" 2>"$WORK/log/twice-$c.err" &
    pids[$c]=$!
done
wait "${pids[1]}" || fail "curl 1: $(cat "$WORK/log/twice-1.err")"
wait "${pids[2]}" || fail "curl 2: $(cat "$WORK/log/twice-2.err")"
assert_eq "$(cat "$WORK/twice-1.code") $(cat "$WORK/twice-2.code")" "200 200" "two CMP answers"
assert_eq "$(sql_q "$IX" "SELECT count(*) FROM certificate WHERE serial = 'TWICE'")" 1 \
    "one certificate for the ir sent twice"
assert_eq "$(grep -c ' ir station=P-1 serial=TWICE .*outcome="issued"' "$CMP_LOG")" 1 \
    "one copy issued"
assert_eq "$(grep -cE ' ir station=- serial=- outcome="refused: (transactionID already used|replay of a finished transaction)' "$CMP_LOG")" 1 \
    "the other copy refused"
assert_eq "$(sql_q "$IX" "SELECT count(*) FROM audit WHERE event = 'refuse'")" \
    $((audit + 1)) "the refusal has its audit record"
cmp_stop
# the workers signed on the CA token at once, each on a session of its own (struct p11_dev)
assert_file "$WORK/latency-serve.txt"
at_once=$(sed -n 's/.* max_at_once=\([0-9]*\)$/\1/p' "$WORK/latency-serve.txt" | tail -n1)
[ "${at_once:-0}" -ge 2 ] ||
    fail "the CA token never signed for two workers at once: $(cat "$WORK/latency-serve.txt")"

# ---- EST enrollments answered by the workers at once --------------------------------------
# four stations' simpleenroll at once over TLS, the CA token slowed: the workers hold them
# together (the CA key signs for two or more at once), each answered with its certificate
PROVISIONER_CONFIG=$WORK/slow.cnf cmp_serve PROVISIONER_DEBUG=ca LATENCY_TARGET="$SOFTHSM_MODULE" \
    LATENCY_SIGN_MS=300 LATENCY_TOKENS=provisioner-ca LATENCY_PARALLEL=1 --workers 4 \
    --tls-cert "$WORK/server-ca/server.crt" --tls-key "$WORK/server-ca/server.key"
EST=https://127.0.0.1:$CMP_PORT/.well-known/est
pids=()
for s in P-1 P-2 P-3 P-4; do
    csr_b64 "EST-$s"
    curl -sS --cacert "$WORK/server-ca/ca.crt" --cert "$WORK/stations/$s.crt" \
        --key "$WORK/stations/$s.key" -H 'Content-Type: application/pkcs10' \
        --data-binary "@$WORK/EST-$s.b64" -o "$WORK/est-EST-$s.out" -w '%{http_code}' \
        "$EST/simpleenroll" >"$WORK/EST-$s.code" 2>"$WORK/log/curl-EST-$s.err" &
    pids+=($!)
done
i=0
for s in P-1 P-2 P-3 P-4; do
    wait "${pids[$i]}" || fail "curl EST-$s: $(cat "$WORK/log/curl-EST-$s.err")"
    assert_eq "$(cat "$WORK/EST-$s.code")" 200 "EST-$s: HTTP status ($(head -c 200 "$WORK/est-EST-$s.out"))"
    p7_certs "EST-$s"
    assert_strict_cert "$WORK/est-EST-$s.pem"
    i=$((i + 1))
done
assert_eq "$(sql_q "$IX" "SELECT count(*) FROM certificate WHERE serial LIKE 'EST-P-%'")" 4 \
    "EST: four certificates, once each"
est_at_once=$(grep -E 'debug: serial EST-P-[1-4]: (signing|signed)$' "$CMP_LOG" |
    awk '/signing$/ { n++; if (n > m) m = n } /signed$/ { n-- } END { print m + 0 }')
[ "$est_at_once" -ge 2 ] ||
    fail "EST: the CA key signed for $est_at_once enrollment(s) at a time, not two at once"
cmp_stop

# ---- a full queue: past 16 requests per worker, 503 with Retry-After -------------------------
# one worker, the CA token slowed: 24 copies of the ir written above sent at once
PROVISIONER_CONFIG=$WORK/slow.cnf cmp_serve LATENCY_TARGET="$SOFTHSM_MODULE" \
    LATENCY_SIGN_MS=300 LATENCY_TOKENS=provisioner-ca --workers 1
pids=()
for c in $(seq 1 24); do
    curl -sS -D "$WORK/flood-$c.head" -o /dev/null -w '%{http_code}\n' \
        -H 'Content-Type: application/pkixcmp' --data-binary "@$WORK/twice.der" \
        "http://127.0.0.1:$CMP_PORT/.well-known/cmp" >"$WORK/flood-$c.code" \
        2>"$WORK/log/flood-$c.err" &
    pids+=($!)
done
for p in "${pids[@]}"; do
    wait "$p" || fail "a flooding curl failed: $(cat "$WORK"/log/flood-*.err | head -n2)"
done
busy=$(cat "$WORK"/flood-*.code | grep -c '^503$' || true)
answered=$(cat "$WORK"/flood-*.code | grep -c '^200$' || true)
[ "$busy" -ge 1 ] || fail "24 requests at once on one worker: none answered 503"
[ "$answered" -ge 16 ] || fail "only $answered of 24 answered (16 fit the queue)"
assert_eq $((busy + answered)) 24 "every request answered 200 or 503"
for c in $(seq 1 24); do
    if [ "$(cat "$WORK/flood-$c.code")" = 503 ]; then
        grep -qi '^Retry-After: 1' "$WORK/flood-$c.head" || fail "a 503 without Retry-After"
    fi
done
assert_grep "$CMP_LOG" 'outcome="refused: busy: every worker.s queue is full"' "the 503s are logged"
answering >/dev/null # still serving
cmp_stop

# ---- SIGHUP while a request is held: the reload does not wait for it --------------------------
PROVISIONER_CONFIG=$WORK/slow.cnf cmp_serve PROVISIONER_DEBUG=ca LATENCY_TARGET="$SOFTHSM_MODULE" \
    LATENCY_SIGN_MS=2000 LATENCY_TOKENS=provisioner-ca --workers 2
# a genm: one message, its answer one signature of 2 s, nothing after it
cmp_client hup P-1 -cmd genm -infotype caCerts &
hup_client=$!
watch_answering 1 "$hup_client"
kill -HUP "$CMP_PID"
wait_file_line() { # FILE PATTERN: until FILE has a line matching PATTERN, 20 s at most
    for _ in $(seq 1 400); do
        grep -qE "$2" "$1" 2>/dev/null && return 0
        sleep 0.05
    done
    fail "no line /$2/ in $1"
}
wait_file_line "$CMP_LOG" 'SIGHUP: configuration reloaded'
# the genm is still held: the loop reloaded without waiting for it
[ "$(answering)" -ge 1 ] || fail "SIGHUP waited for the request being answered"
wait "$hup_client" || fail "the genm across a SIGHUP: $(tail -n3 "$WORK/log/cmp-hup.log" | tr '\n' ' ')"
cmp_stop

# ---- a CA token that opens no more sessions: the signatures wait for the one it has ----------
sed "s|^pkcs11_module = .*|pkcs11_module = $PROV_FAULT_MODULE|" "$PROVISIONER_CONFIG" \
    >"$WORK/one-session.cnf"
PROVISIONER_CONFIG=$WORK/one-session.cnf cmp_serve FAULT_TARGET="$PROV_LATENCY_MODULE" \
    FAULT_MAX_SESSIONS=2 FAULT_LOG="$WORK/fault-serve.log" LATENCY_TARGET="$SOFTHSM_MODULE" \
    LATENCY_SIGN_MS=300 LATENCY_TOKENS=provisioner-ca LATENCY_PARALLEL=1 \
    LATENCY_STATS="$WORK/latency-one.txt" --workers 4
four_clients ONE
four_done ONE
cmp_stop
assert_grep "$WORK/fault-serve.log" '^C_OpenSession 0xb1$' "a session was asked for and refused"
assert_eq "$(sed -n 's/.* max_at_once=\([0-9]*\)$/\1/p' "$WORK/latency-one.txt" | tail -n1)" 1 \
    "one signature at a time on the one session"

# ---- one station, two workers: both its requests at the service at once ---------------------
N=10
# station_batch (cmp_lib.sh) starts the service: here the slowed one, 4 workers
eval "$(declare -f cmp_serve | sed '1s/^cmp_serve/cmp_serve_plain/')"
cmp_serve() {
    PROVISIONER_CONFIG=$WORK/slow.cnf cmp_serve_plain LATENCY_TARGET="$SOFTHSM_MODULE" \
        LATENCY_SIGN_MS=300 LATENCY_TOKENS=provisioner-ca --workers 4
}
station_batch cmp "$N"
"$PROVISIONER" batch lot.csv --no-progress --jobs 2 >"$WORK/log/station-batch.out" \
    2>"$WORK/log/station-batch.err" &
batch_pid=$!
it_track "$batch_pid"
watch_answering 2 "$batch_pid"
wait "$batch_pid" || fail "the station's batch: $(tail -n3 "$WORK/log/station-batch.err" | tr '\n' ' ')"
[ "$most" -ge 2 ] || fail "the station's two workers: never more than $most request(s) at the service at once"
station_batch_check cmp
cmp_stop
