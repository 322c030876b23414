#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# A station's own rate across all its lots (doc/ca-service.md, "Who may ask"; `ca station add
# |renew --rate N`), beside each lot's rate for it: a station with a rate of 3 per minute and
# two lots without one gets 3 certificates in the minute, spread over both lots; the 4th is
# refused as the lot rate is, with an audit record and nothing issued:
# - over CMP (`openssl cmp`): a rejection with systemUnavail and "retry in N s";
# - over EST (curl, the service restarted with TLS: the rate is counted from the CA index):
#   429 with Retry-After.
# Also: --rate that is not a number (exit 2, one line), `ca station list` and its --json.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../batch/batch_lib.sh"
. "$(dirname "$0")/cmp_lib.sh"
. "$(dirname "$0")/../est/est_lib.sh"
it_setup
need sqlite3 curl jq
batch_ca
cmp_profiles
IX=$IT_CA_DIR/index.sqlite
cmp_station ST
prov 0 ca lot add LOT-1 --count 20 --station ST
prov 0 ca lot add LOT-2 --count 20 --station ST

# renewed with a new key (a key is certified once) and the rate
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/st2.key" \
    -subj /CN=ST -out "$WORK/st2.csr" 2>/dev/null || fail "openssl req (ST renewed)"
prov 2 ca station renew ST --csr "$WORK/st2.csr" --out "$WORK/st2.pem" --rate -1
assert_one_error "--rate -1" "not 0 to 1000000"
prov 2 ca station renew ST --csr "$WORK/st2.csr" --out "$WORK/st2.pem" --rate 3x
assert_one_error "--rate 3x"
assert_no_file "$WORK/st2.pem"
prov 0 ca station renew ST --csr "$WORK/st2.csr" --out "$WORK/st2.pem" --rate 3
cp "$WORK/st2.key" "$WORK/stations/ST.key"
openssl x509 -in "$WORK/st2.pem" -out "$WORK/stations/ST.crt" || fail "the renewed certificate"
assert_eq "$(sql_q "$IX" "SELECT count(*) FROM audit WHERE event = 'station' AND serial = 'ST'
    AND detail = 'registered, rate 3 per minute'")" 1 "the rate in the audit trail"
"$PROVISIONER" ca station list >"$WORK/stations.txt" || fail "ca station list"
assert_grep "$WORK/stations.txt" '^ST .* rate=3 lots=LOT-1,LOT-2$' "ca station list: the rate"
"$PROVISIONER" ca station list --json >"$WORK/stations.json" || fail "ca station list --json"
assert_eq "$(jq -r '.[] | select(.name == "ST") | .rate' "$WORK/stations.json")" 3 \
    "ca station list --json: the rate"

refusals() { sql_q "$IX" "SELECT count(*) FROM audit WHERE event = 'refuse'"; }

# ir NAME LOT: openssl cmp as ST asks for CN=NAME in LOT (RFC 9483 section 6.1's /p/LOT)
ir() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$WORK/$1.key" \
        2>/dev/null || fail "openssl genpkey"
    cmp_client "$1" ST -path "/.well-known/cmp/p/$2" -cmd ir -newkey "$WORK/$1.key" \
        -subject "/CN=$1" -certout "$WORK/$1.crt"
}

# ---- CMP: 3 in the minute over two lots, the 4th refused --------------------------------
cmp_serve
for n in 1 2; do
    ir "R-0000$n" LOT-1 || fail "ir R-0000$n: $(tail -n3 "$WORK/log/cmp-R-0000$n.log" | tr '\n' ' ')"
done
ir R-00003 LOT-2 || fail "ir R-00003: $(tail -n3 "$WORK/log/cmp-R-00003.log" | tr '\n' ' ')"
before=$(cmp_issued)
audit=$(refusals)
if ir R-00004 LOT-2; then
    fail "the station's 4th certificate in a minute was issued"
fi
assert_grep "$WORK/log/cmp-R-00004.log" \
    'systemUnavail; StatusString: .station ST: its rate across its lots .3 per minute. is reached; retry in [0-9]+ s' \
    "CMP: systemUnavail with the reason"
assert_eq "$(cmp_issued)" "$before" "CMP: nothing issued"
assert_eq "$(refusals)" $((audit + 1)) "CMP: an audit record"
assert_eq "$(sql_q "$IX" "SELECT serial FROM audit WHERE seq = (SELECT max(seq) FROM audit)")" \
    R-00004 "CMP: the audit record names the device"
cmp_stop

# ---- EST: the same rate, 429 with Retry-After -------------------------------------------
cmp_serve --tls-cert "$WORK/server-ca/server.crt" --tls-key "$WORK/server-ca/server.key"
EST=https://127.0.0.1:$CMP_PORT/.well-known/est
csr_b64 R-00005
audit=$(refusals)
refused est-rate 429 'station ST: its rate across its lots .3 per minute. is reached' ST \
    "$EST/LOT-1/simpleenroll" -D "$WORK/est-rate.headers" -H 'Content-Type: application/pkcs10' \
    --data-binary "@$WORK/R-00005.b64"
grep -qiE '^Retry-After: [0-9]+' "$WORK/est-rate.headers" ||
    fail "EST: no Retry-After header: $(tr '\r\n' '  ' <"$WORK/est-rate.headers")"
assert_eq "$(refusals)" $((audit + 1)) "EST: an audit record"
cmp_stop
