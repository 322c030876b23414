#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# `enroll --prove URL` and `batch --prove URL`: the mTLS proof as the last step of an
# enrollment, on SoftHSM2 devices, against mosquitto and nginx on 127.0.0.1 (a private network
# namespace, see it_private_network). A refused proof leaves the identity issued and stored but
# not done: enroll exits 1 saying proof-failed; a batch row fails with the reason in the
# journal and the results, and the re-run retries the proof without issuing again. Where
# libcurl cannot be loaded, an https:// proof fails the same way, naming the library.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/batch/batch_lib.sh"
it_private_network "$@"
it_setup
need nginx mosquitto sqlite3

ca_fixture pkcs11
SRV=$WORK/server-ca
make_server_ca "$WORK/other-server-ca"
O=$WORK/other-server-ca
edge_start
EDGE_LOG=$MOSQ_LOG
mosquitto_start other "$O/server.crt" "$O/server.key" "$WORK/client-ca.pem"
BAD_MQTTS=mqtts://127.0.0.1:$MQTT_PORT
BAD_LOG=$MOSQ_LOG
MOSQ_LOG=$EDGE_LOG

# usernames SERIAL: MQTT sessions the edge broker opened with the certificate CN SERIAL.
usernames() {
    count_re "New client connected from .* as proof-[0-9a-f]{8} \(p2, c1, k60, u'$1'\)" "$MOSQ_LOG"
}

# ---- enroll --prove -------------------------------------------------------------------------
token_init dev-p1
prov 0 enroll --serial SN-P1 --device pkcs11:token=dev-p1 --prove "$MQTTS"
assert_grep "$PROV_OUT" '^SN-P1 issued cert_serial=[0-9a-f]+ .* proof=ok$' "enroll --prove mqtts"
assert_eq "$(usernames SN-P1)" 1 "SN-P1: broker sessions with the CN as username"
assert_device_identity SN-P1 dev-p1 "$WORK/devices/SN-P1" ec-p256

token_init dev-p2
prov 0 enroll --json --serial SN-P2 --device pkcs11:token=dev-p2 --prove "$WSS"
assert_grep "$PROV_OUT" '"status": ?"issued"' "enroll --prove wss --json: status"
assert_grep "$PROV_OUT" '"outcome": ?"ok"' "enroll --prove wss --json: proof outcome"
assert_grep "$PROV_OUT" "\"url\": ?\"$WSS\"" "enroll --prove wss --json: proof url"
assert_eq "$(usernames SN-P2)" 1 "SN-P2: broker sessions with the CN as username"

token_init dev-p3
prov 0 enroll --serial SN-P3 --device pkcs11:token=dev-p3 --key rsa-2048 --prove "$HTTPS"
assert_grep "$PROV_OUT" '^SN-P3 issued .* proof=ok$' "enroll --prove https"
assert_grep "$WORK/nginx-edge/access.log" '"GET / HTTP/1.1" 200' "nginx did not answer the proof"

# Refused: the broker is not under server-ca.pem. The identity is issued and stored, the key
# stays (it is certified), the result says proof-failed, exit 1, one error line.
token_init dev-p4
prov 1 enroll --serial SN-P4 --device pkcs11:token=dev-p4 --prove "$BAD_MQTTS"
assert_one_error "SN-P4" "$BAD_MQTTS" "we did not trust the server"
assert_grep "$PROV_OUT" '^SN-P4 proof-failed cert_serial=[0-9a-f]+ .* proof=client-refused$' "enroll --prove refused"
assert_storage "$WORK/devices/SN-P4"
assert_no_grep "$BAD_LOG" "New client connected" "the untrusted broker got an MQTT session"
# ... and the proof can be repeated later without issuing again.
prov 0 check --connect "$MQTTS" "$WORK/devices/SN-P4"
assert_eq "$(usernames SN-P4)" 1 "SN-P4: broker sessions after the retry"

# Refused by the server: a --reissue of SN-P4 proven against an edge that does not trust the
# provisioner's CA (nginx with the server CA as its client CA).
nginx_start strict "$SRV/server.crt" "$SRV/server.key" "$SRV/ca.crt"
prov 1 enroll --serial SN-P4 --device pkcs11:token=dev-p4 --reissue --json \
    --prove "https://127.0.0.1:$NGINX_PORT/"
assert_one_error "SN-P4" "server did not trust our certificate"
assert_grep "$PROV_OUT" '"status": ?"proof-failed"' "reissue --prove refused: status"
assert_grep "$PROV_OUT" '"outcome": ?"server-refused"' "reissue --prove refused: outcome"

