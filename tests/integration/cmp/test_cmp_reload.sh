#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# SIGHUP re-reads the CA service's configuration (doc/ca-service.md, "Operation"), against
# `openssl cmp`:
# - the served profile changed (its lifetime, 30 -> 7 days): the next certificate has the new
#   one, and the log line says what was reloaded;
# - a broken file, a changed [ca] intermediate_key (the open CA needs a restart for that), and
#   a profile with a bad value: each one line, "not reloaded, the old one stays", and
#   the certificates go on under the configuration that stays;
# - stations and lots need no SIGHUP: a station registered and a lot added while the service
#   runs are served at once, a station revoked meanwhile is refused at once.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../batch/batch_lib.sh"
. "$(dirname "$0")/cmp_lib.sh"
it_setup
need sqlite3
batch_ca
cmp_profiles
CFG=$PROVISIONER_CONFIG
cp "$CFG" "$WORK/good.cnf"
cmp_station R1
prov 0 ca lot add LOT-R --count 20 --station R1
cmp_serve

# ir NAME STATION: openssl cmp asks as STATION for CN=NAME with a fresh key; the certificate
# in $WORK/NAME.crt
ir() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$WORK/$1.key" \
        2>/dev/null || fail "openssl genpkey"
    cmp_client "$1" "$2" -cmd ir -newkey "$WORK/$1.key" -subject "/CN=$1" -certout "$WORK/$1.crt"
}

# days CERT: the certificate's lifetime in whole days
days() {
    local nb na
    nb=$(date -d "$(openssl x509 -in "$1" -noout -startdate | cut -d= -f2)" +%s)
    na=$(date -d "$(openssl x509 -in "$1" -noout -enddate | cut -d= -f2)" +%s)
    echo $(((na - nb + 43200) / 86400))
}

# hup PATTERN: SIGHUP to the service, then its log has one more line matching PATTERN
hup() {
    local n
    n=$(grep -cE "$1" "$CMP_LOG" || true)
    kill -HUP "$CMP_PID"
    for _ in $(seq 1 100); do
        [ "$(grep -cE "$1" "$CMP_LOG" || true)" -gt "$n" ] && break
        sleep 0.05
    done
    [ "$(grep -cE "$1" "$CMP_LOG" || true)" -gt "$n" ] ||
        fail "SIGHUP: no log line /$1/: $(tail -n2 "$CMP_LOG" | tr '\n' ' ')"
    kill -0 "$CMP_PID" || fail "SIGHUP stopped the service"
}

# config_with SED: the good config through sed, made the service's config (whole, at once)
config_with() {
    sed "$1" "$WORK/good.cnf" >"$WORK/next.cnf"
    mv "$WORK/next.cnf" "$CFG"
}

ir C30 R1 || fail "ir: $(tail -n3 "$WORK/log/cmp-C30.log" | tr '\n' ' ')"
assert_eq "$(days "$WORK/C30.crt")" 30 "the device profile's lifetime at start"

# ---- the served profile changed: 7 days ----------------------------------------------------
config_with '/^\[profile_device\]$/,/^\[/ s/^days = 30$/days = 7/'
cp "$CFG" "$WORK/good.cnf"
hup 'SIGHUP: configuration reloaded: profiles .*device.* \(issuing under device\)'
ir C7 R1 || fail "ir after SIGHUP: $(tail -n3 "$WORK/log/cmp-C7.log" | tr '\n' ' ')"
assert_eq "$(days "$WORK/C7.crt")" 7 "the lifetime after SIGHUP"
assert_strict_cert "$WORK/C7.crt"

# ---- configurations that are not taken: the old one stays ----------------------------------
config_with 's/^\[profile_device\]$/[profile_device/'
hup 'SIGHUP: configuration not reloaded, the old one stays: .*provisioner.cnf'
config_with 's|^intermediate_key = .*|intermediate_key = pkcs11:token=provisioner-ca;object=other|'
hup 'SIGHUP: configuration not reloaded, the old one stays: .*\[ca\] intermediate_key changed: the open CA needs a restart'
config_with '/^\[profile_device\]$/,/^\[/ s/^days = 7$/days = seven/'
hup 'SIGHUP: configuration not reloaded, the old one stays: .*days'
ir C7B R1 || fail "ir after refused reloads: $(tail -n3 "$WORK/log/cmp-C7B.log" | tr '\n' ' ')"
assert_eq "$(days "$WORK/C7B.crt")" 7 "the lifetime after refused reloads (the old config)"
cp "$WORK/good.cnf" "$CFG"

# ---- stations and lots: read from the CA index on every request, no SIGHUP -----------------
cmp_station R2
prov 0 ca lot add LOT-R2 --count 5 --station R2
ir R2A R2 || fail "a station registered while the service runs: $(tail -n3 "$WORK/log/cmp-R2A.log" | tr '\n' ' ')"
assert_eq "$(sql_q "$IT_CA_DIR/index.sqlite" "SELECT lot FROM certificate WHERE serial = 'R2A'")" \
    LOT-R2 "the lot added while the service runs"
prov 0 ca station revoke R1
if ir R1X R1; then
    fail "a station revoked while the service runs was served"
fi
assert_grep "$CMP_LOG" 'ir station=R1 serial=R1X outcome="refused: .*revoked' \
    "the revoked station refused at once"
cmp_stop
