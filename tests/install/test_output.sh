#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Machine output on real SoftHSM2 tokens: every command that has --json prints one JSON
# document whose fields are exactly the ones provisioner(1) documents under JSON OUTPUT,
# with the documented types (the schema is read from doc/provisioner.1.scd, not repeated
# here); --quiet silences warnings; nothing ever writes a terminal escape sequence, not
# even the progress bar on a terminal.
. "$PROV_SOURCE_ROOT/tests/integration/lib.sh"
it_setup
need jq script
MAN1=$PROV_SOURCE_ROOT/doc/provisioner.1.scd

# schema NAME: "path type" lines of the "## NAME" subsection of JSON OUTPUT.
schema() {
    awk -v want="$1" '/^# / { top = $0 } /^## / { sub_ = substr($0, 4) }
        top == "# JSON OUTPUT" && sub_ == want && /^- \*/' "$MAN1" |
        sed 's/^- \*\([^*]*\)\* (\([a-z|]*\)).*/\1 \2/'
}

# observed FILE: "path type" of every value in a JSON document; array elements are "[]",
# numbers with an integral value are "number/int"; an empty array X also gives "X[] empty".
observed() {
    jq -r 'paths as $p
        | ($p | map(if type == "number" then "[]" else . end)
              | reduce .[] as $e (""; if $e == "[]" then . + "[]" elif . == "" then $e
                                      else . + "." + $e end)) as $n
        | getpath($p) as $v
        | "\($n) \($v | type)\(if ($v | type) == "number" and ($v | floor) == $v then "/int" else "" end)",
          (if ($v | type) == "array" and ($v | length) == 0 then "\($n)[] empty" else empty end)' \
        "$1" | filter_lines -vE '\[\] (string|number|object|array|boolean|null)'
}

