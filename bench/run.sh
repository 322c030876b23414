#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The benchmark of SPEC §10, measured in one run on this machine (details: bench/README.md):
#
#   bench/run.sh [--quick] [--runs K] [--json FILE] [--build DIR]
#
#   --quick      small sizes (a smoke run of a minute or so; figures are only indicative)
#   --runs K     run every measurement K times and print the median of each figure (default 1)
#   --json FILE  also write the figures as JSON (FILE "-" = stdout, then the table goes to stderr)
#   --build DIR  the build directory to use (default: <repo>/build-bench, set up with meson
#                here if missing, and compiled)
#
# Everything lives under DIR/bench-run: its own SoftHSM2 token directories (one per scenario,
# so that no scenario pays for another's objects: SoftHSM2 loads every token at C_Initialize),
# a CA made by `provisioner ca init`, and, through bench/tpm.sh, one swtpm on 127.0.0.1 that is
# stopped by its PID. Nothing here asserts a timing: it prints what it measured.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The integration harness's fixtures (engine_conf, write_root_conf, make_server_ca,
# token_slot): the benchmark sets things up exactly as the tests do.
# shellcheck source=tests/integration/lib.sh
. "$repo/tests/integration/lib.sh"
IT_NAME=bench
build=$repo/build-bench
quick=0
runs=1
json=
while [ $# -gt 0 ]; do
    case "$1" in
    --quick) quick=1 ;;
    --runs) runs=${2:?--runs needs a number}; shift ;;
    --json) json=${2:?--json needs a file (or -)}; shift ;;
    --build) build=${2:?--build needs a directory}; shift ;;
    -h | --help) sed -n '3,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
case "$runs" in '' | *[!0-9]* | 0) echo "bench/run.sh: --runs takes a positive number" >&2; exit 2 ;; esac
# Relative paths are the caller's (the run changes directory), and a JSON file that cannot be
# written is an error now, not after the run.
case "$json" in '' | - | /*) ;; *) json=$PWD/$json ;; esac
case "$build" in /*) ;; *) build=$PWD/$build ;; esac
if [ -n "$json" ] && [ "$json" != - ] && ! [ -d "$(dirname "$json")" ]; then
    echo "bench/run.sh: --json $json: no such directory" >&2
    exit 2
fi

# Sizes: the SPEC/issue sizes, or small ones for --quick; N_SMALL, N_LARGE, N_CLI, N_JOBS and
# N_TPM in the environment override either (e.g. on a machine too busy for the full run).
if [ "$quick" = 1 ]; then
    d_small=20 d_large=200 d_cli=20 d_jobs=40 d_tpm=10 N_SIGN=500
else
    d_small=100 d_large=2000 d_cli=500 d_jobs=200 d_tpm=50 N_SIGN=5000
fi
N_SMALL=${N_SMALL:-$d_small} N_LARGE=${N_LARGE:-$d_large} N_CLI=${N_CLI:-$d_cli}
N_JOBS=${N_JOBS:-$d_jobs} N_TPM=${N_TPM:-$d_tpm}
N_RSS=(1000 10000 100000)
N_MID=$N_CLI # the tool is also run at the pipeline's N, so that the speed-up compares like N

MODULE=${SOFTHSM_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
CA_PIN=bench-ca-PIN-2718
DEV_PIN=bench-dev-PIN-3141
SO_PIN=bench-so-PIN-1618

die() {
    echo "bench/run.sh: $*" >&2
    exit 1
}

for t in meson ninja softhsm2-util pkcs11-tool openssl swtpm p11-kit /usr/bin/time awk; do
    command -v "$t" >/dev/null 2>&1 || die "$t is not installed (run scripts/deps.sh)"
done
[ -r "$MODULE" ] || die "$MODULE is missing (run scripts/deps.sh)"
CLIENT_MODULE=$(pkg-config --variable=p11_module_path p11-kit-1 2>/dev/null || true)/p11-kit-client.so
[ -r "$CLIENT_MODULE" ] || die "$CLIENT_MODULE is missing (run scripts/deps.sh)"
enginedir=$(openssl version -e | sed 's/^ENGINESDIR: "\(.*\)"$/\1/')
[ -r "$enginedir/pkcs11.so" ] || die "the OpenSSL pkcs11 engine is missing (libengine-pkcs11-openssl)"

# ---- build -------------------------------------------------------------------------------
if [ ! -f "$build/build.ninja" ]; then
    meson setup "$build" "$repo" >&2 || die "meson setup $build failed"
fi
meson compile -C "$build" provisioner bench/bench_p11 bench/bench_tpm >/dev/null ||
    die "meson compile -C $build failed"
build=$(cd "$build" && pwd)
PROV=$build/provisioner
P11=$build/bench/bench_p11

work=$build/bench-run
rm -rf "$work"
mkdir -p "$work"
cd "$work"
umask 022

now() { date +%s.%N; }
# fdiv A B [DIGITS]
fdiv() { awk -v a="$1" -v b="$2" -v d="${3:-2}" 'BEGIN { printf "%.*f", d, (b == 0 ? 0 : a / b) }'; }
note() { printf '  %s\n' "$*" >&2; }
# Before each timed measurement: the previous scenario's files (thousands of token objects,
# written and then removed) are written back now, not during the next measurement; then up to
# QUIESCE_MAX seconds (default 20) until the disk's stall share over the last 10 s
# (/proc/pressure/io "some avg10") is under 5 %: on a disk the host shares, the removal of a
# 4,000-object token directory goes on being felt after sync returns. The seconds waited
# are added up in M[quiesce_s].
QUIESCE_MAX=${QUIESCE_MAX:-20}
quiesce() {
    local i stall
    sync
    for ((i = 0; i < QUIESCE_MAX; i++)); do
        stall=$(sed -n 's/^some avg10=\([0-9.]*\).*/\1/p' /proc/pressure/io 2>/dev/null)
        [ -n "$stall" ] && awk -v s="$stall" 'BEGIN { exit !(s >= 5) }' || break
        sleep 1
    done
    M[quiesce_s]=$((${M[quiesce_s]:-0} + i))
}

