# SPDX-License-Identifier: Apache-2.0
#
# Helpers for the integration tests (tests/integration/test_*.sh); sourced, bash only.
# See tests/integration/README.md for how the harness fits together.
#
# Environment, set by meson (tests/integration/meson.build):
#   PROVISIONER       the binary under test
#   PROV_SOURCE_ROOT  the source tree
#   PROV_BUILD_ROOT   the build tree; each test works in $PROV_BUILD_ROOT/it-work/<name>
#
# Rules every test follows:
# - it starts from scratch: its own work dir, SoftHSM2 token dir, CA, nginx;
# - a required tool that is missing FAILS the test (exit 1), never skips it: CI installs
#   everything (scripts/deps.sh), so a skip would only hide a broken machine;
# - every process it starts is registered with it_track and stopped by PID on exit;
# - a failed assertion prints ONE line "FAIL: <test>: <what>" and exits 1.

set -euo pipefail
# shellcheck source=scripts/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/../../scripts/common.sh"

IT_NAME=$(basename "$0" .sh)
IT_NAME=${IT_NAME#test_}
IT_PIDS=()
IT_IMMUTABLE=()
IT_SECRETS=()
IT_NCALL=0

SOFTHSM_MODULE=${SOFTHSM_MODULE:-/usr/lib/softhsm/libsofthsm2.so}

# The PINs the tests use: letters outside [0-9a-f], so that a hit in any output cannot be
# a hex fingerprint by chance.
CA_PIN_VALUE=ca-PIN-Quartz-7731
DEV_PIN_VALUE=dev-PIN-Walrus-4096
SO_PIN_VALUE=so-PIN-Zebra-0000
ROOT_PASS_VALUE='root-PASS-Yak-2718'

# ---------------------------------------------------------------------------------------
# Reporting

it_log() {
    printf -- '--- %s\n' "$*"
}

# fail MESSAGE: one clear line, then exit 1 (the EXIT trap stops what the test started).
# Called in a subshell - inside $(...), a pipeline or ( ) - exit alone would end only that
# subshell, and a caller such as assert_eq "$(token_count ...)" 0 would go on with whatever
# the subshell printed: so the test's own shell is told to stop too (the USR1 trap below).
fail() {
    printf 'FAIL: %s: %s\n' "$IT_NAME" "$*" >&2
    if [ "$BASHPID" != "$$" ]; then
        kill -USR1 "$$" 2>/dev/null || true
    fi
    exit 1
}
trap 'exit 1' USR1

# narrowed VALUE MIN: VALUE less a fifth, not below MIN. The kill and signal tests narrow
# the window they draw their instant from by it each time the run ended first
# (test_ca_index.sh, test_signals.sh): a duration measured while another suite loaded the
# machine overestimates the next runs.
narrowed() {
    echo $(($1 * 4 / 5 < $2 ? $2 : $1 * 4 / 5))
}

# need TOOL...: every tool must be installed; a missing one fails the test.
need() {
    local t
    for t in "$@"; do
        command -v "$t" >/dev/null 2>&1 ||
            fail "required tool '$t' is not installed (run scripts/deps.sh)"
    done
}

need_file() {
    [ -e "$1" ] || fail "required file $1 is missing (run scripts/deps.sh)"
}

# ---------------------------------------------------------------------------------------
# Setup and teardown

# it_setup: checks the meson environment, makes a fresh private work dir, cds into it and
# installs the trap that stops every tracked process.
it_setup() {
    [ -n "${PROVISIONER:-}" ] || fail "PROVISIONER is not set (run through meson test)"
    [ -n "${PROV_BUILD_ROOT:-}" ] || fail "PROV_BUILD_ROOT is not set (run through meson test)"
    [ -n "${PROV_SOURCE_ROOT:-}" ] || fail "PROV_SOURCE_ROOT is not set (run through meson test)"
    [ -x "$PROVISIONER" ] || fail "binary under test $PROVISIONER is missing (build first)"
    need openssl softhsm2-util pkcs11-tool
    need_file "$SOFTHSM_MODULE"

    WORK=$PROV_BUILD_ROOT/it-work/$IT_NAME
    if [ -d "$WORK" ]; then
        # A previous run may have left an immutable directory behind if it was killed hard.
        chattr -R -i "$WORK" 2>/dev/null || true
        rm -rf "$WORK"
    fi
    mkdir -p "$WORK/log"
    cd "$WORK"
    umask 022
    trap it_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    # Nothing from the caller's environment may steer the tool or the tools we compare with.
    unset PROVISIONER_CONFIG PROVISIONER_DEBUG OPENSSL_CONF OPENSSL_ENGINES PKCS11SPY || true
    if [ "${PROV_VALGRIND:-}" = 1 ]; then
        valgrind_wrap
    fi
    it_log "test $IT_NAME in $WORK"
}

# valgrind_wrap: PROV_VALGRIND=1 (the meson test setup "valgrind", scripts/valgrind.sh) runs
# every invocation of the tool under memcheck: $PROVISIONER becomes a wrapper that exits 99
# on any memory error or definite/indirect leak (so an exact exit code check fails), with one
# log per process in $WORK/vg/. tests/valgrind.supp silences third-party libraries only.
# it_cleanup fails the test if any log holds an error, even of a run whose exit was not checked.
valgrind_wrap() {
    need valgrind
    local real=$PROVISIONER
    mkdir -p "$WORK/vg"
    # test_secrets runs the tool as nobody: it must be able to write its log too
    chmod 1777 "$WORK/vg"
    {
        echo '#!/bin/sh'
        echo "exec valgrind --quiet --error-exitcode=99 --leak-check=full \\"
        echo "    --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect \\"
        echo "    --num-callers=40 --suppressions=$PROV_SOURCE_ROOT/tests/valgrind.supp \\"
        echo "    --gen-suppressions=all --log-file=$WORK/vg/%p.log $real \"\$@\""
    } >"$WORK/vg/provisioner"
    chmod 0755 "$WORK/vg/provisioner"
    PROVISIONER=$WORK/vg/provisioner
    export PROVISIONER
}

# valgrind_verdict: with PROV_VALGRIND=1, the memcheck logs of every run of this test: 0 when
# none holds an error, else prints the first report and returns 1.
valgrind_verdict() {
    local f bad=()
    [ "${PROV_VALGRIND:-}" = 1 ] && [ -d "${WORK:-}/vg" ] || return 0
    for f in "$WORK"/vg/*.log; do
        [ -s "$f" ] && bad+=("$f")
    done
    [ "${#bad[@]}" -eq 0 ] && return 0
    echo "FAIL: $IT_NAME: valgrind reported errors in ${#bad[@]} run(s); first: ${bad[0]}" >&2
    head -n 60 "${bad[0]}" >&2
    return 1
}

# it_track PID: stop PID (TERM, then KILL after 5 s) when the test exits.
it_track() {
    IT_PIDS+=("$1")
}

# wait_file PATH PID [TENTHS]: until PATH exists (TENTHS tenths of a second, default 300),
# while PID lives (a test-only pause hook's file, a server's port file); 1 when it did not
# appear in time or PID ended first.
wait_file() {
    local i
    for ((i = 0; i < ${3:-300}; i++)); do
        [ -e "$1" ] && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# stop_pid PID: stops one process started by this test, and reaps it.
stop_pid() {
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

it_cleanup() {
    local rc=$? i
    set +e
    for ((i = ${#IT_PIDS[@]} - 1; i >= 0; i--)); do
        stop_pid "${IT_PIDS[$i]}"
    done
    for i in "${IT_IMMUTABLE[@]}"; do
        chattr -i "$i" 2>/dev/null
    done
    if [ "$rc" -eq 0 ] && ! valgrind_verdict; then
        rc=1
    fi
    if [ "$rc" -eq 0 ]; then
        echo "PASS: $IT_NAME"
    else
        echo "FAILED: $IT_NAME (exit $rc); work dir kept: ${WORK:-?}" >&2
    fi
    exit "$rc"
}

# make_immutable PATH: chattr +i, undone by the trap (root ignores file modes; +i it cannot).
make_immutable() {
    chattr +i "$1" || fail "chattr +i $1 failed (the filesystem must support it)"
    IT_IMMUTABLE+=("$1")
}

# ---------------------------------------------------------------------------------------
# Secrets

# write_secret FILE VALUE: a PIN/passphrase file as other tools expect it: no trailing
# newline (doc/platform.md, "PIN files and trailing newlines"), mode 0600, and VALUE
# remembered for leak checks.
write_secret() {
    local old
    old=$(umask)
    umask 077
    rm -f "$1"
    printf '%s' "$2" >"$1"
    umask "$old"
    chmod 0600 "$1"
    IT_SECRETS+=("$2")
}

# assert_no_secret FILE...: none of the secrets written by this test appears in FILE.
assert_no_secret() {
    local f s
    for f in "$@"; do
        [ -f "$f" ] || continue
        for s in "${IT_SECRETS[@]}"; do
            if grep -qF -- "$s" "$f"; then
                fail "a secret (PIN/passphrase) appears in $f"
            fi
        done
    done
}

# ---------------------------------------------------------------------------------------
# SoftHSM2 and tokens

# softhsm_setup [DIR]: a private token directory (doc/platform.md, "SoftHSM2 and many tokens")
# in DIR/softhsm
# (default: the current directory); exports SOFTHSM2_CONF.
softhsm_setup() {
    local d=${1:-$PWD}/softhsm
    mkdir -p "$d/tokens"
    cat >"$d/softhsm2.conf" <<EOF
directories.tokendir = $d/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
EOF
    export SOFTHSM2_CONF=$d/softhsm2.conf
}

# token_serial LABEL: the token's CK_TOKEN_INFO serial number, as pkcs11-tool shows it.
# awk reads to the end: leaving early would end pkcs11-tool by SIGPIPE when more tokens
# follow, and pipefail would fail the test.
token_serial() {
    pkcs11-tool --module "$SOFTHSM_MODULE" -L 2>/dev/null | awk -v want="$1" '
        /^  token label *:/ { l = $0; sub(/^  token label *: /, "", l) }
        /^  serial num *:/ { if (l == want && !done) { print $4; done = 1 } }'
}

# token_init LABEL [PIN]: a fresh token in the first free slot (PIN default: device PIN).
token_init() {
    softhsm2-util --init-token --free --label "$1" --pin "${2:-$DEV_PIN_VALUE}" \
        --so-pin "$SO_PIN_VALUE" >"$WORK/log/token-$1.log" 2>&1 ||
        fail "softhsm2-util --init-token $1 failed: $(tail -n1 "$WORK/log/token-$1.log")"
}

# token_slot LABEL: the slot id of the token whose label is exactly LABEL. pkcs11-tool's
# --token-label matches by prefix and slot ids are random (doc/platform.md).
token_slot() {
    local slot
    slot=$(pkcs11-tool --module "$SOFTHSM_MODULE" -L 2>/dev/null | awk -v want="$1" '
        /^Slot [0-9]+ \(0x[0-9a-f]+\)/ { id = $3; gsub(/[():]/, "", id) }
        /^  token label *:/ { l = $0; sub(/^  token label *: /, "", l);
                             if (l == want) { print id; exit } }')
    [ -n "$slot" ] || fail "token '$1' not found in $SOFTHSM2_CONF"
    # pkcs11-tool --slot takes a decimal id
    echo $((slot))
}

# token_info LABEL: the slot listing block (`pkcs11-tool -L`) of exactly that token, with its
# flags ("user PIN count low", "final try", "locked"); fails the test when the listing fails or
# the token is not in it, so that a flag's absence never reads from an empty listing.
token_info() {
    local out block
    out=$(pkcs11-tool --module "$SOFTHSM_MODULE" -L 2>"$WORK/log/token-info.err") ||
        fail "pkcs11-tool -L failed: $(tr '\n' ' ' <"$WORK/log/token-info.err")"
    block=$(awk -v want="$1" '
        /^Slot [0-9]+/ { if (found) exit; blk = "" }
        { blk = blk $0 "\n" }
        /^  token label *:/ { l = $0; sub(/^  token label *: /, "", l); if (l == want) found = 1 }
        END { if (found) printf "%s", blk }' <<<"$out")
    [ -n "$block" ] || fail "token '$1' not listed by pkcs11-tool -L"
    printf '%s' "$block"
}

# p11 LABEL PIN ARGS...: pkcs11-tool logged in to exactly that token.
p11() {
    local label=$1 pin=$2 slot
    shift 2
    slot=$(token_slot "$label") || exit 1
    pkcs11-tool --module "$SOFTHSM_MODULE" --slot "$slot" --login --pin "$pin" "$@"
}

# token_list LABEL PIN [ARGS...]: pkcs11-tool --list-objects, logged in to exactly that
# token, with ARGS (e.g. --type privkey). A listing that fails fails the test: it must never
# read as "no objects".
token_list() {
    local label=$1 pin=$2 slot out
    shift 2
    slot=$(token_slot "$label") || exit 1
    out=$(pkcs11-tool --module "$SOFTHSM_MODULE" --slot "$slot" --login --pin "$pin" \
        --list-objects "$@" 2>"$WORK/log/token-list.err") ||
        fail "pkcs11-tool --list-objects on token $label failed: $(tr '\n' ' ' <"$WORK/log/token-list.err")"
    [ -z "$out" ] || printf '%s\n' "$out"
}

# token_count LABEL PIN TYPE: the number of objects of TYPE (privkey, pubkey, cert, data)
# on the token; fails the test when the token cannot be listed.
token_count() {
    local out
    out=$(token_list "$1" "$2" --type "$3") || exit 1
    printf '%s\n' "$out" | count_re '^(Private Key|Public Key|Certificate) Object|^Data object'
}

# filter_lines GREP-ARGS...: grep where selecting nothing is a result, not a failure (exit 1
# becomes 0); grep's own failure (exit 2: a missing file, a bad pattern) fails the test, so
# that it never reads as "nothing found". Replaces "grep ... || true".
filter_lines() {
    local rc=0
    grep "$@" || rc=$?
    [ "$rc" -le 1 ] || fail "grep $* failed (exit $rc)"
}

# dir_entries DIR: the names in DIR (ls -A), one a line; a directory that cannot be listed
# (missing, not a directory) fails the test rather than reading as empty.
dir_entries() {
    local out
    out=$(ls -A "$1") || fail "cannot list the directory $1"
    [ -z "$out" ] || printf '%s\n' "$out"
}

# count_re RE [FILE]: the number of lines matching the extended regex RE in FILE (which must
# exist) or on stdin; no match is 0.
count_re() {
    filter_lines -cE -- "$@"
}

# sql_q DB SQL: one query with sqlite3; a failed query fails the test (it must never read as
# an empty result).
sql_q() {
    local out
    [ -f "$1" ] || fail "sqlite3: no journal at $1"
    out=$(sqlite3 "$1" "$2" 2>"$WORK/log/sql.err") ||
        fail "sqlite3 $1 failed: $(tail -n1 "$WORK/log/sql.err"): $2"
    [ -z "$out" ] || printf '%s\n' "$out"
}

# p11_object_block LABEL PIN TYPE ID_HEX: the --list-objects block of the object of TYPE
# (privkey, pubkey, cert) with that CKA_ID; empty when there is none.
p11_object_block() {
    local out
    out=$(p11 "$1" "$2" --list-objects --type "$3" 2>/dev/null) ||
        fail "pkcs11-tool --list-objects on token $1 failed"
    printf '%s\n' "$out" | awk -v id="$4" '
        /^[A-Z][a-zA-Z ]+Object/ { if (keep) { printf "%s", blk }; blk = ""; keep = 0 }
        { blk = blk $0 "\n" }
        /^  ID: / { v = $2; if (tolower(v) == tolower(id)) keep = 1 }
        END { if (keep) printf "%s", blk }'
}

# p11_object_by_label LABEL PIN TYPE OBJLABEL: same, selected by CKA_LABEL.
p11_object_by_label() {
    local out
    out=$(p11 "$1" "$2" --list-objects --type "$3" 2>/dev/null) ||
        fail "pkcs11-tool --list-objects on token $1 failed"
    printf '%s\n' "$out" | awk -v want="$4" '
        /^[A-Z][a-zA-Z ]+Object/ { if (keep) { printf "%s", blk }; blk = ""; keep = 0 }
        { blk = blk $0 "\n" }
        /^  label: / { l = $0; sub(/^  label: +/, "", l); if (l == want) keep = 1 }
        END { if (keep) printf "%s", blk }'
}

# assert_hw_key BLOCK WHAT [any-usage]: a private key generated on the token that can never
# leave it, and (unless any-usage) allowed to sign only (doc/keys.md, doc/platform.md).
# pkcs11-tool prints e.g. "  Access:     sensitive, always sensitive, never extractable, local".
assert_hw_key() {
    local blk=$1 what=$2 access usage
    [ -n "$blk" ] || fail "$what: no private key object on the token"
    access=$(printf '%s\n' "$blk" | sed -n 's/^  Access: *//p')
    usage=$(printf '%s\n' "$blk" | sed -n 's/^  Usage: *//p')
    case ", $access," in
    *", sensitive,"*) ;; *) fail "$what: key is not sensitive (Access: $access)" ;;
    esac
    case ", $access," in
    *", always sensitive,"*) ;; *) fail "$what: key is not always sensitive (Access: $access)" ;;
    esac
    case ", $access," in
    *", never extractable,"*) ;; *) fail "$what: key is not never-extractable (Access: $access)" ;;
    esac
    case ", $access," in
    *", local,"*) ;; *) fail "$what: key was not generated on the token (Access: $access)" ;;
    esac
    case ", $access," in
    *", extractable,"*) fail "$what: key is extractable (Access: $access)" ;;
    esac
    case "$usage" in
    *sign*) ;; *) fail "$what: key cannot sign (Usage: $usage)" ;;
    esac
    [ "${3:-}" = any-usage ] && return 0
    case "$usage" in
    *decrypt* | *unwrap* | *derive*) fail "$what: key allows more than signing (Usage: $usage)" ;;
    esac
}

