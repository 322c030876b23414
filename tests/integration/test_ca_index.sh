#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The CA index (<CA dir>/index.sqlite, provisioner/pki/ca_index.h), the CA's record of what it
# issued, on real SoftHSM2 tokens:
# - a serial certified by `enroll` is refused (exit 5) when enrolled again into other
#   storage on another token, until --reissue, which supersedes the first certificate;
# - `batch` refuses a row whose serial enroll or another lot certified, until --reissue; a
#   lot stopped between the index and its journal resumes, superseding in the index;
# - a certificate signed before the storage write fails (a full disk) is recorded and shown;
# - an interrupted enroll (test crash hooks, then SIGKILL at random instants) is settled by
#   the next enroll of the serial or on the device: no orphan key, public key or certificate
#   object on the token, no temp file in storage, every serial with one delivered certificate
#   that is its storage's, nothing undelivered left in the index;
# - two enrolls of one serial at once: exactly one certifies it;
# - an older CA's issued-keys file is imported on first use and refused keys stay refused;
# - `ca show` (text and --json) reports the counts and the undelivered certificates.
# ENROLL_KILLS changes how many kills land on a running enroll (16).
. "$(dirname "$0")/lib.sh"
it_setup
need sqlite3 unshare pkcs11-tool jq
kills_wanted=${ENROLL_KILLS:-16}

ca_fixture pkcs11
for t in dev-a dev-b dev-c dev-kill; do
    token_init "$t"
done

index_q() {
    sqlite3 -batch -noheader "$IT_CA_DIR/index.sqlite" "$1" ||
        fail "sqlite3 on the CA index failed: $1"
}
cert_serial_of() { # the lower-case hex serial of a PEM certificate
    openssl x509 -in "$1" -noout -serial | sed 's/^serial=//' | tr 'A-F' 'a-f'
}
# ids_on TOKEN TYPE: the CKA_IDs of the token's objects of TYPE (privkey, pubkey, cert), sorted
ids_on() {
    p11 "$1" "$DEV_PIN_VALUE" --list-objects --type "$2" 2>/dev/null |
        awk '/^ *ID:/ { print tolower($2) }' | sort
}
# storage_ids DIR...: the key ids the identities in DIR... name (key.uri), sorted
storage_ids() {
    local d
    for d in "$@"; do
        [ -f "$d/key.uri" ] && pct_to_hex "$(uri_attr "$(cat "$d/key.uri")" id)"
    done | sort
}

# ---- 1. a serial certified by enroll is not certified again without --reissue ---------------
it_log "case 1: the same serial, other storage, other token"
prov 0 enroll --serial SN-DUP --device pkcs11:token=dev-a
first=$(cert_serial_of devices/SN-DUP/client.crt)
assert_eq "$(index_q "SELECT issued_by || ' ' || status || ' ' || cert_serial FROM certificate WHERE serial = 'SN-DUP'")" \
    "enroll delivered $first" "the CA index after enroll"
prov 5 enroll --serial SN-DUP --device pkcs11:token=dev-b --storage "$WORK/elsewhere/SN-DUP"
assert_one_error SN-DUP "$first" "already certified" "enroll"
assert_eq "$(ids_on dev-b privkey)" "" "keys on dev-b after a refused enroll"
assert_eq "$(tree_digest "$WORK/elsewhere")" "(absent)" "storage after a refused enroll"
prov 0 enroll --serial SN-DUP --device pkcs11:token=dev-b --storage "$WORK/elsewhere/SN-DUP" \
    --reissue
second=$(cert_serial_of "$WORK/elsewhere/SN-DUP/client.crt")
assert_eq "$(index_q "SELECT cert_serial || ' ' || status FROM certificate WHERE serial = 'SN-DUP' ORDER BY id")" \
    "$(printf '%s superseded\n%s delivered' "$first" "$second")" "SN-DUP after --reissue"