printf '%s' "$CA_PIN" >ca.pin
printf '%s' "$DEV_PIN" >device.pin
chmod 600 ca.pin device.pin

# ---- the CA (made once; its token directory is copied into every scenario) ---------------
setup_ca() {
    mkdir -p ca-tokens
    cat >ca-softhsm.conf <<EOF
directories.tokendir = $work/ca-tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
EOF
    SOFTHSM2_CONF=$work/ca-softhsm.conf softhsm2-util --init-token --free --label provisioner-ca \
        --pin "$CA_PIN" --so-pin "$SO_PIN" >/dev/null
    make_server_ca "$work/server-ca"
    write_root_conf "$work/root.conf" strict
    write_config "$work"
    SOFTHSM2_CONF=$work/ca-softhsm.conf "$PROV" --config "$work/provisioner.cnf" ca init >/dev/null ||
        die "provisioner ca init failed"
}

# write_config DIR [MODULE]: DIR/provisioner.cnf, storage under DIR/devices, the shared CA.
write_config() {
    cat >"$1/provisioner.cnf" <<EOF
[provisioner]
pkcs11_module = ${2:-$MODULE}
output_dir = $1/devices
server_ca = $work/server-ca/ca.crt
device_pin = file:$work/device.pin
lot = bench

[ca]
dir = $work/ca
intermediate_key = pkcs11:token=provisioner-ca;object=intermediate
pin = file:$work/ca.pin
intermediate_key_type = ec-p256
intermediate_subject = ca_dn
root_key = pkcs11:token=provisioner-ca;object=root
root_key_type = ec-p384
root_config = $work/root.conf

[ca_dn]
CN = Bench Intermediate CA
EOF
}

