#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# `provisioner ca init` / `ca show` against a real SoftHSM2 CA token, with the root key
# (1) in the token, (2) in an encrypted PEM file, (3) imported (existing root cert + key);
# (4) a seed-style root config: warned about, refused with --strict; (5) a second `ca init`
# without --force refuses and leaves the CA intact; (6) an intermediate that ends before a
# profile's lifetime is warned about and caps certificates; (7) an expired one is refused
# before anything starts; (8) without root_config and intermediate_subject, the subjects are
# the default CNs.
. "$(dirname "$0")/lib.sh"
it_setup
need pkcs11-tool

# check_ca_dir: the files `ca init` writes, and what strict verifiers say about them.
check_ca_dir() {
    assert_file ca/root.crt ca/intermediate.crt ca/chain.pem
    assert_eq "$(cert_count ca/root.crt)" 1 "certificates in ca/root.crt"
    assert_eq "$(cert_count ca/intermediate.crt)" 1 "certificates in ca/intermediate.crt"
    # chain.pem = intermediate then root (README.md, "Create the CA")
    assert_eq "$(fingerprints ca/chain.pem | tr '\n' ' ')" \
        "$(fingerprint ca/intermediate.crt) $(fingerprint ca/root.crt) " "ca/chain.pem order"
    openssl verify -x509_strict -CAfile ca/root.crt ca/root.crt >"$WORK/log/verify-root" 2>&1 ||
        fail "openssl verify -x509_strict rejects root.crt: $(tr '\n' ' ' <"$WORK/log/verify-root")"
    openssl verify -x509_strict -CAfile ca/root.crt ca/intermediate.crt \
        >"$WORK/log/verify-int" 2>&1 ||
        fail "openssl verify -x509_strict rejects intermediate.crt: $(tr '\n' ' ' <"$WORK/log/verify-int")"
    openssl x509 -in ca/intermediate.crt -noout -text >"$WORK/log/int.txt"
    assert_grep "$WORK/log/int.txt" 'X509v3 Basic Constraints: critical' \
        "intermediate basicConstraints is not critical"
    assert_grep "$WORK/log/int.txt" 'CA:TRUE' "intermediate is not a CA"
    assert_grep "$WORK/log/int.txt" 'X509v3 Key Usage: critical' "intermediate keyUsage not critical"
    assert_grep "$WORK/log/int.txt" 'Certificate Sign' "intermediate keyUsage lacks keyCertSign"
    # exactly keyCertSign and cRLSign, critical, on both (the CRLs of doc/revocation.md are
    # signed by these keys; RFC 5280 4.2.1.3)
    local c
    for c in root intermediate; do
        assert_eq "$(openssl x509 -in "ca/$c.crt" -noout -ext keyUsage | tr -s ' \n' ' ')" \
            "X509v3 Key Usage: critical Certificate Sign, CRL Sign " "$c.crt keyUsage"
        openssl x509 -in "ca/$c.crt" -noout -ext basicConstraints | tr -s ' \n' ' ' |
            grep -qE '^X509v3 Basic Constraints: critical CA:TRUE' ||
            fail "$c.crt basicConstraints is not critical CA:TRUE"
    done
    assert_grep "$WORK/log/int.txt" 'Subject: .*CN ?= ?Test Intermediate CA' \
        "intermediate subject is not [ca_dn]"
}

# check_intermediate_key: generated inside the CA token, sensitive, never extractable, and
# the public key in intermediate.crt is the token's key.
check_intermediate_key() {
    local blk pub
    blk=$(p11_object_by_label provisioner-ca "$CA_PIN_VALUE" privkey intermediate)
    assert_hw_key "$blk" "intermediate key on token provisioner-ca" any-usage
    printf '%s\n' "$blk" >"$WORK/log/intermediate-key.txt"
    # Compare the certificate's key with the token's public key object when there is one.
    pub=$(p11_object_by_label provisioner-ca "$CA_PIN_VALUE" pubkey intermediate)
    if [ -n "$pub" ]; then
        p11 provisioner-ca "$CA_PIN_VALUE" --read-object --type pubkey --label intermediate \
            -o "$WORK/log/int-pub.der" >/dev/null 2>&1 || fail "cannot read the intermediate public key"
        openssl x509 -in ca/intermediate.crt -pubkey -noout |
            openssl pkey -pubin -outform DER >"$WORK/log/int-cert-pub.der"
        assert_same_file "$WORK/log/int-pub.der" "$WORK/log/int-cert-pub.der" \
            "intermediate.crt does not carry the token's intermediate public key"
    fi
}

# ---- 1. root key in the CA token --------------------------------------------------------
it_log "case 1: root key in the PKCS#11 token"
mkdir -p "$WORK/p11-root" && cd "$WORK/p11-root"
ca_fixture pkcs11
check_ca_dir
check_intermediate_key
assert_hw_key "$(p11_object_by_label provisioner-ca "$CA_PIN_VALUE" privkey root)" \
    "root key on token provisioner-ca" any-usage

