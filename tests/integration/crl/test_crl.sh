#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Revocation end to end (doc/revocation.md), on a lot of 10 devices in SoftHSM2 tokens:
# - 3 revoked (scrap: cessationOfOperation, RMA: affiliationChanged, keyCompromise with an
#   invalidity date); revoking again is no change, with another reason is refused, an
#   unknown serial exits 5 and records nothing;
# - `ca crl`: the intermediate's CRL lists exactly those 3 with their reasons (openssl crl
#   -text), verifies against the intermediate (openssl crl -verify), has a CRL number, AKI
#   and nextUpdate; the root's CRL verifies against the root; a second run raises the number;
# - `openssl verify -crl_check_all` and GnuTLS `certtool --verify --load-crl` reject the
#   revoked and accept the rest; `check --crl` and `chain verify --crl` report "revoked" with
#   the reason (exit 1) in text and --json;
# - nginx with ssl_crl (crl-chain.pem) refuses a revoked device's mTLS handshake and accepts
#   a good one; a profile's crl_url appears in a reissued certificate, and curl fetches the CRL
#   from that URL off nginx on 127.0.0.1; the reissue under revoke_superseded revokes the old
#   certificate as superseded;
# - the intermediate key's attributes on the token are the same before and after (sensitive,
#   never extractable), and with the CA token away `ca crl` exits 4 and changes no file;
# - the index's audit trail of the revocations verifies, and a changed record is reported;
# - a root key in an encrypted PEM file signs the root's CRL.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../batch/batch_lib.sh"
. "$(dirname "$0")/crl_lib.sh"
it_setup
need sqlite3 nginx curl certtool
batch_ca
make_lot lot.csv 2 5
CA=$WORK/ca

# ca_key_attrs: the intermediate key's object as pkcs11-tool lists it, checked to be a key
# that cannot leave the token.
ca_key_attrs() {
    local blk
    blk=$(p11_object_by_label provisioner-ca "$CA_PIN_VALUE" privkey intermediate)
    assert_hw_key "$blk" "intermediate key on token provisioner-ca" any-usage
    printf '%s\n' "$blk" | grep -E '^  (Access|Usage):'
}
KEY_BEFORE=$(ca_key_attrs)

prov 0 batch lot.csv --no-progress
for i in 01 02 03 04 05 06 07 08 09 10; do
    assert_file "$WORK/devices/SN-000$i/client.crt"
done

# ---- revoke ---------------------------------------------------------------------------
prov 0 revoke SN-00002 --reason cessationOfOperation
prov 0 revoke SN-00005 --reason affiliationChanged --by rma-desk
prov 0 revoke SN-00009 --reason keyCompromise --invalidity-date 2026-01-15 --json
assert_eq "$(json_str "$PROV_OUT" reason)" keyCompromise "revoke --json reason"
assert_eq "$(json_str "$PROV_OUT" invalidity_date)" 2026-01-15T00:00:00Z "revoke --json date"
# the same again: no change; another reason: refused, naming what is recorded
prov 0 revoke SN-00002 --reason cessationOfOperation
assert_grep "$PROV_OUT" 'was already revoked' "a repeated revocation is not reported as such"
prov 5 revoke SN-00002 --reason keyCompromise
assert_one_error SN-00002 cessationOfOperation
# unknown serial: exit 5, nothing recorded
prov 5 revoke SN-99999 --reason keyCompromise
assert_one_error SN-99999 "nothing revoked"
prov 2 revoke SN-00003 --reason cACompromise
assert_eq "$(sql_q "$CA/index.sqlite" 'SELECT count(*) FROM revocation')" 3 "revocations recorded"
assert_eq "$(sql_q "$CA/index.sqlite" 'SELECT count(*) FROM audit')" 3 "audit records"
assert_eq "$(sql_q "$CA/index.sqlite" "SELECT revoked_by FROM revocation r JOIN certificate c
    USING (cert_serial) WHERE c.serial = 'SN-00005'")" rma-desk "revoked_by"

# ---- ca crl ---------------------------------------------------------------------------
prov 2 chain export --with-crl --out "$WORK/edge-set.pem"
assert_one_error crl-chain.pem
assert_no_file "$WORK/edge-set.pem"
prov 0 ca crl --json
assert_grep "$PROV_OUT" '"revoked": *3,' "ca crl --json: revoked"
for f in intermediate.crl intermediate.crl.pem root.crl root.crl.pem crl-chain.pem; do
    assert_file "$CA/$f"
done
openssl crl -in "$CA/intermediate.crl" -inform DER -noout -text >"$WORK/log/crl.txt" ||
    fail "openssl crl cannot read intermediate.crl"
openssl crl -in "$CA/intermediate.crl.pem" -noout -verify -CAfile "$CA/intermediate.crt" \
    >"$WORK/log/crl-verify.txt" 2>&1 || fail "openssl crl -verify: $(cat "$WORK/log/crl-verify.txt")"
