#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# tests/fuzz/make_cmp_corpus.sh [BUILD_DIR]: remakes the seed corpus of tests/fuzz/fuzz_cmp.c
# from real messages: `openssl cmp` (-reqout) against `provisioner ca serve` on a SoftHSM2 CA
# made with the integration harness (tests/integration/lib.sh), in
# BUILD_DIR/it-work/make_cmp_corpus. Writes
# - tests/fuzz/corpus/cmp/*: one input each (fuzz_cmp.c: a method byte, the path, the
#   Content-Type, then one or more DER PKIMessages, each one request): ir, cr, p10cr, kur,
#   certConf, rr, genm as openssl sent them, and broken variants (unprotected, from a station
#   nobody registered, a key certified before, truncated, a flipped byte, a finished
#   transaction replayed, another path, method or type);
# - tests/fuzz/cmp-ca/: the CA the messages were made against, as far as the fuzz target
#   needs it: chain.pem (intermediate, then root) and index.sqlite (its CA index, copied after
#   ir, cr and p10cr were confirmed and before kur and rr, so that those two still act).
# The certificates last 7000 days (the stations' and devices' 3650) so that the committed
# messages keep verifying; the intermediate's key stays in the token (the fuzz target signs
# with a key of its own). Run it again after changing what a message must hold.
set -u
SRC=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=$(cd "${1:-$SRC/build}" && pwd)
export PROVISIONER=$BUILD/provisioner PROV_BUILD_ROOT=$BUILD PROV_SOURCE_ROOT=$SRC
. "$SRC/tests/integration/lib.sh"
. "$SRC/tests/integration/cmp/cmp_lib.sh"
it_setup
need sqlite3
OUT=$SRC/tests/fuzz/corpus/cmp
CA_OUT=$SRC/tests/fuzz/cmp-ca
M=$WORK/msg
mkdir -p "$M"

ca_prepare pkcs11
sed -i 's/^\[ca\]$/[ca]\nintermediate_days = 7000/' "$PROVISIONER_CONFIG"
prov 0 ca init
cmp_profiles
sed -i 's/^days = 30$/days = 3650/' "$PROVISIONER_CONFIG"
printf '\n[profile_device]\ndays = 3650\n' >>"$PROVISIONER_CONFIG"
cmp_station FUZZ-ST-1
cmp_station FUZZ-ST-2 sign
prov 0 ca lot add LOT-FUZZ --count 1000 --station FUZZ-ST-1
cmp_serve --max-body 65536

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$M/$1.key" 2>/dev/null ||
    fail "openssl genpkey"; }
# cmp NAME STATION ARGS...: openssl cmp, the requests into $M/NAME.1.der, NAME.2.der
cmp() {
    local n=$1
    shift
    cmp_client "$n" "$@" -reqout "$M/$n.1.der,$M/$n.2.der" || true
}

key F-0001
cmp ir FUZZ-ST-1 -cmd ir -newkey "$M/F-0001.key" -subject /CN=F-0001 -certout "$M/F-0001.crt"
key F-0002
cmp cr FUZZ-ST-1 -cmd cr -newkey "$M/F-0002.key" -subject /CN=F-0002 -certout "$M/F-0002.crt"
key F-0003
openssl req -new -key "$M/F-0003.key" -subj /CN=F-0003 -out "$M/F-0003.csr" 2>/dev/null ||
    fail "openssl req"
cmp p10cr FUZZ-ST-1 -cmd p10cr -csr "$M/F-0003.csr" -certout "$M/F-0003.crt"
key F-0004
cmp rr-cert FUZZ-ST-1 -cmd ir -newkey "$M/F-0004.key" -subject /CN=F-0004 -certout "$M/F-0004.crt"
for c in F-0001 F-0002 F-0003 F-0004; do assert_file "$M/$c.crt"; done
# the index as the fuzz target starts from: these four issued and confirmed
rm -rf "$CA_OUT"
mkdir -p "$CA_OUT"
sqlite3 "$IT_CA_DIR/index.sqlite" ".backup '$CA_OUT/index.sqlite'" || fail "sqlite3 .backup"
cp "$IT_CA_DIR/chain.pem" "$CA_OUT/chain.pem"

