#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The CA service verifies a station certificate's chain once and remembers it
# (service/cmp_station_cache.h); what can change meanwhile is still checked on every request,
# against `openssl cmp`, each station's certificate remembered by an ir before the change:
# - a station revoked (`ca station revoke`) is refused at once;
# - a station renewed (`ca station renew`): the new certificate is served, the old one refused
#   ("not its registered certificate");
# - SIGHUP (the cache starts afresh) with the stations changed meanwhile: a station added is
#   served, the revoked and the renewed ones stay refused, the others go on;
# - a station certificate that expires while remembered is refused: the service runs under
#   libfaketime (package faketime) with its time in a file, moved 40 days on, past the
#   stations' 30 days.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../batch/batch_lib.sh"
. "$(dirname "$0")/cmp_lib.sh"
it_setup
need sqlite3 dpkg
batch_ca
cmp_profiles
for s in ST-REV ST-REN ST-KEEP; do
    cmp_station "$s"
done
prov 0 ca lot add LOT-C --count 40 --station ST-REV --station ST-REN --station ST-KEEP
IX=$IT_CA_DIR/index.sqlite

# the service with libfaketime preloaded (not the faketime wrapper, which would take the
# SIGTERM cmp_stop sends), its offset read from a file at every call so that it can move (the
# monotonic clock left alone: the event loop's timers and the drain go by it)
FAKETIME_LIB=$(dpkg -L libfaketime 2>/dev/null | grep '/libfaketime\.so\.1$' | head -n1)
[ -f "$FAKETIME_LIB" ] || fail "libfaketime.so.1 not found (package libfaketime, scripts/deps.sh)"
echo '+0d' >"$WORK/faketime"
cmp_serve "ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0" \
    "LD_PRELOAD=$FAKETIME_LIB" "FAKETIME_TIMESTAMP_FILE=$WORK/faketime" FAKETIME_NO_CACHE=1 \
    FAKETIME_DONT_FAKE_MONOTONIC=1

# issued NAME STATION: openssl cmp asks as STATION for CN=NAME with a fresh key, and gets it
issued() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$WORK/$1.key" \
        2>/dev/null || fail "openssl genpkey"
    cmp_client "$1" "$2" -cmd ir -newkey "$WORK/$1.key" -subject "/CN=$1" \
        -certout "$WORK/$1.crt" || fail "$1 ($2): $(tail -n3 "$WORK/log/cmp-$1.log" | tr '\n' ' ')"
    assert_strict_cert "$WORK/$1.crt"
}

# refused NAME STATION WHY [ANSWER]: the same, refused: the service's log line for that ir says
# WHY, the CMP answer ANSWER (default WHY); nothing issued
refused() {
    local before
    before=$(cmp_issued)
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$WORK/$1.key" \
        2>/dev/null || fail "openssl genpkey"
    if cmp_client "$1" "$2" -cmd ir -newkey "$WORK/$1.key" -subject "/CN=$1" \
        -certout "$WORK/$1.crt"; then
        fail "$1: a certificate was issued to $2"
    fi
    assert_grep "$WORK/log/cmp-$1.log" "${4:-$3}" "$1: the CMP answer names the reason"
    grep ' ir station=' "$CMP_LOG" | tail -n1 >"$WORK/log/last-ir.txt"
    assert_grep "$WORK/log/last-ir.txt" "outcome=\"refused: .*$3" "$1: the log line"
    assert_no_file "$WORK/$1.crt"
    assert_eq "$(cmp_issued)" "$before" "$1: nothing issued"
}

hex_of() { openssl x509 -in "$1" -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f'; }

# cached NAME: how many certificates the service remembers (GET /status, station_cache)
cached() {
    curl -sS "http://127.0.0.1:$CMP_PORT/status" >"$WORK/status.json" || fail "GET /status"
    python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["station_cache"])' \
        "$WORK/status.json" || fail "$1: no station_cache in /status: $(cat "$WORK/status.json")"
}

# a message whose protection does not verify leaves nothing in the cache, though its
# certificate is a station's: only a verified request puts one there (no churn by forgeries)
assert_eq "$(cached start)" 0 "no station remembered at the start"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$WORK/FORGED.key" \
    2>/dev/null || fail "openssl genpkey"