# scenario NAME TOKEN...: a fresh directory with its own SoftHSM2 token directory holding a
# copy of the CA token and new, empty device tokens; exports SOFTHSM2_CONF; cds into it.
scenario() {
    local name=$1 t
    shift
    cd "$work"
    rm -rf "s-$name"
    mkdir -p "s-$name/tokens" "s-$name/devices"
    cp -a ca-tokens/. "s-$name/tokens/"
    cat >"s-$name/softhsm.conf" <<EOF
directories.tokendir = $work/s-$name/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
EOF
    export SOFTHSM2_CONF=$work/s-$name/softhsm.conf
    for t in "$@"; do
        softhsm2-util --init-token --free --label "$t" --pin "$DEV_PIN" --so-pin "$SO_PIN" \
            >/dev/null || die "softhsm2-util --init-token $t failed"
    done
    write_config "$work/s-$name"
    cd "s-$name"
}

# manifest FILE N TOKEN...: N rows, devices spread round-robin over the tokens. The serials
# carry the scenario's name: scenarios share the CA, whose index (provisioner/ca_index.h)
# refuses a serial another lot certified.
manifest() {
    local f=$1 n=$2
    shift 2
    awk -v n="$n" -v toks="$*" -v p="$(basename "$PWD")" 'BEGIN {
        k = split(toks, t, " ")
        print "serial,device"
        for (i = 1; i <= n; i++) printf "BENCH-%s-%06d,pkcs11:token=%s\n", p, i, t[(i - 1) % k + 1]
    }' >"$f"
}

# ---- measurements (each sets M[name]=value) -----------------------------------------------
declare -A M

# floor_run NAME OP N: bench_p11 OP N on a fresh token; sets M[NAME] (operations per second).
floor_run() {
    local out
    scenario "$1" floor
    quiesce
    out=$(/usr/bin/time -v -o time.txt "$P11" --module "$MODULE" --token floor \
        --pin-file "$work/device.pin" "$2" "$3") || die "bench_p11 $2 $3 failed"
    M[$1]=$(sed -n 's/.* per_second=\([^ ]*\).*/\1/p' <<<"$out")
    # SoftHSM2 keeps every object of its tokens in the calling process: the floor's RSS
    # shows how much of the tool's is the token's
    M[${1}_rss_kib]=$(sed -n 's/.*Maximum resident set size (kbytes): //p' time.txt)
    cd "$work"
    rm -rf "s-$1"
}

# The floor: C_GenerateKeyPair alone (SPEC §10) at both N, each filling a fresh token to the
# N of the batch it is compared with, and at the small N keygen plus the rest of the token
# work SPEC §4/§8 ask per device (attributes read back, CSR and proof signatures, the
# certificate object).
measure_floor() {
    floor_run floor_keygen_s_small keygen "$N_SMALL"
    floor_run floor_device_s_small device "$N_SMALL"
    floor_run floor_keygen_s_large keygen "$N_LARGE"
    floor_run floor_sign_s sign "$N_SIGN"
}

# batch_run NAME N JOBS TOKEN...: one `provisioner batch` of N devices on fresh tokens; sets
# M[NAME_dev_s] (devices per second, wall clock of the whole command) and M[NAME_rss_kib].
batch_run() {
    local name=$1 n=$2 jobs=$3 t0 t1
    shift 3
    scenario "$name" "$@"
    manifest lot.csv "$n" "$@"
    quiesce
    t0=$(now)
    /usr/bin/time -v -o time.txt "$PROV" --config provisioner.cnf batch lot.csv --jobs "$jobs" \
        >out.txt 2>err.txt || die "batch $name failed: $(tail -n2 err.txt)"
    t1=$(now)
    batch_figures "$name" "$n" "$t0" "$t1"
}

