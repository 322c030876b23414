# SPDX-License-Identifier: Apache-2.0
#
# Helpers for the CA service tests (tests/integration/cmp/, tests/integration/est/), sourced
# after ../lib.sh (and ../batch/batch_lib.sh for the station config and batch below).

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

# cmp_serve [NAME=VALUE...] [ARGS...]: `provisioner ca serve` on a free port, tracked, with
# the environment variables given first (the service alone gets them: env(1) execs it, so
# CMP_PID is the service's); sets CMP_PORT, CMP_PID, CMP_LOG (its stderr: one line per
# request). A port taken between free_port and the service's bind (tests run in parallel)
# is tried again with another.
cmp_serve() {
    local try envs=()
    while [ $# -gt 0 ] && [[ $1 =~ ^[A-Za-z_][A-Za-z0-9_]*= ]]; do
        envs+=("$1")
        shift
    done
    for try in 1 2 3 4 5; do
        CMP_PORT=$(free_port)
        CMP_LOG=$WORK/log/serve-$CMP_PORT.err
        env "${envs[@]}" "$PROVISIONER" ca serve --listen "127.0.0.1:$CMP_PORT" "$@" \
            >"$WORK/log/serve-$CMP_PORT.out" 2>"$CMP_LOG" </dev/null &
        CMP_PID=$!
        it_track "$CMP_PID"
        if wait_port "$CMP_PORT" "$CMP_PID" && ! grep -q 'cannot listen there' "$CMP_LOG"; then
            return 0
        fi
        grep -q 'cannot listen there' "$CMP_LOG" || break
        stop_pid "$CMP_PID"
    done
    fail "ca serve did not listen on $CMP_PORT: $(tail -n3 "$CMP_LOG" | tr '\n' ' ')"
}

# cmp_stop: SIGTERM to the service (CMP_PID), which must exit 0 (its stderr in the failure):
# under the sanitizer build a finding at exit, such as a leak (tests/meson.build: exit 88), then
# fails the test instead of going unseen with the process.
cmp_stop() {
    local rc=0
    kill -TERM "$CMP_PID"
    wait "$CMP_PID" || rc=$?
    [ "$rc" -eq 0 ] ||
        fail "ca serve exited $rc after SIGTERM: $(tail -n5 "$CMP_LOG" | tr '\n' ' ')"
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

# ---- a station's batch through the service (test_cmp_batch.sh, ../est/test_est_batch.sh) --
# After batch_lib.sh's batch_ca and cmp_profiles, with N the lot's size.

# station_batch PROTO CAP: a station with no CA token and no CA PIN that issues through the
# service over PROTO (cmp, or est with [ca] tls_ca; doc/ca-service.md "Stations as clients").
# On the CA host (whose config is kept as CA_CONFIG): the station's identity key on its own
# token station-b (`csr --profile station`), certified and registered as STATION-B (`ca
# station add`), lot LOT-IT-1 registered for it with a cap of CAP (`ca lot add`), the service
# started (with TLS for est). Then the station's own directory $WORK/station and config (no
# [ca] dir, key or PIN), exported as PROVISIONER_CONFIG and made the current directory, with
# a lot of N devices in lot.csv.
station_batch() {
    local proto=$1 cap=$2 ca_url
    CA_CONFIG=$PROVISIONER_CONFIG
    token_init station-b
    prov 0 csr --serial STATION-B --device pkcs11:token=station-b --profile station \
        --out "$WORK/station-b.csr"
    prov 0 ca station add STATION-B --csr "$WORK/station-b.csr" --out "$WORK/station-b.pem"
    prov 0 ca lot add LOT-IT-1 --count "$cap" --station STATION-B
    case "$proto" in
    cmp)
        cmp_serve
        ca_url="url = cmp://127.0.0.1:$CMP_PORT/.well-known/cmp" ;;
    est)
        cmp_serve --tls-cert "$WORK/server-ca/server.crt" --tls-key "$WORK/server-ca/server.key"
        ca_url="url = est://127.0.0.1:$CMP_PORT
tls_ca = server-ca.pem" ;;
    *) fail "station_batch: unknown protocol $proto" ;;
    esac
    mkdir -p "$WORK/station"
    openssl x509 -in "$WORK/station-b.pem" -out "$WORK/station/station.crt"
    cp "$IT_CA_DIR/root.crt" "$WORK/station/root.crt"
    cp "$WORK/device.pin" "$WORK/station/device.pin"
    cp "$WORK/server-ca.pem" "$WORK/station/server-ca.pem"
    {
        provisioner_section
        cat <<EOC

[ca]
$ca_url
station_cert = station.crt
station_key = pkcs11:token=station-b;object=STATION-B
station_pin = file:device.pin
root_cert = root.crt
EOC
        batch_profile
    } >"$WORK/station/provisioner.cnf"
    export PROVISIONER_CONFIG=$WORK/station/provisioner.cnf
    cd "$WORK/station" || fail "cd $WORK/station"
    make_lot lot.csv $((N / 10)) 10
}