key F-0001-NEW
openssl cmp -server "127.0.0.1:$CMP_PORT" -path /.well-known/cmp -cmd kur \
    -cert "$M/F-0001.crt" -key "$M/F-0001.key" -newkey "$M/F-0001-NEW.key" \
    -trusted "$IT_CA_DIR/root.crt" -certout "$M/F-0001-NEW.crt" -msg_timeout 20 \
    -reqout "$M/kur.1.der,$M/kur.2.der" >"$WORK/log/cmp-kur.log" 2>&1 ||
    fail "kur: $(tail -n2 "$WORK/log/cmp-kur.log" | tr '\n' ' ')"
cmp rr FUZZ-ST-1 -cmd rr -oldcert "$M/F-0004.crt" -revreason 1
cmp genm FUZZ-ST-1 -cmd genm -infotype caCerts
# refused ones: unprotected, a station nobody registered, a key certified before
key F-0005
cmp unprotected FUZZ-ST-1 -cmd ir -newkey "$M/F-0005.key" -subject /CN=F-0005 -unprotected_requests -certout "$M/x.crt"
cmp unregistered FUZZ-ST-2 -cmd ir -newkey "$M/F-0005.key" -subject /CN=F-0005 -certout "$M/x.crt"
cmp samekey FUZZ-ST-1 -cmd ir -newkey "$M/F-0001.key" -subject /CN=F-0006 -certout "$M/x.crt"
stop_pid "$CMP_PID"
for f in ir.1 ir.2 cr.1 p10cr.1 kur.1 kur.2 rr.1 genm.1 unprotected.1 \
    unregistered.1 samekey.1; do
    assert_file "$M/$f.der"
done

# input HEAD FILES...: the method byte (1: POST), path and type lines, then the messages
input() {
    local name=$1 head=$2
    shift 2
    { printf '%b' "$head"; cat "$@"; } >"$OUT/$name"
}
rm -rf "$OUT"
mkdir -p "$OUT"
POST='\x01/.well-known/cmp\napplication/pkixcmp\n'
input ir "$POST" "$M/ir.1.der"
input ir-certconf "$POST" "$M/ir.1.der" "$M/ir.2.der"
input ir-replayed "$POST" "$M/ir.1.der" "$M/ir.2.der" "$M/ir.1.der"
input certconf-alone "$POST" "$M/ir.2.der"
input cr-certconf "$POST" "$M/cr.1.der" "$M/cr.2.der"
input p10cr-certconf "$POST" "$M/p10cr.1.der" "$M/p10cr.2.der"
input kur-certconf "$POST" "$M/kur.1.der" "$M/kur.2.der"
input rr "$POST" "$M/rr.1.der"
input genm "$POST" "$M/genm.1.der"
input genm-twice "$POST" "$M/genm.1.der" "$M/genm.1.der"
input unprotected "$POST" "$M/unprotected.1.der"
input unregistered "$POST" "$M/unregistered.1.der"
input same-key "$POST" "$M/samekey.1.der"
head -c 100 "$M/ir.1.der" >"$M/truncated.der"
input truncated "$POST" "$M/truncated.der"
cp "$M/p10cr.1.der" "$M/flipped.der"
n=$(stat -c %s "$M/flipped.der")
printf '\xff' | dd of="$M/flipped.der" bs=1 seek=$((n / 2)) conv=notrunc 2>/dev/null
input flipped "$POST" "$M/flipped.der"
input trailing "$POST" "$M/genm.1.der" "$M/truncated.der"
input get '\x00/.well-known/cmp\napplication/pkixcmp\n' "$M/genm.1.der"
input other-path '\x01/.well-known/cmp/x\napplication/pkixcmp\n' "$M/genm.1.der"
input other-type '\x01/.well-known/cmp\napplication/pkixcmpx\n' "$M/genm.1.der"
input type-params '\x01/.well-known/cmp\nApplication/PKIXCMP; charset=x\n' "$M/genm.1.der"
input empty "$POST"
echo "$(ls "$OUT" | wc -l) inputs in $OUT; the CA in $CA_OUT"