cmp_forged_ir ST-KEEP FORGED "$WORK/forged.der"
code=$(curl -sS -o "$WORK/forged.answer" -w '%{http_code}' \
    -H 'Content-Type: application/pkixcmp' --data-binary "@$WORK/forged.der" \
    "http://127.0.0.1:$CMP_PORT/.well-known/cmp") || fail "forged ir: curl"
assert_eq "$code" 200 "forged ir: a CMP answer"
assert_grep "$CMP_LOG" 'ir station=- serial=- outcome="refused: the message does not verify' \
    "forged ir: refused"
assert_eq "$(cached forged)" 0 "a forged message's certificate is not remembered"

# every station's certificate remembered: two requests each, the second one found in the cache
for s in ST-REV ST-REN ST-KEEP; do
    issued "$s-A" "$s"
    issued "$s-B" "$s"
done
assert_eq "$(cached all)" 3 "the three stations remembered"

# ---- revoked while remembered: refused at once ----------------------------------------------
REV_HEX=$(hex_of "$WORK/stations/ST-REV.crt")
prov 0 ca station revoke ST-REV --reason keyCompromise
refused REV-1 ST-REV "station ST-REV: its certificate $REV_HEX is revoked"

# ---- renewed while remembered: the new certificate served, the old one refused ---------------
cp "$WORK/stations/ST-REN.crt" "$WORK/stations/ST-REN-OLD.crt"
cp "$WORK/stations/ST-REN.key" "$WORK/stations/ST-REN-OLD.key"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$WORK/stations/ST-REN.key" -subj /CN=ST-REN -out "$WORK/stations/ST-REN.csr" \
    >/dev/null 2>&1 || fail "openssl req (renew)"
prov 0 ca station renew ST-REN --csr "$WORK/stations/ST-REN.csr" \
    --out "$WORK/stations/ST-REN.bundle.pem"
openssl x509 -in "$WORK/stations/ST-REN.bundle.pem" -out "$WORK/stations/ST-REN.crt"
[ "$(hex_of "$WORK/stations/ST-REN.crt")" != "$(hex_of "$WORK/stations/ST-REN-OLD.crt")" ] ||
    fail "renew: the same certificate"
refused REN-OLD-1 ST-REN-OLD 'station ST-REN: not its registered certificate'
issued REN-NEW-1 ST-REN
issued REN-NEW-2 ST-REN
refused REN-OLD-2 ST-REN-OLD 'station ST-REN: not its registered certificate'
issued KEEP-1 ST-KEEP

# ---- SIGHUP with the stations changed meanwhile ---------------------------------------------
cmp_station ST-NEW
prov 0 ca lot add LOT-N --count 5 --station ST-NEW
n=$(grep -c 'SIGHUP: configuration reloaded' "$CMP_LOG" || true)
kill -HUP "$CMP_PID"
for _ in $(seq 1 100); do
    [ "$(grep -c 'SIGHUP: configuration reloaded' "$CMP_LOG" || true)" -gt "$n" ] && break
    sleep 0.05
done
[ "$(grep -c 'SIGHUP: configuration reloaded' "$CMP_LOG" || true)" -gt "$n" ] ||
    fail "SIGHUP: not reloaded: $(tail -n2 "$CMP_LOG" | tr '\n' ' ')"
issued NEW-1 ST-NEW
refused REV-2 ST-REV "station ST-REV: its certificate $REV_HEX is revoked"
refused REN-OLD-3 ST-REN-OLD 'station ST-REN: not its registered certificate'
issued REN-NEW-3 ST-REN
issued KEEP-2 ST-KEEP
issued KEEP-3 ST-KEEP

# ---- expired while remembered: the service's clock 40 days on, past the 30 days -------------
openssl x509 -in "$WORK/stations/ST-KEEP.crt" -noout -checkend $((40 * 86400)) >/dev/null &&
    fail "ST-KEEP's certificate would still be valid in 40 days"
echo '+40d' >"$WORK/faketime"
refused KEEP-EXPIRED ST-KEEP \
    'claimed station ST-KEEP, certificate [0-9a-f]+: certificate has expired' \
    'the protection certificate of ST-KEEP \(serial [0-9a-f]+\) expired on '
echo '+0d' >"$WORK/faketime"
issued KEEP-4 ST-KEEP
cmp_stop
