#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The station on a TPM (swtpm), started as systemd starts provisioner-station@tpmrm0.service
# (the instance udev gives /dev/tpmrm0); [station] tpm_tcti points the instance at the swtpm.
# - the TPM is identified by the SHA-256 of its ECC EK public key, computed here
#   independently with tpm2_createek + openssl; its row (tpm2:ek-sha256=...) is enrolled,
#   proven, reported in one result line; storage, key attributes and NV checked;
# - removal mid-enrollment: swtpm stopped right after the intent, and again right after
#   the certificate was recorded: exit 4, journal failed; with the TPM back (same state,
#   same port, reached under an equivalent but different TCTI, as a TPM back on another
#   /dev/tpmrmN) the unit succeeds, the journal follows the device to its new name, the
#   certificate issued once, one key at the handle;
# - the station PC's own TPM, listed in [station] exclude: a next-free station reports
#   status=excluded (exit 0), claims no row and makes no key on it.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/station_lib.sh"
it_setup
need sqlite3 swtpm tpm2_createek tpm2_getcap tpm2_nvread tpm2_readpublic
. "$PROV_SOURCE_ROOT/tests/integration/tpm/tpm_lib.sh"
ca_fixture pkcs11

# swtpm_restart NAME: the TPM of swtpm_start NAME again, same state and same ports, after
# stop_pid stopped it (a device plugged back in).
swtpm_restart() {
    local dir=$WORK/tpm-$1 port=${TCTI##*port=} pid try
    for try in $(seq 1 50); do
        swtpm socket --tpm2 \
            --server "type=tcp,port=$port,bindaddr=127.0.0.1" \
            --ctrl "type=tcp,port=$((port + 1)),bindaddr=127.0.0.1" \
            --tpmstate "dir=$dir/state" --flags not-need-init,startup-clear \
            --pid "file=$dir/swtpm.pid" >>"$dir/swtpm.log" 2>&1 &
        pid=$!
        it_track "$pid"
        if wait_port "$port" "$pid"; then
            SWTPM_PID=$pid
            return 0
        fi
        sleep 0.2
    done
    fail "swtpm $1 did not come back on port $port: $(tail -n2 "$dir/swtpm.log" | tr '\n' ' ')"
}

swtpm_start t1
SWTPM_PID=$(cat "$WORK/tpm-t1/swtpm.pid")
TPM2TOOLS_TCTI=$TCTI tpm2_createek -G ecc -c "$WORK/log/ek.ctx" -u "$WORK/log/ek.pub" -f pem \
    >"$WORK/log/createek.log" 2>&1 || fail "tpm2_createek: $(tail -n1 "$WORK/log/createek.log")"
TPM2TOOLS_TCTI=$TCTI tpm2_flushcontext -t >/dev/null 2>&1 || true
EK=$(openssl pkey -pubin -in "$WORK/log/ek.pub" -outform DER | sha256sum | cut -c1-64)
[ ${#EK} -eq 64 ] || fail "EK digest not computed"
{
    echo "serial,device,key"
    echo "SN-OTHER,tpm2:ek-sha256=$(printf '%064d' 0),ec-p256"
    echo "SN-T1,tpm2:ek-sha256=$EK,ec-p256"
} >lot.csv
station_config "tpm_tcti=$TCTI"

# remove_at STATE: the station pauses right after the journal records STATE; the TPM is
# stopped; exit 4, journal failed; the TPM comes back.
remove_at() {
    UNIT_EXTRA_ENV=("PROVISIONER_TEST_PAUSE_AT=$1:$WORK/pause")
    unit_start tpmrm0
    UNIT_EXTRA_ENV=()
    station_wait_file "$WORK/pause" "$UNIT_PID"
    stop_pid "$SWTPM_PID"
    rm -f "$WORK/pause"
    unit_wait 4
    assert_result status=failed serial=SN-T1 identity="tpm2:$EK"
    assert_grep "$UNIT_OUT" "reason=\"device removed mid-enrollment: "
    assert_eq "$(jq_ "SELECT state FROM device WHERE serial = 'SN-T1'")" failed "after removal at $1"
    swtpm_restart t1
}

remove_at intent
assert_eq "$(jq_ "SELECT count(*) FROM certificate")" 0 "certificates after removal at intent"
remove_at issued
issued=$(jq_ "SELECT cert_serial FROM certificate")
[ -n "$issued" ] || fail "no certificate recorded before the second removal"

# The TPM comes back under another TCTI (as on another /dev/tpmrmN after a hotplug): the
# same EK, so the same row, and the journal follows the device to its new name.
OLD_TCTI=$TCTI
TCTI="swtpm:port=${OLD_TCTI##*port=},host=127.0.0.1"
sed -i "s|^tpm_tcti = .*|tpm_tcti = $TCTI|" provisioner.cnf
unit_run tpmrm0 0
assert_result instance=tpmrm0 device="tpm2:$TCTI" identity="tpm2:$EK" serial=SN-T1 \
    status=issued cert_serial="$issued" storage="$WORK/devices/SN-T1"
assert_eq "$(jq_ "SELECT device_uri || ' ' || key_uri FROM device WHERE serial = 'SN-T1'")" \
    "tpm2:$TCTI tpm2:$TCTI;handle=$KEY_HANDLE" "journal device and key after the move"
assert_eq "$(jq_ "SELECT count(*) FROM audit WHERE serial = 'SN-T1' AND event = 'device-moved'
                  AND detail = 'from=tpm2:$OLD_TCTI to=tpm2:$TCTI'")" 1 "device-moved audit"
assert_eq "$(jq_ "SELECT count(*) FROM certificate")" 1 "certificates (issued once across removals)"
assert_eq "$(jq_ "SELECT state FROM device WHERE serial = 'SN-T1'")" proven "journal state"
assert_tpm_identity "$TCTI" devices/SN-T1
prov 0 check devices/SN-T1
assert_eq "$(persistent_count "$TCTI" '0x8101|0x81000101')" 1 "device keys at the handle (no leftover)"
unit_run tpmrm0 0
assert_result serial=SN-T1 status=already-issued cert_serial="$issued"
assert_eq "$(jq_ "SELECT count(*) FROM device WHERE serial = 'SN-OTHER'")" 0 "the other TPM's row"
prov 0 batch report --journal "$JOURNAL" --verify-audit

# --- the station PC's own TPM: its tpmrm node starts a unit too; [station] exclude -------
it_log "case: the host TPM is excluded"
T1_TCTI=$TCTI
swtpm_start host
HOST_TCTI=$TCTI
TCTI=$T1_TCTI
TPM2TOOLS_TCTI=$HOST_TCTI tpm2_createek -G ecc -c "$WORK/log/host-ek.ctx" -u "$WORK/log/host-ek.pub" \
    -f pem >"$WORK/log/host-createek.log" 2>&1 ||
    fail "tpm2_createek (host): $(tail -n1 "$WORK/log/host-createek.log")"
TPM2TOOLS_TCTI=$HOST_TCTI tpm2_flushcontext -t >/dev/null 2>&1 || true
HOST_EK=$(openssl pkey -pubin -in "$WORK/log/host-ek.pub" -outform DER | sha256sum | cut -c1-64)
# next-free would hand the host TPM the first free row (SN-OTHER); excluded, it gets none
sed -e "s|^tpm_tcti = .*|tpm_tcti = $HOST_TCTI|" \
    -e "/^\[station\]$/a mode = next-free\nexclude = pkcs11:0000, tpm2:$HOST_EK" provisioner.cnf >host.cnf
claims=$(jq_ "SELECT count(*) FROM station_claim")
rows=$(jq_ "SELECT count(*) FROM device")
PROVISIONER_CONFIG=$WORK/host.cnf prov 0 station --instance tpmrm1
assert_grep "$PROV_OUT" "^station instance=tpmrm1 device=\"tpm2:$HOST_TCTI\" identity=tpm2:$HOST_EK status=excluded "
[ ! -s "$PROV_ERR" ] || fail "an excluded TPM is not an error: $(head -c 300 "$PROV_ERR")"
assert_eq "$(jq_ "SELECT count(*) FROM station_claim")" "$claims" "claims after the host TPM"
assert_eq "$(jq_ "SELECT count(*) FROM device")" "$rows" "journal rows after the host TPM"
has_persistent "$HOST_TCTI" "$KEY_HANDLE" && fail "a key was made on the host TPM"
prov 0 batch report --journal "$JOURNAL" --verify-audit