prov 0 ca show
assert_grep "$PROV_OUT" 'Test Intermediate CA' "ca show does not print the intermediate"
assert_grep "$PROV_OUT" 'Test Root CA' "ca show does not print the root"
assert_grep "$PROV_OUT" 'pkcs11:token=provisioner-ca;object=intermediate' \
    "ca show does not print the intermediate key URI"
assert_grep "$PROV_OUT" 'pkcs11:token=provisioner-ca;object=root' \
    "ca show does not print the root key URI"
assert_no_grep "$PROV_OUT" '^lint: \[' "ca show reports lint findings on a strict CA"
prov 0 ca show --json
assert_grep "$PROV_OUT" '"chain"' "ca show --json has no chain"
assert_grep "$PROV_OUT" "$(fingerprint ca/intermediate.crt)" \
    "ca show --json does not carry the intermediate fingerprint"

# ---- 5. a second ca init refuses and changes nothing --------------------------------------
it_log "case 5: ca init again without --force"
before=$(tree_digest ca)
objs_before=$(token_list provisioner-ca "$CA_PIN_VALUE")
prov 5 ca init
assert_one_error "ca"
assert_eq "$(tree_digest ca)" "$before" "the CA directory after a refused ca init"
assert_eq "$(token_list provisioner-ca "$CA_PIN_VALUE")" "$objs_before" \
    "the CA token's objects after a refused ca init"
# --force replaces it: a new, valid chain
old_fp=$(fingerprint ca/intermediate.crt)
prov 0 ca init --force
check_ca_dir
check_intermediate_key
[ "$(fingerprint ca/intermediate.crt)" != "$old_fp" ] || fail "ca init --force did not replace the intermediate"
assert_eq "$(token_count provisioner-ca "$CA_PIN_VALUE" privkey)" 2 \
    "private keys on the CA token after --force (root + intermediate)"

# ---- 2. root key in an encrypted PEM file -------------------------------------------------
it_log "case 2: root key in an encrypted PEM file"
mkdir -p "$WORK/file-root" && cd "$WORK/file-root"
ca_prepare file
assert_grep root.key 'BEGIN ENCRYPTED PRIVATE KEY' "root.key is not encrypted"
key_digest=$(sha256sum root.key)
prov 0 ca init
check_ca_dir
check_intermediate_key
assert_eq "$(sha256sum root.key)" "$key_digest" "root.key after ca init"
openssl pkey -in root.key -passin "file:$PWD/root.pass" -pubout >"$WORK/log/root-file-pub.pem" 2>/dev/null ||
    fail "cannot read root.key with its passphrase"
openssl x509 -in ca/root.crt -pubkey -noout >"$WORK/log/root-cert-pub.pem"
assert_same_file "$WORK/log/root-file-pub.pem" "$WORK/log/root-cert-pub.pem" \
    "root.crt does not carry root.key's public key"
assert_eq "$(token_count provisioner-ca "$CA_PIN_VALUE" privkey)" 1 \
    "private keys on the CA token (intermediate only)"

# ---- 3. import an existing root certificate and key ----------------------------------------
it_log "case 3: import an existing root"
mkdir -p "$WORK/import-root" && cd "$WORK/import-root"
ca_prepare import
prov 0 ca init
check_ca_dir
check_intermediate_key
assert_eq "$(fingerprint ca/root.crt)" "$(fingerprint existing-root.crt)" \
    "ca/root.crt is not the imported root"

# ---- 4. seed-style root config: warning; --strict refuses and writes nothing ---------------
it_log "case 4: seed-style root config"
mkdir -p "$WORK/seed-root" && cd "$WORK/seed-root"
ca_prepare pkcs11
write_root_conf root.conf seed
prov 5 ca init --strict
assert_one_error_after_warnings "root.conf"
assert_no_file ca/root.crt
assert_no_file ca/intermediate.crt
assert_no_file ca/chain.pem
if [ -d ca ] && [ -n "$(ls -A ca)" ]; then
    fail "ca init --strict left files in ca/: $(ls -A ca | tr '\n' ' ')"
fi
assert_eq "$(token_list provisioner-ca "$CA_PIN_VALUE")" "" \
    "objects on the CA token after a refused ca init --strict"
prov 0 ca init
assert_grep "$PROV_ERR" '^provisioner: .*root\.conf.*basicConstraints.*' \
    "no warning about the non-critical basicConstraints"
assert_grep "$PROV_ERR" '^provisioner: .*root\.conf.*keyUsage' "no warning about the missing keyUsage"
assert_no_grep "$PROV_ERR" '^[^p]|^p[^r]' "stderr lines that do not start with 'provisioner: '"
assert_file ca/root.crt ca/intermediate.crt ca/chain.pem
# What it warned about is real: the strict verifier rejects this root.
if openssl verify -x509_strict -CAfile ca/root.crt ca/intermediate.crt >/dev/null 2>&1; then
    fail "openssl -x509_strict accepts the seed-style root; the warning would be wrong"
fi