# station_batch_check PROTO: the lot is done: every device's certificate passes
# `openssl verify -x509_strict`, N of them; the CA index holds N for LOT-IT-1, each issued by
# PROTO:STATION-B; nothing in the station's files or environment holds the CA PIN.
station_batch_check() {
    local n=0 d
    for d in devices/SN-*; do
        assert_strict_cert "$d/client.crt"
        n=$((n + 1))
    done
    assert_eq "$n" "$N" "devices with a certificate"
    assert_eq "$(sql_q "$IT_CA_DIR/index.sqlite" "SELECT count(*) FROM certificate
        WHERE lot = 'LOT-IT-1' AND issued_by = '$1:STATION-B'")" "$N" "the lot in the CA index"
    if grep -rlF -- "$CA_PIN_VALUE" "$WORK/station" >/dev/null; then
        fail "the station's files hold the CA PIN"
    fi
    if env | grep -qF -- "$CA_PIN_VALUE"; then
        fail "the station's environment holds the CA PIN"
    fi
}

# station_batch_bad_identity: a station whose identity does not hold together is refused
# when its issuer opens, before the service is asked or a device is touched, one line, exit
# 2: station_cert not a certificate; station_cert not the certificate of station_key.
station_batch_bad_identity() {
    local good=$PROVISIONER_CONFIG
    token_init dev-y
    echo "not a certificate" >bad.crt
    sed 's/^station_cert = .*/station_cert = bad.crt/' "$good" >bad-cert.cnf
    PROVISIONER_CONFIG=$PWD/bad-cert.cnf prov 2 enroll --serial SN-BAD-1 \
        --device pkcs11:token=dev-y
    assert_one_error "station_cert" "bad.crt" "not a PEM certificate"
    sed 's/^station_cert = .*/station_cert = root.crt/' "$good" >bad-key.cnf
    PROVISIONER_CONFIG=$PWD/bad-key.cnf prov 2 enroll --serial SN-BAD-1 \
        --device pkcs11:token=dev-y
    assert_one_error "station_key" "does not match station_cert"
    assert_no_file devices/SN-BAD-1
    assert_eq "$(token_list dev-y "$DEV_PIN_VALUE" | count_re Object)" 0 \
        "objects on the device after a refused station identity"
}

# station_batch_service_gone: with the service stopped, a new lot's run exits 4 with one line
# before any device is touched.
station_batch_service_gone() {
    stop_pid "$CMP_PID"
    echo "serial,device,cn,x_token" >lot2.csv
    token_init dev-x
    echo "SN-09999,pkcs11:token=dev-x,," >>lot2.csv
    sed -i 's/^lot = LOT-IT-1$/lot = LOT-IT-2/' provisioner.cnf
    prov 4 batch lot2.csv --no-progress
    assert_one_error "CA service"
    assert_no_file devices/SN-09999
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
EOF2
    batch_profile >>"$f"
}

# station_dir PEM URL TOKEN NAME: $WORK/station, a station's own directory with no CA token,
# key or PIN: its certificate (the first of PEM, from `ca station add`), the root, the device
# PIN file, the server CA, and provisioner.cnf (lot LOT-IT-1) whose [ca] url is URL and whose
# identity key is object NAME on token TOKEN (doc/ca-service.md, "Stations as clients").
station_dir() {
    mkdir -p "$WORK/station"
    openssl x509 -in "$1" -out "$WORK/station/station.crt" || fail "station_dir: $1"
    cp "$IT_CA_DIR/root.crt" "$WORK/device.pin" "$WORK/server-ca.pem" "$WORK/station/"
    cmp_station_config "$WORK/station/provisioner.cnf" LOT-IT-1 "$2" "pkcs11:token=$3;object=$4" \
        "tls_ca = server-ca.pem"
}

# cmp_forged_ir STATION NAME OUT: STATION's ir for $WORK/NAME.key (CN=NAME), written
# (-reqout) without a service to answer it (port 1), then one bit of its protection's
# signature value flipped: STATION's certificate, a signature its key did not make.
cmp_forged_ir() {
    local pos
    openssl cmp -server 127.0.0.1:1 -path /.well-known/cmp -cert "$WORK/stations/$1.crt" \
        -key "$WORK/stations/$1.key" -trusted "$IT_CA_DIR/root.crt" -msg_timeout 1 \
        -total_timeout 2 -cmd ir -newkey "$WORK/$2.key" -subject "/CN=$2" \
        -certout "$WORK/unused.crt" -reqout "$3" >"$WORK/log/cmp-write-$2.log" 2>&1 || true
    assert_file "$3"
    # the protection: the BIT STRING one level down in the PKIMessage; skip its header, the
    # unused-bits octet and the ECDSA-Sig-Value's and r's headers: the flipped octet is in r
    pos=$(openssl asn1parse -inform DER -in "$3" |
        awk '/d=2 .*prim: BIT STRING/ { split($1, o, ":"); match($0, /hl= *[0-9]+/);
            hl = substr($0, RSTART + 3, RLENGTH - 3); print o[1] + hl + 1 + 2 + 2 + 8; exit }')
    [ -n "$pos" ] || fail "cmp_forged_ir $2: no protection in the written request"
    python3 - "$3" "$pos" <<'EOP'
import sys
path, pos = sys.argv[1], int(sys.argv[2])
der = bytearray(open(path, "rb").read())
der[pos] ^= 0x01
open(path, "wb").write(der)
EOP
}