# assert_token_pub_is_cert TOKEN PIN ID_HEX CERT WHAT: the public key object with that
# CKA_ID is the key CERT certifies. pkcs11-tool 0.23 cannot export P-384 public keys, so EC
# keys are compared by their EC_POINT.
assert_token_pub_is_cert() {
    local blk point spki
    blk=$(p11_object_block "$1" "$2" pubkey "$3")
    [ -n "$blk" ] || fail "$5: no public key object with id $3 on token $1"
    spki=$(openssl x509 -in "$4" -pubkey -noout | openssl pkey -pubin -outform DER | od -An -v -tx1 | tr -d ' \n')
    point=$(printf '%s\n' "$blk" | sed -n 's/^  EC_POINT: *//p')
    if [ -n "$point" ]; then
        point=${point:4} # the DER OCTET STRING header (04 len) of a P-256/P-384 point
        case "$spki" in
        *"$point") return 0 ;;
        *) fail "$5: $4 does not certify the key with id $3 on token $1 (EC point differs)" ;;
        esac
    fi
    p11 "$1" "$2" --read-object --type pubkey --id "$3" -o "$WORK/log/pub-$3.der" >/dev/null 2>&1 ||
        fail "$5: cannot read the public key with id $3 from token $1"
    [ "$(od -An -v -tx1 <"$WORK/log/pub-$3.der" | tr -d ' \n')" = "$spki" ] ||
        fail "$5: $4 does not certify the key with id $3 on token $1"
}

