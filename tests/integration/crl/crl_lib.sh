# SPDX-License-Identifier: Apache-2.0
# Helpers of the revocation tests (test_crl.sh, test_crl_pg.sh), sourced after ../lib.sh.

# revoked_list: "SERIAL-HEX REASON" per entry of the intermediate's CRL as
# $WORK/log/crl.txt shows it (openssl crl -text), sorted
revoked_list() {
    awk '/Serial Number:/ { s = tolower($3) }
         /CRL Reason Code:/ { getline; gsub(/^ +/, ""); print s, $0 }' "$WORK/log/crl.txt" | sort
}

# cert_hex SERIAL: the certificate serial of device SERIAL's client.crt, lower-case hex
cert_hex() {
    openssl x509 -in "$WORK/devices/$1/client.crt" -noout -serial | sed 's/^serial=//' | tr 'A-F' 'a-f'
}

# revoked_three: what revoked_list must show after the tests' three revocations (scrap
# SN-00002, RMA SN-00005, key compromise SN-00009)
revoked_three() {
    printf '%s\n' "$(cert_hex SN-00002) Cessation Of Operation" \
        "$(cert_hex SN-00005) Affiliation Changed" "$(cert_hex SN-00009) Key Compromise" | sort
}
