# SPDX-License-Identifier: Apache-2.0
#
# Helpers for the EST tests (tests/integration/est/), sourced after ../lib.sh and
# ../cmp/cmp_lib.sh; $EST is the service's EST base URL.

# est NAME STATION|- URL [curl ARGS...]: curl as STATION (- : no client certificate); the body
# in $WORK/est-NAME.out, the HTTP status printed.
est() {
    local name=$1 st=$2 url=$3
    local cert=()
    shift 3
    if [ "$st" != - ]; then
        cert=(--cert "$WORK/stations/$st.crt" --key "$WORK/stations/$st.key")
    fi
    curl -sS --cacert "$WORK/server-ca/ca.crt" "${cert[@]}" -o "$WORK/est-$name.out" \
        -w '%{http_code}' "$@" "$url" 2>"$WORK/log/curl-$name.err" ||
        fail "curl $name: $(cat "$WORK/log/curl-$name.err")"
}

# csr_b64 SERIAL: a fresh key and a base64 PKCS#10 for /CN=SERIAL.
csr_b64() {
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$WORK/$1.key" -subj "/CN=$1" -outform DER -out "$WORK/$1.csr.der" \
        >"$WORK/log/req-$1.log" 2>&1 || fail "openssl req $1: $(tail -n1 "$WORK/log/req-$1.log")"
    base64 "$WORK/$1.csr.der" >"$WORK/$1.b64"
}

# p7_certs NAME: the certificates of the base64 certs-only PKCS#7 in $WORK/est-NAME.out.
p7_certs() {
    base64 -d "$WORK/est-$1.out" | openssl pkcs7 -inform DER -print_certs \
        -out "$WORK/est-$1.pem" 2>"$WORK/log/p7-$1.err" ||
        fail "$1: the answer is not a base64 PKCS#7: $(cat "$WORK/log/p7-$1.err")"
}

# enroll_ok NAME STATION SERIAL [PATH [OP]]: OP (default simpleenroll) is answered with a
# certificate that verifies strictly, for SERIAL.
enroll_ok() {
    local code
    code=$(est "$1" "$2" "$EST/${4:-}${5:-simpleenroll}" -H 'Content-Type: application/pkcs10' \
        --data-binary "@$WORK/$3.b64")
    assert_eq "$code" 200 "$1: HTTP status ($(head -c 200 "$WORK/est-$1.out"))"
    p7_certs "$1"
    assert_eq "$(cert_count "$WORK/est-$1.pem")" 1 "$1: one certificate"
    assert_strict_cert "$WORK/est-$1.pem"
    openssl x509 -in "$WORK/est-$1.pem" -noout -subject | grep -q "CN *= *$3" ||
        fail "$1: the certificate is not for $3"
}

# refused NAME WANT_STATUS REASON STATION URL [curl ARGS...]: refused with that status and
# REASON in the text body; nothing issued.
refused() {
    local name=$1 want=$2 why=$3 before code
    shift 3
    before=$(cmp_issued)
    code=$(est "$name" "$@")
    assert_eq "$code" "$want" "$name: HTTP status ($(head -c 200 "$WORK/est-$name.out"))"
    assert_grep "$WORK/est-$name.out" "$why" "$name: the reason in the body"
    assert_eq "$(cmp_issued)" "$before" "$name: nothing issued"
}
