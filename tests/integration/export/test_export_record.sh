#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The signed lot record and the lot signer:
# - without a lot signer, `lot export --format record` exits 4 with one line naming what to
#   run, and writes nothing;
# - `lot signer` makes a key in the CA token (sensitive, never extractable, signing only,
#   label lot-signer, not the intermediate's key) and a certificate the intermediate issued
#   with keyUsage digitalSignature only, passing `openssl verify -x509_strict`; the CA index
#   records it; a second run is refused (5) and --force replaces key and certificate; a
#   --force that fails after making the new key keeps the old one, which still signs;
# - the record lists every exported device with the facts of its certificate in storage and
#   verifies with the commands doc/export.md gives (openssl alone), signed by the lot signer;
# - one byte changed in the payload, in the signature or in the lot signer's certificate,
#   and a root the record was not made under: each is refused by the same commands;
# - the lot signer's key attributes are the same after signing (it stayed in the token);
# - without the key on the token, or without the CA token, the export exits 4, writing nothing.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../batch/batch_lib.sh"
. "$(dirname "$0")/export_lib.sh"
it_setup
need python3 sqlite3
export_lot 3
facts_table >facts.txt

# signer_key_block: the lot signer's private key as pkcs11-tool lists it (label, usage, access)
signer_key_block() {
    token_list provisioner-ca "$CA_PIN_VALUE" --type privkey |
        awk '/^Private Key Object/ { blk = "" } { blk = blk $0 "\n" }
             /label: *lot-signer$/ { found = 1 } found && /Access:/ { printf "%s", blk; exit }'
}

