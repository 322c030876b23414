#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# One source of truth for the command line: the getopt tables the parsers use, printed by
# `provisioner --list-options`. Every command's --help must list exactly the options its
# parser accepts, the man page must document exactly those per command and subcommand, the
# commands in `provisioner --help` must be the commands the binary has, and
# provisioner.cnf(5) must list exactly the keys provisioner/support/config.c accepts.
. "$PROV_SOURCE_ROOT/tests/integration/lib.sh"
it_setup

MAN1=$PROV_SOURCE_ROOT/doc/provisioner.1.scd
CNF5=$PROV_SOURCE_ROOT/doc/provisioner.cnf.5.scd

prov 0 --list-options
cp "$PROV_OUT" table
assert_no_grep table 'no option table' "a command in main.c has no option table (cmd_<verb>_optsets)"
while IFS=$'\t' read -r name opts; do
    case " $opts " in *" --help "*) ;; *) fail "$name: its parser does not accept --help" ;; esac
done <table

# long_opts: the --options in stdin, one per line, sorted, without --help.
long_opts() {
    filter_lines -oE -- '--[a-z][a-z0-9-]*' | filter_lines -vx -- '--help' | sort -u
}
# table_opts NAME-ERE: the options of the table lines whose name matches, as long_opts.
table_opts() {
    awk -F '\t' -v re="^($1)\$" '$1 ~ re { print $2 }' table | tr ' ' '\n' | sed 's/=$//' | long_opts
}
# same WHAT A B: two option lists (files) are equal, or a failure naming the difference.
same() {
    if ! cmp -s "$2" "$3"; then
        fail "$1: $(diff "$2" "$3" | grep '^[<>]' | tr '\n' ' ') (< $(basename "$2"), > $(basename "$3"))"
    fi
}

# The command table: `provisioner --help` lists exactly the commands the binary has.
prov 0 --help
sed -n '/^Commands:/,/^$/p' "$PROV_OUT" | awk 'NR > 1 && NF { print $1 }' | sort >help-commands
cut -f1 table | grep -v '^global$' | cut -d' ' -f1 | sort -u >table-commands
[ -s table-commands ] || fail "--list-options lists no command"
same "commands in --help vs the binary's command table" help-commands table-commands
long_opts <"$PROV_OUT" >help-global
table_opts global >parser-global
same "provisioner --help vs the global options parser" help-global parser-global

# Every command's --help vs its parser(s): "ca" covers "ca init" and "ca show".
while read -r c; do
    prov 0 "$c" --help
    long_opts <"$PROV_OUT" >"help-$c"
    table_opts "$c|$c .*" >"parser-$c"
    same "provisioner $c --help vs its parser" "help-$c" "parser-$c"
done <table-commands

# provisioner(1): "# OPTIONS" documents the global options, each "## NAME" of "# COMMANDS"
# one command or subcommand; an option is documented by a line starting "*--opt*" (or
# "*-x*, *--opt*").
man_section() { # man_section NAME: the option lines of one subsection of COMMANDS
    awk -v want="$1" '
        /^# / { top = $0 }
        /^## / { sub_ = substr($0, 4) }
        top == "# COMMANDS" && sub_ == want && /^\*-/ { print }' "$MAN1"
}
awk '/^# / { top = $0; next } top == "# OPTIONS" && /^\*-/' "$MAN1" | long_opts >man-global
same "provisioner(1) OPTIONS vs the global options parser" man-global parser-global
awk '/^# / { top = $0 } top == "# COMMANDS" && /^## / { print substr($0, 4) }' "$MAN1" |
    sort >man-names
cut -f1 table | grep -v '^global$' | sort >table-names
same "provisioner(1) COMMANDS subsections vs the binary's commands" man-names table-names
while IFS=$'\t' read -r name _; do
    [ "$name" = global ] && continue
    man_section "$name" | long_opts >"man-$name"
    table_opts "$name" >"parser-$name"
    same "provisioner(1) '## $name' vs its parser" "man-$name" "parser-$name"
done <table

# provisioner.cnf(5) vs the key lists in provisioner/support/config.c.
for s in provisioner ca profile; do
    sed -n "/^static const char \*const ${s}_keys\[\] = {/,/};/p" \
        "$PROV_SOURCE_ROOT/provisioner/support/config.c" | grep -oE '"[a-z0-9_]+"' | tr -d '"' |
        sort >"config-$s"
    [ -s "config-$s" ] || fail "no ${s}_keys[] in provisioner/support/config.c"
    case $s in profile) hdr='## [profile_NAME]' ;; *) hdr="## [$s]" ;; esac
    awk -v want="$hdr" '/^#/ { in_ = ($0 == want); next } in_ && /^\*[a-z0-9_]+\* =/' "$CNF5" |
        sed 's/^\*\([a-z0-9_]*\)\*.*/\1/' | sort >"man-cnf-$s"
    same "provisioner.cnf(5) '$hdr' vs ${s}_keys[] in config.c" "man-cnf-$s" "config-$s"
done
it_log "$(wc -l <table) option tables agree with --help, provisioner(1) and provisioner.cnf(5)"