assert_eq "$(index_q "SELECT count(*) FROM certificate a JOIN certificate b ON a.superseded_by = b.id WHERE a.cert_serial = '$first' AND b.cert_serial = '$second'")" \
    1 "the superseded certificate names its successor"

# ---- 2. a batch row whose serial enroll or another lot certified --------------------------
it_log "case 2: batch rows against the CA index"
# (SN-DUP into storage of its own: the rule at work is the index's, not the storage's)
printf 'serial,device,storage\nSN-DUP,pkcs11:token=dev-c,batch-dup\nSN-LOT-1,pkcs11:token=dev-c,\n' >lot1.csv
prov 1 --config provisioner.cnf batch lot1.csv --no-progress
assert_grep lot1.results.csv '^SN-DUP,failed,.*already certified.*enroll' "lot1: SN-DUP refused"
assert_grep lot1.results.csv '^SN-LOT-1,issued,' "lot1: SN-LOT-1 issued"
assert_eq "$(ids_on dev-c privkey | wc -l)" 1 "keys on dev-c: SN-LOT-1's only"
prov 0 batch lot1.csv --no-progress --reissue SN-DUP
assert_eq "$(index_q "SELECT issued_by || ' ' || status FROM certificate WHERE serial = 'SN-DUP' ORDER BY id")" \
    "$(printf 'enroll superseded\nenroll superseded\nbatch delivered')" "SN-DUP after the lot's --reissue"
assert_eq "$(index_q "SELECT lot || ' ' || status FROM certificate WHERE serial = 'SN-LOT-1'")" \
    "LOT-IT-1 delivered" "SN-LOT-1 in the index"
# The same lot name with another journal is another lot: its serials are refused.
printf 'serial,device,storage\nSN-LOT-1,pkcs11:token=dev-c,lot2-sn\n' >lot2.csv
prov 1 batch lot2.csv --no-progress
assert_grep lot2.results.csv '^SN-LOT-1,failed,.*already certified.*lot LOT-IT-1' "lot2: SN-LOT-1 refused"
assert_eq "$(ids_on dev-c privkey | wc -l)" 2 "keys on dev-c after lot2 (SN-DUP, SN-LOT-1)"

# A lot stopped right after a certificate reached the index, before its journal knew it: the
# same command resumes the row, and its new certificate supersedes that one (the journal is
# the authority within its lot).
it_log "case 2b: a lot stopped between the CA index and its journal"
printf 'serial,device\nSN-RES-1,pkcs11:token=dev-c\nSN-RES-2,pkcs11:token=dev-c\nSN-RES-3,pkcs11:token=dev-c\n' >resume.csv
rc=0
# --jobs 1: the index's second certificate is then SN-RES-2's, before its journal knows it
# (with a second worker on the token SN-RES-2 may be certified first and SN-RES-1 second,
# SN-RES-2's certificate then already in its journal: factory/README.md, "Concurrency")
PROVISIONER_TEST_CRASH_AT=ca-issued:2 "$PROVISIONER" batch resume.csv --no-progress --jobs 1 \
    >"$WORK/log/resume-crash.out" 2>"$WORK/log/resume-crash.err" || rc=$?
assert_eq "$rc" 137 "batch stopped by the crash hook"
orphan=$(index_q "SELECT cert_serial FROM certificate WHERE serial = 'SN-RES-2'")
[ -n "$orphan" ] || fail "the certificate signed before the stop is not in the CA index"
prov 0 batch resume.csv --no-progress
assert_eq "$(sqlite3 resume.journal.sqlite "SELECT count(*) FROM device WHERE state = 'proven'")" 3 \
    "rows proven after the resume"
assert_eq "$(index_q "SELECT status FROM certificate WHERE cert_serial = '$orphan'")" superseded \
    "the certificate signed before the stop"
for sn in SN-RES-1 SN-RES-2 SN-RES-3; do
    assert_eq "$(index_q "SELECT cert_serial FROM certificate WHERE serial = '$sn' AND status = 'delivered'")" \
        "$(sqlite3 resume.journal.sqlite "SELECT c.cert_serial FROM certificate c JOIN device d ON d.cert_id = c.id WHERE d.serial = '$sn'")" \
        "$sn: the CA index's current certificate is the journal's"
