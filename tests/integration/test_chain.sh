#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# `provisioner chain verify` on a good chain and on chains broken one rule at a time, all
# built here with the openssl CLI (doc/chains.md): each failure must name the certificate index,
# its subject and the rule. Then `chain export` = intermediate + root of the configured CA.
. "$(dirname "$0")/lib.sh"
it_setup

mkdir -p "$WORK/pki" && cd "$WORK/pki"
: >index.txt
cat >ca.cnf <<'EOF'
# SPDX-License-Identifier: Apache-2.0
[ca]
default_ca = test_ca
[test_ca]
database = index.txt
new_certs_dir = .
serial = serial
default_md = sha256
policy = policy_any
unique_subject = no
copy_extensions = none
[policy_any]
commonName = supplied
organizationName = optional
[req]
prompt = no
distinguished_name = dn
[dn]
CN = placeholder
[strict_ca]
basicConstraints = critical, CA:true
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[lax_ca]
basicConstraints = CA:true
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[no_ku_ca]
basicConstraints = critical, CA:true
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[client]
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[server]
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
openssl rand -hex 8 >serial

# key NAME: an EC P-256 key NAME.key
key() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key" 2>/dev/null
}

# issue OUT SUBJECT_CN KEY ISSUER(cert basename or "self") EXT START END
# START/END as YYYYMMDDHHMMSSZ, or "" for now / now + 30 days.
issue() {
    local out=$1 cn=$2 k=$3 issuer=$4 ext=$5 start=${6:-} end=${7:-} args=()
    openssl req -new -config ca.cnf -key "$k.key" -subj "/CN=$cn" -out "$out.csr" 2>/dev/null
    if [ "$issuer" = self ]; then
        args=(-selfsign -keyfile "$k.key")
    else
        args=(-cert "$issuer.crt" -keyfile "$issuer.key.link")
    fi
    if [ -n "$start" ]; then args+=(-startdate "$start"); fi
    if [ -n "$end" ]; then args+=(-enddate "$end"); else args+=(-days "${DAYS:-30}"); fi
    openssl ca -batch -notext -config ca.cnf -extensions "$ext" -in "$out.csr" -out "$out.crt" \
        "${args[@]}" >"$WORK/log/ca-$out.log" 2>&1 ||
        fail "openssl ca ($out): $(tail -n2 "$WORK/log/ca-$out.log" | tr '\n' ' ')"
    # which key signs as this certificate
    ln -sf "$k.key" "$out.key.link"
}

key root
key int
key leaf
key other
DAYS=3650 issue root "Chain Test Root" root self strict_ca
DAYS=1000 issue int "Chain Test Intermediate" int root strict_ca
issue leaf "Chain Test Leaf" leaf int client
# intermediate variants (same key, so signatures below them still verify)
DAYS=1000 issue int_lax "Chain Test Intermediate" int root lax_ca
DAYS=1000 issue int_noku "Chain Test Intermediate" int root no_ku_ca
# an issuer with the intermediate's key but another name
DAYS=1000 issue int_other "Other Intermediate" int root strict_ca
issue leaf_wrongname "Chain Test Leaf Wrong Issuer" leaf int_other client
# validity
issue leaf_expired "Chain Test Leaf Expired" leaf int client 20200101000000Z 20200201000000Z
int_end=$(openssl x509 -in int.crt -noout -enddate | sed 's/notAfter=//')
late=$(date -u -d "$int_end + 30 days" +%Y%m%d%H%M%SZ)
issue leaf_outlives "Chain Test Leaf Outlives" leaf int client "" "$late"
issue leaf_server "Chain Test Server Leaf" leaf int server
corrupt_signature x509 leaf.crt leaf_badsig.crt

cat leaf.crt int.crt root.crt >good.pem
cat leaf.crt root.crt int.crt >out-of-order.pem
cat leaf_wrongname.crt int.crt root.crt >wrong-issuer.pem
cat leaf_badsig.crt int.crt root.crt >bad-signature.pem
cat leaf.crt int_lax.crt root.crt >ca-noncritical-bc.pem
cat leaf.crt int_noku.crt root.crt >ca-no-keyusage.pem
cat leaf_expired.crt int.crt root.crt >expired.pem
cat leaf_outlives.crt int.crt root.crt >outlives-issuer.pem
cat leaf_server.crt int.crt root.crt >server-leaf.pem
cat leaf.crt int.crt >no-root.pem

