#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Rows whose device changes between runs:
# - --reissue onto a new device retires the superseded key on the token it was generated
#   on (the journal records the device per certificate), not on the row's new device;
# - with that old token absent the reissue still completes, the key is named on stderr and
#   listed by `batch status` as not retired, and a later run retires it when the token is
#   back.
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

prov 0 batch report --journal "$JOURNAL" --verify-audit