done

# ---- 3. a full disk after signing: the certificate is recorded and shown ------------------
it_log "case 3: storage on a full filesystem"
mkdir -p "$WORK/full"
real=$PROVISIONER
cat >"$WORK/full-disk" <<EOF
#!/bin/sh
# the storage filesystem: 8 KiB of tmpfs, in a mount namespace of this run only
exec unshare --mount -- sh -c 'mount -t tmpfs -o size=8k tmpfs "\$0" && exec "\$@"' \
    "$WORK/full" "$real" "\$@"
EOF
chmod 0755 "$WORK/full-disk"
PROVISIONER=$WORK/full-disk prov 6 enroll --serial SN-FULL --device pkcs11:token=dev-a \
    --storage "$WORK/full/SN-FULL"
assert_one_error SN-FULL
assert_eq "$(index_q "SELECT status || ' ' || issued_by FROM certificate WHERE serial = 'SN-FULL'")" \
    "abandoned enroll" "the certificate signed before the full disk"
full_serial=$(index_q "SELECT cert_serial FROM certificate WHERE serial = 'SN-FULL'")
[ -n "$full_serial" ] || fail "no certificate serial recorded for SN-FULL"
prov 0 ca show
assert_grep "$PROV_OUT" "^undelivered: SN-FULL cert_serial=$full_serial abandoned \\(issued by enroll at " \
    "ca show: the lost certificate"
assert_eq "$(ids_on dev-a privkey | wc -l)" 1 "keys on dev-a after the full disk (SN-DUP's first)"
# the certificate is abandoned, not current: the serial can be enrolled when the disk is fixed
prov 0 enroll --serial SN-FULL --device pkcs11:token=dev-a

# ---- 4. interrupted enrolls at fixed points, settled by the next enroll ---------------------
it_log "case 4: an enroll stopped right after its certificate was recorded"
rc=0
PROVISIONER_TEST_CRASH_AT=ca-issued:1 "$PROVISIONER" enroll --serial SN-CRASH-1 \
    --device pkcs11:token=dev-kill >"$WORK/log/crash1.out" 2>"$WORK/log/crash1.err" || rc=$?
assert_eq "$rc" 137 "enroll stopped by the crash hook"
crash1=$(index_q "SELECT cert_serial FROM certificate WHERE serial = 'SN-CRASH-1' AND status = 'issued'")
[ -n "$crash1" ] || fail "the interrupted enroll's certificate is not recorded as issued"
assert_eq "$(index_q "SELECT count(*) FROM attempt WHERE finished_at IS NULL")" 1 "open attempts"
prov 0 ca show --json
assert_eq "$(jq -r '.index.undelivered[] | select(.serial == "SN-CRASH-1") | .status' "$PROV_OUT")" \
    issued "ca show --json: the interrupted enroll's certificate"
assert_eq "$(jq -r '.index.open_attempts' "$PROV_OUT")" 1 "ca show --json: open attempts"
# another serial on that device settles it: its key deleted, its certificate abandoned
prov 0 enroll --serial SN-NEXT-0 --device pkcs11:token=dev-kill
assert_eq "$(index_q "SELECT status FROM certificate WHERE cert_serial = '$crash1'")" abandoned \
    "the interrupted certificate after the next enroll on the device"
assert_eq "$(ids_on dev-kill privkey)" "$(storage_ids devices/SN-NEXT-0)" "keys on dev-kill"
prov 0 enroll --serial SN-CRASH-1 --device pkcs11:token=dev-kill

it_log "case 4b: an enroll stopped with its identity stored, before the delivery was recorded"
rc=0
PROVISIONER_TEST_CRASH_AT=enroll-stored:1 "$PROVISIONER" enroll --serial SN-CRASH-2 \
    --device pkcs11:token=dev-kill >"$WORK/log/crash2.out" 2>"$WORK/log/crash2.err" || rc=$?