# uri_attr URI NAME: the value of a path attribute of a PKCS#11 URI (still percent-encoded).
uri_attr() {
    local path=${1#pkcs11:}
    path=${path%%\?*}
    printf '%s\n' "$path" | tr ';' '\n' | sed -n "s/^$2=//p" | head -n1
}

# pct_to_hex VALUE: a percent-encoded CKA_ID as lowercase hex, as pkcs11-tool prints it.
pct_to_hex() {
    local s=$1 out="" c
    while [ -n "$s" ]; do
        c=${s:0:1}
        if [ "$c" = "%" ]; then
            out+=${s:1:2}
            s=${s:3}
        else
            out+=$(printf '%02x' "'$c")
            s=${s:1}
        fi
    done
    printf '%s\n' "$out" | tr 'A-F' 'a-f'
}

# uri_with_pin URI PIN: URI with pin-value= added as a path attribute (test clients only).
uri_with_pin() {
    local path=${1%%\?*} query=""
    case "$1" in *\?*) query="?${1#*\?}" ;; esac
    printf '%s;pin-value=%s%s\n' "$path" "$2" "$query"
}

# ---------------------------------------------------------------------------------------
# The tool under test

# prov EXPECTED_EXIT ARGS...: runs the provisioner; stdout/stderr land in $PROV_OUT and
# $PROV_ERR (also kept under log/). A different exit code fails the test, showing stderr.
# Every run is checked for leaked secrets.
prov() {
    local want=$1 rc=0
    shift
    # numbered by the files already there, so that runs in subshells do not collide
    IT_NCALL=$(($(find "$WORK/log" -maxdepth 1 -name '*.out' | wc -l) + 1))
    PROV_OUT=$WORK/log/$(printf '%03d' "$IT_NCALL").out
    PROV_ERR=$WORK/log/$(printf '%03d' "$IT_NCALL").err
    it_log "provisioner $* (expect exit $want)"
    "$PROVISIONER" "$@" >"$PROV_OUT" 2>"$PROV_ERR" </dev/null || rc=$?
    sed 's/^/    out| /' "$PROV_OUT"
    sed 's/^/    err| /' "$PROV_ERR"
    assert_no_secret "$PROV_OUT" "$PROV_ERR"
    if [ "$rc" -ne "$want" ]; then
        fail "provisioner $*: exit $rc, expected $want; stderr: $(head -c 400 "$PROV_ERR" | tr '\n' ' ')"
    fi
    export PROV_RC=$rc # the last exit code, for tests that want it
}

