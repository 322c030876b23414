#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Secrets in a running process and on disk: the process is not dumpable while it holds a PIN
# (checked in /proc/PID/status while the tool waits for the PIN on an fd); what it creates is
# private unless public by design (umask 077; storage and certificates 0644/0755); a PIN the
# token refused is never sent again in that run - a batch with a wrong CA PIN stops at the
# first C_Login, a wrong device PIN for three rows on one token costs one C_Login, and so
# does one PIN source shared by three tokens worked on in parallel: the other two tokens
# never see it (C_Login calls counted by the fault module, pkcs11/fault_module.c, with no
# fault set; "user PIN count low" on one token only).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/batch/batch_lib.sh"
it_setup
need sqlite3
[ -n "${PROV_FAULT_MODULE:-}" ] || fail "PROV_FAULT_MODULE is not set (run through meson test)"

batch_ca
token_init dev-s

# ---- not dumpable while waiting for the PIN on fd 3 --------------------------------------
# Linux shows no "Dumpable" line in /proc/PID/status; what it does show: the /proc/PID files
# of a non-dumpable process belong to root. So the tool runs as nobody here (on a copy of the
# token directory nobody may use), and the owner of /proc/PID/environ is read while the tool
# waits for its PIN. A plain process as nobody is the control (its files are nobody's).
it_log "case: not dumpable while a PIN is read"
need setpriv
NOBODY=(setpriv --reuid=65534 --regid=65534 --clear-groups)
mkdir -p nb
cp -a softhsm nb/softhsm
sed -i "s|$WORK/softhsm|$WORK/nb/softhsm|" nb/softhsm/softhsm2.conf
chmod -R a+rwX nb
chmod a+rx "$WORK"
chmod a+r provisioner.cnf
"${NOBODY[@]}" sleep 5 &
ctl=$!
it_track "$ctl"
for _ in $(seq 1 50); do
    [ "$(cat "/proc/$ctl/comm" 2>/dev/null)" != sleep ] || break
    sleep 0.1
done
sleep 0.1
assert_eq "$(stat -c %u "/proc/$ctl/environ")" 65534 "control: /proc owner of a dumpable process"
stop_pid "$ctl"
mkfifo nb/pin.fifo
exec 4<>nb/pin.fifo
SOFTHSM2_CONF=$WORK/nb/softhsm/softhsm2.conf "${NOBODY[@]}" "$PROVISIONER" csr --serial SN-SEC-1 \
    --device pkcs11:token=dev-s --pin fd:3 --out "$WORK/nb/s1.csr" \
    3<&4 >"$WORK/log/fd.out" 2>"$WORK/log/fd.err" &
pid=$!
it_track "$pid"
owner=""
for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    # the fd of the PIN pipe is being waited on (poll, so that SIGINT/SIGTERM can end the
    # wait) or read: the tool is inside the PIN source
    if [ "$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null)" = S ] &&
        grep -q '^pos:' "/proc/$pid/fdinfo/3" 2>/dev/null &&
        grep -qE 'pipe_read|poll_schedule' "/proc/$pid/wchan" 2>/dev/null; then
        owner=$(stat -c %u "/proc/$pid/environ")
        break
    fi
    sleep 0.1
done
assert_eq "$owner" 0 "/proc owner (0: not dumpable) of the provisioner waiting for a PIN on fd 3"
printf '%s\n' "$DEV_PIN_VALUE" >&4
IT_SECRETS+=("$DEV_PIN_VALUE")
rc=0
wait "$pid" || rc=$?
exec 4>&-
assert_eq "$rc" 0 "csr as nobody with the PIN from fd 3 (stderr: $(cat "$WORK/log/fd.err"))"
assert_no_secret "$WORK/log/fd.out" "$WORK/log/fd.err"
assert_file "$WORK/nb/s1.csr"

# ---- modes under the tool's own umask (the test's is 022) -------------------------------
it_log "case: file modes"
prov 0 enroll --serial SN-SEC-2 --device pkcs11:token=dev-s
assert_storage devices/SN-SEC-2
assert_mode 755 devices/SN-SEC-2 ca
assert_mode 644 ca/root.crt ca/intermediate.crt ca/chain.pem "$WORK/nb/s1.csr"
mkdir -p lot
make_lot lot/m.csv 1 2
prov 0 batch lot/m.csv --no-progress
assert_mode 644 lot/m.results.csv
assert_mode 600 lot/m.journal.sqlite

