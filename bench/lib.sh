# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=bash
#
# What bench/run.sh and bench/profile.sh share: the build, the two stores, the CA, and fresh
# scenarios with their own SoftHSM2 token directory. Sourced (bash) after
# tests/integration/lib.sh, whose fixtures (make_server_ca, write_root_conf, engine_conf,
# token_slot) set things up exactly as the tests do. Defines functions and constants only.

BENCH_CA_PIN=bench-ca-PIN-2718
BENCH_DEV_PIN=bench-dev-PIN-3141
BENCH_SO_PIN=bench-so-PIN-1618
MODULE=${SOFTHSM_MODULE:-/usr/lib/softhsm/libsofthsm2.so}

die() {
    echo "bench: $*" >&2
    exit 1
}
note() { printf '  %s\n' "$*" >&2; }
now() { date +%s.%N; }
# fdiv A B [DIGITS]: A / B, 0 when B is 0
fdiv() { awk -v a="$1" -v b="$2" -v d="${3:-2}" 'BEGIN { printf "%.*f", d, (b == 0 ? 0 : a / b) }'; }

# bench_need TOOL...: every tool must be installed.
bench_need() {
    local t
    for t in "$@"; do
        command -v "$t" >/dev/null 2>&1 || die "$t is not installed (run scripts/deps.sh)"
    done
    [ -r "$MODULE" ] || die "$MODULE is missing (run scripts/deps.sh)"
}

# bench_build REPO BUILD: sets up BUILD with meson if it has no build.ninja, compiles what the
# benchmarks run and sets PROV, P11, ISSUE, NOSYNC and LATENCY to the built files.
bench_build() {
    local repo=$1 build=$2
    if [ ! -f "$build/build.ninja" ]; then
        meson setup "$build" "$repo" >&2 || die "meson setup $build failed"
    fi
    # Reconfigures first when a meson.build changed, so that new targets are known.
    meson compile -C "$build" >/dev/null || die "meson compile -C $build failed"
    PROV=$build/provisioner
    P11=$build/bench/bench_p11
    ISSUE=$build/bench/bench_issue
    NOSYNC=$build/bench/bench_nosync.so
    LATENCY=$build/tests/integration/pkcs11/pkcs11_latency.so
    local f
    for f in "$PROV" "$P11" "$ISSUE" "$NOSYNC" "$LATENCY" "$build/bench/bench_tpm"; do
        [ -e "$f" ] || die "$f was not built"
    done
}

# fs_type DIR: the file system type of DIR (tmpfs, ext2/ext3, xfs...).
fs_type() { stat -f -c %T "$1"; }

# bench_stores DISK_DIR: the two roots every device figure is measured in. TMPFS_ROOT is a new
# directory in /dev/shm (removed by bench_cleanup); DISK_ROOT is DISK_DIR, which must not be
# on tmpfs: the disk figure is the station's reality, with every fsync reaching the disk.
bench_stores() {
    DISK_ROOT=$1
    mkdir -p "$DISK_ROOT"
    if [ "$(fs_type "$DISK_ROOT")" = tmpfs ]; then
        # a smoke run only needs every step to work; a measurement needs a disk
        [ "${BENCH_DISK_MAY_BE_TMPFS:-0}" = 1 ] ||
            die "$DISK_ROOT is on tmpfs: the disk figures need a build directory on a disk (--build)"
        note "$DISK_ROOT is on tmpfs: the \"disk\" figures of this run are tmpfs figures"
    fi
    [ -d /dev/shm ] && [ "$(fs_type /dev/shm)" = tmpfs ] || die "/dev/shm is not a tmpfs"
    TMPFS_ROOT=$(mktemp -d /dev/shm/provisioner-bench.XXXXXX) || die "mktemp in /dev/shm failed"
}

# store_root tmpfs|disk: the directory scenarios of that store are made in.
store_root() {
    case "$1" in
    tmpfs) echo "$TMPFS_ROOT" ;;
    disk) echo "$DISK_ROOT" ;;
    *) die "unknown store $1" ;;
    esac
}

# The p11-kit server of a scenario, if one is running: stopped by its PID, and waited for (it
# is not our child, so by polling) so that its directory can be removed.
server_pid=
stop_server() {
    [ -n "$server_pid" ] || return 0
    kill "$server_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.05
    done
    server_pid=
}

bench_cleanup() {
    stop_server
    [ -z "${TMPFS_ROOT:-}" ] || rm -rf "$TMPFS_ROOT"
}

# softhsm_conf FILE TOKENDIR
softhsm_conf() {
    cat >"$1" <<EOF
directories.tokendir = $2
objectstore.backend = file
log.level = ERROR
slots.removable = false
EOF
}

