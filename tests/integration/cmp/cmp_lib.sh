# SPDX-License-Identifier: Apache-2.0
#
# Helpers for the CA service tests (tests/integration/cmp/), sourced after ../lib.sh.

# cmp_profiles: the station profile `ca station add` issues under (appended to the config).
cmp_profiles() {
    cat >>"$PROVISIONER_CONFIG" <<'EOC'

[profile_station]
key = ec-p256
days = 30
subject = station_dn

[station_dn]
O = Station Test
CN = ${cn}
EOC
}

# cmp_station NAME [sign]: a station identity for NAME: an openssl key and a certificate issued
# by the test CA and registered (`ca station add`; with "sign": only issued, by `provisioner
# sign`, never registered), in $WORK/stations/NAME.{key,crt}.
cmp_station() {
    local n=$1 d=$WORK/stations
    mkdir -p "$d"
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$d/$n.key" \
        -subj "/CN=$n" -out "$d/$n.csr" >"$WORK/log/station-$n.log" 2>&1 ||
        fail "openssl req (station $n): $(tail -n1 "$WORK/log/station-$n.log")"
    if [ "${2:-}" = sign ]; then
        prov 0 sign --serial "$n" --csr "$d/$n.csr" --out "$d/$n.bundle.pem"
    else
        prov 0 ca station add "$n" --csr "$d/$n.csr" --out "$d/$n.bundle.pem"
    fi
    openssl x509 -in "$d/$n.bundle.pem" -out "$d/$n.crt" || fail "station $n: no certificate"
}

# cmp_serve [ARGS...]: `provisioner ca serve` on a free port, tracked; sets CMP_PORT, CMP_PID,
# CMP_LOG (its stderr: one line per request).
cmp_serve() {
    CMP_PORT=$(free_port)
    CMP_LOG=$WORK/log/serve-$CMP_PORT.err
    "$PROVISIONER" ca serve --listen "127.0.0.1:$CMP_PORT" "$@" \
        >"$WORK/log/serve-$CMP_PORT.out" 2>"$CMP_LOG" </dev/null &
    CMP_PID=$!
    it_track "$CMP_PID"
    wait_port "$CMP_PORT" "$CMP_PID" ||
        fail "ca serve did not listen on $CMP_PORT: $(tail -n3 "$CMP_LOG" | tr '\n' ' ')"
}

# cmp_client NAME STATION ARGS...: `openssl cmp` against the service as STATION; output in
# $WORK/log/cmp-NAME.log; returns openssl's exit code.
cmp_client() {
    local name=$1 st=$2
    shift 2
    openssl cmp -server "127.0.0.1:$CMP_PORT" -path /.well-known/cmp \
        -cert "$WORK/stations/$st.crt" -key "$WORK/stations/$st.key" \
        -trusted "$IT_CA_DIR/root.crt" -msg_timeout 20 -total_timeout 40 \
        "$@" >"$WORK/log/cmp-$name.log" 2>&1
}

# cmp_issued: certificates in the CA index.
cmp_issued() {
    sql_q "$IT_CA_DIR/index.sqlite" 'SELECT count(*) FROM certificate'
}

# assert_strict_cert CERT: the certificate verifies against the test CA with -x509_strict.
assert_strict_cert() {
    openssl verify -x509_strict -CAfile "$IT_CA_DIR/root.crt" \
        -untrusted "$IT_CA_DIR/intermediate.crt" "$1" >"$WORK/log/verify.log" 2>&1 ||
        fail "openssl verify -x509_strict $1: $(tr '\n' ' ' <"$WORK/log/verify.log")"
}

# cmp_station_config FILE LOT URL STATION_KEY_URI [CA_LINE...]: a station's config that issues
# through the CA service at URL ([ca] url; no CA key, no CA PIN), with the files beside it:
# station.crt, root.crt, device.pin, server-ca.pem; each CA_LINE is one more [ca] line.
cmp_station_config() {
    local f=$1 lot=$2 url=$3 key=$4 extra=""
    shift 4
    [ $# -gt 0 ] && extra=$(printf '%s\n' "$@")$'\n'
    cat >"$f" <<EOF2
# SPDX-License-Identifier: Apache-2.0
[provisioner]
pkcs11_module = $SOFTHSM_MODULE
output_dir = devices
server_ca = server-ca.pem
device_pin = file:device.pin
lot = $lot

[ca]
url = $url
${extra}station_cert = station.crt
station_key = $key
station_pin = file:device.pin
root_cert = root.crt

[profile_device]
key = ec-p256
days = 30
subject = device_dn

[device_dn]
O = Batch Test
CN = \${cn}
EOF2
}
