#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# A real mutual-TLS handshake with the persistent TPM key: swtpm behind tpm2-abrmd
# on a private session D-Bus (doc/platform.md: TLS 1.3 through the tpm2 OpenSSL provider
# needs a resource manager), the device enrolled by the real binary through the tabrmd TCTI,
# then `openssl s_client` with the key `handle:0x81000101` in the tpm2 provider against
# `openssl s_server -Verify` on 127.0.0.1 that trusts only the device CA chain.
. "$PROV_SOURCE_ROOT/tests/integration/lib.sh"
it_setup
need swtpm tpm2-abrmd dbus-daemon tpm2_getcap
. "$PROV_SOURCE_ROOT/tests/integration/tpm/tpm_lib.sh"

need_file "$(openssl version -m | sed 's/^MODULESDIR: "\(.*\)"$/\1/')/tpm2.so"

ca_fixture pkcs11
swtpm_start m
TCTI_SW=$TCTI

# ---- a private session bus and tpm2-abrmd on it --------------------------------------
abrmd_start "$TCTI_SW"

# ---- enroll through the resource manager -------------------------------------------------
prov 0 enroll --serial TPM-M1 --device "tpm2:$TCTI_RM" --san-dns tpm-m1.devices.example
d=$WORK/devices/TPM-M1
assert_tpm_identity "$TCTI_RM" "$d"
prov 0 check "$d"

# ---- the handshake ------------------------------------------------------------------------
for try in 1 2 3; do
    PORT=$(free_port)
    # (no -naccept: wait_port's probe is a connection of its own)
    openssl s_server -accept "127.0.0.1:$PORT" -www \
        -cert "$WORK/server-ca/server.crt" -key "$WORK/server-ca/server.key" \
        -Verify 3 -verify_return_error -CAfile "$WORK/ca/chain.pem" \
        >"$WORK/log/s_server.out" 2>&1 &
    SERVER_PID=$!
    it_track "$SERVER_PID"
    wait_port "$PORT" "$SERVER_PID" && break
    stop_pid "$SERVER_PID"
    SERVER_PID=
done
[ -n "$SERVER_PID" ] || fail "openssl s_server did not start: $(tail -n2 "$WORK/log/s_server.out")"

printf 'GET / HTTP/1.0\r\n\r\n' |
    TPM2OPENSSL_TCTI=$TCTI_RM timeout 60 openssl s_client -provider tpm2 -provider default \
        -connect "127.0.0.1:$PORT" -servername localhost -tls1_3 \
        -key "handle:$KEY_HANDLE" -cert "$d/client.crt" -cert_chain "$d/chain.pem" \
        -CAfile "$d/server-ca.pem" -verify_return_error -ign_eof \
        >"$WORK/log/s_client.out" 2>&1 ||
    fail "s_client with the TPM key failed: $(grep -iE 'error|alert' "$WORK/log/s_client.out" | head -n3 | tr '\n' ' ')"
stop_pid "$SERVER_PID"

assert_grep "$WORK/log/s_client.out" 'Verify return code: 0 \(ok\)' "the client did not verify the server"
assert_grep "$WORK/log/s_client.out" 'TLSv1\.3' "the handshake was not TLS 1.3"
assert_grep "$WORK/log/s_client.out" 'HTTP/1\.0 200 ok' "no HTTP answer over the mutual TLS session"
# the server asked for, received and verified the TPM-backed client certificate
assert_grep "$WORK/log/s_server.out" 'depth=0 .*CN ?= ?TPM-M1' "the server did not see the device certificate"
assert_no_grep "$WORK/log/s_server.out" 'verify error|verify return:0' "the server rejected the device certificate"
assert_grep "$WORK/log/s_client.out" 'Client certificate|TPM-M1|Acceptable client certificate CA names' \
    "the server did not request a client certificate"