# prov_without WANT SONAME... -- ARGS...: prov, in a process that cannot load the libraries
# SONAME...: it runs in a mount namespace of its own (unshare, as root) in which each
# library's file is /dev/null. The tool loads libpq, libcurl and libsystemd at their first use
# (provisioner/support/lazy_lib.h); a binary that linked one of them would not start at all.
prov_without() {
    local want=$1 saved=$PROVISIONER wrapper=$WORK/without.sh files=() soname file
    shift
    while [ "$1" != -- ]; do
        soname=$1
        shift
        # awk reads to the end: ldconfig must not meet a closed pipe (pipefail, SIGPIPE)
        file=$(ldconfig -p | awk -v s="$soname" '$1 == s && !f { print $NF; f = 1 }')
        file=$(readlink -f "$file")
        [ -f "$file" ] || fail "prov_without: $soname is not installed"
        files+=("$file")
    done
    shift
    command -v unshare >/dev/null || fail "prov_without needs unshare (util-linux)"
    cat >"$wrapper" <<'EOF2'
#!/bin/sh
# without.sh BINARY FILE... -- ARGS...: BINARY ARGS... with each FILE hidden under /dev/null,
# for 120 s at most (exit 124 then): a call expected to stop, such as `ca serve` refusing to
# start, fails its test instead of running until the test's timeout when it does not
exec unshare --mount sh -c '
    bin=$1
    shift
    while [ "$1" != -- ]; do
        mount --bind /dev/null "$1" || exit 125
        shift
    done
    shift
    exec timeout 120 "$bin" "$@"' sh "$@"
EOF2
    chmod +x "$wrapper"
    PROVISIONER=$wrapper
    prov "$want" "$saved" "${files[@]}" -- "$@"
    PROVISIONER=$saved
}

# assert_one_error [SUBSTRING...]: the last run wrote exactly one line on stderr, starting
# with "provisioner: " and containing every SUBSTRING (the object it names).
assert_one_error() {
    local n s
    n=$(wc -l <"$PROV_ERR")
    [ "$n" -eq 1 ] || fail "expected exactly one stderr line, got $n: $(tr '\n' '|' <"$PROV_ERR")"
    grep -q '^provisioner: ' "$PROV_ERR" ||
        fail "stderr line does not start with 'provisioner: ': $(cat "$PROV_ERR")"
    for s in "$@"; do
        grep -qF -- "$s" "$PROV_ERR" || fail "stderr does not name '$s': $(cat "$PROV_ERR")"
    done
}

# assert_one_error_re ERE: one stderr line, "provisioner: ", matching ERE (e.g. 'a|b' when
# either name identifies the object).
assert_one_error_re() {
    assert_one_error
    grep -qE -- "$1" "$PROV_ERR" || fail "stderr does not name /$1/: $(cat "$PROV_ERR")"
}

# assert_one_error_after_warnings [SUBSTRING...]: like assert_one_error, but lines starting
# "provisioner: warning: " may come before the error (e.g. the lint findings --strict refuses).
assert_one_error_after_warnings() {
    local n s last
    assert_no_grep "$PROV_ERR" '^([^p]|p[^r])' "stderr lines not starting with 'provisioner: '"
    n=$(filter_lines -vc '^provisioner: warning: ' "$PROV_ERR")
    [ "$n" -eq 1 ] || fail "expected exactly one error line on stderr, got $n: $(tr '\n' '|' <"$PROV_ERR")"
    last=$(tail -n1 "$PROV_ERR")
    case "$last" in
    "provisioner: warning: "*) fail "the error is not the last stderr line: $(tr '\n' '|' <"$PROV_ERR")" ;;
    esac
    for s in "$@"; do
        printf '%s\n' "$last" | grep -qF -- "$s" || fail "the error does not name '$s': $last"
    done
}

