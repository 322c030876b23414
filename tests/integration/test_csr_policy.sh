#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# `sign` refuses what a CSR must not get (exit 5, one line naming the CSR or serial, no output
# file): a curve or algorithm outside the profile, CA:true or another extension requested, a
# CSR over the 64 KiB bound, a public key this CA certified before (the CA index), a
# subject or subjectAltName other than the certificate will carry (a CSR naming another
# device: swapped CSR files). The certificate's names always come from the request and the
# profile (doc/architecture.md, step 4). Broken signatures and RSA-1024 are in test_faults.sh.
. "$(dirname "$0")/lib.sh"
it_setup
need sqlite3
ca_fixture pkcs11

# refused NAME ARGS...: `sign --serial SN-NAME --csr NAME.csr` exits 5, one line, no output.
refused() {
    local name=$1
    shift
    prov 5 sign --serial "SN-$name" --csr "$WORK/$name.csr" --out "$WORK/$name.pem" "$@"
    assert_one_error_re "$name\\.csr|SN-$name"
    assert_no_file "$WORK/$name.pem"
}
req() { # req NAME OPENSSL-REQ-ARGS...: a CSR made by openssl, key thrown away
    local name=$1
    shift
    openssl req -new -nodes -keyout "$WORK/$name.key" -out "$WORK/$name.csr" "$@" \
        >"$WORK/log/req-$name.log" 2>&1 || fail "openssl req $name: $(tail -n1 "$WORK/log/req-$name.log")"
}

it_log "case: curve not allowed (secp256k1), algorithm not allowed (Ed25519)"
req k1 -newkey ec -pkeyopt ec_paramgen_curve:secp256k1 -subj /CN=SN-k1
refused k1
req ed -newkey ed25519 -subj /CN=SN-ed
refused ed

it_log "case: key type outside --key"
req p384 -newkey ec -pkeyopt ec_paramgen_curve:P-384 -subj /CN=SN-p384
refused p384 --key ec-p256

it_log "case: CA:true requested, another extension requested"
req catrue -newkey ec -pkeyopt ec_paramgen_curve:P-256 -subj /CN=SN-catrue \
    -addext "basicConstraints=critical,CA:true"
refused catrue
req nc -newkey ec -pkeyopt ec_paramgen_curve:P-256 -subj /CN=SN-nc \
    -addext "nameConstraints=permitted;DNS:example.com"
refused nc

it_log "case: a CSR larger than 64 KiB"
req big -newkey ec -pkeyopt ec_paramgen_curve:P-256 -subj /CN=SN-big
head -c 70000 /dev/zero | tr '\0' '#' >>"$WORK/big.csr"
prov 5 sign --serial SN-big --csr "$WORK/big.csr" --out "$WORK/big.pem"
assert_one_error big.csr
assert_grep "$PROV_ERR" 'limit'
assert_no_file "$WORK/big.pem"

it_log "case: a subject or SAN other than the certificate will carry"
# another device's CSR (CN = its serial) presented for this serial
req other -newkey ec -pkeyopt ec_paramgen_curve:P-256 -subj /CN=SN-NEIGHBOUR
refused other
assert_grep "$PROV_ERR" 'SN-NEIGHBOUR'
req evilo -newkey ec -pkeyopt ec_paramgen_curve:P-256 -subj "/O=Evil/CN=SN-evilo"
refused evilo
assert_grep "$PROV_ERR" 'O=Evil'
req evilsan -newkey ec -pkeyopt ec_paramgen_curve:P-256 -subj /CN=SN-evilsan \
    -addext "subjectAltName=DNS:evil.example,IP:10.6.6.6"
refused evilsan --san-dns evilsan.example
assert_grep "$PROV_ERR" 'evil.example'

it_log "case: the names the certificate will carry may be asked for; the request's are used"
req okn -newkey ec -pkeyopt ec_paramgen_curve:P-256 -subj /CN=SN-OKN \
    -addext "subjectAltName=DNS:okn.example"
prov 0 sign --serial SN-OKN --csr "$WORK/okn.csr" --out "$WORK/okn.pem" --san-dns "okn.example;more.example"
openssl x509 -in "$WORK/okn.pem" -noout -subject -ext subjectAltName >"$WORK/log/okn.txt" 2>&1
assert_grep "$WORK/log/okn.txt" 'CN *= *SN-OKN'
assert_grep "$WORK/log/okn.txt" 'DNS:okn.example, DNS:more.example'
# a CSR naming the serial may get another CN (sign --cn): the serial is always acceptable
req cn -newkey ec -pkeyopt ec_paramgen_curve:P-256 -subj /CN=SN-CN
prov 0 sign --serial SN-CN --cn "Pump 7" --csr "$WORK/cn.csr" --out "$WORK/cn.pem"
openssl x509 -in "$WORK/cn.pem" -noout -subject >"$WORK/log/cn.txt"
assert_grep "$WORK/log/cn.txt" 'CN *= *Pump 7'

it_log "case: a public key this CA certified before"
# Both certificates are in the CA index (0600), delivered (their output files were written).
assert_file ca/index.sqlite
assert_mode 600 ca/index.sqlite
assert_no_file ca/issued-keys
index_q() { sqlite3 -batch -noheader ca/index.sqlite "$1" || fail "sqlite3 on ca/index.sqlite failed: $1"; }
assert_eq "$(index_q "SELECT serial || ' ' || issued_by || ' ' || status FROM certificate ORDER BY id")" \
    "$(printf 'SN-OKN sign delivered\nSN-CN sign delivered')" "the CA index after two signs"
assert_eq "$(index_q "SELECT cert_serial FROM certificate WHERE serial = 'SN-OKN'")" \
    "$(openssl x509 -in "$WORK/okn.pem" -noout -serial | sed 's/^serial=//' | tr 'A-F' 'a-f')" \
    "the recorded certificate serial of SN-OKN"
prov 5 sign --serial SN-AGAIN --csr "$WORK/okn.csr" --out "$WORK/again.pem"
assert_one_error SN-OKN "already certified"
assert_no_file "$WORK/again.pem"
# the same key under a new CSR (other subject) is the same key
openssl req -new -key "$WORK/okn.key" -subj /CN=SN-REKEY -out "$WORK/rekey.csr" 2>/dev/null
prov 5 sign --serial SN-REKEY --csr "$WORK/rekey.csr" --out "$WORK/rekey.pem"
assert_one_error "already certified"
assert_eq "$(index_q "SELECT count(*) FROM certificate")" 2 "certificates in the CA index"