# Our own ground truth: openssl agrees the good chain is good and each broken one is broken.
openssl verify -x509_strict -purpose sslclient -CAfile root.crt -untrusted int.crt leaf.crt \
    >"$WORK/log/openssl-good" 2>&1 || fail "fixture: openssl rejects the good chain: $(cat "$WORK/log/openssl-good")"
for bad in leaf_badsig:int leaf_expired:int leaf:int_lax leaf:int_noku leaf_wrongname:int; do
    if openssl verify -x509_strict -purpose sslclient -CAfile root.crt -untrusted "${bad#*:}.crt" \
        "${bad%%:*}.crt" >/dev/null 2>&1; then
        fail "fixture: openssl accepts the broken chain $bad"
    fi
done

# expect_rule FILE INDEX SUBJECT_RE RULE [extra args]: exit 1; stdout names the certificate
# and the rule: "FILE: invalid: certificate INDEX (SUBJECT): RULE: detail".
expect_rule() {
    local f=$1 idx=$2 subj=$3 rule=$4
    shift 4
    prov 1 chain verify "$@" "$f"
    assert_grep "$PROV_OUT" "certificate $idx \\([^)]*${subj}[^)]*\\): $rule:" \
        "chain verify $f: certificate $idx / rule $rule not reported"
    assert_no_grep "$PROV_OUT" ': ok \(' "chain verify $f says ok"
}

prov 0 chain verify good.pem
assert_grep "$PROV_OUT" 'good.pem: ok' "good chain not reported ok"
prov 0 chain verify --purpose client good.pem
prov 0 chain verify --json good.pem
assert_grep "$PROV_OUT" '"file"' "--json output"

expect_rule out-of-order.pem 0 'CN=Chain Test Leaf' order
expect_rule wrong-issuer.pem 0 'CN=Chain Test Leaf Wrong Issuer' issuer-name
expect_rule bad-signature.pem 0 'CN=Chain Test Leaf' signature
expect_rule ca-noncritical-bc.pem 1 'CN=Chain Test Intermediate' basic-constraints
expect_rule ca-no-keyusage.pem 1 'CN=Chain Test Intermediate' key-usage
expect_rule expired.pem 0 'CN=Chain Test Leaf Expired' validity
expect_rule outlives-issuer.pem 0 'CN=Chain Test Leaf Outlives' validity-nesting
expect_rule server-leaf.pem 0 'CN=Chain Test Server Leaf' purpose
prov 0 chain verify --purpose server server-leaf.pem
prov 0 chain verify --purpose any server-leaf.pem
expect_rule no-root.pem 1 'CN=Chain Test Intermediate' root
prov 0 chain verify --trust root.crt no-root.pem

# Several files: each reported, exit 1 when any is invalid.
prov 1 chain verify good.pem bad-signature.pem
assert_grep "$PROV_OUT" 'good.pem: ok' "good.pem among several"
assert_grep "$PROV_OUT" 'bad-signature.pem: invalid: certificate 0 .*signature' "bad-signature.pem among several"
prov 1 chain verify --json bad-signature.pem
assert_grep "$PROV_OUT" '"rule": ?"signature"' "--json rule"
assert_grep "$PROV_OUT" '"index": ?0' "--json index"

# A CA chain (the first certificate a CA, as in a CA directory's chain.pem) is checked as a
# CA chain when no --purpose is given: a CA has no clientAuth to offer.
cat int.crt root.crt >ca-chain.pem
prov 0 chain verify ca-chain.pem
assert_grep "$PROV_OUT" '^ca-chain.pem: ok \(2 certificates\)' "a CA chain checked as one"
expect_rule ca-chain.pem 0 'CN=Chain Test Intermediate' purpose --purpose client
# ...and still by the CA rules: a CA chain whose first CA lacks keyUsage is invalid.
cat int_noku.crt root.crt >ca-chain-noku.pem
expect_rule ca-chain-noku.pem 0 'CN=Chain Test Intermediate' key-usage