# ---------------------------------------------------------------------------------------
# Assertions

assert_eq() {
    [ "$1" = "$2" ] || fail "${3:-values differ}: got '$1', expected '$2'"
}

assert_file() {
    local f
    for f in "$@"; do
        [ -f "$f" ] && [ -s "$f" ] || fail "file $f is missing or empty"
    done
}

assert_no_file() {
    [ ! -e "$1" ] || fail "$1 exists but must not"
}

# assert_mode MODE FILE...
assert_mode() {
    local m=$1 f got
    shift
    for f in "$@"; do
        got=$(stat -c '%a' "$f")
        [ "$got" = "$m" ] || fail "$f has mode $got, expected $m"
    done
}

# assert_grep FILE PATTERN [MESSAGE]: extended regex
assert_grep() {
    grep -qE -- "$2" "$1" || fail "${3:-$1 does not match /$2/}: $(head -c 600 "$1" | tr '\n' '|')"
}

assert_no_grep() {
    if grep -qE -- "$2" "$1"; then
        fail "${3:-$1 matches /$2/ but must not}: $(grep -E -- "$2" "$1" | head -n3 | tr '\n' '|')"
    fi
}

assert_same_file() {
    cmp -s "$1" "$2" || fail "${3:-$1 and $2 differ}"
}

# tree_digest DIR: every entry under DIR with type, mode and content hash; compare two
# digests to prove a directory was left untouched (or still holds nothing).
tree_digest() {
    [ -e "$1" ] || {
        echo "(absent)"
        return 0
    }
    (cd "$1" && find . -printf '%y %m %p\n' | sort &&
        find . -type f -print0 | sort -z | xargs -0 -r sha256sum)
}

# json_str FILE KEY: the string value of a top-level "KEY" in a flat JSON object (as the
# tool writes identity.json); no JSON tool is needed for that much.
json_str() {
    sed -n "s/^[[:space:]]*\"$2\"[[:space:]]*:[[:space:]]*\"\(.*\)\"[[:space:]]*,\{0,1\}[[:space:]]*\$/\1/p" "$1" | head -n1
}

# ---------------------------------------------------------------------------------------
# Certificates

# cert_count FILE: number of PEM certificates in FILE.
cert_count() {
    count_re '^-----BEGIN CERTIFICATE-----' "$1"
}

# split_pem FILE PREFIX: PREFIX0.pem, PREFIX1.pem ... one certificate each.
split_pem() {
    awk -v p="$2" '
        /-----BEGIN CERTIFICATE-----/ { f = p (n + 0) ".pem"; n++ }
        f { print > f }
        /-----END CERTIFICATE-----/ { close(f); f = "" }' "$1"
}

# fingerprint FILE: SHA-256 of the (first) certificate in FILE, lowercase hex without colons.
fingerprint() {
    openssl x509 -in "$1" -noout -fingerprint -sha256 | sed 's/.*=//; s/://g' | tr 'A-F' 'a-f'
}

# fingerprints FILE: one fingerprint per certificate, in order.
fingerprints() {
    local d i
    d=$(mktemp -d "$WORK/split.XXXXXX")
    split_pem "$1" "$d/c"
    i=0
    while [ -f "$d/c$i.pem" ]; do
        fingerprint "$d/c$i.pem"
        i=$((i + 1))
    done
    rm -rf "$d"
}

# corrupt_signature KIND IN OUT: KIND x509 or req; OUT is IN (first PEM object) with the last
# byte of its DER flipped: still well-formed, but the signature no longer verifies.
corrupt_signature() {
    local der=$3.der last
    openssl "$1" -in "$2" -outform DER -out "$der"
    last=$(tail -c1 "$der" | od -An -tu1 | tr -d ' ')
    truncate -s -1 "$der"
    # shellcheck disable=SC2059 # the format is the octal escape of one byte
    printf "\\$(printf '%03o' $((last ^ 1)))" >>"$der"
    openssl "$1" -inform DER -in "$der" -out "$3"
    rm -f "$der"
}

# ---------------------------------------------------------------------------------------
# Networking

# free_port: a TCP port on 127.0.0.1 that nothing accepts on right now.
free_port() {
    common_free_port || fail "no free TCP port found on 127.0.0.1"
}