# batch_figures NAME N T0 T1: after a batch in the scenario directory (every device must be
# issued), sets M[NAME_dev_s] and M[NAME_rss_kib] and removes the scenario.
batch_figures() {
    local name=$1 n=$2 issued
    issued=$(grep -c ',issued,' lot.results.csv || true)
    [ "$issued" = "$n" ] || die "batch $name: $issued of $n devices issued"
    M[${name}_dev_s]=$(awk -v n="$n" -v a="$3" -v b="$4" 'BEGIN { printf "%.2f", n / (b - a) }')
    M[${name}_rss_kib]=$(sed -n 's/.*Maximum resident set size (kbytes): //p' time.txt)
    cd "$work"
    rm -rf "s-$name"
}

# remote_batch_run NAME N: batch_run NAME N 1 dev-a with the tokens out of the tool's process,
# as a USB token or network HSM would be: SoftHSM2 runs in a `p11-kit server` (stopped by its
# PID) and the tool loads p11-kit's client module. SoftHSM2 keeps every object of a token in
# the process that loads it, so this is the tool's own peak RSS; sets M[NAME_dev_s] and
# M[NAME_rss_kib].
remote_batch_run() {
    local name=$1 n=$2 env t0 t1 rc=0
    scenario "$name" dev-a
    write_config "$PWD" "$CLIENT_MODULE"
    manifest lot.csv "$n" dev-a
    [ "${#PWD}" -lt 100 ] || die "$PWD/p11.sock: too long for a Unix socket path (use --build with a shorter path)"
    env=$(p11-kit server -s --provider "$MODULE" -n "$PWD/p11.sock" "pkcs11:") ||
        die "p11-kit server failed to start"
    server_pid=$(sed -n 's/.*P11_KIT_SERVER_PID=\([0-9]*\);.*/\1/p' <<<"$env")
    [ -n "$server_pid" ] || die "p11-kit server: no PID in its output: $env"
    for _ in $(seq 1 100); do
        [ -S p11.sock ] && break
        sleep 0.05
    done
    [ -S p11.sock ] || die "p11-kit server: $PWD/p11.sock did not appear"
    quiesce
    t0=$(now)
    P11_KIT_SERVER_ADDRESS=unix:path=$PWD/p11.sock /usr/bin/time -v -o time.txt \
        "$PROV" --config provisioner.cnf batch lot.csv --jobs 1 >out.txt 2>err.txt || rc=$?
    t1=$(now)
    stop_server
    [ "$rc" = 0 ] || die "batch $name failed: $(tail -n2 err.txt)"
    batch_figures "$name" "$n" "$t0" "$t1"
}

# The p11-kit server of remote_batch_run, if one is running: stopped by its PID, and waited
# for (it is not our child, so by polling) so that its directory can be removed. Also on exit.
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
trap stop_server EXIT

