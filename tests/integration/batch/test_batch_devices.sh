#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Rows whose device changes between runs, and identities changed outside the lot:
# - --reissue onto a new device retires the superseded key on the token it was generated
#   on (the journal records the device per certificate), not on the row's new device;
# - with that old token absent the reissue still completes, the key is named on stderr and
#   listed by `batch status` as not retired, and a later run retires it when the token is
#   back;
# - a key left by an interrupted attempt on the token the manifest named before is deleted
#   under that token's own lock (PROVISIONER_DEBUG=batch shows the locks), one lock at a
#   time, then the row is enrolled on its new token;
# - `enroll --reissue` of a serial the lot owns: the next batch run says the identity was
#   replaced outside the lot, leaves the storage and the journal row as they are, and
#   `batch --reissue` takes the serial back;
# - `batch status --tokens` lists what no journal row explains on the lot's tokens (a key
#   pair made by hand, an object without a CKA_ID) by handle, class, id and label; plain status
#   opens no token; `check` warns about the ID-less object; a rejected PIN stops the
#   listing.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/batch_lib.sh"
. "$(dirname "$0")/../station/station_lib.sh" # token_dir
it_setup
need jq sqlite3
batch_ca
token_init dev-old
token_init dev-new
token_init dev-gone
JOURNAL=$WORK/lot.journal.sqlite
printf 'serial,device\nSN-A,pkcs11:token=dev-old\nSN-B,pkcs11:token=dev-old\nSN-C,pkcs11:token=dev-gone\n' \
    >lot.csv
prov 0 batch lot.csv --no-progress
assert_grep "$PROV_OUT" '^3 rows: 3 issued, '

# move_row SERIAL LABEL: the manifest names another token for the row.
move_row() {
    sed -i "s/^$1,pkcs11:token=[^,]*/$1,pkcs11:token=$2/" lot.csv
}

# not_retired: the lot's not_retired list from status --json, "SERIAL DEVICE" per line.
not_retired() {
    local out
    prov 0 batch status lot.csv --json >&2
    out=$(jq -r '.lots[0].not_retired[] | "\(.serial) \(.device)"' "$PROV_OUT") ||
        fail "status --json has no not_retired list: $(tr '\n' ' ' <"$PROV_OUT")"
    [ -z "$out" ] || printf '%s\n' "$out"
}

# ---- reissue onto a new device: the old key leaves the old token -------------------------
it_log "case: --reissue SN-A onto dev-new"
old_a=$(journal_q "SELECT lower(hex(key_id)) FROM device WHERE serial = 'SN-A'")
move_row SN-A dev-new
prov 0 batch lot.csv --no-progress --reissue SN-A
assert_grep "$PROV_OUT" '^3 rows: 1 issued, 2 already-issued, 0 failed '
assert_token_matches_journal "$JOURNAL" dev-old
assert_token_matches_journal "$JOURNAL" dev-new
assert_eq "$(journal_q "SELECT count(*) FROM audit WHERE serial = 'SN-A' AND event = 'retired'
             AND detail LIKE '% key_id=$old_a device=pkcs11:token=dev-old'")" 1 \
    "audit record of SN-A's old key retired on dev-old"
assert_eq "$(not_retired)" "" "keys not retired"

# ---- the old token absent: the reissue completes, the key is listed until it is back ------
it_log "case: --reissue SN-C onto dev-new while dev-gone is unplugged"
gone_dir=$(token_dir dev-gone)
old_c=$(journal_q "SELECT lower(hex(key_id)) FROM device WHERE serial = 'SN-C'")
move_row SN-C dev-new
mv "$gone_dir" "$WORK/unplugged"
prov 0 batch lot.csv --no-progress --reissue SN-C
assert_grep "$PROV_OUT" '^3 rows: 1 issued, 2 already-issued, 0 failed '
assert_one_error_re 'warning: serial SN-C: the key of superseded certificate [0-9a-f]+ \(id '"$old_c"'\) stays on pkcs11:token=dev-gone, which is not here: not retired'
assert_eq "$(not_retired)" "SN-C pkcs11:token=dev-gone" "keys not retired while dev-gone is away"
prov 0 batch status lot.csv
assert_grep "$PROV_OUT" "^  SN-C +not retired: key id $old_c of superseded certificate [0-9a-f]+ on pkcs11:token=dev-gone$"
prov 0 check devices/SN-C
mv "$WORK/unplugged" "$gone_dir"
assert_eq "$(token_count dev-gone "$DEV_PIN_VALUE" privkey)" 1 "SN-C's old key on dev-gone"
prov 0 batch lot.csv --no-progress
assert_grep "$PROV_OUT" '^3 rows: 0 issued, 3 already-issued, 0 failed '
assert_eq "$(token_list dev-gone "$DEV_PIN_VALUE")" "" "objects on dev-gone once it is back"
assert_eq "$(not_retired)" "" "keys not retired after dev-gone came back"

