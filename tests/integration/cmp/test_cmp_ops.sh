#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The CA service in operation (doc/ca-service.md, "Operation"):
# - Type=notify without systemd: NOTIFY_SOCKET is a Unix datagram socket this test reads
#   (python3): READY=1 once it listens, WATCHDOG=1 from the event loop with WATCHDOG_USEC set,
#   STOPPING=1 on SIGTERM; with NOTIFY_SOCKET set where libsystemd cannot be loaded, one line
#   and exit 1 before the CA's token is opened;
# - GET /status: a JSON object (the CA token's state, the requests served and refused);
# - SIGHUP: the TLS certificate read again (a new one served to new connections; a broken
#   file keeps the old one, said in one line); the service goes on;
# - SIGTERM drains: a request whose body is still on its way when the signal comes is
#   answered, a new connection is not accepted, then exit 0;
# - the unit file udev/provisioner-ca.service passes `systemd-analyze verify`.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/cmp_lib.sh"
it_setup
need python3 curl
ca_fixture pkcs11
cmp_profiles
cmp_station OPS
prov 0 ca lot add LOT-OPS --count 10 --station OPS

# ---- notify: a datagram socket that records what arrives, one message a line --------------
NOTIFY=$WORK/notify.sock
python3 - "$NOTIFY" "$WORK/notify.log" <<'EOP' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
with open(sys.argv[2], "a", buffering=1) as log:
    while True:
        msg = s.recv(4096).decode()
        log.write(msg.replace("\n", " ") + "\n")
EOP
listener=$!
it_track "$listener"
for _ in $(seq 1 100); do
    [ -S "$NOTIFY" ] && break
    sleep 0.05
done
[ -S "$NOTIFY" ] || fail "the notify socket did not appear"

# libsystemd is loaded only when the manager asks (provisioner/support/sd_api.h): asked, and
# not loadable, the service says so in one line and stops before the CA's token is opened.
export NOTIFY_SOCKET=$NOTIFY
prov_without 1 libsystemd.so.0 -- ca serve --listen "127.0.0.1:$(free_port)"
unset NOTIFY_SOCKET
assert_one_error "ca serve:" "NOTIFY_SOCKET or WATCHDOG_USEC is set" \
    "libsystemd.so.0 cannot be loaded"
assert_no_grep "$PROV_OUT" 'listening' "no service without its notifications"
[ ! -s "$WORK/notify.log" ] || fail "a notification without libsystemd: $(cat "$WORK/notify.log")"

NOTIFY_SOCKET=$NOTIFY WATCHDOG_USEC=400000 cmp_serve --tls-cert "$WORK/server-ca/server.crt" \
    --tls-key "$WORK/server-ca/server.key"
for _ in $(seq 1 100); do
    grep -q '^READY=1' "$WORK/notify.log" 2>/dev/null && break
    sleep 0.05
done
assert_grep "$WORK/notify.log" '^READY=1 STATUS=listening on 127\.0\.0\.1:' "READY=1 after listening"
sleep 1
[ "$(grep -c '^WATCHDOG=1' "$WORK/notify.log")" -ge 2 ] ||
    fail "no WATCHDOG=1 every 200 ms with WATCHDOG_USEC=400000: $(tr '\n' '|' <"$WORK/notify.log")"
assert_no_grep "$WORK/notify.log" 'STOPPING' "nothing stops yet"

# ---- GET /status ---------------------------------------------------------------------------
# status [CA]: GET /status into status.json, the TLS certificate checked against CA (default:
# the first server CA; after the SIGHUP below the service presents server-ca2's)
status() {
    curl -sS --cacert "${1:-$WORK/server-ca/ca.crt}" "https://127.0.0.1:$CMP_PORT/status" \
        >"$WORK/status.json" || fail "GET /status failed"
}
cmp_client genm OPS -tls_used -tls_trusted "$WORK/server-ca/ca.crt" -cmd genm \
    -infotype caCerts || fail "genm: $(tail -n2 "$WORK/log/cmp-genm.log")"
cmp_client garbage-free OPS -tls_used -tls_trusted "$WORK/server-ca/ca.crt" -cmd ir \
    -newkey "$WORK/stations/OPS.key" -subject /CN=SN-OPS-REUSED -certout "$WORK/reused.pem" ||
    true # the station's own key, certified before: refused
status
python3 - "$WORK/status.json" <<'EOP' || fail "GET /status: $(cat "$WORK/status.json")"
import json, sys
s = json.load(open(sys.argv[1]))
assert s["status"] == "up", s
assert s["ca_token"] == "up", s
assert s["requests"]["served"] >= 1, s
assert s["requests"]["refused"] >= 1, s
assert s["requests"]["unavailable"] == 0, s
assert s["tls"] is True and s["est"] is True, s
assert isinstance(s["open_transactions"], int), s
EOP

# ---- SIGHUP: the TLS certificate again ----------------------------------------------------
served_cert() {
    openssl s_client -connect "127.0.0.1:$CMP_PORT" -servername localhost </dev/null 2>/dev/null |
        openssl x509 -noout -fingerprint -sha256
}
old=$(served_cert)
assert_eq "$old" "$(openssl x509 -in "$WORK/server-ca/server.crt" -noout -fingerprint -sha256)" \
    "the served TLS certificate"