# ---- a refused CA PIN: batch stops at the first C_Login ---------------------------------
it_log "case: wrong CA PIN in a batch"
sed -e "s|^pkcs11_module = .*|pkcs11_module = $PROV_FAULT_MODULE|" \
    -e "s|^pin = file:ca.pin|pin = file:wrong-ca.pin|" provisioner.cnf >wrongca.cnf
write_secret "$WORK/wrong-ca.pin" "wrong-CA-PIN-Heron-5150"
mkdir -p lot2
make_lot lot2/m.csv 3 1
before=$(tree_digest devices)
export FAULT_TARGET=$SOFTHSM_MODULE FAULT_LOG=$WORK/log/wrongca.calls
prov 3 --config wrongca.cnf batch lot2/m.csv --no-progress
unset FAULT_LOG
assert_one_error provisioner-ca
assert_eq "$(count_re '^C_Login ' "$WORK/log/wrongca.calls")" 1 "C_Login calls with a wrong CA PIN"
assert_eq "$(count_re '^C_GenerateKeyPair ' "$WORK/log/wrongca.calls")" 0 \
    "keys generated after the CA PIN was refused"
assert_eq "$(tree_digest devices)" "$before" "storage after a wrong CA PIN"

# ---- a refused device PIN: three rows on one token, one C_Login -------------------------
it_log "case: wrong device PIN, three rows on one token"
sed "s|^pkcs11_module = .*|pkcs11_module = $PROV_FAULT_MODULE|" provisioner.cnf >fault.cnf
token_init dev-one
printf 'serial,device\nSN-ONE-1,pkcs11:token=dev-one\nSN-ONE-2,pkcs11:token=dev-one\nSN-ONE-3,pkcs11:token=dev-one\n' \
    >one.csv
write_secret "$WORK/wrong-dev.pin" "wrong-DEV-PIN-Lynx-8080"
export FAULT_LOG=$WORK/log/wrongdev.calls
prov 1 --config fault.cnf batch one.csv --no-progress --pin "file:$WORK/wrong-dev.pin"
unset FAULT_LOG
# one C_Login for the CA, one (refused) for dev-one, none after the refusal
assert_eq "$(count_re '^C_Login 0xa0' "$WORK/log/wrongdev.calls")" 1 "refused C_Login calls"
assert_eq "$(awk '$1 == "C_Login" && $2 == "0xa0" { bad = 1; next } bad && $1 == "C_Login" { n++ } END { print n + 0 }' \
    "$WORK/log/wrongdev.calls")" 0 "C_Login calls after the device PIN was refused"
assert_eq "$(count_re '^SN-ONE-[123],failed,' one.results.csv)" 3 "rows failed"

# ---- a wrong device PIN shared by three tokens: one C_Login in the whole lot --------------
it_log "case: wrong device PIN, three tokens, --jobs 3"
for t in w1 w2 w3; do
    token_init "dev-$t"
done
printf 'serial,device\nSN-W1,pkcs11:token=dev-w1\nSN-W2,pkcs11:token=dev-w2\nSN-W3,pkcs11:token=dev-w3\n' \
    >three.csv
export FAULT_LOG=$WORK/log/three.calls
prov 1 --config fault.cnf batch three.csv --jobs 3 --no-progress --pin "file:$WORK/wrong-dev.pin"
unset FAULT_LOG
assert_eq "$(count_re '^C_Login 0xa0' "$WORK/log/three.calls")" 1 "refused C_Login calls"
# one C_Login for the CA, one (refused) for the first token; none sent to the others
assert_eq "$(count_re '^C_Login ' "$WORK/log/three.calls")" 2 "C_Login calls in the lot"
assert_eq "$(count_re '^SN-W[123],failed,' three.results.csv)" 3 "rows failed"
assert_eq "$(count_re 'not tried on' "$PROV_ERR")" 2 "rows refused without sending the PIN"
low=0
for t in w1 w2 w3; do
    info=$(token_info "dev-$t") || exit 1
    low=$((low + $(count_re 'user PIN count low' <<<"$info")))
done
assert_eq "$low" 1 "tokens that spent a PIN try"
for t in w1 w2 w3; do
    p11 "dev-$t" "$DEV_PIN_VALUE" -I >"$WORK/log/tokeninfo-$t" 2>&1 ||
        fail "dev-$t: no login with the right PIN"
done
# with the right PIN the same command completes every row
prov 0 --config fault.cnf batch three.csv --jobs 3 --no-progress
assert_eq "$(count_re '^SN-W[123],issued,' three.results.csv)" 3 "rows issued after the PIN was fixed"