assert_grep "$WORK/log/crl-verify.txt" 'verify OK' "the intermediate's CRL does not verify"
openssl crl -in "$CA/root.crl.pem" -noout -verify -CAfile "$CA/root.crt" \
    >"$WORK/log/root-crl-verify.txt" 2>&1 || fail "openssl crl -verify (root)"
assert_grep "$WORK/log/crl.txt" 'X509v3 CRL Number' "no CRL number"
assert_grep "$WORK/log/crl.txt" 'X509v3 Authority Key Identifier' "no AKI"
assert_grep "$WORK/log/crl.txt" 'Next Update: ' "no nextUpdate"
assert_grep "$WORK/log/crl.txt" 'Version 2' "not a v2 CRL"

assert_eq "$(revoked_list)" "$(revoked_three)" "the CRL's entries and reasons"
assert_grep "$WORK/log/crl.txt" 'Invalidity Date' "no invalidity date on the keyCompromise entry"
n1=$(openssl crl -in "$CA/intermediate.crl.pem" -noout -crlnumber)
prov 0 ca crl
n2=$(openssl crl -in "$CA/intermediate.crl.pem" -noout -crlnumber)
[ "$n1" != "$n2" ] || fail "the CRL number did not change ($n1)"
it_log "CRL numbers: $n1 then $n2"

# ---- verifiers: OpenSSL, GnuTLS, the tool itself --------------------------------------
for i in 01 02 03 04 05 06 07 08 09 10; do
    sn=SN-000$i
    d=$WORK/devices/$sn
    case $i in 02 | 05 | 09) want=revoked ;; *) want=good ;; esac
    if openssl verify -crl_check_all -CAfile "$CA/root.crt" -untrusted "$CA/intermediate.crt" \
        -CRLfile "$CA/crl-chain.pem" "$d/client.crt" >"$WORK/log/verify-$sn.txt" 2>&1; then
        got=good
    else
        got=revoked
        assert_grep "$WORK/log/verify-$sn.txt" 'certificate revoked' "$sn: openssl verify failed otherwise"
    fi
    assert_eq "$got" "$want" "$sn: openssl verify -crl_check_all"
    cat "$CA/intermediate.crt" "$CA/root.crt" >"$WORK/log/ca-both.pem"
    if certtool --verify --verify-profile medium --load-ca-certificate "$CA/root.crt" \
        --load-crl "$CA/intermediate.crl.pem" \
        --infile <(cat "$d/client.crt" "$CA/intermediate.crt") >"$WORK/log/certtool-$sn.txt" 2>&1; then
        got=good
    else
        got=revoked
        assert_grep "$WORK/log/certtool-$sn.txt" 'chain is revoked' "$sn: certtool failed otherwise"
    fi
    assert_eq "$got" "$want" "$sn: certtool --verify --load-crl"
done

prov 1 check --crl "$CA/crl-chain.pem" "$WORK/devices/SN-00009"
assert_grep "$PROV_OUT" 'crl=revoked' "check --crl text"
assert_one_error "revoked" keyCompromise
prov 1 check --json --crl "$CA/intermediate.crl" "$WORK/devices/SN-00002"
assert_eq "$(json_str "$PROV_OUT" revocation)" cessationOfOperation "check --json revocation"
prov 0 check --crl "$CA/crl-chain.pem" "$WORK/devices/SN-00001"
assert_grep "$PROV_OUT" 'crl=ok' "check --crl on a good device"
# the device's certificate and chain.pem (intermediate, root), as an edge would check them
for sn in SN-00005 SN-00006; do
    cat "$WORK/devices/$sn/client.crt" "$WORK/devices/$sn/chain.pem" >"$WORK/$sn-chain.pem"
done
prov 1 chain verify --crl "$CA/crl-chain.pem" "$WORK/SN-00005-chain.pem"
assert_grep "$PROV_OUT" 'certificate 0 .*: revoked: affiliationChanged' "chain verify --crl"
prov 1 chain verify --json --crl "$CA/crl-chain.pem" "$WORK/SN-00005-chain.pem"
assert_eq "$(json_str "$PROV_OUT" rule)" revoked "chain verify --json rule"
prov 0 chain verify --crl "$CA/crl-chain.pem" "$WORK/SN-00006-chain.pem"

# ---- nginx: ssl_crl refuses the revoked device ----------------------------------------
# the set an edge loads: the chain and both CRLs, in one file nginx takes for both
prov 0 chain export --with-crl --out "$WORK/edge-set.pem"
assert_eq "$(cert_count "$WORK/edge-set.pem")" 2 "chain export --with-crl: certificates"
assert_eq "$(count_re '^-----BEGIN X509 CRL-----' "$WORK/edge-set.pem")" 2 \
    "chain export --with-crl: CRLs"
