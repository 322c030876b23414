#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# Runs a PKCS#11 integration test program against a private SoftHSM2 token dir:
#   softhsm-env.sh WORKDIR PROGRAM [ARGS...]
# WORKDIR (in the build tree) is wiped and re-created with these tokens, all with user PIN
# 1234 and SO PIN 5678: dev-1, dev-10 (exact label matching), keys-0001 (key tests),
# pin-1, pin-2, pin-3 (PIN tests). A missing tool is a failure, not a skip: CI has them all.
set -eu

work=$1
shift
module=/usr/lib/softhsm/libsofthsm2.so

for tool in softhsm2-util pkcs11-tool openssl; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "softhsm-env.sh: $tool not found (install softhsm2, opensc, openssl)" >&2
        exit 1
    fi
done
if [ ! -r "$module" ]; then
    echo "softhsm-env.sh: $module not found (install softhsm2)" >&2
    exit 1
fi

case $work in
    /*) ;;
    *) echo "softhsm-env.sh: WORKDIR must be absolute" >&2; exit 1 ;;
esac
rm -rf "$work"
mkdir -p "$work/tokens"
cat >"$work/softhsm2.conf" <<CONF
directories.tokendir = $work/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
CONF
SOFTHSM2_CONF=$work/softhsm2.conf
export SOFTHSM2_CONF

for label in dev-1 dev-10 keys-0001 pin-1 pin-2 pin-3; do
    softhsm2-util --init-token --free --label "$label" --pin 1234 --so-pin 5678 >/dev/null
done

PROV_TEST_MODULE=$module
PROV_TEST_PIN=1234
PROV_TEST_WORKDIR=$work
export PROV_TEST_MODULE PROV_TEST_PIN PROV_TEST_WORKDIR
exec "$@"