assert_eq "$rc" 137 "enroll stopped by the crash hook"
assert_file devices/SN-CRASH-2/client.crt
prov 5 enroll --serial SN-CRASH-2 --device pkcs11:token=dev-kill
assert_one_error SN-CRASH-2 "already certified" "$(cert_serial_of devices/SN-CRASH-2/client.crt)"
assert_eq "$(index_q "SELECT status FROM certificate WHERE serial = 'SN-CRASH-2'")" delivered \
    "the stored identity's certificate once settled"
prov 0 check devices/SN-CRASH-2

it_log "case 4c: a --reissue stopped after signing: the old identity is current again"
prov 0 enroll --serial SN-CRASH-3 --device pkcs11:token=dev-kill
old3=$(cert_serial_of devices/SN-CRASH-3/client.crt)
rc=0
PROVISIONER_TEST_CRASH_AT=ca-issued:1 "$PROVISIONER" enroll --serial SN-CRASH-3 --reissue \
    --device pkcs11:token=dev-kill >"$WORK/log/crash3.out" 2>"$WORK/log/crash3.err" || rc=$?
assert_eq "$rc" 137 "enroll --reissue stopped by the crash hook"
assert_eq "$(index_q "SELECT status FROM certificate WHERE cert_serial = '$old3'")" superseded \
    "the old certificate while the reissue is interrupted"
prov 5 enroll --serial SN-CRASH-3 --device pkcs11:token=dev-kill
assert_one_error SN-CRASH-3 "$old3" "already certified"
assert_eq "$(index_q "SELECT status FROM certificate WHERE serial = 'SN-CRASH-3' ORDER BY id")" \
    "$(printf 'delivered\nabandoned')" "SN-CRASH-3 once the interrupted reissue is settled"
prov 0 check devices/SN-CRASH-3
prov 0 enroll --serial SN-CRASH-3 --reissue --device pkcs11:token=dev-kill
assert_eq "$(index_q "SELECT status FROM certificate WHERE serial = 'SN-CRASH-3' ORDER BY id")" \
    "$(printf 'superseded\nabandoned\ndelivered')" "SN-CRASH-3 after a completed reissue"

it_log "case 4d: the serial enrolled on another device settles the interrupted attempt"
rc=0
PROVISIONER_TEST_CRASH_AT=ca-issued:1 "$PROVISIONER" enroll --serial SN-CRASH-4 \
    --device pkcs11:token=dev-kill >"$WORK/log/crash4.out" 2>"$WORK/log/crash4.err" || rc=$?
assert_eq "$rc" 137 "enroll stopped by the crash hook"
crash4=$(index_q "SELECT cert_serial FROM certificate WHERE serial = 'SN-CRASH-4'")
# its device is opened with the PIN source that attempt was given ([provisioner] device_pin)
prov 0 enroll --serial SN-CRASH-4 --device pkcs11:token=dev-b
assert_eq "$(index_q "SELECT status FROM certificate WHERE cert_serial = '$crash4'")" abandoned \
    "the interrupted certificate after the serial was enrolled on another device"
assert_eq "$(ids_on dev-kill privkey)" \
    "$(storage_ids devices/SN-NEXT-0 devices/SN-CRASH-1 devices/SN-CRASH-2 devices/SN-CRASH-3)" \
    "keys on dev-kill: the interrupted attempt's key deleted"