# The pipeline a user would script by hand, one device after another: pkcs11-tool makes the
# key (unique id), `openssl req` makes the CSR with it through the pkcs11 engine, and
# `openssl x509 -req` issues with the intermediate key in the CA token through the engine.
measure_cli() {
    local slot i id t0 t1 sn
    scenario cli cli-dev
    engine_conf engine.cnf
    cat >device.ext <<'EOF'
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
    slot=$(token_slot cli-dev)
    quiesce
    t0=$(now)
    for i in $(seq 1 "$N_CLI"); do
        sn=$(printf 'CLI-%06d' "$i")
        id=$(printf '%032x' "$i")
        pkcs11-tool --module "$MODULE" --slot "$slot" --login --pin "$DEV_PIN" --keypairgen \
            --key-type EC:prime256v1 --id "$id" --label "$sn" --usage-sign >/dev/null 2>&1 ||
            die "cli: pkcs11-tool --keypairgen failed for $sn"
        OPENSSL_CONF=$PWD/engine.cnf openssl req -new -engine pkcs11 -keyform engine \
            -key "pkcs11:token=cli-dev;id=$(sed 's/../%&/g' <<<"$id");type=private;pin-value=$DEV_PIN" \
            -subj "/CN=$sn" -out "devices/$sn.csr" >/dev/null 2>&1 ||
            die "cli: openssl req failed for $sn"
        OPENSSL_CONF=$PWD/engine.cnf openssl x509 -req -in "devices/$sn.csr" -engine pkcs11 \
            -CAkeyform engine \
            -CAkey "pkcs11:token=provisioner-ca;object=intermediate;type=private;pin-value=$CA_PIN" \
            -CA "$work/ca/intermediate.crt" -set_serial "0x$(openssl rand -hex 16)" -days 365 \
            -extfile device.ext -out "devices/$sn.crt" >/dev/null 2>&1 ||
            die "cli: openssl x509 -req failed for $sn"
    done
    t1=$(now)
    openssl verify -CAfile "$work/ca/root.crt" -untrusted "$work/ca/intermediate.crt" \
        "devices/$sn.crt" >/dev/null 2>&1 || die "cli: the pipeline's last certificate does not verify"
    M[cli_ms_dev]=$(awk -v n="$N_CLI" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", 1000 * (b - a) / n }')
    cd "$work"
    rm -rf s-cli
}

# Peak RSS of `batch --check` on big manifests (validation only: no token is opened).
measure_rss_check() {
    local n
    mkdir -p rss
    write_config "$work/rss"
    for n in "${N_RSS[@]}"; do
        awk -v n="$n" 'BEGIN {
            print "serial,device,cn,san_dns,x_site"
            for (i = 1; i <= n; i++)
                printf "BENCH-%07d,pkcs11:token=dev-%04d,Sensor %d,d%d.example.com,site-%d\n",
                    i, i % 1000, i, i, i % 7
        }' >"rss/m$n.csv"
        /usr/bin/time -v -o "rss/time$n.txt" "$PROV" --config rss/provisioner.cnf batch "rss/m$n.csv" \
            --check >/dev/null 2>"rss/err$n.txt" || die "batch --check of $n rows failed: $(tail -n1 "rss/err$n.txt")"
        M[rss_check_kib_$n]=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "rss/time$n.txt")
    done
    rm -rf rss
}

measure_tpm() {
    local out
    out=$(bash "$repo/bench/tpm.sh" "$build" "$N_TPM" 2>&1) || die "bench/tpm.sh failed: $(tail -n3 <<<"$out")"
    M[tpm_floor_ms]=$(sed -n 's/^TPM floor.* median \([0-9.]*\) ms.*/\1/p' <<<"$out")
    M[tpm_key_ms]=$(sed -n 's/^TPM key.* median \([0-9.]*\) ms.*/\1/p' <<<"$out")
    M[tpm_enroll_ms]=$(sed -n 's/^TPM enroll.* median \([0-9.]*\) ms.*/\1/p' <<<"$out")
}

measure_all() {
    note "floor: keygen and device work x $N_SMALL and x $N_LARGE, C_Sign x $N_SIGN"
    measure_floor
    note "batch: N=$N_SMALL, N=$N_MID, N=$N_LARGE on one token"
    batch_run small "$N_SMALL" 1 dev-a
    batch_run mid "$N_MID" 1 dev-a
    batch_run large "$N_LARGE" 1 dev-a
    note "batch: $N_JOBS devices on two tokens, --jobs 1 and --jobs 2"
    batch_run jobs1 "$N_JOBS" 1 dev-a dev-b
    batch_run jobs2 "$N_JOBS" 2 dev-a dev-b
    note "command-line pipeline: N=$N_CLI"
    measure_cli
    note "peak RSS of batch --check: ${N_RSS[*]} rows"
    measure_rss_check
    note "batch: N=$N_SMALL and N=$N_LARGE with the token out of process (p11-kit server)"
    remote_batch_run remote_small "$N_SMALL"
    remote_batch_run remote_large "$N_LARGE"
    note "TPM on swtpm: N=$N_TPM (bench/tpm.sh)"
    measure_tpm
}

