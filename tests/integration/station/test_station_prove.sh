#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The station's end-of-line mTLS proof (`[station] prove` / `--prove URL`) against mosquitto
# and nginx on 127.0.0.1 (a private network namespace, see it_private_network), on SoftHSM2
# tokens started the way systemd starts provisioner-station@.service:
# - a proof that passes: result issued, journal proven with the URL in the audit record, the
#   broker saw the device's CN as username;
# - a proof that is refused (nothing listening): exit 1, result failed naming the reason,
#   journal failed, storage kept; the next arrival proves again without issuing again;
# - a bad URL: exit 2 before any device is touched.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/station_lib.sh"
it_private_network "$@"
it_setup
need sqlite3 nginx mosquitto
ca_fixture pkcs11
edge_start
token_init dev-p
token_init dev-q
SER_P=$(token_serial dev-p)
SER_Q=$(token_serial dev-q)
[ -n "$SER_P" ] && [ "$SER_P" != "$SER_Q" ] || fail "token serials not readable"
{
    echo "serial,device"
    echo "SN-P,pkcs11:serial=$SER_P"
    echo "SN-Q,pkcs11:serial=$SER_Q"
} >lot.csv
station_config device_table=tokens.table "prove=$MQTTS"
usernames() {
    count_re "New client connected from .* as proof-[0-9a-f]{8} \(p2, c1, k60, u'$1'\)" "$MOSQ_LOG"
}

# --- bad URL: a usage error, nothing touched ------------------------------------------------
before=$(tree_digest softhsm/tokens)
prov 2 station --instance "usb-1209:0001-$SER_P" --prove "ftp://127.0.0.1/x"
assert_one_error "ftp://127.0.0.1/x"
assert_eq "$(tree_digest softhsm/tokens)" "$before" "tokens after a bad --prove URL"
[ ! -e "$JOURNAL" ] || assert_eq "$(jq_ "SELECT count(*) FROM certificate")" 0 "certificates after a bad URL"

# --- the proof passes (URL from [station] prove) --------------------------------------------
unit_run "usb-1209:0001-$SER_P" 0
assert_result serial=SN-P status=issued storage="$WORK/devices/SN-P"
assert_eq "$(jq_ "SELECT state FROM device WHERE serial = 'SN-P'")" proven "SN-P: journal state"
assert_eq "$(jq_ "SELECT count(*) FROM audit WHERE serial = 'SN-P' AND event = 'proven' AND detail LIKE '% mtls=$MQTTS'")" 1 \
    "SN-P: audit record of the proof"
assert_eq "$(usernames SN-P)" 1 "SN-P: broker sessions with the CN as username"

# --- the proof is refused: failed, kept, retried without issuing again -----------------------
dead=$(free_port)
prov 1 station --instance "usb-1209:0001-$SER_Q" --prove "https://127.0.0.1:$dead/"
assert_grep "$PROV_OUT" "serial=SN-Q status=failed .*cannot connect"
assert_grep "$PROV_ERR" "SN-Q"
assert_eq "$(jq_ "SELECT state FROM device WHERE serial = 'SN-Q'")" failed "SN-Q: journal state after the refusal"
assert_storage "$WORK/devices/SN-Q"
issued=$(jq_ "SELECT count(*) FROM certificate")
unit_run "usb-1209:0001-$SER_Q" 0
assert_result serial=SN-Q storage="$WORK/devices/SN-Q"
assert_eq "$(jq_ "SELECT state FROM device WHERE serial = 'SN-Q'")" proven "SN-Q: journal state after the retry"
assert_eq "$(jq_ "SELECT count(*) FROM certificate")" "$issued" "certificates after the retry (none issued again)"
assert_eq "$(usernames SN-Q)" 1 "SN-Q: broker sessions after the retry"
prov 0 check "$WORK/devices/SN-Q"
prov 0 batch report lot.csv --verify-audit