# ---- 5. SIGKILL at random instants -------------------------------------------------------
# SoftHSM2 2.6.1 rewrites token.object in place on C_Login; a SIGKILL in that window empties
# it (the token is gone), which no real token suffers from a host process being killed.
# The kill can land in the device token's login or in the CA token's: each token's file is
# put back from a copy taken now (only the PIN-count flags differ).
token_files=("$WORK"/softhsm/tokens/*/token.object)
[ -e "${token_files[0]}" ] || fail "cannot find the SoftHSM2 token directories"
mkdir -p "$WORK/token-copies"
token_copy() { printf '%s/token-copies/%s' "$WORK" "$(basename "$(dirname "$1")")"; }
for f in "${token_files[@]}"; do
    cp "$f" "$(token_copy "$f")"
done
repaired=0
repair_softhsm() {
    local f
    for f in "${token_files[@]}"; do
        if [ "$(stat -c %s "$f")" != "$(stat -c %s "$(token_copy "$f")")" ]; then
            cp "$(token_copy "$f")" "$f"
            repaired=$((repaired + 1))
            it_log "$f was cut short by the kill: restored"
        fi
    done
}
it_log "case 5: enroll killed at random instants, $kills_wanted kills on a running enroll"
landed=0
serials=()
# The kill instant is drawn over 1.25 times an enroll's duration as measured here (an
# enroll of a new serial on the same token), so that most kills land inside a running enroll
# whatever the machine's speed; the estimate follows each full enroll the loop makes. A
# measurement taken while the machine was busy (another suite beside this one) overestimates
# the next enrolls: every kill that comes too late narrows the window by a fifth (down to a
# fifth of an enroll), every kill that lands widens it back by a twentieth.
now_ms() { echo $(($(date +%s%N) / 1000000)); }
t0=$(now_ms)
prov 0 enroll --serial SN-NEXT-0b --device pkcs11:token=dev-kill
serials+=(SN-NEXT-0b)
enroll_ms=$(($(now_ms) - t0))
window_pct=125
for ((i = 1; landed < kills_wanted && i <= 4 * kills_wanted; i++)); do
    sn=SN-KILL-$i
    serials+=("$sn")
    "$PROVISIONER" enroll --serial "$sn" --device pkcs11:token=dev-kill \
        >>"$WORK/log/kills.out" 2>>"$WORK/log/kills.err" </dev/null &
    pid=$!
    # anywhere in the enroll, or just after it
    sleep "$(awk -v r="$RANDOM" -v d="$enroll_ms" -v w="$window_pct" \
        'BEGIN { printf "%.3f", (r % 1000) * d * w / 1e8 }')"
    if kill -KILL "$pid" 2>/dev/null; then
        landed=$((landed + 1))
        window_pct=$((window_pct + 5 > 125 ? 125 : window_pct + 5))
    else
        window_pct=$(narrowed "$window_pct" 20)
    fi
    wait "$pid" 2>/dev/null || true
    repair_softhsm
    # every other time another serial on the device comes first and settles it
    if [ $((i % 2)) -eq 0 ]; then
        serials+=("SN-NEXT-$i")
        t0=$(now_ms)
        prov 0 enroll --serial "SN-NEXT-$i" --device pkcs11:token=dev-kill
        enroll_ms=$(($(now_ms) - t0))
    fi
    rc=0
    "$PROVISIONER" enroll --serial "$sn" --device pkcs11:token=dev-kill \
        >"$WORK/log/rerun-$i.out" 2>"$WORK/log/rerun-$i.err" </dev/null || rc=$?
    case $rc in
    0) ;;
    5) grep -q "already certified" "$WORK/log/rerun-$i.err" ||
        fail "enroll $sn after a kill: exit 5 for another reason: $(cat "$WORK/log/rerun-$i.err")" ;;
    *) fail "enroll $sn after a kill: exit $rc: $(cat "$WORK/log/rerun-$i.err")" ;;
    esac
done
it_log "$landed kills landed in $((i - 1)) enrolls (an enroll took ${enroll_ms} ms, the window ended at ${window_pct} %); $repaired token file(s) restored"
[ "$landed" -ge "$kills_wanted" ] || fail "only $landed of $kills_wanted kills landed on a running enroll"

it_log "checking dev-kill, the storage directories and the CA index"
dirs=()
for sn in SN-NEXT-0 SN-CRASH-1 SN-CRASH-2 SN-CRASH-3 "${serials[@]}"; do
    dirs+=("$WORK/devices/$sn")
done
want=$(storage_ids "${dirs[@]}")
for type in privkey pubkey cert; do
    assert_eq "$(ids_on dev-kill "$type" | tr '\n' ' ')" "$(printf '%s\n' "$want" | tr '\n' ' ')" \
        "$type objects on dev-kill are exactly the stored identities' keys"
done
leftovers=$(find "$WORK/devices" \( -name '*.tmp.*' -o -name '.provisioner-probe.*' \) -print)
[ -z "$leftovers" ] || fail "temp files left in storage: $leftovers"
assert_eq "$(index_q "SELECT count(*) FROM attempt WHERE finished_at IS NULL")" 0 "open attempts"
assert_eq "$(index_q "SELECT count(*) FROM certificate WHERE status = 'issued'")" 0 \
    "certificates neither delivered nor abandoned"
for d in "${dirs[@]}"; do
    sn=$(basename "$d")
    assert_eq "$(index_q "SELECT cert_serial FROM certificate WHERE serial = '$sn' AND status = 'delivered'")" \
        "$(cert_serial_of "$d/client.crt")" "$sn: its one delivered certificate is its storage's"
    prov 0 check "$d"
done

# ---- 6. two enrolls of one serial at once --------------------------------------------------
it_log "case 6: two enrolls of one serial at the same time"
"$PROVISIONER" enroll --serial SN-RACE --device pkcs11:token=dev-a --storage "$WORK/race-a" \
    >"$WORK/log/race-a.out" 2>"$WORK/log/race-a.err" </dev/null &
pid_a=$!
"$PROVISIONER" enroll --serial SN-RACE --device pkcs11:token=dev-b --storage "$WORK/race-b" \
    >"$WORK/log/race-b.out" 2>"$WORK/log/race-b.err" </dev/null &
pid_b=$!
rc_a=0
rc_b=0
wait "$pid_a" || rc_a=$?
wait "$pid_b" || rc_b=$?
assert_eq "$(printf '%s\n' "$rc_a" "$rc_b" | sort | tr '\n' ' ')" "0 5 " "exit codes of the two enrolls"
assert_eq "$(index_q "SELECT count(*) FROM certificate WHERE serial = 'SN-RACE'")" 1 \
    "certificates of SN-RACE"
[ -e "$WORK/race-a/client.crt" ] && [ -e "$WORK/race-b/client.crt" ] &&
    fail "both enrolls of SN-RACE stored an identity"

# ---- 7. an older CA's issued-keys file -----------------------------------------------------
it_log "case 7: issued-keys of a CA from before the index"
mkdir -p "$WORK/old-ca" && cd "$WORK/old-ca"
ca_fixture pkcs11
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout old.key \
    -subj /CN=SN-OLD-2 -out old.csr 2>/dev/null
hash=$(openssl req -in old.csr -noout -pubkey | openssl pkey -pubin -outform DER | sha256sum | cut -d' ' -f1)
printf '%s 0a1b2c SN-OLD-1\n' "$hash" >ca/issued-keys
printf 'a truncated line\n' >>ca/issued-keys
cp ca/issued-keys issued-keys.before
assert_no_file ca/index.sqlite
prov 5 sign --serial SN-OLD-2 --csr old.csr --out old.pem
assert_one_error_after_warnings "already certified" SN-OLD-1
assert_grep "$PROV_ERR" '^provisioner: warning: .*issued-keys:2: ' "the unreadable line is named"
assert_no_file old.pem
assert_same_file ca/issued-keys issued-keys.before "issued-keys after the import"
assert_mode 600 ca/index.sqlite
assert_eq "$(sqlite3 ca/index.sqlite "SELECT serial || ' ' || cert_serial || ' ' || issued_by || ' ' || status FROM certificate")" \
    "SN-OLD-1 0a1b2c issued-keys delivered" "the imported line"
prov 0 ca show
assert_grep "$PROV_OUT" '^index: .*/ca/index.sqlite: 1 delivered, 0 issued not delivered, 0 superseded, 0 abandoned' \
    "ca show: the imported certificate"
