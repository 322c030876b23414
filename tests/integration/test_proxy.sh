#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The documented default module: without pkcs11_module in the config and without module-path
# in a URI, tokens are found through the p11-kit proxy, which loads every module registered
# with p11-kit (pkcs11.conf(5): *.module files in /usr/share/p11-kit/modules and
# /etc/pkcs11/modules; per-user files are skipped for root). To register SoftHSM2 without
# touching the machine, the test runs in a mount namespace of its own (unshare --mount) with
# a private module directory bound over /usr/share/p11-kit/modules and an empty /etc/pkcs11:
# only this test's softhsm2.module is registered, and everything is gone when it exits.
# - ca init, enroll, batch and check (with the config, and with no config at all, as on a
#   device) work through the proxy; key.uri names no module;
# - with no module registered, the token is not found (exit 4, one line), not a load error.
. "$(dirname "$0")/lib.sh"

# it_private_p11kit: re-runs this test (before it_setup) in a private mount namespace.
if [ "${IT_PRIVATE_P11KIT:-}" != 1 ]; then
    need unshare mount
    IT_PRIVATE_P11KIT=1 exec unshare --mount --propagation private -- bash "$0" "$@"
fi
it_setup
need_file "$(libdir_file p11-kit-proxy.so)"
mkdir -p "$WORK/p11kit/modules" "$WORK/p11kit/none" "$WORK/p11kit/etc"
printf 'module: %s\n' "$SOFTHSM_MODULE" >"$WORK/p11kit/modules/softhsm2.module"
mount --bind "$WORK/p11kit/modules" /usr/share/p11-kit/modules ||
    fail "cannot bind the private module directory over /usr/share/p11-kit/modules"
if [ -d /etc/pkcs11 ]; then
    mount --bind "$WORK/p11kit/etc" /etc/pkcs11 || fail "cannot hide /etc/pkcs11"
fi

ca_prepare pkcs11
# every PKCS#11 call through the proxy: no pkcs11_module anywhere
sed -i '/^pkcs11_module = /d' "$PROVISIONER_CONFIG"
assert_no_grep "$PROVISIONER_CONFIG" 'pkcs11_module|module-path' "the config names a module"
prov 0 ca init
token_init dev-proxy
prov 0 enroll --serial SN-PROXY-1 --device pkcs11:token=dev-proxy
assert_no_grep devices/SN-PROXY-1/key.uri 'module-path' "key.uri names a module"
prov 0 check devices/SN-PROXY-1
printf 'serial,device\nSN-PROXY-2,pkcs11:token=dev-proxy\nSN-PROXY-3,pkcs11:token=dev-proxy\n' >lot.csv
prov 0 batch lot.csv --no-progress
assert_grep "$PROV_OUT" '^2 rows: 2 issued, '
# On a device there may be no config at all: check takes the default module and a PIN source.
mkdir -p "$WORK/elsewhere"
(
    cd "$WORK/elsewhere"
    unset PROVISIONER_CONFIG
    prov 0 check --pin "file:$WORK/device.pin" "$WORK/devices/SN-PROXY-2"
)

# No module registered: the proxy has no slots, so the token is not found (exit 4).
mount --bind "$WORK/p11kit/none" /usr/share/p11-kit/modules ||
    fail "cannot bind an empty module directory"
prov 4 csr --serial SN-PROXY-4 --device pkcs11:token=dev-proxy --out SN-PROXY-4.csr
assert_one_error dev-proxy
assert_no_file SN-PROXY-4.csr