# The command doc/export.md gives under "Verifying a lot record" (its first sh block, the
# continuation lines joined), read from the document itself so that the test runs exactly it.
doc_verify=$(awk '/^## Verifying a lot record/ { s = 1 } s && /^```sh/ { b = 1; next }
                  b && /^```/ { exit } b { print }' "$PROV_SOURCE_ROOT/doc/export.md" |
    sed -e ':a' -e '/\\$/N; s/\\\n *//; ta')
case "$doc_verify" in
"openssl cms -verify "*) ;;
*) fail "doc/export.md: no openssl cms -verify command under \"Verifying a lot record\": $doc_verify" ;;
esac

# verify_record DIR [ROOT]: the documented command, run in DIR as the customer would, ROOT
# (default: our root) copied there as root.crt; the signer's certificate lands in DIR/signer.pem
verify_record() {
    cp "${2:-ca/root.crt}" "$1/root.crt"
    (cd "$1" && eval "$doc_verify") 2>"$1.verify.log"
}

# ---- no lot signer yet
prov 4 lot export LOT-IT-1 --format record --journal "$JOURNAL" --output rec0
assert_one_error "no lot signer" "lot-signer.crt" "provisioner lot signer"
assert_nothing_written rec0

# ---- the lot signer
prov 0 lot signer --json
python3 -c 'import json,sys; o=json.load(open(sys.argv[1])); assert o["exit"]==0 and o["certificate"].endswith("/ca/lot-signer.crt") and "Lot Signer" in o["subject"], o' \
    "$PROV_OUT" || fail "lot signer --json"
assert_file ca/lot-signer.crt
assert_mode 644 ca/lot-signer.crt
openssl verify -x509_strict -CAfile ca/root.crt -untrusted ca/intermediate.crt ca/lot-signer.crt \
    >log/verify-signer.log 2>&1 || fail "lot signer certificate: $(cat log/verify-signer.log)"
openssl x509 -in ca/lot-signer.crt -noout -ext keyUsage,basicConstraints,extendedKeyUsage \
    >signer-ext.txt 2>&1 || fail "openssl x509 -ext"
assert_eq "$(tr -s ' \n' ' ' <signer-ext.txt)" \
    "X509v3 Basic Constraints: critical CA:FALSE X509v3 Key Usage: critical Digital Signature " \
    "lot signer extensions: digitalSignature only, no CA, no extendedKeyUsage"
[ "$(openssl x509 -in ca/lot-signer.crt -noout -pubkey)" != \
    "$(openssl x509 -in ca/intermediate.crt -noout -pubkey)" ] || fail "lot signer uses the intermediate's key"
block=$(signer_key_block)
printf '%s\n' "$block" | grep -q 'Usage: *sign$' || fail "lot signer key usage: $block"
printf '%s\n' "$block" | grep -q 'Access: *sensitive, always sensitive, never extractable, local' ||
    fail "lot signer key access: $block"
assert_eq "$(sql_q ca/index.sqlite "SELECT issued_by || ' ' || status FROM certificate WHERE serial = 'ca:lot-signer'")" \
    "lot signer delivered" "the CA index records the lot signer"
first=$(fingerprint ca/lot-signer.crt)
prov 5 lot signer
assert_one_error "lot-signer" "--force"
assert_eq "$(fingerprint ca/lot-signer.crt)" "$first" "a refused lot signer leaves the certificate"
prov 0 lot signer --force
[ "$(fingerprint ca/lot-signer.crt)" != "$first" ] || fail "--force made no new certificate"
assert_eq "$(token_count provisioner-ca "$CA_PIN_VALUE" privkey)" 3 "root, intermediate, one lot signer"
assert_eq "$(sql_q ca/index.sqlite "SELECT group_concat(status, ' ') FROM (SELECT status FROM certificate WHERE serial = 'ca:lot-signer' ORDER BY id)")" \
    "superseded delivered" "the CA index: the old lot signer superseded"
block_before=$(signer_key_block)

# ---- the record
prov 0 lot export LOT-IT-1 --format record --journal "$JOURNAL" --output rec
assert_eq "$(dir_entries rec | tr '\n' ' ')" "lot-record.json lot-record.json.p7s " "record files"
python3 - rec/lot-record.json facts.txt ca/lot-signer.crt ca/intermediate.crt <<'PY' || fail "the record's content"
import json, re, subprocess, sys
o = json.load(open(sys.argv[1]))
facts = {l.split()[0]: l.split()[1:] for l in open(sys.argv[2])}
def fp(path):
    out = subprocess.run(["openssl", "x509", "-in", path, "-noout", "-fingerprint", "-sha256"],
                         capture_output=True, text=True, check=True).stdout
    return out.split("=")[1].strip().replace(":", "").lower()
assert list(o) == ["format", "created", "issuer", "issuer_sha256", "signer", "signer_sha256",
                   "lot", "states", "count", "revocations_checked", "devices"], list(o)
assert o["revocations_checked"] is True and all("revoked" not in d for d in o["devices"]), o
assert o["format"] == "provisioner-lot-record/1" and o["lot"] == "LOT-IT-1", o
assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", o["created"]), o["created"]
assert o["signer_sha256"] == fp(sys.argv[3]) and o["issuer_sha256"] == fp(sys.argv[4]), o
assert o["count"] == len(o["devices"]) == len(facts) == 3, o
for d in o["devices"]:
    assert [d["cert_serial"], d["sha256"], d["pubkey_sha256"], d["not_after"]] == facts[d["serial"]], d
    assert d["state"] == "proven", d
PY
verify_record rec || fail "the record does not verify: $(cat rec.verify.log)"
assert_grep rec.verify.log '^CMS Verification successful$'
assert_eq "$(fingerprint rec/signer.pem)" "$(fingerprint ca/lot-signer.crt)" "signed by the lot signer"
assert_eq "$(signer_key_block)" "$block_before" "lot signer key attributes after signing"

# ---- tampered: the payload, the signature, the lot signer's certificate; another root
mkdir -p t-payload t-sig t-cert
cp rec/* t-payload/ && cp rec/* t-sig/ && cp rec/* t-cert/
python3 - t-payload/lot-record.json t-sig/lot-record.json.p7s t-cert/lot-record.json.p7s ca/lot-signer.crt <<'PY' || fail "tampering"
import subprocess, sys
def flip(path, pos):
    b = bytearray(open(path, "rb").read())
    b[pos] ^= 0x01
    open(path, "wb").write(bytes(b))
# one byte of the payload: a digit of the first device's certificate fingerprint
payload = open(sys.argv[1], "rb").read()
flip(sys.argv[1], payload.index(b'"sha256":"') + 12)
# one byte of the signature: the ECDSA signature's last byte ends the SignerInfo, and the file
flip(sys.argv[2], len(open(sys.argv[2], "rb").read()) - 1)
# one byte of the lot signer's certificate inside the CMS: a letter of its CN
der = subprocess.run(["openssl", "x509", "-in", sys.argv[4], "-outform", "DER"], capture_output=True,
                     check=True).stdout
p7s = open(sys.argv[3], "rb").read()
at = p7s.index(der)
flip(sys.argv[3], at + der.index(b"Lot Signer") + 4)
PY
for t in t-payload t-sig t-cert; do
    if verify_record "$t"; then
        fail "$t: a tampered record verifies"
    fi
    assert_no_grep "$t.verify.log" '^CMS Verification successful$'
done
make_server_ca other-ca
if verify_record rec other-ca/ca.crt; then
    fail "the record verifies under another root"
fi

# ---- a --force that fails after making its new key leaves the old lot signer working: the
# new key is made first and the old one removed only once the new certificate is written
# (here the write fails: lot-signer.crt is a non-empty directory the rename cannot replace)
cur=$(fingerprint ca/lot-signer.crt)
mv ca/lot-signer.crt signer-kept.crt
mkdir -p ca/lot-signer.crt/in-the-way
prov 6 lot signer --force
assert_one_error "lot-signer.crt"
rm -r ca/lot-signer.crt
mv signer-kept.crt ca/lot-signer.crt
assert_eq "$(token_count provisioner-ca "$CA_PIN_VALUE" privkey)" 3 "the failed --force removed its new key"
prov 0 lot export LOT-IT-1 --format record --journal "$JOURNAL" --output rec-after
verify_record rec-after || fail "the old lot signer no longer signs: $(cat rec-after.verify.log)"
assert_eq "$(fingerprint rec-after/signer.pem)" "$cur" "signed by the old lot signer"

# ---- a record is refused when the lot signer's key is gone from the token
p11 provisioner-ca "$CA_PIN_VALUE" --delete-object --type privkey --label lot-signer >log/del.log 2>&1 ||
    fail "pkcs11-tool --delete-object: $(tail -n1 log/del.log)"
prov 4 lot export LOT-IT-1 --format record --journal "$JOURNAL" --output rec2
assert_one_error "lot signer" "lot-signer.crt"
assert_nothing_written rec2

# ---- the HSM away (no CA token at all): exit 4, nothing written
mkdir -p empty-hsm/tokens
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' \
    "$WORK/empty-hsm/tokens" >empty-hsm/softhsm2.conf
SOFTHSM2_CONF=$WORK/empty-hsm/softhsm2.conf prov 4 lot export LOT-IT-1 --format record \
    --journal "$JOURNAL" --output rec3
assert_one_error "provisioner-ca"
assert_nothing_written rec3
