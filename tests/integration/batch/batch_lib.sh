# SPDX-License-Identifier: Apache-2.0
# Helpers for the batch tests, on top of tests/integration/lib.sh (sourced first).

# batch_ca: ca_fixture, plus a device profile whose subject has an O besides the CN (so that
# a cn that looks like DN syntax could show up as an extra attribute if it were parsed).
batch_ca() {
    ca_fixture pkcs11
    batch_profile >>"$PROVISIONER_CONFIG"
}

# batch_profile: that device profile, [profile_device] and [device_dn], after a blank line.
batch_profile() {
    cat <<'EOC'

[profile_device]
key = ec-p256
days = 30
subject = device_dn

[device_dn]
O = Batch Test
CN = ${cn}
EOC
}

# make_lot MANIFEST TOKENS PER_TOKEN: device tokens dev-01.. and their rows
# (serial,device,cn,x_token; cn empty: the default). Labels are two digits wide.
make_lot() {
    local m=$1 n=0 t r label
    echo "serial,device,cn,x_token" >"$m"
    for ((t = 1; t <= $2; t++)); do
        label=$(printf 'dev-%02d' "$t")
        token_init "$label"
        for ((r = 1; r <= $3; r++)); do
            n=$((n + 1))
            printf 'SN-%05d,pkcs11:token=%s,,%s\n' "$n" "$label" "$label" >>"$m"
        done
    done
}

# token_objects LABEL: "TYPE ID" for every object on the token (TYPE privkey, pubkey, cert,
# data or other; ID "-" for an object without a CKA_ID, which a check must see too: an
# interrupted key generation can leave exactly such objects).
token_objects() {
    local out
    out=$(token_list "$1" "$DEV_PIN_VALUE") || exit 1
    printf '%s\n' "$out" | awk '
        function flush() { if (t != "") print t, (id == "" ? "-" : id); t = ""; id = "" }
        /^[A-Z][A-Za-z ]*[Oo]bject/ {
            flush()
            t = "other"
            if (/^Private Key Object/) t = "privkey"
            if (/^Public Key Object/) t = "pubkey"
            if (/^Certificate Object/) t = "cert"
            if (/^Data object/) t = "data"
        }
        /^ *ID:/ { id = tolower($2) }
        END { flush() }'
}

# assert_token_matches_journal JOURNAL LABEL [except-idless]: the private keys, public keys
# and certificates on the token are exactly the keys of the journal's current rows for that
# token: nothing left over from an interrupted or superseded attempt, nothing missing. With
# except-idless, objects without a CKA_ID are left out (the caller checks them otherwise: a
# SIGKILL inside SoftHSM2's C_GenerateKeyPair can leave such objects, which no row can name).
assert_token_matches_journal() {
    local t
    sql_q "$1" "SELECT lower(hex(key_id)) FROM device WHERE device_uri = 'pkcs11:token=$2'
                AND state = 'proven' ORDER BY 1" >"$WORK/log/want-$2"
    token_objects "$2" >"$WORK/log/objects-$2"
    if [ "${3:-}" = except-idless ]; then
        filter_lines -v ' -$' "$WORK/log/objects-$2" >"$WORK/log/objects-$2.id" || exit 1
        mv "$WORK/log/objects-$2.id" "$WORK/log/objects-$2"
    fi
    for t in privkey pubkey cert; do
        awk -v t=$t '$1 == t { print $2 }' "$WORK/log/objects-$2" | sort >"$WORK/log/got-$2-$t"
        cmp -s "$WORK/log/got-$2-$t" "$WORK/log/want-$2" ||
            fail "token $2: $t objects are not the journal's keys: $(diff "$WORK/log/got-$2-$t" "$WORK/log/want-$2" | grep '^[<>]' | head -n4 | tr '\n' ' ')"
    done
    if grep -qE '^(data|other) ' "$WORK/log/objects-$2"; then
        fail "token $2: unexpected objects: $(grep -E '^(data|other) ' "$WORK/log/objects-$2" | tr '\n' ' ')"
    fi
}

# journal_q SQL: one query on the journal of this test ($JOURNAL).
journal_q() {
    sql_q "$JOURNAL" "$1"
}

# SoftHSM2 2.6.1 rewrites a token's token.object in place (truncate, then write) on every
# C_Login. The backend logs in once per token and process, and SIGINT/SIGTERM never cut a
# module call short, but a SIGKILL can still land in that window and leave the file empty:
# the token (label, PIN) is gone, which a real token never suffers from a host process being
# killed. softhsm_backup copies every token.object (call it after the tokens are made);
# softhsm_repair, after each SIGKILL, puts back a file whose size changed (only the PIN-count
# flags differ after a login) and counts it in SOFTHSM_REPAIRED, and the test says so.
SOFTHSM_REPAIRED=0
softhsm_backup() {
    local d
    mkdir -p "$WORK/token-backup"
    for d in "$WORK"/softhsm/tokens/*/; do
        cp "$d/token.object" "$WORK/token-backup/$(basename "$d")"
    done
}
softhsm_repair() {
    local d b
    for d in "$WORK"/softhsm/tokens/*/; do
        b=$WORK/token-backup/$(basename "$d")
        if [ -f "$b" ] && [ "$(stat -c %s "$d/token.object")" != "$(stat -c %s "$b")" ]; then
            cp "$b" "$d/token.object"
            SOFTHSM_REPAIRED=$((SOFTHSM_REPAIRED + 1))
            it_log "SoftHSM2 token.object of $(basename "$d") was cut short by the kill: restored"
        fi
    done
}