nginx_start edge "$WORK/server-ca/server.crt" "$WORK/server-ca/server.key" "$WORK/edge-set.pem"
sed -i "s|ssl_verify_depth 3;|ssl_verify_depth 3;\n        ssl_crl $WORK/edge-set.pem;|" \
    "$WORK/nginx-edge/nginx.conf"
kill -HUP "$NGINX_PID"
sleep 1
engine_conf "$WORK/engine.cnf"
device_curl() {
    local d=$WORK/devices/$1 uri
    uri=$(uri_with_pin "$(cat "$d/key.uri")" "$DEV_PIN_VALUE")
    OPENSSL_CONF=$WORK/engine.cnf curl -sS --max-time 20 -o "$WORK/log/body" -w '%{http_code}' \
        --engine pkcs11 --key-type ENG --key "$uri" \
        --cert "$d/fullchain.pem" --cacert "$d/server-ca.pem" \
        "https://127.0.0.1:$NGINX_PORT/" 2>"$WORK/log/curl.err"
}
code=$(device_curl SN-00001) || fail "SN-00001: curl failed: $(cat "$WORK/log/curl.err")"
assert_eq "$code" 200 "a good device through nginx with ssl_crl"
code=$(device_curl SN-00009) || code=handshake-failed
case "$code" in
400 | handshake-failed) it_log "revoked device refused by nginx ($code)" ;;
*) fail "a revoked device got HTTP $code from nginx with ssl_crl" ;;
esac
assert_grep "$WORK/nginx-edge/error.log" 'certificate revoked' "nginx did not log the revocation"

# ---- a CRL distribution point, and a reissue that revokes what it supersedes -----------
# any static web server publishes it: nginx on 127.0.0.1, plain HTTP, serving the CA directory
# (curl fetches from it below). Started at once, so that the port the profile names stays
# ours: started later, another test could take it in between.
mkdir -p "$WORK/nginx-cdp"
for try in 1 2 3; do
    CDP_PORT=$(free_port)
    cat >"$WORK/nginx-cdp/nginx.conf" <<NGX
worker_processes 1;
daemon off;
pid $WORK/nginx-cdp/nginx.pid;
error_log $WORK/nginx-cdp/error.log info;
events { worker_connections 16; }
http {
    access_log $WORK/nginx-cdp/access.log;
    client_body_temp_path $WORK/nginx-cdp/client_body;
    proxy_temp_path $WORK/nginx-cdp/proxy;
    fastcgi_temp_path $WORK/nginx-cdp/fastcgi;
    uwsgi_temp_path $WORK/nginx-cdp/uwsgi;
    scgi_temp_path $WORK/nginx-cdp/scgi;
    server {
        listen 127.0.0.1:$CDP_PORT;
        location /device/ { alias $CA/; types { application/pkix-crl crl; } }
    }
}
NGX
    nginx -p "$WORK/nginx-cdp" -e "$WORK/nginx-cdp/error.log" -c "$WORK/nginx-cdp/nginx.conf" \
        >"$WORK/nginx-cdp/stdout.log" 2>&1 &
    CDP_PID=$!
    it_track "$CDP_PID"
    wait_port "$CDP_PORT" "$CDP_PID" && break
    stop_pid "$CDP_PID"
    it_log "nginx (CDP) did not start on port $CDP_PORT (try $try): $(tail -n1 "$WORK/nginx-cdp/error.log")"
    [ "$try" != 3 ] || fail "nginx (CDP) did not start: $(tail -n2 "$WORK/nginx-cdp/error.log")"
done
sed -i "s|^\[profile_device\]\$|[profile_device]\ncrl_url = http://127.0.0.1:$CDP_PORT/\${profile}/intermediate.crl\nrevoke_superseded = true|" \
    "$PROVISIONER_CONFIG"
old_hex=$(cert_hex SN-00003)
prov 0 batch lot.csv --reissue SN-00003 --no-progress
new_hex=$(cert_hex SN-00003)
[ "$old_hex" != "$new_hex" ] || fail "SN-00003 was not reissued"
openssl x509 -in "$WORK/devices/SN-00003/client.crt" -noout -ext crlDistributionPoints \
    >"$WORK/log/cdp.txt" 2>&1 || fail "openssl x509 -ext crlDistributionPoints failed"
cdp=$(sed -n 's/^ *URI://p' "$WORK/log/cdp.txt")
assert_eq "$cdp" "http://127.0.0.1:$CDP_PORT/device/intermediate.crl" "the certificate's CDP"
assert_eq "$(sql_q "$CA/index.sqlite" "SELECT reason || ' ' || revoked_by FROM revocation
    WHERE cert_serial = '$old_hex'")" "4 reissue" "the superseded certificate's revocation"