# ---- 6. an intermediate that ends before a profile's lifetime: warned, certificates capped --
it_log "case 6: an intermediate with one day left"
mkdir -p "$WORK/short" && cd "$WORK/short"
ca_prepare file
sed -i 's/^\[ca\]$/[ca]\nintermediate_days = 1/' provisioner.cnf
prov 0 ca init
token_init dev-short
prov 0 enroll --serial SN-SHORT-1 --device pkcs11:token=dev-short
assert_grep "$PROV_OUT" '^SN-SHORT-1 issued ' "enroll under a short-lived intermediate"
assert_eq "$(grep -c . "$PROV_ERR")" 1 "stderr lines of enroll under a short-lived intermediate"
assert_grep "$PROV_ERR" '^provisioner: warning: .*Test Intermediate CA.* left\), before the 365 days of profile device.*capped' \
    "enroll: no warning that certificates are capped"
assert_eq "$(openssl x509 -in devices/SN-SHORT-1/client.crt -noout -enddate)" \
    "$(openssl x509 -in ca/intermediate.crt -noout -enddate)" "notAfter of a capped certificate"
prov 0 ca show
assert_grep "$PROV_OUT" '^lint: \[0\] lifetime: .*365 days of profile device' "ca show: no lifetime finding"
prov 0 ca show --json
assert_grep "$PROV_OUT" '"rule": ?"lifetime"' "ca show --json: no lifetime finding"

# ---- 7. an expired intermediate: refused before anything starts -----------------------------
# The same HSM key, certified again by the file root with dates in the past (openssl ca).
it_log "case 7: an expired intermediate"
engine_conf "$PWD/engine.cnf"
OPENSSL_CONF=$PWD/engine.cnf openssl req -new -engine pkcs11 -keyform engine \
    -key "pkcs11:token=provisioner-ca;object=intermediate;type=private;pin-value=$CA_PIN_VALUE" \
    -subj "/O=Provisioner Integration Test/CN=Test Intermediate CA" -out int.csr \
    >"$WORK/log/expired-csr" 2>&1 || fail "openssl req -engine pkcs11: $(tail -n1 "$WORK/log/expired-csr")"
: >index.txt
openssl rand -hex 8 >serial
cat >old-ca.cnf <<'EOF2'
# SPDX-License-Identifier: Apache-2.0
[ca]
default_ca = old
[old]
database = index.txt
new_certs_dir = .
serial = serial
default_md = sha256
policy = any
[any]
organizationName = optional
commonName = supplied
[int_ext]
basicConstraints = critical, CA:true, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
EOF2
openssl ca -batch -notext -config old-ca.cnf -extensions int_ext -cert ca/root.crt \
    -keyfile root.key -passin "file:$PWD/root.pass" -startdate 20200101000000Z \
    -enddate 20200201000000Z -in int.csr -out old-int.crt >"$WORK/log/expired-ca" 2>&1 ||
    fail "openssl ca (expired intermediate): $(tail -n2 "$WORK/log/expired-ca" | tr '\n' ' ')"
cp old-int.crt ca/intermediate.crt
cat old-int.crt ca/root.crt >ca/chain.pem
token_init dev-expired
keys_on_expired() {
    token_list dev-expired "$DEV_PIN_VALUE" | count_re Object
}
prov 5 enroll --serial SN-EXPIRED-1 --device pkcs11:token=dev-expired
assert_one_error "Test Intermediate CA" "expired"
assert_no_file devices/SN-EXPIRED-1
assert_eq "$(keys_on_expired)" 0 "objects on the device after an expired CA"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /dev/null \
    -subj /CN=SN-EXPIRED-2 -out expired.csr 2>/dev/null
prov 5 sign --serial SN-EXPIRED-2 --csr expired.csr --out expired.pem
assert_one_error "Test Intermediate CA" "expired"
assert_no_file expired.pem
printf 'serial,device\nSN-EXPIRED-3,pkcs11:token=dev-expired\nSN-EXPIRED-4,pkcs11:token=dev-expired\n' >expired-lot.csv
prov 5 batch expired-lot.csv --no-progress
assert_one_error "Test Intermediate CA" "expired"
assert_no_file expired-lot.results.csv
assert_eq "$(keys_on_expired)" 0 "objects on the device after a batch under an expired CA"
# ca show still shows it, with the finding
prov 0 ca show
assert_grep "$PROV_OUT" '^lint: \[0\] validity: expired' "ca show: no validity finding"

# ---- 8. no root_config, no intermediate_subject: the default subjects -----------------------
it_log "case 8: the default subjects"
mkdir -p "$WORK/defaults" && cd "$WORK/defaults"
ca_prepare file
sed -i '/^root_config = /d;/^intermediate_subject = /d;/^\[ca_dn\]$/,$d' provisioner.cnf
prov 0 ca init
assert_eq "$(openssl x509 -in ca/root.crt -noout -subject -nameopt RFC2253)" \
    "subject=CN=Provisioner Root CA" "the root's subject without root_config"
assert_eq "$(openssl x509 -in ca/intermediate.crt -noout -subject -nameopt RFC2253)" \
    "subject=CN=Provisioner Intermediate CA" "the intermediate's subject without [ca_dn]"