# ---- runs and medians --------------------------------------------------------------------
setup_ca
declare -A ALL
keys=()
for run in $(seq 1 "$runs"); do
    note "run $run of $runs"
    M=()
    measure_all
    for k in "${!M[@]}"; do
        ALL[$k]="${ALL[$k]:-} ${M[$k]}"
    done
done
median() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
declare -A V
for k in "${!ALL[@]}"; do
    V[$k]=$(median "${ALL[$k]}")
done

# Derived figures, from the medians.
ms() { fdiv 1000 "$1" 2; }
V[small_ms]=$(ms "${V[small_dev_s]}")
V[mid_ms]=$(ms "${V[mid_dev_s]}")
V[large_ms]=$(ms "${V[large_dev_s]}")
V[floor_ms_small]=$(ms "${V[floor_keygen_s_small]}")
V[floor_ms_large]=$(ms "${V[floor_keygen_s_large]}")
V[floor_device_ms_small]=$(ms "${V[floor_device_s_small]}")
V[ratio_floor_small]=$(fdiv "${V[small_dev_s]}" "${V[floor_keygen_s_small]}")
V[ratio_floor_large]=$(fdiv "${V[large_dev_s]}" "${V[floor_keygen_s_large]}")
V[ratio_device_small]=$(fdiv "${V[small_dev_s]}" "${V[floor_device_s_small]}")
V[growth_tool]=$(fdiv "${V[large_ms]}" "${V[small_ms]}")
V[growth_floor]=$(fdiv "${V[floor_ms_large]}" "${V[floor_ms_small]}")
V[speedup_cli]=$(fdiv "${V[cli_ms_dev]}" "${V[mid_ms]}" 1)
V[jobs_speedup]=$(fdiv "${V[jobs2_dev_s]}" "${V[jobs1_dev_s]}")
for n in "${N_RSS[@]}"; do
    V[rss_check_mib_$n]=$(fdiv "${V[rss_check_kib_$n]}" 1024 1)
done
V[rss_batch_mib]=$(fdiv "${V[large_rss_kib]}" 1024 1)
V[rss_floor_large_mib]=$(fdiv "${V[floor_keygen_s_large_rss_kib]}" 1024 1)
V[rss_remote_small_mib]=$(fdiv "${V[remote_small_rss_kib]}" 1024 1)
V[rss_remote_large_mib]=$(fdiv "${V[remote_large_rss_kib]}" 1024 1)
V[remote_large_ms]=$(ms "${V[remote_large_dev_s]}")
V[tpm_key_ratio]=$(fdiv "${V[tpm_key_ms]}" "${V[tpm_floor_ms]}")
V[tpm_enroll_ratio]=$(fdiv "${V[tpm_enroll_ms]}" "${V[tpm_floor_ms]}")