# wait_port PORT PID: until something accepts on 127.0.0.1:PORT (10 s), while PID lives.
wait_port() {
    local i
    for i in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
            return 0
        fi
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# nginx_start NAME CERT KEY CLIENT_CA: an HTTPS server on 127.0.0.1 that requires a client
# certificate issued under CLIENT_CA (PEM bundle). Sets NGINX_PORT and NGINX_PID. Everything
# (config, pid file, logs, temp paths) lives in $WORK/nginx-NAME.
nginx_start() {
    local name=$1 cert=$2 key=$3 client_ca=$4 dir=$WORK/nginx-$1 try
    need nginx
    mkdir -p "$dir"
    for try in 1 2 3; do
        NGINX_PORT=$(free_port)
        cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log info;
events { worker_connections 64; }
http {
    access_log $dir/access.log;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    server {
        listen 127.0.0.1:$NGINX_PORT ssl;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_certificate $cert;
        ssl_certificate_key $key;
        ssl_client_certificate $client_ca;
        ssl_verify_client on;
        ssl_verify_depth 3;
        location / {
            default_type text/plain;
            return 200 "client=\$ssl_client_s_dn verify=\$ssl_client_verify\n";
        }
    }
}
EOF
        nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" >"$dir/stdout.log" 2>&1 &
        NGINX_PID=$!
        it_track "$NGINX_PID"
        if wait_port "$NGINX_PORT" "$NGINX_PID"; then
            it_log "nginx $name pid $NGINX_PID on 127.0.0.1:$NGINX_PORT"
            return 0
        fi
        stop_pid "$NGINX_PID"
        it_log "nginx $name did not start on port $NGINX_PORT (try $try): $(tail -n2 "$dir/error.log" 2>/dev/null | tr '\n' ' ')"
    done
    fail "nginx $name did not start: $(tail -n3 "$dir/error.log" 2>/dev/null | tr '\n' ' ')"
}

# it_private_network "$@": re-runs the calling test (before it_setup) inside a network namespace
# of its own whose only interface is loopback. mosquitto 2.0.11's websockets listener binds
# every interface whatever its listener address or bind_interface says (checked with ss), so
# a test that starts one must not share the machine's network.
it_private_network() {
    if [ "${IT_PRIVATE_NET:-}" != 1 ]; then
        need unshare ip
        IT_PRIVATE_NET=1 exec unshare --net -- bash "$0" "$@"
    fi
    ip link set lo up || fail "cannot bring up loopback in the private network namespace"
}

# mosquitto_start NAME CERT KEY CLIENT_CA: a broker on 127.0.0.1 with two TLS listeners that
# require a client certificate under CLIENT_CA and take its CN as the username
# (use_identity_as_username): MQTT on MQTT_PORT and MQTT over WebSocket on WS_PORT. Runs in the
# foreground as root; config, log ($MOSQ_LOG, every message type) and nothing else, no
# persistence, all in $WORK/mosquitto-NAME. Sets MOSQ_PID.
mosquitto_start() {
    local name=$1 cert=$2 key=$3 client_ca=$4 dir=$WORK/mosquitto-$1 try tls
    need mosquitto
    [ "${IT_PRIVATE_NET:-}" = 1 ] ||
        fail "mosquitto_start: call it_private_network first (the websockets listener binds every interface)"
    mkdir -p "$dir"
    MOSQ_LOG=$dir/mosquitto.log
    tls="cafile $client_ca
certfile $cert
keyfile $key
require_certificate true
use_identity_as_username true"
    for try in 1 2 3; do
        MQTT_PORT=$(free_port)
        WS_PORT=$(free_port)
        cat >"$dir/mosquitto.conf" <<EOF
user root
persistence false
per_listener_settings false
allow_anonymous false
log_dest file $MOSQ_LOG
log_type all
connection_messages true
listener $MQTT_PORT 127.0.0.1
protocol mqtt
$tls
listener $WS_PORT 127.0.0.1
protocol websockets
$tls
EOF
        rm -f "$MOSQ_LOG"
        mosquitto -c "$dir/mosquitto.conf" >"$dir/stdout.log" 2>&1 &
        MOSQ_PID=$!
        it_track "$MOSQ_PID"
        if wait_port "$MQTT_PORT" "$MOSQ_PID" && wait_port "$WS_PORT" "$MOSQ_PID"; then
            it_log "mosquitto $name pid $MOSQ_PID: mqtts 127.0.0.1:$MQTT_PORT, wss 127.0.0.1:$WS_PORT"
            return 0
        fi
        stop_pid "$MOSQ_PID"
        it_log "mosquitto $name did not start (try $try): $(cat "$MOSQ_LOG" "$dir/stdout.log" 2>/dev/null | tail -n2 | tr '\n' ' ')"
    done
    fail "mosquitto $name did not start: $(cat "$MOSQ_LOG" "$dir/stdout.log" 2>/dev/null | tail -n3 | tr '\n' ' ')"
}

# edge_start: the IoT edge of the proof tests, after ca_fixture: `chain export` as the
# client-CA set, mosquitto (MQTT and WebSocket listeners) and nginx, all serving the server
# CA's certificate. Sets MQTTS, WSS (path /mqtt) and HTTPS (path /) to their URLs.
edge_start() {
    prov 0 chain export --out "$WORK/client-ca.pem"
    mosquitto_start edge "$WORK/server-ca/server.crt" "$WORK/server-ca/server.key" "$WORK/client-ca.pem"
    nginx_start edge "$WORK/server-ca/server.crt" "$WORK/server-ca/server.key" "$WORK/client-ca.pem"
    MQTTS=mqtts://127.0.0.1:$MQTT_PORT
    WSS=wss://127.0.0.1:$WS_PORT/mqtt
    HTTPS=https://127.0.0.1:$NGINX_PORT/
}

# engine_conf FILE: an OPENSSL_CONF that loads the libp11 pkcs11 engine on SoftHSM2.
engine_conf() {
    common_engine_conf "$1" "$SOFTHSM_MODULE" ||
        fail "the libp11 pkcs11 engine is not installed (libengine-pkcs11-openssl)"
}

# libdir_file NAME: NAME in the multiarch library directory (e.g. pkcs11-spy.so).
libdir_file() {
    local enginedir
    enginedir=$(openssl version -e | sed 's/^ENGINESDIR: "\(.*\)"$/\1/')
    echo "$(dirname "$enginedir")/$1"
}

# ---------------------------------------------------------------------------------------
# Fixtures

# make_server_ca DIR: a separate "server CA" (openssl, not the provisioner) and a server
# certificate for 127.0.0.1/localhost: DIR/ca.crt DIR/ca.key DIR/server.crt DIR/server.key.
make_server_ca() {
    local d=$1
    mkdir -p "$d"
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$d/ca.key" -out "$d/ca.crt" -days 30 -subj "/O=Test Edge/CN=Test Server CA" \
        -addext "basicConstraints=critical,CA:true" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" >"$d/log" 2>&1 ||
        fail "openssl: server CA: $(tail -n1 "$d/log")"
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$d/server.key" -out "$d/server.csr" -subj "/O=Test Edge/CN=localhost" \
        >>"$d/log" 2>&1 || fail "openssl: server CSR: $(tail -n1 "$d/log")"
    cat >"$d/server.ext" <<EOF
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
EOF
    openssl x509 -req -in "$d/server.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
        -days 20 -extfile "$d/server.ext" -out "$d/server.crt" >>"$d/log" 2>&1 ||
        fail "openssl: server certificate: $(tail -n1 "$d/log")"
}

# write_root_conf FILE [strict|seed]: the root request config; "seed" is the style strict
# verifiers reject (basicConstraints not critical, no keyUsage; doc/platform.md).
write_root_conf() {
    {
        cat <<'EOF'
# SPDX-License-Identifier: Apache-2.0
[req]
prompt = no
distinguished_name = dn
x509_extensions = v3_ca

[dn]
O = Provisioner Integration Test
CN = Test Root CA

[v3_ca]
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
EOF
        if [ "${2:-strict}" = seed ]; then
            echo "basicConstraints = CA:true"
        else
            echo "basicConstraints = critical, CA:true"
            echo "keyUsage = critical, keyCertSign, cRLSign"
        fi
    } >"$1"
}

# provisioner_section: the [provisioner] section of a test config (SoftHSM2, devices/,
# server-ca.pem, device.pin, lot LOT-IT-1), for write_config and a station's own config.
provisioner_section() {
    cat <<EOF
# SPDX-License-Identifier: Apache-2.0
[provisioner]
pkcs11_module = $SOFTHSM_MODULE
output_dir = devices
server_ca = server-ca.pem
device_pin = file:device.pin
lot = LOT-IT-1
EOF
}

# write_config FILE [ROOT_MODE] [EXTRA_CA_LINES]: a provisioner.cnf for this work dir.
# ROOT_MODE: pkcs11 (root key in the CA token, default), file (encrypted PEM root key),
# import (root_cert + file key). CA token "provisioner-ca"; PINs from ca.pin/device.pin.
write_config() {
    local f=$1 mode=${2:-pkcs11} extra=${3:-} root
    case "$mode" in
    pkcs11) root="root_key = pkcs11:token=provisioner-ca;object=root
root_key_type = ec-p384
root_config = root.conf" ;;
    file) root="root_key = file:root.key
