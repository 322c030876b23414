#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The manifest corpus through the real command. Every malformed manifest under
# tests/data/manifests/bad is refused with exit 2, with each "LINE:COLUMN: reason" of its
# .expect sidecar on stderr as FILE:LINE:COLUMN: reason, and nothing is issued: no journal,
# no results, no storage, and the device token stays empty. Every manifest under good/ passes
# `batch --check`. More than 100 problems print the first 100 and a count.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/batch_lib.sh"
it_setup
batch_ca
cat >>"$PROVISIONER_CONFIG" <<'EOC'

[profile_strict]
key = ec-p256
allowed_keys = ec-p256
EOC
token_init dev-a
data=$PROV_SOURCE_ROOT/tests/data/manifests
n=0

for m in "$data"/bad/*.csv; do
    name=$(basename "$m" .csv)
    cp "$m" "$name.csv"
    prov 2 batch "$name.csv" --no-progress
    while IFS= read -r want; do
        case "$want" in '#'*) continue ;; esac
        grep -qF -- "$name.csv:$want" "$PROV_ERR" ||
            fail "$name: stderr lacks \"$name.csv:$want\": $(head -c 300 "$PROV_ERR" | tr '\n' '|')"
    done <"$data/bad/$name.expect"
    assert_grep "$PROV_ERR" "^provisioner: $name.csv: [0-9]+ problems?, nothing issued$"
    assert_no_file "$name.journal.sqlite"
    assert_no_file "$name.results.csv"
    assert_no_file devices
    n=$((n + 1))
done
[ "$n" -ge 30 ] || fail "only $n malformed manifests in the corpus"
objects=$(token_objects dev-a)
[ -z "$objects" ] || fail "an object appeared on the device token: $objects"

for m in "$data"/good/*.csv; do
    rc=0
    "$PROVISIONER" batch "$m" --check >"$WORK/log/good.out" 2>"$WORK/log/good.err" || rc=$?
    # A build without the TPM backend names the tpm2: rows instead (and only those).
    if [ "$rc" -ne 0 ]; then
        grep -q tpm2: "$m" && [ "$rc" -eq 2 ] &&
            [ "$(count_re 'no backend' "$WORK/log/good.err")" -eq "$(count_re '^[^,]*,"*tpm2:' "$m")" ] ||
            fail "$(basename "$m"): --check exit $rc: $(head -c 300 "$WORK/log/good.err")"
    fi
done

{
    echo "serial,device"
    for ((i = 0; i < 150; i++)); do echo "bad/$i,pkcs11:token=dev-a"; done
} >many.csv
prov 2 batch many.csv
assert_eq "$(count_re '^many.csv:[0-9]*:1: serial' "$PROV_ERR")" 100 "problems printed"
assert_grep "$PROV_ERR" '^many.csv: \.\.\. and 50 more problems$'
it_log "$n malformed manifests refused"
