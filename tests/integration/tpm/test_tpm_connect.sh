#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The end-of-line proof with a TPM key: swtpm behind tpm2-abrmd on a private session D-Bus
# (doc/platform.md), the device enrolled with `enroll --prove` through the tabrmd TCTI, then
# `check --connect` over MQTT over TLS, MQTT over WebSocket and HTTPS against mosquitto and
# nginx on 127.0.0.1 (a private network namespace, see it_private_network), the key signing
# every handshake inside the TPM through the core's signer. The broker must see the
# certificate's CN as the username; a server outside server-ca.pem is refused by the device.
. "$PROV_SOURCE_ROOT/tests/integration/lib.sh"
it_private_network "$@"
it_setup
need swtpm nginx mosquitto
. "$PROV_SOURCE_ROOT/tests/integration/tpm/tpm_lib.sh"

ca_fixture pkcs11
edge_start
HTTPS=${HTTPS}tpm

swtpm_start c
abrmd_start "$TCTI"

prov 0 enroll --serial TPM-C1 --device "tpm2:$TCTI_RM" --prove "$MQTTS"
assert_grep "$PROV_OUT" '^TPM-C1 issued .* proof=ok$' "enroll --prove with the TPM key"
d=$WORK/devices/TPM-C1
assert_tpm_identity "$TCTI_RM" "$d"

for url in "$MQTTS" "$WSS" "$HTTPS"; do
    prov 0 check --json --connect "$url" "$d"
    assert_grep "$PROV_OUT" '"outcome": ?"ok"' "TPM key over $url"
    assert_grep "$PROV_OUT" '"tls_version": ?"TLSv1\.3"' "TPM key over $url: TLS 1.3"
done
n=$(count_re "New client connected from .* as proof-[0-9a-f]{8} \(p2, c1, k60, u'TPM-C1'\)" "$MOSQ_LOG")
assert_eq "$n" 3 "broker sessions with the TPM device's CN as username (enroll, mqtts, wss)"
assert_grep "$WORK/nginx-edge/access.log" '"GET /tpm HTTP/1.1" 200' "nginx did not answer the TPM device"

# The device side refuses a server outside server-ca.pem, whatever the transport.
make_server_ca "$WORK/other-server-ca"
O=$WORK/other-server-ca
mosquitto_start other "$O/server.crt" "$O/server.key" "$WORK/client-ca.pem"
for url in "mqtts://127.0.0.1:$MQTT_PORT" "wss://127.0.0.1:$WS_PORT/"; do
    prov 1 check --connect "$url" "$d"
    assert_one_error "TPM-C1" "we did not trust the server"
done
# The key still works after the refusals (no handle or session left behind in the TPM).
prov 0 check --connect "$MQTTS" "$d"