root_key_pass = file:root.pass
root_config = root.conf" ;;
    import) root="root_cert = existing-root.crt
root_key = file:existing-root.key
root_key_pass = file:root.pass" ;;
    *) fail "write_config: unknown root mode $mode" ;;
    esac
    {
        provisioner_section
        cat <<EOF

[ca]
dir = ca
intermediate_key = pkcs11:token=provisioner-ca;object=intermediate
pin = file:ca.pin
intermediate_key_type = ec-p256
intermediate_subject = ca_dn
$root
$extra

[ca_dn]
O = Provisioner Integration Test
CN = Test Intermediate CA
EOF
    } >"$f"
}

# ca_fixture [ROOT_MODE]: in the current directory: SoftHSM2, the CA token
# "provisioner-ca", PIN files, a server CA (server-ca.pem), root.conf, provisioner.cnf
# (exported as PROVISIONER_CONFIG) and `ca init`. ROOT_MODE as for write_config; for
# "file" and "import" the root key (and certificate) are made here with openssl.
ca_fixture() {
    local mode=${1:-pkcs11}
    ca_prepare "$mode"
    prov 0 ca init
    assert_file "$PWD/ca/root.crt" "$PWD/ca/intermediate.crt" "$PWD/ca/chain.pem"
}

# ca_prepare [ROOT_MODE]: ca_fixture without the `ca init`.
ca_prepare() {
    local mode=${1:-pkcs11}
    softhsm_setup
    token_init provisioner-ca "$CA_PIN_VALUE"
    write_secret "$PWD/ca.pin" "$CA_PIN_VALUE"
    write_secret "$PWD/device.pin" "$DEV_PIN_VALUE"
    make_server_ca "$PWD/server-ca"
    cp "$PWD/server-ca/ca.crt" "$PWD/server-ca.pem"
    write_root_conf "$PWD/root.conf" strict
    case "$mode" in
    file | import) make_root_key root.key ;;
    esac
    if [ "$mode" = import ]; then
        mv root.key existing-root.key
        openssl req -x509 -new -key existing-root.key -passin "file:$PWD/root.pass" \
            -config root.conf -days 3650 -out existing-root.crt >"$WORK/log/import-root.log" 2>&1 ||
            fail "openssl req -x509 (existing root): $(tail -n1 "$WORK/log/import-root.log")"
    fi
    write_config "$PWD/provisioner.cnf" "$mode"
    export PROVISIONER_CONFIG=$PWD/provisioner.cnf
    IT_CA_DIR=$PWD/ca
    IT_SERVER_CA=$PWD/server-ca.pem
}

# make_root_key FILE: an encrypted (AES-256) P-384 PEM key; passphrase in ./root.pass.
make_root_key() {
    write_secret "$PWD/root.pass" "$ROOT_PASS_VALUE"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -aes256 \
        -pass "file:$PWD/root.pass" -out "$1" >"$WORK/log/genpkey.log" 2>&1 ||
        fail "openssl genpkey: $(tail -n1 "$WORK/log/genpkey.log")"
}

