#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# README command 1 (README.md, "The two commands"): installs missing Debian packages, builds,
# and runs a demo lot
# under ./demo/ (git-ignored; recreated on every run):
#
#   demo/softhsm/         SoftHSM2 token dir: "provisioner-ca" and six device tokens
#   demo/tpm/             two swtpm TPMs, each behind its own tpm2-abrmd on a private D-Bus
#   demo/provisioner.cnf  the config (examples/provisioner.cnf), ca.pin, device.pin
#   demo/ca/              root.crt, intermediate.crt, chain.pem (`provisioner ca init`)
#   demo/server-ca/       a separate server CA and the local TLS endpoint's certificate
#   demo/devices/<serial> each device's storage (doc/storage.md)
#   demo/results.csv      serial,status,cert_serial,sha256,not_after,storage,error
#   demo/env              `. demo/env` to go on by hand
#
# The TPMs and their resource managers stop with the demo; scripts/demo-tpm-up.sh brings
# them back afterwards (same D-Bus names, same TPM state), --stop stops them again.
#
# Then `provisioner check` on every device and a real mTLS handshake per device against nginx
# on 127.0.0.1 with ssl_verify_client on (curl with the key inside the token through the
# pkcs11 engine; openssl s_client with the persistent TPM key through the tpm2 provider), and
# a summary table. Every process it starts is stopped on exit, by PID.
#
#   scripts/demo.sh            # from any directory
#   BUILD_DIR=/tmp/b scripts/demo.sh
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${BUILD_DIR:-$repo/build}
DEMO=$repo/demo
SOFTHSM_MODULE=/usr/lib/softhsm/libsofthsm2.so

# serial, token label, key type — the demo lot
DEVICES=(
    "DEMO-0001 demo-dev-0001 ec-p256"
    "DEMO-0002 demo-dev-0002 ec-p256"
    "DEMO-0003 demo-dev-0003 ec-p384"
    "DEMO-0004 demo-dev-0004 rsa-2048"
    "DEMO-0005 demo-dev-0005 ec-p256"
    "DEMO-0006 demo-dev-0006 rsa-3072"
)
# serial, TPM name — one swtpm each (a TPM holds one device identity at the key handle)
TPM_DEVICES=(
    "DEMO-T001 tpm-a"
    "DEMO-T002 tpm-b"
)
TPM_KEY_HANDLE=0x81000101

PIDS=()
step() { printf '\n== %s\n' "$*"; }
die() {
    printf 'demo: ERROR: %s\n' "$*" >&2
    exit 1
}