# libcurl cannot be loaded (provisioner/support/curl_api.h: it is loaded at the first https://
# proof, not at start): the proof fails with one line naming it, the identity stays issued
# and stored.
token_init dev-p6
prov_without 1 libcurl.so.4 -- enroll --serial SN-P6 --device pkcs11:token=dev-p6 \
    --prove "https://127.0.0.1:$NGINX_PORT/"
assert_one_error "SN-P6" "libcurl.so.4 cannot be loaded"
assert_storage "$WORK/devices/SN-P6"

# A bad URL is a usage error before anything is made.
token_init dev-p5
prov 2 enroll --serial SN-P5 --device pkcs11:token=dev-p5 --prove "mqtt://127.0.0.1:1883"
assert_one_error "--prove" "mqtt://127.0.0.1:1883"
assert_no_file "$WORK/devices/SN-P5"
assert_eq "$(token_list dev-p5 "$DEV_PIN_VALUE")" "" "objects on dev-p5 after a usage error"

# ---- batch --prove -------------------------------------------------------------------------
M=$WORK/lot.csv
JOURNAL=$WORK/lot.journal.sqlite
printf 'serial,device\nSN-B1,pkcs11:token=dev-b1\nSN-B2,pkcs11:token=dev-b2\n' >"$M"
token_init dev-b1
token_init dev-b2
prov 1 batch "$M" --no-progress --prove "$BAD_MQTTS"
for sn in SN-B1 SN-B2; do
    assert_grep "$PROV_ERR" "lot\.csv:[23]: serial $sn: stored, but|lot\.csv:[23]: serial $sn: issued and stored, but the proof over" "$sn: stderr"
    assert_eq "$(journal_q "SELECT state FROM device WHERE serial = '$sn'")" failed "$sn: journal state after a refused proof"
    case "$(journal_q "SELECT error FROM device WHERE serial = '$sn'")" in
    *"$BAD_MQTTS"*"we did not trust the server"*) ;;
    *) fail "$sn: journal error does not give the proof's refusal: $(journal_q "SELECT error FROM device WHERE serial = '$sn'")" ;;
    esac
    assert_grep "$WORK/lot.results.csv" "^$sn,failed,.*we did not trust the server" "$sn: results"
done
assert_eq "$(count_re 'we did not trust the server' "$PROV_ERR")" 2 "one error line per device"
certs_before=$(journal_q "SELECT cert_serial FROM certificate ORDER BY cert_serial" | tr '\n' ' ')
assert_eq "$(journal_q 'SELECT count(*) FROM certificate')" 2 "certificates after the refused run"

# The re-run proves against the right edge, without issuing again.
prov 0 batch "$M" --no-progress --prove "$WSS"
assert_eq "$(journal_q "SELECT cert_serial FROM certificate ORDER BY cert_serial" | tr '\n' ' ')" \
    "$certs_before" "certificates after the retry (none issued again)"
for sn in SN-B1 SN-B2; do
    assert_eq "$(journal_q "SELECT state FROM device WHERE serial = '$sn'")" proven "$sn: journal state after the retry"
    assert_grep "$WORK/lot.results.csv" "^$sn,issued," "$sn: results after the retry"
    assert_eq "$(journal_q "SELECT count(*) FROM audit WHERE serial = '$sn' AND event = 'proven' AND detail LIKE '% mtls=$WSS'")" 1 \
        "$sn: audit record of the proof"
    assert_eq "$(usernames "$sn")" 1 "$sn: broker sessions with the CN as username"
    assert_token_matches_journal "$JOURNAL" "$(printf 'dev-%s' "${sn#SN-}" | tr 'A-Z' 'a-z')"
done
prov 0 batch report "$M" --verify-audit

# Done rows are not connected again; a fresh row in the same lot is proven as it is issued.
printf 'SN-B3,pkcs11:token=dev-b3\n' >>"$M"
token_init dev-b3
prov 0 batch "$M" --no-progress --prove "$MQTTS"
assert_grep "$WORK/lot.results.csv" '^SN-B1,already-issued,' "SN-B1 after a third run"
assert_grep "$WORK/lot.results.csv" '^SN-B3,issued,' "SN-B3 in the third run"
assert_eq "$(usernames SN-B1)" 1 "SN-B1 was connected again"
assert_eq "$(usernames SN-B3)" 1 "SN-B3: broker sessions"
prov 0 batch report "$M" --verify-audit