# setup_ca WORK: in WORK (on disk, made once per run): the PIN files, a CA made by
# `provisioner ca init` in its own SoftHSM2 token directory (WORK/ca-tokens, copied into every
# scenario), the CA directory WORK/ca with its index (also copied), a server CA, and
# WORK/device-cert.der: a certificate the tool issued, which the device floor stores on the
# token as the tool would.
setup_ca() {
    BENCH_WORK=$1
    cd "$BENCH_WORK" || die "cd $BENCH_WORK failed"
    umask 022
    printf '%s' "$BENCH_CA_PIN" >ca.pin
    printf '%s' "$BENCH_DEV_PIN" >device.pin
    chmod 600 ca.pin device.pin
    mkdir -p ca-tokens
    softhsm_conf ca-softhsm.conf "$BENCH_WORK/ca-tokens"
    SOFTHSM2_CONF=$BENCH_WORK/ca-softhsm.conf softhsm2-util --init-token --free \
        --label provisioner-ca --pin "$BENCH_CA_PIN" --so-pin "$BENCH_SO_PIN" >/dev/null ||
        die "softhsm2-util --init-token provisioner-ca failed"
    make_server_ca "$BENCH_WORK/server-ca"
    write_root_conf "$BENCH_WORK/root.conf" strict
    bench_config "$BENCH_WORK" "$MODULE"
    SOFTHSM2_CONF=$BENCH_WORK/ca-softhsm.conf "$PROV" --config "$BENCH_WORK/provisioner.cnf" \
        ca init >/dev/null 2>ca-init.err || die "provisioner ca init failed: $(tail -n1 ca-init.err)"
    # The CA's index as a station's CA has it after its first lot: made once, here, not by
    # the first batch of every scenario (`ca init` leaves it to the first command that opens
    # it; `ca show` does, and issues nothing). bench/README.md, "Start-up".
    SOFTHSM2_CONF=$BENCH_WORK/ca-softhsm.conf "$PROV" --config "$BENCH_WORK/provisioner.cnf" \
        ca show >/dev/null 2>ca-show.err || die "provisioner ca show failed: $(tail -n1 ca-show.err)"
    [ -s ca/index.sqlite ] || die "provisioner ca show made no CA index in $BENCH_WORK/ca"
    # One device, for a real certificate (its scenario, with its copy of the CA directory, goes).
    scenario_in "$BENCH_WORK" cert "$MODULE" cert-dev
    manifest lot.csv 1 cert-dev
    "$PROV" --config provisioner.cnf batch lot.csv --jobs 1 >/dev/null 2>err.txt ||
        die "batch of the sample device failed: $(tail -n1 err.txt)"
    cp devices/BENCH-000001/client.der "$BENCH_WORK/device-cert.der"
    scenario_done
}

# bench_config DIR MODULE: DIR/provisioner.cnf, CA directory DIR/ca, storage under
# DIR/devices, PINs from DIR's PIN files; the journal goes next to the manifest (in DIR).
bench_config() {
    cat >"$1/provisioner.cnf" <<EOF
[provisioner]
pkcs11_module = $2
output_dir = $1/devices
server_ca = $BENCH_WORK/server-ca/ca.crt
device_pin = file:$1/device.pin
lot = bench

[ca]
dir = $1/ca
intermediate_key = pkcs11:token=provisioner-ca;object=intermediate
pin = file:$1/ca.pin
intermediate_key_type = ec-p256
intermediate_subject = ca_dn
root_key = pkcs11:token=provisioner-ca;object=root
root_key_type = ec-p384
root_config = $BENCH_WORK/root.conf

[ca_dn]
CN = Bench Intermediate CA
EOF
}

# scenario NAME STORE MODULE TOKEN...: a fresh directory ROOT/s-NAME in the store's root with
# its own SoftHSM2 token directory (a copy of the CA token plus new, empty device tokens), its
# own copy of the CA directory and PIN files, and a config that loads MODULE: the token store,
# the journal, the storage and the CA's records all live in that store. Exports
# SOFTHSM2_CONF; cds into it.
scenario() {
    local name=$1 store=$2
    shift 2
    scenario_in "$(store_root "$store")" "$name" "$@"
}

scenario_in() {
    local root=$1 name=$2 module=$3 dir t
    shift 3
    dir=$root/s-$name
    rm -rf "$dir"
    mkdir -p "$dir/tokens" "$dir/devices"
    cp -a "$BENCH_WORK/ca-tokens/." "$dir/tokens/"
    cp -a "$BENCH_WORK/ca" "$dir/ca"
    cp -a "$BENCH_WORK/ca.pin" "$BENCH_WORK/device.pin" "$dir/"
    softhsm_conf "$dir/softhsm.conf" "$dir/tokens"
    export SOFTHSM2_CONF=$dir/softhsm.conf
    for t in "$@"; do
        softhsm2-util --init-token --free --label "$t" --pin "$BENCH_DEV_PIN" \
            --so-pin "$BENCH_SO_PIN" >/dev/null || die "softhsm2-util --init-token $t failed"
    done
    bench_config "$dir" "$module"
    cd "$dir" || die "cd $dir failed"
}

# scenario_done: leaves the scenario and removes it (thousands of token files each).
scenario_done() {
    local dir=$PWD
    cd "$BENCH_WORK" || die "cd $BENCH_WORK failed"
    case "$dir" in */s-*) rm -rf "$dir" ;; esac
}

# manifest FILE N TOKEN...: N rows, devices spread round-robin over the tokens.
manifest() {
    local f=$1 n=$2
    shift 2
    awk -v n="$n" -v toks="$*" 'BEGIN {
        k = split(toks, t, " ")
        print "serial,device"
        for (i = 1; i <= n; i++) printf "BENCH-%06d,pkcs11:token=%s\n", i, t[(i - 1) % k + 1]
    }' >"$f"
}

# issued_count RESULTS: the rows of a results CSV whose status is issued.
issued_count() { grep -c ',issued,' "$1" || true; }