CHECKED=()
# check_json NAME: the last run's stdout is JSON that matches schema NAME exactly.
check_json() {
    local name=$1 out=$WORK/json-${1// /-}
    jq empty "$PROV_OUT" 2>"$out.err" || fail "$name --json: not JSON: $(head -c 200 "$out.err")"
    schema "$name" >"$out.schema"
    [ -s "$out.schema" ] || fail "provisioner(1) documents no JSON fields for '$name'"
    observed "$PROV_OUT" >"$out.seen"
    awk -v name="$name" '
        FNR == NR { type[$1] = $2; next }
        $2 == "empty" { empty[$1] = 1; next }
        $2 == "null" { nul[$1 "."] = 1; nul[$1 "[]"] = 1 }
        {
            if (!($1 in type)) { print "undocumented field " $1 " (" $2 ")"; next }
            seen[$1] = 1; t = $2; ok = 0; n = split(type[$1], allowed, "|")
            for (i = 1; i <= n; i++) {
                if (allowed[i] == t || (allowed[i] == "integer" && t == "number/int") ||
                    (allowed[i] == "number" && (t == "number" || t == "number/int"))) ok = 1
            }
            if (!ok) print "field " $1 " is " t ", documented as " type[$1]
        }
        END {
            # the fields of the elements of an array that is empty here cannot be seen
            for (p in type) {
                if (p in seen) continue
                skip = 0
                for (e in empty) if (index(p, e) == 1) skip = 1
                # nor those of an object or array that is null here (enroll without
                # --prove, batch status without --tokens)
                for (e in nul) if (index(p, e) == 1) skip = 1
                if (!skip) print "documented field " p " is missing"
            }
        }
    ' "$out.schema" "$out.seen" >"$out.problems"
    [ ! -s "$out.problems" ] || fail "$name --json: $(sort "$out.problems" | tr '\n' ';')"
    CHECKED+=("$name")
    it_log "$name --json: $(wc -l <"$out.schema") documented fields present with their types"
}

# The commands that take --json (from the parsers) are the ones JSON OUTPUT documents.
prov 0 --list-options
awk -F '\t' '$2 ~ /(^| )--json( |$)/ { print $1 }' "$PROV_OUT" | sort >json-commands
awk '/^# / { top = $0 } top == "# JSON OUTPUT" && /^## / { print substr($0, 4) }' "$MAN1" |
    sort >json-documented
cmp -s json-commands json-documented ||
    fail "commands with --json vs provisioner(1) JSON OUTPUT: $(diff json-commands json-documented | grep '^[<>]' | tr '\n' ' ')"

ca_fixture
token_init dev-a
token_init dev-b
token_init dev-c

prov 0 ca show --json
check_json "ca show"
prov 0 enroll --serial SN-J1 --device pkcs11:token=dev-a --json
check_json enroll
assert_eq "$(jq -r .serial "$PROV_OUT")" SN-J1 "enroll --json serial"
assert_eq "$(jq -r .sha256 "$PROV_OUT" | tr -d : | tr A-F a-f)" \
    "$(fingerprint devices/SN-J1/client.crt)" "enroll --json sha256 vs client.crt"
prov 0 check devices/SN-J1 --json
check_json check
assert_eq "$(jq -r .ok "$PROV_OUT")" true "check --json ok"
# the same shape when the check cannot be carried out, carrying the error
prov 2 check devices/no-such-device --json
check_json check
assert_eq "$(jq -r '"\(.ok) \(.exit)"' "$PROV_OUT")" "false 2" "check --json of no such DIR"
[ "$(jq -r .error "$PROV_OUT")" != null ] || fail "check --json: no error for no such DIR"
prov 0 csr --serial SN-J2 --device pkcs11:token=dev-c --out sn-j2.csr
prov 0 sign --serial SN-J2 --csr sn-j2.csr --out sn-j2.pem --json
check_json sign
prov 0 install --serial SN-J2 --device pkcs11:token=dev-c --cert sn-j2.pem --json
check_json install
assert_eq "$(jq -r .status "$PROV_OUT")" installed "install --json status"
# one valid chain and one out of order, so that findings are there to check
split_pem devices/SN-J1/fullchain.pem part
cat part1.pem part0.pem >reversed.pem
prov 1 chain verify --json --trust ca/root.crt devices/SN-J1/fullchain.pem reversed.pem
check_json "chain verify"
assert_eq "$(jq -r '[.[].valid] | join(",")' "$PROV_OUT")" true,false "chain verify --json validity"

# a lot with one row that fails, so that the status lists a row not proven
printf 'serial,device\nSN-B1,pkcs11:token=dev-b\nSN-B2,pkcs11:token=no-such-token\n' >lot.csv
prov 1 batch lot.csv --json --no-progress
check_json batch
assert_eq "$(jq -r '"\(.rows) \(.issued) \(.failed)"' "$PROV_OUT")" "2 1 1" "batch --json counts"
prov 0 batch status lot.csv --json
check_json "batch status"
# --tokens: an object no journal row explains on dev-b, so that its fields are there to check
printf 'junk' >junk.bin
p11 dev-b "$DEV_PIN_VALUE" --write-object junk.bin --type data --label junk >/dev/null 2>&1 ||
    fail "pkcs11-tool --write-object on dev-b"
prov 0 batch status lot.csv --json --tokens
check_json "batch status"
assert_eq "$(jq -c '[.tokens[].unexplained[] | [.kind, .id, .label]]' "$PROV_OUT")" \
    '[["data",null,"junk"]]' "batch status --tokens --json: the object no row explains"
prov 0 batch report lot.csv --json
check_json "batch report"

# handing the lot over: the lot signer, a record and an inventory
prov 0 lot signer --json
check_json "lot signer"
prov 0 lot export LOT-IT-1 --journal lot.journal.sqlite --format record --output record --json
check_json "lot export"
assert_eq "$(jq -c '[.devices, .left_out, .files]' "$PROV_OUT")" \
    '[1,1,["lot-record.json","lot-record.json.p7s"]]' "lot export --json"

# the station, as udev would start it for a listed USB token (SoftHSM2 standing in)
token_init dev-s
ser=$(token_serial dev-s)
[ -n "$ser" ] || fail "token dev-s: no serial"
echo "1209:0001  $SOFTHSM_MODULE  usb-serial  SoftHSM2" >tokens.table
printf 'serial,device\nSN-S1,pkcs11:serial=%s\n' "$ser" >station.csv
printf '\n[station]\nmanifest = station.csv\ndevice_table = tokens.table\n' >>provisioner.cnf
prov 0 station --instance "usb-1209:0001-$ser" --json
check_json station
assert_eq "$(jq -r '"\(.serial) \(.status) \(.exit) \(.reason)"' "$PROV_OUT")" "SN-S1 issued 0 null" \
    "station --json"

# revocation: SN-J1 revoked, then the CRLs, which ca show then reports
prov 0 revoke SN-J1 --reason keyCompromise --invalidity-date 2026-01-01 --json
check_json revoke
assert_eq "$(jq -r '"\(.reason) \(.new) \(.invalidity_date)"' "$PROV_OUT")" \
    "keyCompromise true 2026-01-01T00:00:00Z" "revoke --json"
prov 0 ca crl --json
check_json "ca crl"
assert_eq "$(jq -r '"\(.crl_number) \(.revoked)"' "$PROV_OUT")" "1 1" "ca crl --json"
prov 0 ca show --json
check_json "ca show"
assert_eq "$(jq -r '[.crls[].state] | join(",")' "$PROV_OUT")" ok,ok "ca show --json crls"

# the CA's registry (doc/ca-service.md): a station (an openssl key, its certificate issued
# under the station profile) and a lot it serves
# shellcheck source=tests/integration/cmp/cmp_lib.sh
. "$PROV_SOURCE_ROOT/tests/integration/cmp/cmp_lib.sh"
cmp_profiles
cmp_station ST-J
prov 0 ca lot add LOT-J --count 3 --station ST-J
prov 0 ca station list --json
check_json "ca station"
assert_eq "$(jq -r '"\(.[0].name) \(.[0].revoked_at) \(.[0].lots)"' "$PROV_OUT")" "ST-J null LOT-J" \
    "ca station list --json"
prov 0 ca lot list --json
check_json "ca lot"
assert_eq "$(jq -r '"\(.[0].name) \(.[0].cap) \(.[0].devices) \(.[0].stations)"' "$PROV_OUT")" \
    "LOT-J 3 0 ST-J/0" "ca lot list --json"

# Every --json command prints its documented object when it fails too, carrying the error
# (error set, exit = the exit status); the error line is still on stderr.
json_failure() {
    local name=$1 code=$2
    check_json "$name"
    assert_eq "$(jq -r .exit "$PROV_OUT")" "$code" "$name --json: exit field"
    [ "$(jq -r .error "$PROV_OUT")" != null ] || fail "$name --json: no error on failure"
    [ -s "$PROV_ERR" ] || fail "$name --json: no error line on stderr"
}
prov 4 enroll --serial SN-F1 --device pkcs11:token=no-such-token --json
json_failure enroll 4
assert_eq "$(jq -r '"\(.serial) \(.status)"' "$PROV_OUT")" "SN-F1 failed" "enroll --json failure"
printf 'garbage\n' >garbage.csr
prov 2 sign --serial SN-F2 --csr garbage.csr --out sn-f2.pem --json
json_failure sign 2
prov 4 install --serial SN-F3 --device pkcs11:token=no-such-token --cert sn-j2.pem --json
json_failure install 4
printf 'serial,device\nbad serial,pkcs11:token=dev-b\n' >badlot.csv
prov 2 batch badlot.csv --json --no-progress
json_failure batch 2
assert_eq "$(jq -r .problems "$PROV_OUT")" 1 "batch --json problems"
prov 2 batch status --journal no-such.journal.sqlite --json
json_failure "batch status" 2
prov 5 lot export NO-SUCH-LOT --journal lot.journal.sqlite --format csv --output x.csv --json
json_failure "lot export" 5
prov 5 lot signer --json
json_failure "lot signer" 5
sed 's|^dir = ca|dir = no-such-ca|' provisioner.cnf >noca.cnf
prov 1 --config noca.cnf ca show --json
json_failure "ca show" 1
prov 5 revoke SN-NO-SUCH --reason cessationOfOperation --json
json_failure revoke 5
prov 1 --config noca.cnf ca crl --json
json_failure "ca crl" 1

# the seed-style root: ca show has lint findings to show
mkdir seed && cd seed
ca_prepare
write_root_conf root.conf seed
prov 0 ca init
prov 0 ca show --json
check_json "ca show"
[ "$(jq '.lint | length' "$PROV_OUT")" -gt 0 ] || fail "ca show --json: no lint for a seed-style root"
cd "$WORK"
export SOFTHSM2_CONF=$WORK/softhsm/softhsm2.conf PROVISIONER_CONFIG=$WORK/provisioner.cnf

# README.md carries the same schema, one line per command, as this awk writes it from the
# man page (regenerate the README lines with it after changing JSON OUTPUT).
awk '/^# / { top = $0 } /^## / { sub_ = substr($0, 4); if (top == "# JSON OUTPUT") printf "\n- `%s`:", sub_; n = 0 }
     top == "# JSON OUTPUT" && /^- \*/ { line = $0; sub(/^- \*/, "", line); p = line; sub(/\*.*/, "", p)
         t = line; sub(/^[^(]*\(/, "", t); sub(/\).*/, "", t); printf "%s `%s` %s", (n++ ? "," : ""), p, t }
     END { print "" }' "$MAN1" | sed '1d' >readme-json
while read -r line; do
    grep -qxF -- "$line" "$PROV_SOURCE_ROOT/README.md" ||
        fail "README.md (Machine output) lacks or differs from: $line"
done <readme-json
[ -s readme-json ] || fail "no JSON OUTPUT schema read from provisioner(1)"

sort -u <(printf '%s\n' "${CHECKED[@]}") >json-checked
cmp -s json-checked json-documented ||
    fail "JSON schemas not exercised here: $(comm -13 json-checked json-documented | tr '\n' ' ')"

# --quiet: a PIN file readable by others is warned about, except with -q
chmod 0644 device.pin
prov 0 check devices/SN-J1
assert_grep "$PROV_ERR" 'warning' "no warning about a world-readable PIN file"
prov 0 -q check devices/SN-J1
[ ! -s "$PROV_ERR" ] || fail "-q still prints on stderr: $(head -c 200 "$PROV_ERR")"
chmod 0600 device.pin

# No escape sequences, not even on a terminal: the batch progress bar drawn on a pty.
token_init dev-d
printf 'serial,device\nSN-T1,pkcs11:token=dev-d\n' >tty.csv
script -qec "'$PROVISIONER' batch tty.csv" tty.log >/dev/null </dev/null ||
    fail "batch on a terminal failed: $(tail -c 300 tty.log)"
assert_grep tty.log '1/1' "no progress bar drawn on a terminal"
if LC_ALL=C grep -q $'\x1b' tty.log; then
    fail "escape sequence written to a terminal: $(LC_ALL=C grep -a $'\x1b' tty.log | od -c | head -n3)"
fi
for f in log/*.out log/*.err; do
    if LC_ALL=C grep -q $'\x1b' "$f"; then fail "escape sequence in $f"; fi
done
it_log "JSON of ${#CHECKED[@]} commands matches provisioner(1); -q and escapes checked"
