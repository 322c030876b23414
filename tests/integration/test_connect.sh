#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# `check --connect` (doc/storage.md): a real mutual-TLS proof with the device key inside SoftHSM2
# against mosquitto (MQTT over TLS and MQTT over WebSocket over TLS, require_certificate,
# use_identity_as_username) and nginx (ssl_verify_client on), all on 127.0.0.1, serving
# certificates of a separate server CA that the devices hold as server-ca.pem and trusting
# the provisioner's chain (`chain export`). Then the refusals, each with its side named:
# a device under a foreign CA (the server refuses us), a device certificate not yet valid
# (the server refuses us), a server outside server-ca.pem (we refuse the server), nothing
# listening (unreachable), a bad URL (usage).
. "$(dirname "$0")/lib.sh"
it_private_network "$@"
it_setup
need nginx mosquitto pkcs11-tool

ca_fixture pkcs11
token_init dev-conn-ec
token_init dev-conn-rsa
prov 0 enroll --serial SN-CONN-EC --device pkcs11:token=dev-conn-ec --key ec-p256
prov 0 enroll --serial SN-CONN-RSA --device pkcs11:token=dev-conn-rsa --key rsa-2048
edge_start
HTTPS=${HTTPS}devices/hello
GOOD_WS_PORT=$WS_PORT

# connect_ok SERIAL URL: `check --connect` passes, in text and in JSON.
connect_ok() {
    local sn=$1 url=$2
    prov 0 check --connect "$url" "$WORK/devices/$sn"
    assert_grep "$PROV_OUT" ' ok .* connect=ok tls=TLSv1\.[23]' "$sn: check --connect $url"
    prov 0 check --json --connect "$url" "$WORK/devices/$sn"
    assert_grep "$PROV_OUT" '"outcome": ?"ok"' "$sn: --json connect outcome for $url"
    assert_grep "$PROV_OUT" "\"url\": ?\"$url\"" "$sn: --json connect url"
}

for sn in SN-CONN-EC SN-CONN-RSA; do
    : >"$MOSQ_LOG.mark"
    connect_ok "$sn" "$MQTTS"
    connect_ok "$sn" "$WSS"
    connect_ok "$sn" "$HTTPS"
    # HTTPS: nginx verified the client certificate and saw the device's subject.
    assert_grep "$WORK/nginx-edge/access.log" '"GET /devices/hello HTTP/1.1" 200' "$sn: nginx access log"
done

# The broker saw the certificate's CN as the username (the client sends none: its id is a
# random proof-XXXXXXXX), on both listeners, and acknowledged the proof message.
for sn in SN-CONN-EC SN-CONN-RSA; do
    n=$(count_re "New client connected from (::ffff:)?127\.0\.0\.1:[0-9]+ as proof-[0-9a-f]{8} \(p2, c1, k60, u'$sn'\)" "$MOSQ_LOG")
    [ "$n" -eq 4 ] || fail "$sn: mosquitto logged $n connections with username '$sn', expected 4 (2 mqtts, 2 wss): $(count_re 'New client' "$MOSQ_LOG") in all"
    assert_grep "$MOSQ_LOG" "Received PUBLISH from proof-[0-9a-f]{8} \(d0, q1, r0, m[0-9]+, 'provisioner/proof/$sn'" \
        "$sn: the broker did not receive the proof message"
done
assert_no_grep "$MOSQ_LOG" "u'proof-" "a client id was taken as the username"
it_log "broker usernames: $(grep -oE "u'[^']+'" "$MOSQ_LOG" | sort | uniq -c | tr '\n' ' ')"

# ---- the server refuses us --------------------------------------------------------------
# A device key certified by a foreign CA (openssl, a CA the edge does not trust): the storage
# is consistent in itself (client.crt, chain.pem = the foreign CA), so only the server can say no.
make_server_ca "$WORK/foreign"
make_device_copy() { # SRC DST: a second storage dir for the same device key
    rm -rf "$WORK/devices/$2"
    cp -a "$WORK/devices/$1" "$WORK/devices/$2"
}
# device_csr SERIAL: a CSR signed by the device's key in the token (the libp11 engine).
engine_conf "$WORK/engine.cnf"
device_csr() {
    local uri
    uri=$(uri_with_pin "$(cat "$WORK/devices/$1/key.uri")" "$DEV_PIN_VALUE")
    OPENSSL_CONF=$WORK/engine.cnf openssl req -new -engine pkcs11 -keyform engine -key "$uri" \
        -subj "/CN=$1" -out "$WORK/$1.csr" >"$WORK/log/req-$1.log" 2>&1 ||
        fail "openssl req with the key of $1: $(tail -n2 "$WORK/log/req-$1.log" | tr '\n' ' ')"
}
cat >"$WORK/client.ext" <<EOF
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
EOF
device_csr SN-CONN-EC
openssl x509 -req -in "$WORK/SN-CONN-EC.csr" -CA "$WORK/foreign/ca.crt" -CAkey "$WORK/foreign/ca.key" \
    -CAcreateserial -days 5 -extfile "$WORK/client.ext" -out "$WORK/foreign.crt" >"$WORK/log/foreign.log" 2>&1 ||
    fail "openssl x509 (foreign CA): $(tail -n1 "$WORK/log/foreign.log")"
