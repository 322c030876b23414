# SPDX-License-Identifier: Apache-2.0
# Helpers for the lot export tests, on top of tests/integration/lib.sh and
# tests/integration/batch/batch_lib.sh (sourced first).

# export_lot N: the CA, one device token with N devices, enrolled by `batch` as lot LOT-IT-1
# (the config's lot); $JOURNAL is its journal. One more row names a token that does not
# exist: it fails without a certificate, so no export may list it.
export_lot() {
    batch_ca
    make_lot lot.csv 1 "$1"
    echo 'SN-99999,pkcs11:token=no-such-token,,none' >>lot.csv
    JOURNAL=$WORK/lot.journal.sqlite
    prov 1 batch lot.csv --no-progress
}

# pubkey_sha256 CERT: SHA-256 of the certificate's SubjectPublicKeyInfo DER, lower-case hex.
pubkey_sha256() {
    openssl x509 -in "$1" -noout -pubkey | openssl pkey -pubin -outform DER | sha256sum |
        cut -d' ' -f1
}

# cert_serial CERT: the serial as the journal writes it (lower-case hex).
cert_serial_hex() {
    openssl x509 -in "$1" -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f'
}

# not_after CERT: RFC 3339 UTC.
not_after() {
    date -u -d "$(openssl x509 -in "$1" -noout -enddate | cut -d= -f2)" +%Y-%m-%dT%H:%M:%SZ
}

# facts_table: "serial cert_serial sha256 pubkey_sha256 not_after" per enrolled device, from
# the certificates in storage (what every export must agree with), sorted by serial.
facts_table() {
    local d sn
    for d in devices/*/; do
        sn=$(basename "$d")
        printf '%s %s %s %s %s\n' "$sn" "$(cert_serial_hex "$d/client.crt")" \
            "$(fingerprint "$d/client.crt")" "$(pubkey_sha256 "$d/client.crt")" \
            "$(not_after "$d/client.crt")"
    done | sort
}

# assert_nothing_written NAME: no NAME, and no NAME.tmp.* left beside it.
assert_nothing_written() {
    assert_no_file "$1"
    [ -z "$(find . -maxdepth 1 -name "$(basename "$1").tmp.*")" ] ||
        fail "temp output of $1 left behind: $(find . -maxdepth 1 -name "$(basename "$1").tmp.*")"
}
