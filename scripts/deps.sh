# SPDX-License-Identifier: Apache-2.0
#
# Installs the Debian 12 packages the project needs, and only the missing ones.
#
#   bash scripts/deps.sh          # as a command
#   . scripts/deps.sh; prov_deps  # sourced by scripts/test.sh and scripts/demo.sh
#   bash scripts/deps.sh deb      # also what the Debian package test needs (debhelper...)
#
# When everything is installed this only runs one dpkg-query (well under a second) and
# touches nothing. When something is missing it runs `apt-get update` once and installs the
# missing packages without recommends; it needs root for that and fails loudly otherwise.
# PROV_DEPS_EXTRA="pkg ..." adds packages (e.g. a sanitizer runtime) to the list.

PROV_DEPS_PACKAGES=(
    # build
    meson ninja-build pkg-config gcc libc6-dev
    libssl-dev libp11-dev libp11-kit-dev libjson-c-dev libcsv-dev libsqlite3-dev libpq-dev
    libtss2-dev libcurl4-openssl-dev libmosquitto-dev libcmocka-dev scdoc libevent-dev
    libsystemd-dev
    # install layout: pkg-config files that name Debian's directories; man pages checked
    bash-completion udev systemd man-db groff-base
    # PKCS#11: SoftHSM2, the OpenSSL engine, pkcs11-tool / pkcs11-spy
    softhsm2 libsofthsm2 libengine-pkcs11-openssl opensc
    # TPM 2.0 (swtpm, tools, the OpenSSL provider, the resource manager)
    swtpm swtpm-tools tpm2-tools tpm2-openssl tpm2-abrmd libtss2-tcti-tabrmd0 dbus
    # tests and demo: brokers, clients, verifiers
    openssl gnutls-bin nginx curl mosquitto mosquitto-clients sqlite3 e2fsprogs jq bsdutils
    # the CA service refusing an expired station (tests/integration/cmp/test_cmp_refusals.sh)
    faketime
    # which directories a run syncs (tests/integration/test_enroll.sh)
    strace
    # the shared ledger tests run their own PostgreSQL (tests/integration/ledger)
    postgresql-15 postgresql-client-15
    # bench/run.sh: peak RSS (/usr/bin/time -v), the token out of process (p11-kit server and
    # its client module); scripts/valgrind.sh: memcheck
    time p11-kit p11-kit-modules valgrind
    # private network namespaces for tests with a websockets broker (ip, unshare)
    iproute2 util-linux
    # (udev, in the install layout line, also gives the station tests udevadm)
    # lot export's tests check the exported formats' fields in Python (json, csv)
    python3
)

# Only for the Debian package test (meson suite "deb"): `prov_deps deb` adds these.
PROV_DEPS_DEB_PACKAGES=(
    debhelper dpkg-dev build-essential fakeroot git adduser
)

prov_deps() {
    local want=("${PROV_DEPS_PACKAGES[@]}")
    if [ "${1:-}" = deb ]; then
        want+=("${PROV_DEPS_DEB_PACKAGES[@]}")
    fi
    local missing=()
    local p status

    if [ -n "${PROV_DEPS_EXTRA:-}" ]; then
        # shellcheck disable=SC2206 # word splitting of a package list is intended
        want+=(${PROV_DEPS_EXTRA})
    fi
    # One dpkg-query for the whole list; a package dpkg has never heard of prints nothing
    # on stdout (its complaint goes to stderr), so compare by name.
    declare -A installed=()
    while read -r p status; do
        [ "$status" = "installed" ] && installed[$p]=1
    done < <(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${want[@]}" 2>/dev/null || true)
    for p in "${want[@]}"; do
        [ -n "${installed[$p]:-}" ] || missing+=("$p")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        return 0
    fi
    echo "deps: missing Debian packages: ${missing[*]}" >&2
    if [ "$(id -u)" -ne 0 ]; then
        echo "deps: ERROR: not root; install them with:" >&2
        echo "deps:   sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
        return 1
    fi
    if ! apt-get update; then
        echo "deps: ERROR: apt-get update failed" >&2
        return 1
    fi
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"; then
        echo "deps: ERROR: apt-get install failed for: ${missing[*]}" >&2
        return 1
    fi
}

# Run directly: install, exit non-zero on failure.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    prov_deps "$@"
fi