# ---- an interrupted key on the token the manifest named before ---------------------------
it_log "case: SN-D interrupted on dev-old, then moved to dev-new"
echo 'SN-D,pkcs11:token=dev-old' >>lot.csv
rc=0
PROVISIONER_TEST_CRASH_AT=intent:1 "$PROVISIONER" -q batch lot.csv --no-progress \
    >"$WORK/log/crash.out" 2>"$WORK/log/crash.err" </dev/null || rc=$?
assert_eq "$rc" 137 "the run stopped by the crash hook"
assert_eq "$(journal_q "SELECT state || ' ' || device_uri FROM device WHERE serial = 'SN-D'")" \
    "intent pkcs11:token=dev-old" "SN-D in the journal"
id_d=$(journal_q "SELECT lower(hex(key_id)) FROM device WHERE serial = 'SN-D'")
# The process died between the intent and C_GenerateKeyPair; the key it was about to make
# is made here with the recorded id, as if it had died just after.
p11 dev-old "$DEV_PIN_VALUE" --keypairgen --key-type EC:prime256v1 --id "$id_d" --label SN-D \
    >"$WORK/log/keygen-d.log" 2>&1 || fail "pkcs11-tool --keypairgen on dev-old: $(tail -n1 "$WORK/log/keygen-d.log")"
assert_eq "$(token_objects dev-old | count_re " $id_d\$")" 2 "SN-D's interrupted key pair on dev-old"
move_row SN-D dev-new
PROVISIONER_DEBUG='batch,clock' prov 0 -v batch lot.csv --no-progress --jobs 1
assert_grep "$PROV_OUT" '^4 rows: 1 issued, 3 already-issued, 0 failed '
assert_eq "$(token_objects dev-old | count_re " $id_d\$")" 0 "SN-D's interrupted key on dev-old"
assert_token_matches_journal "$JOURNAL" dev-old
assert_token_matches_journal "$JOURNAL" dev-new
ser_old=$(token_serial dev-old)
ser_new=$(token_serial dev-new)
filter_lines -E '^provisioner: (debug: \[[0-9]+\.[0-9]{6}\] )?serial SN-D: (holding|released|deleted)' \
    "$PROV_ERR" >"$WORK/log/locks-d.clock"
sed 's/^provisioner: \(debug: \[[0-9.]*\] \)\{0,1\}serial SN-D: //' "$WORK/log/locks-d.clock" \
    >"$WORK/log/locks-d"
# PROVISIONER_DEBUG's clock: every debug line carries the monotonic clock, in order
# (bench/critical.sh times the token's locks by it)
awk '/ debug: / { n++; t = substr($3, 2, length($3) - 2) + 0; if (t < last) bad = 1; last = t }
     END { exit (n < 6 || bad) }' "$WORK/log/locks-d.clock" ||
    fail "SN-D's debug lines without a clock, or out of order: $(tr '\n' '|' <"$WORK/log/locks-d.clock")"
# the old token's lock for the deletion, then the new one's for the key and CSR, let go while
# the CA issues, and taken again for the certificate object (factory/batch_row.c,
# fresh_on_device)
cat >"$WORK/log/locks-d.want" <<EOF
holding the lock of pkcs11:$ser_old
deleted the interrupted attempt's key id $id_d from token dev-old
released the lock of pkcs11:$ser_old
holding the lock of pkcs11:$ser_new
released the lock of pkcs11:$ser_new
holding the lock of pkcs11:$ser_new
released the lock of pkcs11:$ser_new
EOF
cmp -s "$WORK/log/locks-d" "$WORK/log/locks-d.want" ||
    fail "SN-D: the token locks around the deletion: $(diff "$WORK/log/locks-d.want" "$WORK/log/locks-d" | filter_lines '^[<>]' | tr '\n' '|')"