stop_pid() {
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$? i
    set +e
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        stop_pid "${PIDS[$i]}"
    done
    [ "$rc" -eq 0 ] || echo "demo: failed (exit $rc); see $DEMO/log/" >&2
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A server left over from a run that was killed hard: stop it by its saved PID, and only if
# that PID still is our nginx.
stale_server() {
    local pidf=$DEMO/nginx/nginx.pid pid
    [ -f "$pidf" ] || return 0
    pid=$(cat "$pidf")
    if [ -n "$pid" ] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$DEMO/nginx/nginx.conf"; then
        echo "stopping the demo nginx left from an earlier run (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        sleep 0.5
    fi
}

free_port() {
    common_free_port || die "no free TCP port on 127.0.0.1"
}

# write_secret FILE: a fresh random PIN, no trailing newline, mode 0600.
write_secret() {
    (umask 077 && openssl rand -hex 12 | tr -d '\n' >"$1")
    chmod 0600 "$1"
}

# csv_field VALUE: RFC 4180 quoting when needed.
csv_field() {
    case "$1" in
    *[,\"]* | *$'\n'*) printf '"%s"' "${1//\"/\"\"}" ;;
    *) printf '%s' "$1" ;;
    esac
}

# ---------------------------------------------------------------------------------------
step "packages"
# shellcheck source=scripts/deps.sh
. "$repo/scripts/deps.sh"
# shellcheck source=scripts/common.sh
. "$repo/scripts/common.sh"
# shellcheck source=scripts/demo-tpm-up.sh
DEMO_DIR=$DEMO . "$repo/scripts/demo-tpm-up.sh"
export DEMO_DIR=$DEMO
prov_deps

step "build ($build)"
if [ -f "$build/meson-private/coredata.dat" ]; then
    meson setup --reconfigure "$build" "$repo" >/dev/null
else
    meson setup "$build" "$repo" >/dev/null
fi
meson compile -C "$build" >/dev/null
PROVISIONER=$build/provisioner
[ -x "$build/provisioner" ] && [ -f "$build/provisioner" ] && PROVISIONER=$build/provisioner
[ -x "$PROVISIONER" ] || die "no provisioner binary in $build"
"$PROVISIONER" --version

step "fresh demo directory ($DEMO)"
stale_server
demo_tpm_stop_saved # TPMs that scripts/demo-tpm-up.sh brought back after an earlier run
rm -rf "$DEMO"
mkdir -p "$DEMO/log" "$DEMO/softhsm/tokens"
cd "$DEMO"

cat >softhsm/softhsm2.conf <<EOF
directories.tokendir = $DEMO/softhsm/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
EOF
export SOFTHSM2_CONF=$DEMO/softhsm/softhsm2.conf
write_secret ca.pin
write_secret device.pin
softhsm2-util --init-token --free --label provisioner-ca --pin "$(cat ca.pin)" \
    --so-pin "$(openssl rand -hex 8)" >log/tokens.log
for d in "${DEVICES[@]}"; do
    read -r _ token _ <<<"$d"
    softhsm2-util --init-token --free --label "$token" --pin "$(cat device.pin)" \
        --so-pin "$(openssl rand -hex 8)" >>log/tokens.log
done
echo "SoftHSM2 tokens: provisioner-ca and ${#DEVICES[@]} devices in $DEMO/softhsm/tokens"

# The example config as shipped: relative paths resolve against demo/.
cp "$repo/examples/provisioner.cnf" provisioner.cnf
cp "$repo/examples/root.conf" root.conf
export PROVISIONER_CONFIG=$DEMO/provisioner.cnf

step "server CA and the local TLS endpoint's certificate"
mkdir -p server-ca
openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout server-ca/ca.key -out server-ca/ca.crt -days 365 \
    -subj "/O=Example Edge/CN=Example Edge Server CA" \
    -addext "basicConstraints=critical,CA:true" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" >log/server-ca.log 2>&1
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout server-ca/server.key -out server-ca/server.csr \
    -subj "/O=Example Edge/CN=localhost" >>log/server-ca.log 2>&1
printf '%s\n' "basicConstraints = critical, CA:false" "keyUsage = critical, digitalSignature" \
    "extendedKeyUsage = serverAuth" "subjectAltName = IP:127.0.0.1, DNS:localhost" \
    >server-ca/server.ext
openssl x509 -req -in server-ca/server.csr -CA server-ca/ca.crt -CAkey server-ca/ca.key \
    -CAcreateserial -days 90 -extfile server-ca/server.ext -out server-ca/server.crt \
    >>log/server-ca.log 2>&1
cp server-ca/ca.crt server-ca.pem

step "provisioner ca init"
"$PROVISIONER" ca init
"$PROVISIONER" ca show | sed 's/^/  /'

echo "serial,status,cert_serial,sha256,not_after,storage,error" >results.csv
declare -A STATUS=() KEYTYPE=() NOTAFTER=()
# enroll_one SERIAL DEVICE KEY: one `provisioner enroll`, its line in results.csv
enroll_one() {
    local serial=$1 device=$2 key=$3 rc=0 line cs fp na st err
    KEYTYPE[$serial]=$key
    "$PROVISIONER" enroll --serial "$serial" --device "$device" --key "$key" \
        >"log/enroll-$serial.out" 2>"log/enroll-$serial.err" || rc=$?
    if [ "$rc" -eq 0 ]; then
        line=$(head -n1 "log/enroll-$serial.out")
        cs=$(sed -n 's/.* cert_serial=\([^ ]*\).*/\1/p' <<<"$line")
        fp=$(sed -n 's/.* sha256=\([^ ]*\).*/\1/p' <<<"$line")
        na=$(sed -n 's/.* not_after=\([^ ]*\).*/\1/p' <<<"$line")
        st=$(sed -n 's/.* storage=\(.*\)$/\1/p' <<<"$line")
        STATUS[$serial]=issued
        NOTAFTER[$serial]=$na
        printf '%s,issued,%s,%s,%s,%s,\n' "$(csv_field "$serial")" "$cs" "$fp" "$na" \
            "$(csv_field "$st")" >>results.csv
        echo "  $line"
    else
        err=$(head -n1 "log/enroll-$serial.err")
        STATUS[$serial]="failed(exit $rc)"
        NOTAFTER[$serial]=-
        printf '%s,failed,,,,,%s\n' "$(csv_field "$serial")" "$(csv_field "$err")" >>results.csv
        echo "  $serial FAILED (exit $rc): $err"
    fi
}

step "enroll ${#DEVICES[@]} PKCS#11 devices"
for d in "${DEVICES[@]}"; do
    read -r serial token key <<<"$d"
    enroll_one "$serial" "pkcs11:token=$token" "$key"
done

# ---- TPM devices: two swtpm, each behind its own tpm2-abrmd -----------------------------
# The key is used for TLS through the tpm2 OpenSSL provider, which needs a resource manager
# (doc/platform.md), so both enrollment and handshake go through tpm2-abrmd on a private
# session D-Bus; swtpm is never shared with another client.
step "TPM devices: ${#TPM_DEVICES[@]} swtpm, each behind tpm2-abrmd on a private D-Bus"
# The same functions and names as scripts/demo-tpm-up.sh, which brings these back later.
DEMO_TPM_PIDS=()
demo_tpm_start_bus || { PIDS+=("${DEMO_TPM_PIDS[@]}"); die "the demo D-Bus did not start"; }
PIDS+=("${DEMO_TPM_PIDS[@]}")
DBUS_SESSION_BUS_ADDRESS=$(demo_tpm_bus_address)
export DBUS_SESSION_BUS_ADDRESS
declare -A TCTI=()
for d in "${TPM_DEVICES[@]}"; do
    read -r serial name <<<"$d"
    DEMO_TPM_PIDS=()
    demo_tpm_start "$name" || { PIDS+=("${DEMO_TPM_PIDS[@]}"); die "TPM $name did not start"; }
    PIDS+=("${DEMO_TPM_PIDS[@]}")
    TCTI[$serial]=$(demo_tpm_tcti "$name")
done
for d in "${TPM_DEVICES[@]}"; do
    read -r serial _ <<<"$d"
    enroll_one "$serial" "tpm2:${TCTI[$serial]}" ec-p256
done

step "demo/env"
cat >"$DEMO/env" <<EOF
# Source this file to go on by hand:  . demo/env
export SOFTHSM2_CONF=$DEMO/softhsm/softhsm2.conf
export PROVISIONER_CONFIG=$DEMO/provisioner.cnf
export PROVISIONER_CA_PIN_FILE=$DEMO/ca.pin
export PROVISIONER_DEVICE_PIN_FILE=$DEMO/device.pin
export PROVISIONER=$PROVISIONER
export PATH=$(dirname "$PROVISIONER"):\$PATH
# The TPM devices' resource managers run while the demo runs (key.uri names them); after it
# ended, scripts/demo-tpm-up.sh brings them back (and scripts/demo-tpm-up.sh --stop stops them).
export DBUS_SESSION_BUS_ADDRESS=$DBUS_SESSION_BUS_ADDRESS
$(for d in "${TPM_DEVICES[@]}"; do
    read -r serial _ <<<"$d"
    echo "# $serial: TPM2OPENSSL_TCTI=${TCTI[$serial]}"
done)
export TPM2OPENSSL_TCTI=${TCTI[${TPM_DEVICES[0]%% *}]}
EOF
sed 's/^/  /' env

step "local TLS endpoint: nginx on 127.0.0.1, client certificate required"
"$PROVISIONER" chain export --out client-ca.pem
mkdir -p nginx
PORT=$(free_port)
cat >nginx/nginx.conf <<EOF
worker_processes 1;
daemon off;
pid $DEMO/nginx/nginx.pid;
error_log $DEMO/nginx/error.log info;
events { worker_connections 64; }
http {
    access_log $DEMO/nginx/access.log;
    client_body_temp_path $DEMO/nginx/client_body;
    proxy_temp_path $DEMO/nginx/proxy;
    fastcgi_temp_path $DEMO/nginx/fastcgi;
    uwsgi_temp_path $DEMO/nginx/uwsgi;
    scgi_temp_path $DEMO/nginx/scgi;
    server {
        listen 127.0.0.1:$PORT ssl;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_certificate $DEMO/server-ca/server.crt;
        ssl_certificate_key $DEMO/server-ca/server.key;
        ssl_client_certificate $DEMO/client-ca.pem;
        ssl_verify_client on;
        ssl_verify_depth 3;
        location / {
            default_type text/plain;
            return 200 "hello \$ssl_client_s_dn\n";
        }
    }
}
EOF
nginx -p "$DEMO/nginx" -e "$DEMO/nginx/error.log" -c "$DEMO/nginx/nginx.conf" >log/nginx.log 2>&1 &
PIDS+=($!)
for i in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    kill -0 "${PIDS[-1]}" 2>/dev/null || die "nginx did not start: $(tail -n2 nginx/error.log)"
    sleep 0.1
done
echo "  nginx pid ${PIDS[-1]} on https://127.0.0.1:$PORT/"

# OpenSSL config for the demo's TLS client: the libp11 pkcs11 engine on SoftHSM2
common_engine_conf engine.cnf "$SOFTHSM_MODULE" ||
    die "the libp11 pkcs11 engine is not installed (libengine-pkcs11-openssl)"

step "check and mTLS handshake per device"
declare -A CHECK=() MTLS=()
failures=0
ALL_SERIALS=()
for d in "${DEVICES[@]}" "${TPM_DEVICES[@]}"; do
    ALL_SERIALS+=("${d%% *}")
done
for serial in "${ALL_SERIALS[@]}"; do
    dir=$DEMO/devices/$serial
    if [ "${STATUS[$serial]}" != issued ]; then
        CHECK[$serial]=-
        MTLS[$serial]=-
        failures=$((failures + 1))
        continue
    fi
    if "$PROVISIONER" check "$dir" >"log/check-$serial.out" 2>"log/check-$serial.err"; then
        CHECK[$serial]=ok
    else
        CHECK[$serial]="FAIL: $(head -n1 "log/check-$serial.err")"
        failures=$((failures + 1))
    fi
    if [ -n "${TCTI[$serial]:-}" ]; then
        # TPM: the persistent key through the tpm2 provider, via the device's tpm2-abrmd.
        code=$(printf 'GET / HTTP/1.0\r\nHost: localhost\r\n\r\n' |
            TPM2OPENSSL_TCTI=${TCTI[$serial]} timeout 60 openssl s_client -provider tpm2 \
                -provider default -connect "127.0.0.1:$PORT" -servername localhost -quiet \
                -key "handle:$TPM_KEY_HANDLE" -cert "$dir/client.crt" \
                -cert_chain "$dir/chain.pem" -CAfile "$dir/server-ca.pem" \
                -verify_return_error 2>"log/mtls-$serial.err" | tee "log/mtls-$serial.raw" |
            sed -n '1s/^HTTP\/1\.[01] \([0-9]*\).*/\1/p') || code="s_client failed"
        sed '1,/^\r\?$/d' "log/mtls-$serial.raw" >"log/mtls-$serial.body"
    else
        # The demo's TLS client puts the PIN into the engine URI; the tool itself never does.
        uri="$(cut -d'?' -f1 "$dir/key.uri");pin-value=$(cat device.pin)"
        code=$(OPENSSL_CONF=$DEMO/engine.cnf curl -sS --max-time 30 \
            -o "log/mtls-$serial.body" -w '%{http_code}' --engine pkcs11 --key-type ENG \
            --key "$uri" --cert "$dir/fullchain.pem" --cacert "$dir/server-ca.pem" \
            "https://127.0.0.1:$PORT/" 2>"log/mtls-$serial.err") || code="curl exit $?"
    fi
    if [ "$code" = 200 ]; then
        MTLS[$serial]="200 $(tr -d '\n' <"log/mtls-$serial.body")"
    else
        MTLS[$serial]="FAIL ($code)"
        failures=$((failures + 1))
    fi
done

step "summary"
printf '%-10s %-9s %-7s %-26s %-6s %s\n' SERIAL KEY STATUS NOT_AFTER CHECK "mTLS (nginx on 127.0.0.1:$PORT)"
for serial in "${ALL_SERIALS[@]}"; do
    printf '%-10s %-9s %-7s %-26s %-6s %s\n' "$serial" "${KEYTYPE[$serial]}" \
        "${STATUS[$serial]}" "${NOTAFTER[$serial]}" "${CHECK[$serial]}" "${MTLS[$serial]}"
done
echo
echo "results: $DEMO/results.csv   storage: $DEMO/devices/   CA: $DEMO/ca/"
echo "go on by hand:  . demo/env && provisioner ca show"
echo "the TPM devices again after the demo:  scripts/demo-tpm-up.sh (then --stop)"
if [ "$failures" -ne 0 ]; then
    die "$failures device step(s) failed"
fi
echo "demo: all ${#ALL_SERIALS[@]} devices (${#DEVICES[@]} PKCS#11, ${#TPM_DEVICES[@]} TPM) issued, checked and proven over mTLS"
