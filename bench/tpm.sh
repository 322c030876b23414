#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# TPM enrollment on swtpm against the ESAPI floor (bench/TPM.md), one run, same machine:
#   bench/tpm.sh [BUILD_DIR [N]]        (defaults: build, 50 devices)
# Sets up in BUILD_DIR/bench-tpm: a SoftHSM2 CA token and `provisioner ca init`, one swtpm on a
# free 127.0.0.1 port (stopped by its PID on exit), then runs bench_tpm. See bench/TPM.md.
# bench_tpm is built by meson from bench/bench_tpm.c (BUILD_DIR/bench/bench_tpm).
set -euo pipefail
# shellcheck source=scripts/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/common.sh"

build=$(cd "${1:-build}" && pwd)
n=${2:-50}
prov=$build/provisioner
bench=$build/bench/bench_tpm
module=/usr/lib/softhsm/libsofthsm2.so
for f in "$prov" "$bench" "$module"; do
    [ -x "$f" ] || [ -r "$f" ] || {
        echo "bench/tpm.sh: $f is missing (build first; install softhsm2)" >&2
        exit 1
    }
done
for t in swtpm softhsm2-util openssl; do
    command -v "$t" >/dev/null || {
        echo "bench/tpm.sh: $t is not installed (scripts/deps.sh)" >&2
        exit 1
    }
done

work=$build/bench-tpm
rm -rf "$work"
mkdir -p "$work/softhsm/tokens" "$work/tpm" "$work/devices"
cd "$work"

swtpm_pid=
cleanup() {
    [ -n "$swtpm_pid" ] || return 0
    kill -TERM "$swtpm_pid" 2>/dev/null || true
    wait "$swtpm_pid" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 143' TERM INT

cat >softhsm/softhsm2.conf <<EOF
directories.tokendir = $work/softhsm/tokens
objectstore.backend = file
log.level = ERROR
EOF
export SOFTHSM2_CONF=$work/softhsm/softhsm2.conf
printf '%s' bench-ca-pin >ca.pin
printf '%s' unused >device.pin
chmod 600 ca.pin device.pin
softhsm2-util --init-token --free --label provisioner-ca --pin bench-ca-pin --so-pin bench-so \
    >/dev/null
openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server-ca.key \
    -out server-ca.pem -days 30 -subj "/CN=Bench Server CA" \
    -addext "basicConstraints=critical,CA:true" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
cat >root.conf <<'EOF'
[req]
prompt = no
distinguished_name = dn
x509_extensions = v3_ca
[dn]
CN = Bench Root CA
[v3_ca]
subjectKeyIdentifier = hash
basicConstraints = critical, CA:true
keyUsage = critical, keyCertSign, cRLSign
EOF
cat >provisioner.cnf <<EOF
[provisioner]
pkcs11_module = $module
output_dir = devices
server_ca = server-ca.pem
device_pin = file:device.pin
lot = bench

[ca]
dir = ca
intermediate_key = pkcs11:token=provisioner-ca;object=intermediate
pin = file:ca.pin
intermediate_key_type = ec-p256
intermediate_subject = ca_dn
root_key = pkcs11:token=provisioner-ca;object=root
root_key_type = ec-p384
root_config = root.conf

[ca_dn]
CN = Bench Intermediate CA
EOF
"$prov" --config provisioner.cnf ca init >/dev/null

# swtpm on P and P+1, below the ephemeral port range (the swtpm TCTI connects per command and
# leaves TIME-WAIT sockets on ephemeral ports behind).
for try in $(seq 1 20); do
    port=$(common_free_port pair) || continue
    swtpm socket --tpm2 --server "type=tcp,port=$port,bindaddr=127.0.0.1" \
        --ctrl "type=tcp,port=$((port + 1)),bindaddr=127.0.0.1" --tpmstate "dir=$work/tpm" \
        --flags not-need-init,startup-clear --pid "file=$work/swtpm.pid" >swtpm.log 2>&1 &
    swtpm_pid=$!
    for i in $(seq 1 50); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break 2
        kill -0 "$swtpm_pid" 2>/dev/null || break
        sleep 0.1
    done
    cleanup
    swtpm_pid=
done
[ -n "$swtpm_pid" ] || {
    echo "bench/tpm.sh: swtpm did not start: $(tail -n2 swtpm.log)" >&2
    exit 1
}

"$bench" --config provisioner.cnf --tcti "swtpm:host=127.0.0.1,port=$port" --dir "$work/devices" \
    -n "$n"
