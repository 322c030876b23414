#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Every built man page renders with man(1) and groff without a single warning, at the
# width of a terminal and of a wide window, and carries the sections a reader looks for.
. "$PROV_SOURCE_ROOT/tests/integration/lib.sh"
it_setup
need man groff
[ -n "${PROV_MAN_PAGES:-}" ] || fail "PROV_MAN_PAGES is empty: no man page was built (-Dman)"

n=0
for page in $PROV_MAN_PAGES; do
    name=$(basename "$page")
    assert_file "$page"
    for width in 80 200; do
        MANWIDTH=$width man --warnings -l "$page" >"$name.$width.txt" 2>"$name.$width.warn" ||
            fail "man -l $name failed: $(head -c 300 "$name.$width.warn")"
        [ ! -s "$name.$width.warn" ] ||
            fail "man --warnings -l $name (MANWIDTH=$width): $(head -c 400 "$name.$width.warn" | tr '\n' '|')"
    done
    groff -ww -z -man "$page" 2>"$name.groff" || fail "groff -man $name failed"
    [ ! -s "$name.groff" ] || fail "groff -ww $name: $(head -c 400 "$name.groff" | tr '\n' '|')"
    for section in NAME SYNOPSIS DESCRIPTION 'SEE ALSO'; do
        assert_grep "$name.80.txt" "^$section\$" "$name has no $section section"
    done
    # scdoc markup that did not convert (an unbalanced * or _) shows up literally
    assert_no_grep "$name.200.txt" '(^|[[:space:]])\*[a-z-]+\*' "$name: unconverted scdoc bold"
    n=$((n + 1))
done
[ "$n" -eq 3 ] || fail "expected 3 man pages, got $n: $PROV_MAN_PAGES"
# provisioner(1) carries every exit code and every command
p1=provisioner.1.80.txt
assert_grep "$p1" '^EXIT STATUS$' "provisioner(1) has no EXIT STATUS"
for code in 0 1 2 3 4 5 6; do
    sed -n '/^EXIT STATUS$/,/^[A-Z]/p' "$p1" | grep -qE "^ +$code\$" ||
        fail "provisioner(1) EXIT STATUS does not document $code"
done
assert_grep "$p1" '^FILES$' "provisioner(1) has no FILES"
it_log "$n man pages render without warnings"
