#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# A real mutual-TLS handshake with enrolled identities: nginx on 127.0.0.1 (a free port)
# requires a client certificate under the provisioner's CA (`chain export`) and serves with a
# certificate from a separate test "server CA"; curl presents fullchain.pem with the device
# key inside SoftHSM2 through the libp11 pkcs11 engine, trusting only server-ca.pem.
. "$(dirname "$0")/lib.sh"
it_setup
need nginx curl pkcs11-tool

ca_fixture pkcs11
token_init dev-mtls-ec
token_init dev-mtls-rsa
prov 0 enroll --serial SN-MTLS-EC --device pkcs11:token=dev-mtls-ec --key ec-p256
prov 0 enroll --serial SN-MTLS-RSA --device pkcs11:token=dev-mtls-rsa --key rsa-2048
prov 0 chain export --out "$WORK/client-ca.pem"

nginx_start edge "$WORK/server-ca/server.crt" "$WORK/server-ca/server.key" "$WORK/client-ca.pem"
URL=https://127.0.0.1:$NGINX_PORT/
engine_conf "$WORK/engine.cnf"

# device_curl DIR: curl as the device: key in the token, certificate chain and server trust
# from its storage. The PIN in the URI is fine here: this is the test client, not the tool.
device_curl() {
    local d=$1 uri
    uri=$(uri_with_pin "$(cat "$d/key.uri")" "$DEV_PIN_VALUE")
    OPENSSL_CONF=$WORK/engine.cnf curl -sS --max-time 20 -o "$WORK/log/body" -w '%{http_code}' \
        --engine pkcs11 --key-type ENG --key "$uri" \
        --cert "$d/fullchain.pem" --cacert "$d/server-ca.pem" "$URL" 2>"$WORK/log/curl.err"
}

for sn in SN-MTLS-EC SN-MTLS-RSA; do
    d=$WORK/devices/$sn
    code=$(device_curl "$d") || fail "$sn: curl failed (exit $?): $(tail -n2 "$WORK/log/curl.err" | tr '\n' ' ')"
    assert_eq "$code" 200 "$sn: HTTP status with the device identity"
    assert_grep "$WORK/log/body" "client=.*CN=$sn" "$sn: nginx did not see the device certificate"
    assert_grep "$WORK/log/body" 'verify=SUCCESS' "$sn: nginx did not verify the client"
    it_log "$sn: mTLS handshake ok: $(cat "$WORK/log/body")"
done

# Without a client certificate: rejected (nginx answers 400, or the handshake fails).
code=$(curl -sS --max-time 20 -o "$WORK/log/body-nocert" -w '%{http_code}' \
    --cacert "$WORK/server-ca.pem" "$URL" 2>"$WORK/log/curl-nocert.err") || code=handshake-failed
case "$code" in
400 | handshake-failed) it_log "no client certificate: rejected ($code)" ;;
*) fail "a client without a certificate got HTTP $code" ;;
esac

# A client certificate from another CA: rejected.
openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$WORK/rogue.key" -out "$WORK/rogue.crt" -days 5 -subj /CN=SN-MTLS-EC \
    -addext "extendedKeyUsage=clientAuth" >/dev/null 2>&1
code=$(curl -sS --max-time 20 -o "$WORK/log/body-rogue" -w '%{http_code}' \
    --key "$WORK/rogue.key" --cert "$WORK/rogue.crt" --cacert "$WORK/server-ca.pem" "$URL" \
    2>"$WORK/log/curl-rogue.err") || code=handshake-failed
case "$code" in
400 | handshake-failed) it_log "foreign client certificate: rejected ($code)" ;;
*) fail "a client certificate from another CA got HTTP $code" ;;
esac

# The device trusts only server-ca.pem: a server under another CA is refused by the client.
make_server_ca "$WORK/other-server-ca"
nginx_start other "$WORK/other-server-ca/server.crt" "$WORK/other-server-ca/server.key" \
    "$WORK/client-ca.pem"
URL=https://127.0.0.1:$NGINX_PORT/
if code=$(device_curl "$WORK/devices/SN-MTLS-EC"); then
    fail "the device accepted a server outside server-ca.pem (HTTP $code)"
fi
it_log "server outside server-ca.pem: refused by the client"

# `check --connect` (doc/storage.md): refused by the device against the other server, accepted by
# the edge (tests/integration/test_connect.sh covers every transport and refusal).
prov 1 check --connect "$URL" "$WORK/devices/SN-MTLS-EC"
assert_one_error "we did not trust the server"
URL=https://127.0.0.1:$(sed -n 's/^ *listen 127.0.0.1:\([0-9]*\) ssl;/\1/p' "$WORK/nginx-edge/nginx.conf")/
prov 0 check --connect "$URL" "$WORK/devices/SN-MTLS-EC"