prov 0 ca crl
openssl crl -in "$CA/intermediate.crl" -inform DER -noout -text >"$WORK/log/crl.txt"
want=$(printf '%s\n' "$(revoked_three)" "$old_hex Superseded" | sort)
assert_eq "$(revoked_list)" "$want" "the CRL after the reissue"

curl -sS --max-time 20 -o "$WORK/fetched.crl" "$cdp" 2>"$WORK/log/curl-cdp.err" ||
    fail "curl $cdp: $(cat "$WORK/log/curl-cdp.err")"
assert_same_file "$WORK/fetched.crl" "$CA/intermediate.crl"
openssl verify -crl_check -CAfile "$CA/root.crt" -untrusted "$CA/intermediate.crt" \
    -CRLfile <(openssl crl -inform DER -in "$WORK/fetched.crl") \
    "$WORK/devices/SN-00003/client.crt" >"$WORK/log/verify-cdp.txt" 2>&1 ||
    fail "the reissued certificate does not verify with the fetched CRL: $(cat "$WORK/log/verify-cdp.txt")"

# ---- ca show reports the CRLs -----------------------------------------------------------
prov 0 ca show
assert_grep "$PROV_OUT" "crl: .*intermediate.crl: ok, next update" "ca show: the intermediate's CRL"
assert_grep "$PROV_OUT" "crl: .*root.crl: ok, next update" "ca show: the root's CRL"
assert_grep "$PROV_OUT" 'audit: +4 record\(s\), hash chain intact' "ca show: the audit trail"
# a changed audit record breaks the chain from there, and ca show says so
cp "$CA/index.sqlite" "$WORK/index-before-tamper.sqlite"
sql_q "$CA/index.sqlite" "UPDATE audit SET detail = 'reason=superseded' WHERE seq = 2"
prov 0 ca show
assert_grep "$PROV_OUT" 'audit: +4 record\(s\), hash chain BROKEN at record 2' "ca show: broken audit"
assert_grep "$PROV_ERR" 'breaks at record 2' "ca show: no warning about the broken audit trail"
cp "$WORK/index-before-tamper.sqlite" "$CA/index.sqlite"

# ---- the CRL key never left the token ---------------------------------------------------
assert_eq "$(ca_key_attrs)" "$KEY_BEFORE" "the intermediate key's attributes after signing CRLs"
it_log "intermediate key: $(printf '%s' "$KEY_BEFORE" | tr '\n' ' ')"

# ---- the CA token away: exit 4, no CRL file changed -------------------------------------
crl_files_digest() {
    (cd "$CA" && sha256sum intermediate.crl intermediate.crl.pem root.crl root.crl.pem crl-chain.pem)
}
before=$(crl_files_digest)
entries_before=$(dir_entries "$CA")
ca_token=""
for f in "$WORK"/softhsm/tokens/*/token.object; do
    if grep -qa -- "provisioner-ca " "$f"; then ca_token=$(dirname "$f"); fi
done
[ -n "$ca_token" ] || fail "no token directory for provisioner-ca"
mv "$ca_token" "$WORK/away-ca-token"
prov 4 ca crl
assert_one_error provisioner-ca
mv "$WORK/away-ca-token" "$ca_token"
assert_eq "$(crl_files_digest)" "$before" "CRL files after ca crl without the CA token"
assert_eq "$(dir_entries "$CA")" "$entries_before" "the CA directory's files after the failed ca crl"
prov 0 ca crl

# ---- a root key in an encrypted PEM file signs the root's CRL ---------------------------
mkdir "$WORK/fileroot"
cd "$WORK/fileroot"
ca_fixture file
prov 0 ca crl
openssl crl -in ca/root.crl.pem -noout -verify -CAfile ca/root.crt >"$WORK/log/fileroot.txt" 2>&1 ||
    fail "root CRL signed by the file root key: $(cat "$WORK/log/fileroot.txt")"
openssl crl -in ca/intermediate.crl.pem -noout -verify -CAfile ca/intermediate.crt \
    >>"$WORK/log/fileroot.txt" 2>&1 || fail "intermediate CRL of the file-root CA"
# a wrong passphrase: exit 3, the CRL files stay as they were, no CRL number is used
before=$(sha256sum ca/*.crl ca/*.pem)
numbers=$(sql_q ca/index.sqlite "SELECT group_concat(value) FROM meta WHERE name LIKE '%crl_number'")
write_secret "$PWD/root.pass" "not-the-passphrase"
prov 3 ca crl
assert_eq "$(sha256sum ca/*.crl ca/*.pem)" "$before" "CRL files after a wrong root passphrase"
assert_eq "$(sql_q ca/index.sqlite "SELECT group_concat(value) FROM meta WHERE name LIKE '%crl_number'")" \
    "$numbers" "CRL numbers after a wrong root passphrase"
