# SPDX-License-Identifier: Apache-2.0
# Helpers for the station tests, on top of tests/integration/lib.sh (sourced first).

UNIT=$PROV_SOURCE_ROOT/udev/provisioner-station@.service

# station_config [KEY=VALUE...]: the lot every station test serves: a [station] section
# appended to provisioner.cnf (manifest lot.csv, journal lot.journal.sqlite, then each KEY =
# VALUE given), a device table that maps USB id 1209:0001 to SoftHSM2, and the unit's
# environment file station.env (the config and SOFTHSM2_CONF). Sets JOURNAL.
station_config() {
    local kv
    echo "1209:0001  $SOFTHSM_MODULE  usb-serial  SoftHSM2 standing in for a USB token" >tokens.table
    {
        echo
        echo "[station]"
        echo "manifest = lot.csv"
        echo "journal = lot.journal.sqlite"
        for kv in "$@"; do
            echo "${kv%%=*} = ${kv#*=}"
        done
    } >>provisioner.cnf
    printf 'PROVISIONER_CONFIG=%s\nSOFTHSM2_CONF=%s\n' "$WORK/provisioner.cnf" "$SOFTHSM2_CONF" \
        >station.env
    JOURNAL=$WORK/lot.journal.sqlite
}

# jq_ SQL: a query on the station journal ($JOURNAL).
jq_() { sql_q "$JOURNAL" "$1"; }

# unit_start INSTANCE: runs the station the way systemd runs provisioner-station@INSTANCE:
# the unit's Environment= lines, then its EnvironmentFile (/etc/provisioner/station.env is
# this test's $WORK/station.env), then its ExecStart with %i replaced by the instance and
# /usr/bin/provisioner by the binary under test. In the background; sets UNIT_PID and
# UNIT_OUT/UNIT_ERR (stdout, stderr). Extra environment: UNIT_EXTRA_ENV (array, VAR=VALUE).
unit_start() {
    local inst=$1 line exec_line envs=() f
    while IFS= read -r line; do
        case $line in
        Environment=*) envs+=("${line#Environment=}") ;;
        EnvironmentFile=*)
            f=${line#EnvironmentFile=}
            f=${f#-}
            [ "$f" = /etc/provisioner/station.env ] || fail "unit: unexpected EnvironmentFile $f"
            while IFS= read -r f; do
                case $f in '' | '#'*) ;; *) envs+=("$f") ;; esac
            done <"$WORK/station.env"
            ;;
        ExecStart=*) exec_line=${line#ExecStart=} ;;
        esac
    done <"$UNIT"
    [ -n "${exec_line:-}" ] || fail "unit: no ExecStart in $UNIT"
    exec_line=${exec_line//%i/$inst}
    exec_line=${exec_line/\/usr\/bin\/provisioner/$PROVISIONER}
    UNIT_OUT=$WORK/log/unit-$inst-$((++UNIT_RUNS)).out
    UNIT_ERR=${UNIT_OUT%.out}.err
    it_log "systemd: provisioner-station@$inst.service: $exec_line"
    # shellcheck disable=SC2086 # the unit's ExecStart is split on spaces, like systemd does
    env -i PATH="$PATH" "${envs[@]}" "${UNIT_EXTRA_ENV[@]}" $exec_line \
        >"$UNIT_OUT" 2>"$UNIT_ERR" </dev/null &
    UNIT_PID=$!
    it_track "$UNIT_PID"
}
UNIT_RUNS=0
UNIT_EXTRA_ENV=()

# unit_wait EXPECTED_EXIT: waits for the last unit_start, checks its exit code, and that
# stdout is exactly one result line; the line is in $RESULT.
unit_wait() {
    local rc=0
    wait "$UNIT_PID" || rc=$?
    sed 's/^/    out| /' "$UNIT_OUT"
    sed 's/^/    err| /' "$UNIT_ERR"
    assert_no_secret "$UNIT_OUT" "$UNIT_ERR"
    [ "$rc" -eq "$1" ] || fail "station $UNIT_OUT: exit $rc, expected $1: $(head -c 300 "$UNIT_ERR")"
    [ "$(wc -l <"$UNIT_OUT")" -eq 1 ] || fail "station $UNIT_OUT: not exactly one result line"
    RESULT=$(cat "$UNIT_OUT")
}

# unit_run INSTANCE EXPECTED_EXIT: unit_start + unit_wait.
unit_run() {
    unit_start "$1"
    unit_wait "$2"
}

# field NAME: the value of NAME= in $RESULT (unquoted).
field() {
    local v
    v=$(printf '%s\n' "$RESULT" | grep -oE " $1=(\"([^\"\\\\]|\\\\.)*\"|[^ ]*)" | head -n1)
    v=${v# $1=}
    v=${v#\"}
    printf '%s' "${v%\"}"
}

# assert_result KEY=VALUE...: each field of $RESULT has that value.
assert_result() {
    local kv
    for kv in "$@"; do
        [ "$(field "${kv%%=*}")" = "${kv#*=}" ] ||
            fail "result: ${kv%%=*} is '$(field "${kv%%=*}")', expected '${kv#*=}' in: $RESULT"
    done
}

# station_wait_file PATH PID: wait_file (tests/integration/lib.sh) for 60 s, or the test fails.
station_wait_file() {
    wait_file "$1" "$2" 600 || fail "$1 did not appear within 60 s while process $2 lived"
}

# token_dir LABEL: the SoftHSM2 directory holding that token.
token_dir() {
    grep -l "$1" "$WORK"/softhsm/tokens/*/token.object | head -n1 | xargs dirname
}
