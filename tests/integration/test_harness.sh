#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The harness itself (lib.sh): a check whose own command fails must fail the test, never
# read as "nothing found". Each case runs a small child test script on lib.sh and expects it
# to stop with exit 1 and one FAIL line before it reaches its end; the control cases run the
# same helpers on a good token, file and journal and must reach their end.
# The child bodies are single-quoted on purpose: they expand in the child, not here.
# shellcheck disable=SC2016
. "$(dirname "$0")/lib.sh"
it_setup
need sqlite3

softhsm_setup
token_init dev-h
sqlite3 "$WORK/good.sqlite" 'CREATE TABLE t (x INTEGER)' || fail "sqlite3 cannot make a database"
printf 'one line\n' >"$WORK/nothing.txt"

# child NAME EXPECT BODY: runs BODY in a child test on lib.sh (its work dir under
# $WORK/children); EXPECT "stops" (exit 1, one FAIL line, end not reached) or "ends" (exit 0).
child() {
    local name=$1 expect=$2 body=$3 script=$WORK/test_child_$1.sh rc=0
    {
        echo '. "$PROV_SOURCE_ROOT/tests/integration/lib.sh"'
        echo 'it_setup'
        echo "export SOFTHSM2_CONF=$SOFTHSM2_CONF"
        echo "GOOD_DB=$WORK/good.sqlite NOTHING=$WORK/nothing.txt"
        printf '%s\n' "$body"
        echo 'echo CHILD-END-REACHED'
    } >"$script"
    PROV_BUILD_ROOT=$WORK/children bash "$script" >"$WORK/log/child-$name.out" \
        2>"$WORK/log/child-$name.err" || rc=$?
    sed 's/^/    '"$name"'| /' "$WORK/log/child-$name.out" "$WORK/log/child-$name.err"
    case $expect in
    stops)
        [ "$rc" -eq 1 ] || fail "$name: the child exited $rc, expected 1"
        ! grep -q CHILD-END-REACHED "$WORK/log/child-$name.out" ||
            fail "$name: the child went on after its check failed"
        assert_eq "$(count_re '^FAIL: ' "$WORK/log/child-$name.err")" 1 "$name: FAIL lines"
        ;;
    ends)
        [ "$rc" -eq 0 ] || fail "$name: the control child exited $rc: $(head -n2 "$WORK/log/child-$name.err" | tr '\n' ' ')"
        grep -q CHILD-END-REACHED "$WORK/log/child-$name.out" || fail "$name: the control child did not reach its end"
        ;;
    esac
}

# fail inside $(...) stops the test, not only the subshell
child subshell-fail stops 'assert_eq "$(echo partial; fail "inner check failed")" partial "value"'
child pipeline-fail stops 'n=$(fail "inner check failed" | wc -l); echo "counted $n"'
# a count on a token that does not exist, or that refuses the PIN, is not "0 objects"
child count-no-token stops 'assert_eq "$(token_count dev-missing "$DEV_PIN_VALUE" privkey)" 0 "keys"'
child count-wrong-pin stops 'assert_eq "$(token_count dev-h wrong-PIN-Heron-5150 privkey)" 0 "keys"'
child list-wrong-pin stops '[ -z "$(token_list dev-h wrong-PIN-Heron-5150)" ] || fail "objects"'
# a count in a file that does not exist is not 0 matches
child count-no-file stops 'assert_eq "$(count_re x "$WORK/no-such-file")" 0 "matches"'
# a query on something that is not a journal is not an empty result
child sql-bad-db stops 'assert_eq "$(sql_q "$NOTHING" "SELECT count(*) FROM t")" "" "rows"'
child sql-bad-query stops 'assert_eq "$(sql_q "$GOOD_DB" "SELECT x FROM no_such_table")" "" "rows"'
# controls: the same helpers on a good token, file and database count 0 and go on
child controls ends '
assert_eq "$(token_count dev-h "$DEV_PIN_VALUE" privkey)" 0 "keys on the empty token"
assert_eq "$(token_list dev-h "$DEV_PIN_VALUE")" "" "objects on the empty token"
assert_eq "$(count_re "^no match$" "$NOTHING")" 0 "matches"
assert_eq "$(printf "a\nb\na\n" | count_re "^a$")" 2 "matches on stdin"
assert_eq "$(sql_q "$GOOD_DB" "SELECT count(*) FROM t")" 0 "rows"
assert_eq "$(sql_q "$GOOD_DB" "SELECT x FROM t")" "" "rows"'