make_server_ca "$WORK/server-ca2"
cp "$WORK/server-ca2/server.crt" "$WORK/server-ca/server.crt"
cp "$WORK/server-ca2/server.key" "$WORK/server-ca/server.key"
kill -HUP "$CMP_PID"
for _ in $(seq 1 100); do
    grep -q 'SIGHUP: TLS certificate .* reloaded' "$CMP_LOG" && break
    sleep 0.05
done
assert_grep "$CMP_LOG" 'SIGHUP: TLS certificate .*server.crt and key reloaded' "the reload is logged"
assert_eq "$(served_cert)" "$(openssl x509 -in "$WORK/server-ca2/server.crt" -noout \
    -fingerprint -sha256)" "the new TLS certificate is served after SIGHUP"
kill -0 "$CMP_PID" || fail "SIGHUP stopped the service"
echo "not a certificate" >"$WORK/server-ca/server.crt"
kill -HUP "$CMP_PID"
for _ in $(seq 1 100); do
    grep -q 'SIGHUP: TLS not reloaded' "$CMP_LOG" && break
    sleep 0.05
done
assert_grep "$CMP_LOG" 'SIGHUP: TLS not reloaded, the old certificate stays: --tls-cert .*server.crt' \
    "a broken certificate file is said in one line"
assert_eq "$(served_cert)" "$(openssl x509 -in "$WORK/server-ca2/server.crt" -noout \
    -fingerprint -sha256)" "the old TLS certificate stays"
status "$WORK/server-ca2/ca.crt"
assert_eq "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["tls_reloads"])' \
    "$WORK/status.json")" 1 "reloads in /status"

# ---- SIGTERM: the request on its way is answered, then exit 0 ------------------------------
python3 - "$CMP_PORT" "$WORK/server-ca2/ca.crt" "$WORK/drain.out" "$WORK/drain.go" <<'EOP' &
import os, socket, ssl, sys, time
port, ca, out, go = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost")
body = b"x" * 2000
s.sendall(b"POST /.well-known/cmp HTTP/1.1\r\nHost: localhost\r\n"
          b"Content-Type: application/pkixcmp\r\nContent-Length: 2000\r\n\r\n" + body[:1000])
open(go, "w").close()           # half the body is out: the test sends SIGTERM now
while os.path.exists(go):
    time.sleep(0.01)
time.sleep(0.2)
s.sendall(body[1000:])
data = b""
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
open(out, "wb").write(data)
EOP
client=$!
for _ in $(seq 1 200); do
    [ -e "$WORK/drain.go" ] && break
    sleep 0.025
done
[ -e "$WORK/drain.go" ] || fail "the draining client did not connect"
kill -TERM "$CMP_PID"
rm -f "$WORK/drain.go"
# the listener is closed once the service says so (on a loaded machine that takes a while)
for _ in $(seq 1 200); do
    grep -q 'stopping: no new connections' "$CMP_LOG" && break
    sleep 0.025
done
if curl -sS -m 2 --cacert "$WORK/server-ca2/ca.crt" "https://127.0.0.1:$CMP_PORT/status" \
    >/dev/null 2>&1; then
    fail "a new connection was accepted after SIGTERM"
fi
wait "$client" || fail "the draining client failed"
rc=0
wait "$CMP_PID" || rc=$?
assert_eq "$rc" 0 "ca serve's exit after SIGTERM"
head -n1 "$WORK/drain.out" | grep -q '^HTTP/1.1 400' ||
    fail "the request on its way was not answered: $(head -c 200 "$WORK/drain.out")"
grep -qi '^Connection: close' "$WORK/drain.out" || fail "the drain's answer does not close"
assert_grep "$CMP_LOG" 'stopping: no new connections' "the drain is logged"
assert_grep "$CMP_LOG" '400 - station=- serial=- outcome="refused: not a PKIMessage \(DER\)" in=2000' \
    "the drained request is logged"
for _ in $(seq 1 40); do
    grep -q '^STOPPING=1' "$WORK/notify.log" && break
    sleep 0.05
done
assert_grep "$WORK/notify.log" '^STOPPING=1' "STOPPING=1 on SIGTERM"
stop_pid "$listener"

# ---- the unit file -------------------------------------------------------------------------
UNIT=$PROV_SOURCE_ROOT/udev/provisioner-ca.service
assert_grep "$UNIT" '^Type=notify$' "Type=notify"
assert_grep "$UNIT" '^WatchdogSec=' "a watchdog"
assert_grep "$UNIT" '^ExecReload=/bin/kill -HUP \$MAINPID$' "reload is SIGHUP"
for k in ProtectSystem=strict NoNewPrivileges=yes PrivateTmp=yes ProtectHome=yes \
    'ReadWritePaths=/var/lib/provisioner'; do
    assert_grep "$UNIT" "^$k" "the unit's $k"
done
need systemd-analyze # package systemd (scripts/deps.sh); it runs without systemd running
# verified as installed, with the binary under test where the unit expects it
mkdir -p "$WORK/unit"
sed "s|/usr/bin/provisioner|$PROVISIONER|" "$UNIT" >"$WORK/unit/provisioner-ca.service"
SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --man=no \
    "$WORK/unit/provisioner-ca.service" >"$WORK/log/verify-unit.log" 2>&1 ||
    fail "systemd-analyze verify: $(tr '\n' ' ' <"$WORK/log/verify-unit.log")"
if grep -v 'network-online.target\|Failed to.*cgroup\|No such file or directory' \
    "$WORK/log/verify-unit.log" | grep -q 'provisioner-ca.service'; then
    fail "systemd-analyze verify: $(tr '\n' ' ' <"$WORK/log/verify-unit.log")"
fi