table() {
    local what
    what=$([ "$runs" -gt 1 ] && echo "median of $runs runs" || echo "one run")
    echo "provisioner benchmark ($what$([ "$quick" = 1 ] && echo ', --quick'); $(nproc) CPUs; $(date -u +%Y-%m-%dT%H:%MZ))"
    echo
    echo "| figure | value | target |"
    echo "|---|---|---|"
    echo "| floor: C_GenerateKeyPair, P-256 token key, N=$N_SMALL / N=$N_LARGE keys | ${V[floor_keygen_s_small]} / ${V[floor_keygen_s_large]} keys/s (${V[floor_ms_small]} / ${V[floor_ms_large]} ms) | |"
    echo "| floor: C_Sign, ECDSA P-256 | ${V[floor_sign_s]} signs/s | |"
    echo "| device floor: keygen + attributes + 2 signs + certificate object, N=$N_SMALL | ${V[floor_device_s_small]} devices/s (${V[floor_device_ms_small]} ms) | |"
    echo "| batch N=$N_SMALL, one token | ${V[small_dev_s]} devices/s (${V[small_ms]} ms/device) | |"
    echo "| batch N=$N_MID, one token | ${V[mid_dev_s]} devices/s (${V[mid_ms]} ms/device) | |"
    echo "| batch N=$N_LARGE, one token | ${V[large_dev_s]} devices/s (${V[large_ms]} ms/device) | |"
    echo "| batch ÷ keygen floor, same N (N=$N_SMALL / N=$N_LARGE) | ${V[ratio_floor_small]} / ${V[ratio_floor_large]} | ≥ 0.85 |"
    echo "| batch ÷ device floor, N=$N_SMALL | ${V[ratio_device_small]} | |"
    echo "| per-device cost N=$N_LARGE ÷ N=$N_SMALL: tool / floor | ${V[growth_tool]} / ${V[growth_floor]} | tool ≤ 1.2 |"
    echo "| command-line pipeline (pkcs11-tool, openssl req, openssl x509), N=$N_CLI | ${V[cli_ms_dev]} ms/device | |"
    echo "| speed-up of batch over the pipeline, N=$N_CLI | ${V[speedup_cli]}× | ≥ 15× |"
    echo "| $N_JOBS devices on two tokens: --jobs 1 / --jobs 2 | ${V[jobs1_dev_s]} / ${V[jobs2_dev_s]} devices/s (${V[jobs_speedup]}×) | ≥ 1.6× |"
    echo "| peak RSS, batch --check of ${N_RSS[0]} / ${N_RSS[1]} / ${N_RSS[2]} rows | ${V[rss_check_mib_${N_RSS[0]}]} / ${V[rss_check_mib_${N_RSS[1]}]} / ${V[rss_check_mib_${N_RSS[2]}]} MiB | < 32, flat |"
    echo "| peak RSS, batch of $N_LARGE devices / keygen floor process at $N_LARGE keys (SoftHSM2 holds every token object in the process) | ${V[rss_batch_mib]} / ${V[rss_floor_large_mib]} MiB | < 32 |"
    echo "| peak RSS of the tool with the token out of process (p11-kit server), batch of $N_SMALL / $N_LARGE devices | ${V[rss_remote_small_mib]} / ${V[rss_remote_large_mib]} MiB | < 32, flat |"
    echo "| batch N=$N_LARGE with the token out of process | ${V[remote_large_dev_s]} devices/s (${V[remote_large_ms]} ms/device) | |"
    echo "| TPM (swtpm): ESAPI floor Create+Load+EvictControl+Sign | ${V[tpm_floor_ms]} ms/device | |"
    echo "| TPM: backend key step (open, generate_key, key_props, sign) / floor | ${V[tpm_key_ms]} ms (${V[tpm_key_ratio]}×) | ≤ 1.3× |"
    echo "| TPM: full enrollment (+ CSR, CA, proof, NV write + read-back, storage) / floor | ${V[tpm_enroll_ms]} ms (${V[tpm_enroll_ratio]}×) | see bench/README.md |"
}

write_json() {
    local k first=1
    printf '{\n  "quick": %s,\n  "runs": %s,\n  "cpus": %s,\n  "sizes": {"small": %s, "mid": %s, "large": %s, "cli": %s, "jobs": %s, "tpm": %s},\n  "figures": {' \
        "$([ "$quick" = 1 ] && echo true || echo false)" "$runs" "$(nproc)" \
        "$N_SMALL" "$N_MID" "$N_LARGE" "$N_CLI" "$N_JOBS" "$N_TPM"
    for k in $(printf '%s\n' "${!V[@]}" | sort); do
        [ "$first" = 1 ] || printf ','
        first=0
        printf '\n    "%s": %s' "$k" "${V[$k]:-null}"
    done
    printf '\n  }\n}\n'
}

if [ "$json" = "-" ]; then
    table >&2
    write_json
else
    table
    [ -z "$json" ] || write_json >"$json"
fi