# assert_device_identity SERIAL TOKEN DIR KEYTYPE [SAN...]: everything a PKCS#11 device's
# identity must be (doc/keys.md, doc/storage.md), checked with OpenSSL, GnuTLS and
# pkcs11-tool, then proven by `provisioner check`. Uses the CA made by ca_fixture
# ($IT_CA_DIR, $IT_SERVER_CA).
assert_device_identity() {
    local sn=$1 tok=$2 d=$3 kt=$4 uri id blk n
    shift 4
    it_log "checking $sn in $d"
    assert_storage "$d"
    local log=$WORK/log/$sn
    mkdir -p "$log"

    # Strict verification with OpenSSL, as a TLS server would check a client.
    openssl verify -x509_strict -purpose sslclient -CAfile "$IT_CA_DIR/root.crt" \
        -untrusted "$IT_CA_DIR/intermediate.crt" "$d/client.crt" >"$log/verify" 2>&1 ||
        fail "$sn: openssl verify -x509_strict -purpose sslclient: $(tr '\n' ' ' <"$log/verify")"
    # ... and with GnuTLS: client, intermediate, root in one file.
    cat "$d/client.crt" "$IT_CA_DIR/intermediate.crt" "$IT_CA_DIR/root.crt" >"$log/gnutls-chain.pem"
    certtool --verify-chain --infile "$log/gnutls-chain.pem" >"$log/certtool" 2>&1 ||
        fail "$sn: certtool --verify-chain: $(grep -i -m3 'verif\|error' "$log/certtool" | tr '\n' ' ')"
    assert_grep "$log/certtool" 'Chain verification output: Verified' "$sn: certtool did not verify"

    # client.der is client.crt in DER
    openssl x509 -in "$d/client.crt" -outform DER -out "$log/client.der"
    assert_same_file "$d/client.der" "$log/client.der" "$sn: client.der is not client.crt in DER"
    # fullchain = client, intermediate; chain = intermediate, root; server-ca = the server CA
    assert_eq "$(fingerprints "$d/fullchain.pem" | tr '\n' ' ')" \
        "$(fingerprint "$d/client.crt") $(fingerprint "$IT_CA_DIR/intermediate.crt") " "$sn: fullchain.pem"
    assert_eq "$(fingerprints "$d/chain.pem" | tr '\n' ' ')" \
        "$(fingerprint "$IT_CA_DIR/intermediate.crt") $(fingerprint "$IT_CA_DIR/root.crt") " "$sn: chain.pem"
    assert_eq "$(fingerprints "$d/server-ca.pem" | tr '\n' ' ')" \
        "$(fingerprints "$IT_SERVER_CA" | tr '\n' ' ')" "$sn: server-ca.pem"

    # Subject, SAN, key type, profile extensions
    openssl x509 -in "$d/client.crt" -noout -text -nameopt RFC2253 >"$log/text"
    assert_grep "$log/text" "Subject: (.*,)?CN=$sn(,|\$)" "$sn: subject CN is not the serial"
    assert_grep "$log/text" 'X509v3 Basic Constraints: critical' "$sn: basicConstraints not critical"
    assert_grep "$log/text" 'CA:FALSE' "$sn: certificate is a CA"
    assert_grep "$log/text" 'Digital Signature' "$sn: keyUsage lacks digitalSignature"
    assert_grep "$log/text" 'TLS Web Client Authentication' "$sn: no clientAuth"
    case "$kt" in
    ec-p256) assert_grep "$log/text" 'NIST CURVE: P-256|prime256v1' "$sn: not a P-256 key" ;;
    ec-p384) assert_grep "$log/text" 'NIST CURVE: P-384|secp384r1' "$sn: not a P-384 key" ;;
    rsa-2048) assert_grep "$log/text" 'Public-Key: \(2048 bit\)' "$sn: not an RSA-2048 key"
        assert_grep "$log/text" 'rsaEncryption' "$sn: not an RSA key" ;;
    esac
    for n in "$@"; do
        assert_grep "$log/text" "DNS:$n(,|\$)" "$sn: subjectAltName lacks DNS:$n"
    done
    if [ $# -eq 0 ]; then
        assert_no_grep "$log/text" 'Subject Alternative Name' "$sn: SAN present though none given"
    fi

    # key.uri: a PKCS#11 URI with the key's id, no PIN
    uri=$(cat "$d/key.uri")
    case "$uri" in pkcs11:*) ;; *) fail "$sn: key.uri is not a pkcs11: URI: $uri" ;; esac
    case "$uri" in *pin-value* | *pin-source*) fail "$sn: key.uri carries a PIN attribute" ;; esac
    assert_eq "$(uri_attr "$uri" token)" "$tok" "$sn: token in key.uri"
    id=$(uri_attr "$uri" id)
    [ -n "$id" ] || fail "$sn: key.uri has no id=: $uri"
    id=$(pct_to_hex "$id")

    # The key on the device token: generated there, never extractable, sign only.
    blk=$(p11_object_block "$tok" "$DEV_PIN_VALUE" privkey "$id")
    printf '%s\n' "$blk" >"$log/privkey"
    assert_hw_key "$blk" "$sn: device key (token $tok, id $id)"
    # The certificate is on the token too, with the key's CKA_ID (doc/storage.md).
    local key_label
    key_label=$(sed -n 's/^  label: *//p' "$log/privkey")
    blk=$(p11_object_block "$tok" "$DEV_PIN_VALUE" cert "$id")
    [ -n "$blk" ] || fail "$sn: no certificate object with id $id on token $tok"
    assert_eq "$(printf '%s\n' "$blk" | sed -n 's/^  label: *//p')" "$key_label" \
        "$sn: label of the certificate object (the key's label)"
    p11 "$tok" "$DEV_PIN_VALUE" --read-object --type cert --id "$id" -o "$log/token-cert.der" \
        >/dev/null 2>&1 || fail "$sn: cannot read the certificate object from token $tok"
    assert_same_file "$log/token-cert.der" "$d/client.der" \
        "$sn: the certificate on token $tok is not client.der"
    # The certificate certifies the token's key.
    assert_token_pub_is_cert "$tok" "$DEV_PIN_VALUE" "$id" "$d/client.crt" "$sn"

    # identity.json (doc/storage.md): serial, certificate serial, SHA-256 fingerprint, validity, key
    # type, backend, profile, lot, issuer
    local j=$d/identity.json cs na
    assert_eq "$(json_str "$j" serial)" "$sn" "$sn: identity.json serial"
    assert_eq "$(json_str "$j" sha256 | tr -d ':' | tr 'A-F' 'a-f')" "$(fingerprint "$d/client.crt")" \
        "$sn: identity.json sha256"
    cs=$(openssl x509 -in "$d/client.crt" -noout -serial | sed 's/^serial=//' | tr 'A-F' 'a-f')
    assert_eq "$(json_str "$j" cert_serial | tr -d ':' | tr 'A-F' 'a-f' | sed 's/^0*//')" \
        "$(printf '%s' "$cs" | sed 's/^0*//')" "$sn: identity.json cert_serial"
    na=$(date -u -d "$(openssl x509 -in "$d/client.crt" -noout -enddate | sed 's/^notAfter=//')" +%s)
    assert_eq "$(date -u -d "$(json_str "$j" not_after)" +%s)" "$na" "$sn: identity.json not_after"
    [ -n "$(json_str "$j" not_before)" ] || fail "$sn: identity.json has no not_before"
    assert_eq "$(json_str "$j" key_type)" "$kt" "$sn: identity.json key_type"
    assert_eq "$(json_str "$j" backend)" pkcs11 "$sn: identity.json backend"
    assert_eq "$(json_str "$j" profile)" device "$sn: identity.json profile"
    assert_eq "$(json_str "$j" lot)" LOT-IT-1 "$sn: identity.json lot"
    case "$(json_str "$j" issuer)" in
    *"Test Intermediate CA"*) ;;
    *) fail "$sn: identity.json issuer is not the intermediate: $(json_str "$j" issuer)" ;;
    esac

    # The tool's own proof
    prov 0 check "$d"
    assert_grep "$PROV_OUT" 'ok' "$sn: check did not say ok"
}

# storage_files DIR: the doc/storage.md files a PKCS#11 device's storage holds.
STORAGE_FILES=(client.crt client.der fullchain.pem chain.pem server-ca.pem key.uri identity.json)

assert_storage() {
    local d=$1 f
    for f in "${STORAGE_FILES[@]}"; do
        assert_file "$d/$f"
    done
    # Certificates are public: 0644 (doc/storage.md); key.uri and identity.json hold no secret
    # either and are read by unprivileged device firmware.
    for f in "${STORAGE_FILES[@]}"; do
        assert_mode 644 "$d/$f"
    done
    # No temp files left behind by the atomic writer.
    local names extra
    names=$(dir_entries "$d") || exit 1
    extra=$(printf '%s\n' "$names" |
        filter_lines -vxE 'client\.crt|client\.der|fullchain\.pem|chain\.pem|server-ca\.pem|key\.uri|identity\.json')
    [ -z "$extra" ] || fail "$d holds unexpected files: $(printf "%s " $extra)"
}