# ---- an identity replaced outside the lot ------------------------------------------------
it_log "case: enroll --reissue SN-B outside the lot"
lot_cert=$(journal_q "SELECT c.cert_serial FROM device d JOIN certificate c ON c.id = d.cert_id
                      WHERE d.serial = 'SN-B'")
prov 0 enroll --serial SN-B --device pkcs11:token=dev-old --reissue
outside_cert=$(openssl x509 -in devices/SN-B/client.crt -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f')
[ "$outside_cert" != "$lot_cert" ] || fail "enroll --reissue kept the certificate"
before=$(tree_digest devices/SN-B)
prov 1 batch lot.csv --no-progress
assert_grep "$PROV_OUT" '^4 rows: 0 issued, 3 already-issued, 1 failed '
assert_one_error "lot.csv:3: serial SN-B:" "holds certificate $outside_cert" \
    "never issued for it" "journal's is $lot_cert" "replaced outside the lot" "--reissue SN-B"
assert_no_grep "$PROV_ERR" 'missing or incomplete|rewriting'
assert_grep lot.results.csv "^SN-B,failed,.*replaced outside the lot"
assert_eq "$(tree_digest devices/SN-B)" "$before" "SN-B's storage after the batch run"
assert_eq "$(journal_q "SELECT state FROM device WHERE serial = 'SN-B'")" proven \
    "SN-B's journal state (what the lot did)"
assert_eq "$(journal_q "SELECT count(*) FROM audit WHERE serial = 'SN-B' AND event = 'outside-change'
             AND detail LIKE '%replaced outside the lot%'")" 1 "the journal's note of the outside change"
prov 0 check devices/SN-B
# --reissue takes it back for the lot (and, replacing that storage, deletes its key)
prov 0 batch lot.csv --no-progress --reissue SN-B
assert_grep "$PROV_OUT" '^4 rows: 1 issued, 3 already-issued, 0 failed '
assert_eq "$(journal_q "SELECT c.cert_serial FROM device d JOIN certificate c ON c.id = d.cert_id
                        WHERE d.serial = 'SN-B'")" \
    "$(openssl x509 -in devices/SN-B/client.crt -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f')" \
    "SN-B's storage holds the lot's new certificate"
prov 0 check devices/SN-B

# ---- objects on the lot's tokens that no journal row explains ----------------------------
it_log "case: batch status --tokens"
# a key pair made on dev-old by hand, and an object without a CKA_ID, as an interrupted key
# generation leaves them
p11 dev-old "$DEV_PIN_VALUE" --keypairgen --key-type EC:prime256v1 --id cafe01 --label stray \
    >"$WORK/log/stray.log" 2>&1 || fail "pkcs11-tool --keypairgen: $(tail -n1 "$WORK/log/stray.log")"
printf 'junk' >"$WORK/junk.bin"
p11 dev-old "$DEV_PIN_VALUE" --write-object "$WORK/junk.bin" --type data --label junk \
    >"$WORK/log/junk.log" 2>&1 || fail "pkcs11-tool --write-object: $(tail -n1 "$WORK/log/junk.log")"
# the harness's own check sees the object without an ID too
assert_eq "$(token_objects dev-old | count_re '^data -$')" 1 "the ID-less object in token_objects"
# plain status never opens a token: it needs no config, hence no module and no PIN
PROVISIONER_CONFIG=$WORK/no-such.cnf prov 0 batch status lot.csv
assert_no_grep "$PROV_OUT" 'not explained|tokens:'
prov 0 batch status lot.csv --tokens
# the tokens the journal names: dev-old and dev-new (dev-gone holds no key of the lot now)
assert_grep "$PROV_OUT" '^tokens: 2$'
assert_grep "$PROV_OUT" "^    not explained: handle 0x[0-9a-f]+ data id \(none\) label \"junk\"$"
for kind in private-key public-key; do
    assert_grep "$PROV_OUT" "^    not explained: handle 0x[0-9a-f]+ $kind id cafe01 label \"stray\"$"
done
assert_eq "$(count_re '^    not explained: ' "$PROV_OUT")" 3 "objects not explained"
assert_grep "$PROV_OUT" '^    [0-9]+ objects, 3 that no journal row explains$'
assert_eq "$(count_re '^    [0-9]+ objects, 0 that no journal row explains$' "$PROV_OUT")" 1 \
    "tokens with nothing unexplained (dev-new)"
prov 0 batch status lot.csv --tokens --json
jq -e '.tokens | length == 2 and
    ([.[] | select(.device == "pkcs11:token=dev-old")][0] | .present and .listed and
     (.unexplained | length) == 3 and
     ([.unexplained[] | select(.id == null and .kind == "data" and .label == "junk")] | length) == 1 and
     ([.unexplained[] | select(.id == "cafe01" and .label == "stray")] | length) == 2)' \
    "$PROV_OUT" >/dev/null || fail "status --tokens --json: $(jq -c .tokens "$PROV_OUT")"
prov 0 batch status lot.csv --json
assert_eq "$(jq -c .tokens "$PROV_OUT")" null "tokens without --tokens"
# check names the ID-less object on the key's token
prov 0 check devices/SN-B
assert_one_error_re 'warning: token dev-old holds 1 object without a CKA_ID \(handle 0x[0-9a-f]+ data\)'
# a rejected PIN stops the listing: exit 3, one line, no other token sent it
write_secret "$WORK/wrong.pin" wrong-PIN-Marten-3131
prov 3 batch status lot.csv --tokens --pin "file:$WORK/wrong.pin"
assert_one_error "C_Login"
# cleaned by hand, nothing is left unexplained and the token is the journal's again
p11 dev-old "$DEV_PIN_VALUE" --delete-object --type data --label junk >/dev/null 2>&1 ||
    fail "pkcs11-tool --delete-object junk"
for t in privkey pubkey; do
    p11 dev-old "$DEV_PIN_VALUE" --delete-object --type "$t" --id cafe01 >/dev/null 2>&1 ||
        fail "pkcs11-tool --delete-object $t cafe01"
done
prov 0 batch status lot.csv --tokens
assert_eq "$(count_re '^    not explained: ' "$PROV_OUT")" 0 "objects not explained after cleaning"
assert_token_matches_journal "$JOURNAL" dev-old
prov 0 batch report --journal "$JOURNAL" --verify-audit