make_device_copy SN-CONN-EC SN-FOREIGN
F=$WORK/devices/SN-FOREIGN
cp "$WORK/foreign.crt" "$F/client.crt"
cp "$WORK/foreign.crt" "$F/fullchain.pem"
cp "$WORK/foreign/ca.crt" "$F/chain.pem"
openssl x509 -in "$F/client.crt" -outform DER -out "$F/client.der"
prov 0 check "$F" # locally consistent: the key proves, the chain is valid
for url in "$MQTTS" "$WSS" "$HTTPS"; do
    prov 1 check --connect "$url" "$F"
    assert_one_error "$F" "$url" "server did not trust our certificate"
    assert_grep "$PROV_OUT" 'connect=server-refused' "foreign CA over $url"
done
it_log "foreign CA: $(cat "$PROV_ERR")"

# A device certificate that is not valid yet, from the real intermediate (key in the HSM):
# the validity period, not the issuer, is what the server refuses.
mkdir -p "$WORK/early-ca/new"
: >"$WORK/early-ca/index.txt"
cat >"$WORK/early-ca/ca.cnf" <<EOF
[ca]
default_ca = early
[early]
database = $WORK/early-ca/index.txt
new_certs_dir = $WORK/early-ca/new
rand_serial = yes
default_md = sha256
policy = any
x509_extensions = client_ext
unique_subject = no
[any]
commonName = supplied
[client_ext]
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
EOF
start=$(date -u -d '+2 days' +%Y%m%d%H%M%SZ)
end=$(date -u -d '+9 days' +%Y%m%d%H%M%SZ)
ca_uri="pkcs11:token=provisioner-ca;object=intermediate;pin-value=$CA_PIN_VALUE"
OPENSSL_CONF=$WORK/engine.cnf openssl ca -batch -config "$WORK/early-ca/ca.cnf" -engine pkcs11 \
    -keyform engine -keyfile "$ca_uri" -cert "$WORK/ca/intermediate.crt" -startdate "$start" \
    -enddate "$end" -in "$WORK/SN-CONN-EC.csr" -out "$WORK/early.crt" >"$WORK/log/early.log" 2>&1 ||
    fail "openssl ca (not yet valid): $(tail -n2 "$WORK/log/early.log" | tr '\n' ' ')"
make_device_copy SN-CONN-EC SN-EARLY
E=$WORK/devices/SN-EARLY
openssl x509 -in "$WORK/early.crt" -out "$E/client.crt"
cat "$E/client.crt" "$WORK/ca/intermediate.crt" >"$E/fullchain.pem"
openssl x509 -in "$E/client.crt" -outform DER -out "$E/client.der"
for url in "$MQTTS" "$WSS" "$HTTPS"; do
    prov 1 check --json --connect "$url" "$E"
    assert_grep "$PROV_OUT" '"chain": ?false' "not-yet-valid certificate: the local chain rule must fail too"
    assert_grep "$PROV_OUT" '"outcome": ?"server-refused"' "not-yet-valid certificate over $url"
    assert_one_error "$E" "server did not trust our certificate"
done
it_log "not yet valid: $(cat "$PROV_ERR")"

# ---- we refuse the server -----------------------------------------------------------------
make_server_ca "$WORK/other-server-ca"
O=$WORK/other-server-ca
mosquitto_start other "$O/server.crt" "$O/server.key" "$WORK/client-ca.pem"
nginx_start other "$O/server.crt" "$O/server.key" "$WORK/client-ca.pem"
: >"$MOSQ_LOG.before"
for url in "mqtts://127.0.0.1:$MQTT_PORT" "wss://127.0.0.1:$WS_PORT/" "https://127.0.0.1:$NGINX_PORT/"; do
    prov 1 check --connect "$url" "$WORK/devices/SN-CONN-EC"
    assert_one_error "SN-CONN-EC" "$url" "we did not trust the server" "unable to get local issuer certificate"
    assert_grep "$PROV_OUT" 'connect=client-refused' "untrusted server over $url"
done
assert_no_grep "$MOSQ_LOG" "New client connected" "the untrusted broker got an MQTT session"
it_log "untrusted server: $(cat "$PROV_ERR")"

# A trusted server under another name: 127.0.0.1 is in its certificate, localhost too, but
# 127.0.0.2 is not (hostname checking is on; the websockets listener answers on every
# address of the private network namespace).
prov 1 check --connect "wss://127.0.0.2:$GOOD_WS_PORT/" "$WORK/devices/SN-CONN-EC"
assert_one_error "we did not trust the server" "IP address mismatch"

# ---- nothing there, bad URLs ----------------------------------------------------------------
port=$(free_port)
prov 1 check --connect "mqtts://127.0.0.1:$port" "$WORK/devices/SN-CONN-EC"
assert_one_error "127.0.0.1:$port" "cannot connect" "refused"
assert_grep "$PROV_OUT" 'connect=unreachable' "nothing listening"
prov 1 check --connect "https://127.0.0.1:$port/" "$WORK/devices/SN-CONN-EC"
assert_one_error "127.0.0.1:$port" "cannot connect"
prov 1 check --connect "wss://127.0.0.1:$port/" "$WORK/devices/SN-CONN-EC"
assert_one_error "127.0.0.1:$port" "cannot connect"
for bad in "mqtt://127.0.0.1:1883" "mqtts://127.0.0.1:99999" "mqtts://127.0.0.1:8883/x" "https://" "wss//x"; do
    prov 2 check --connect "$bad" "$WORK/devices/SN-CONN-EC"
    assert_one_error "$bad"
    [ ! -s "$PROV_OUT" ] || fail "a bad URL printed a result: $(cat "$PROV_OUT")"
done
