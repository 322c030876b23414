#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The bash completion (data/provisioner.bash), sourced into a plain bash and called the way
# readline calls it: it offers exactly the commands `provisioner --help` lists, each
# command's options exactly as its --help lists them, subcommands, key types as
# `enroll --help` lists them, and profile names from the config.
. "$PROV_SOURCE_ROOT/tests/integration/lib.sh"
it_setup
COMPLETION=$PROV_SOURCE_ROOT/data/provisioner.bash

# complete WORD...: the candidates for the last WORD, one per line, sorted.
complete_words() {
    bash -c '. "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
             _provisioner; printf "%s\n" "${COMPREPLY[@]}"' _ "$COMPLETION" "$PROVISIONER" "$@" |
        sed '/^$/d' | sort -u
}
expect_same() { # WHAT FILE-A FILE-B
    cmp -s "$2" "$3" || fail "$1: $(diff "$2" "$3" | grep '^[<>]' | tr '\n' ' ')"
}

prov 0 --help
sed -n '/^Commands:/,/^$/p' "$PROV_OUT" | awk 'NR > 1 && NF { print $1 }' | sort >commands
[ "$(wc -l <commands)" -ge 8 ] || fail "--help lists only $(wc -l <commands) commands"
complete_words "" >offered
expect_same "completion of the command word vs provisioner --help" offered commands
complete_words c | grep -v '^c' && fail "completion of 'c' offers words not starting with c"
complete_words c >offered-c
grep '^c' commands >commands-c
expect_same "completion of 'c'" offered-c commands-c

while read -r c; do
    prov 0 "$c" --help
    grep -oE -- '--[a-z][a-z0-9-]*' "$PROV_OUT" | grep -vx -- --help | sort -u >"help-$c"
    case "$c" in
    ca | chain | batch | lot)
        # options belong to the subcommands: their union is what --help lists
        complete_words "$c" "" | filter_lines -v '^[^a-z]' | filter_lines -v '\.' >"subs-$c"
        [ -s "subs-$c" ] || fail "no subcommands offered for $c"
        : >"offered-$c"
        while read -r s; do
            complete_words "$c" "$s" -- >>"offered-$c"
        done <"subs-$c"
        [ "$c" = batch ] && complete_words batch lot.csv -- >>"offered-$c"
        ;;
    *) complete_words "$c" -- >"offered-$c" ;;
    esac
    sort -u "offered-$c" | filter_lines -vx -- --help >"offered-$c.s"
    expect_same "options offered for '$c' vs provisioner $c --help" "offered-$c.s" "help-$c"
done <commands
complete_words ca "" >offered-ca-sub
printf 'crl\ninit\nlot\nserve\nshow\nstation\n' >want-ca-sub
expect_same "subcommands of ca" offered-ca-sub want-ca-sub
# a global option before the command does not confuse it
complete_words -v --config x.cnf ca "" >offered-ca-sub2
expect_same "subcommands of ca after global options" offered-ca-sub2 want-ca-sub

# values
prov 0 enroll --help
sed -n 's/^ *--key TYPE *//p' "$PROV_OUT" | grep -oE '[a-z]+-[a-z0-9]+' | sort >keytypes
[ "$(wc -l <keytypes)" -eq 4 ] || fail "enroll --help lists $(wc -l <keytypes) key types"
complete_words enroll --key "" >offered-keys
expect_same "key types offered for --key" offered-keys keytypes
printf '[provisioner]\n[profile_line2]\ndays = 30\n[ profile_bench ]\n[profile_device]\n' >p.cnf
complete_words --config p.cnf enroll --profile "" >offered-profiles
printf 'bench\ndevice\nline2\n' >want-profiles
expect_same "profiles offered from the config" offered-profiles want-profiles
PROVISIONER_CONFIG=$PWD/p.cnf complete_words sign --profile l >offered-profiles2
echo line2 >want-profiles2
expect_same "profiles offered from \$PROVISIONER_CONFIG" offered-profiles2 want-profiles2
complete_words chain verify --purpose "" >offered-purpose
printf 'any\nclient\nserver\n' >want-purpose
expect_same "--purpose values" offered-purpose want-purpose
complete_words lot export --format "" >offered-formats
printf 'aws\nazure-dps\ncsv\nedge\njson\nrecord\n' >want-formats
expect_same "--format values of lot export" offered-formats want-formats
# file arguments complete files
touch manifest-a.csv
complete_words batch manifest- >offered-files
echo manifest-a.csv >want-files
expect_same "batch completes the manifest file" offered-files want-files
it_log "completion offers $(wc -l <commands) commands and their options"