# DER is read as well as PEM: one certificate, or several back to back.
openssl x509 -in root.crt -outform DER -out root.der
prov 0 chain verify root.der
assert_grep "$PROV_OUT" '^root.der: ok \(1 certificates\)' "a DER root"
for c in leaf int root; do openssl x509 -in "$c.crt" -outform DER; done >good.der
prov 0 chain verify good.der
assert_grep "$PROV_OUT" '^good.der: ok \(3 certificates\)' "a DER chain"
openssl x509 -in leaf_badsig.crt -outform DER >bad.der
openssl x509 -in int.crt -outform DER >>bad.der
openssl x509 -in root.crt -outform DER >>bad.der
expect_rule bad.der 0 'CN=Chain Test Leaf' signature

# A file without a certificate is an invalid chain: the line names the file and what it
# holds, never a "certificate -1"; exit 1, nothing on stderr.
# expect_file_rule FILE RULE DETAIL_ERE
expect_file_rule() {
    prov 1 chain verify "$1"
    assert_eq "$(wc -l <"$PROV_OUT")" 1 "chain verify $1: result lines"
    assert_grep "$PROV_OUT" "^$1: invalid: $2: $3" "chain verify $1: what the file holds"
    assert_no_grep "$PROV_OUT" 'certificate -1|\(-\)' "chain verify $1: a certificate index"
    [ ! -s "$PROV_ERR" ] || fail "chain verify $1 wrote on stderr: $(head -n2 "$PROV_ERR")"
    prov 1 chain verify --json "$1"
    assert_grep "$PROV_OUT" '"index": ?-1' "chain verify --json $1: index"
    assert_grep "$PROV_OUT" "\"rule\": ?\"$2\"" "chain verify --json $1: rule"
}
: >empty.pem
expect_file_rule empty.pem empty 'the file is empty'
printf '\n  \n' >blank.pem
expect_file_rule blank.pem empty 'the file holds only whitespace'
printf 'not a certificate\n' >garbage.pem
expect_file_rule garbage.pem parse 'neither PEM nor DER.*"not a certificate"'
head -c 64 /dev/urandom | tr '\060' '\061' >binary.bin
expect_file_rule binary.bin parse 'neither PEM nor DER.*64 bytes'
openssl req -in leaf.csr -outform DER -out leaf-csr.der
expect_file_rule leaf-csr.der parse 'DER.*not a certificate'
openssl x509 -in root.crt -outform DER >trailing.der
printf 'junk' >>trailing.der
expect_file_rule trailing.der parse 'DER certificate 0 is followed by 4 bytes'
cp leaf.key key.pem
expect_file_rule key.pem parse 'PEM block 0 is "PRIVATE KEY", not a certificate'
# a file that cannot be read at all is a usage error (exit 2, README "Exit codes"), before any
# other file is checked; one that holds no certificate is a finding (exit 1, above)
prov 2 chain verify "$WORK/no-such.pem"
assert_one_error no-such.pem "No such file"

# ---- chain export ------------------------------------------------------------------------
mkdir -p "$WORK/ca-case" && cd "$WORK/ca-case"
ca_fixture pkcs11
prov 0 chain export
cp "$PROV_OUT" "$WORK/log/export-stdout.pem"
assert_eq "$(fingerprints "$WORK/log/export-stdout.pem" | tr '\n' ' ')" \
    "$(fingerprint ca/intermediate.crt) $(fingerprint ca/root.crt) " "chain export (stdout)"
assert_no_grep "$WORK/log/export-stdout.pem" 'PRIVATE KEY' "chain export carries a private key"
prov 0 chain export --out "$WORK/ca-case/trust.pem"
assert_eq "$(fingerprints trust.pem | tr '\n' ' ')" \
    "$(fingerprint ca/intermediate.crt) $(fingerprint ca/root.crt) " "chain export --out"
assert_mode 644 trust.pem
prov 0 chain verify --purpose any trust.pem
