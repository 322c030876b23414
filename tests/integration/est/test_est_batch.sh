#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# A station with no CA token and no CA PIN issues a lot of 100 SoftHSM2 devices through the
# CA service over EST (doc/ca-service.md): its config says [ca] url = est://..., the service's
# TLS certificate is checked against [ca] tls_ca, the station's identity key (its TLS client
# key) is on its own token (made with `provisioner csr --profile station`, certified and
# registered on the CA host with `ca station add`), the lot is registered there with
# `ca lot add`.
# - one kept-alive TLS connection for the lot's requests;
# - every device's certificate passes `openssl verify -x509_strict`; the CA index holds 100
#   for the lot, each issued by est:STATION-B; nothing in the station's config, environment
#   or files holds the CA PIN;
# - a second run issues nothing more (the journal resumes, every row done);
# - a station_cert that is no certificate, or not station_key's, is refused (exit 2, one
#   line) before the service is asked or a device touched;
# - libcurl missing (the tool loads it when it opens the EST service): exit 1, one line naming
#   it, before any device is touched;
# - with the service gone, a new lot's run exits 4 with one line before any device is touched.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../batch/batch_lib.sh"
. "$(dirname "$0")/../cmp/cmp_lib.sh"
it_setup
need sqlite3
N=${PROV_TEST_SANITIZED:+20}
N=${N:-100}
batch_ca
cmp_profiles
# the station (station_batch, ../cmp/cmp_lib.sh): est://, the service's TLS checked
# against [ca] tls_ca
station_batch est "$N"
start=$(date +%s.%N)
prov 0 batch lot.csv --no-progress
it_log "batch of $N over EST: $(echo "$(date +%s.%N) - $start" | bc) s"
station_batch_check est
# keep-alive: every simpleenroll of the run came on one connection (one peer port)
assert_eq "$(awk '/ simpleenroll / { print $4 }' "$CMP_LOG" | sort -u | wc -l)" 1 \
    "connections the station's simpleenrolls came on"

# ---- run again: nothing more issued ----------------------------------------------------
prov 0 batch lot.csv --no-progress
assert_eq "$(sql_q "$IT_CA_DIR/index.sqlite" "SELECT count(*) FROM certificate
    WHERE lot = 'LOT-IT-1'")" "$N" "a second run issues nothing"

# ---- a station identity that does not hold together: exit 2 before anything is asked ----
station_batch_bad_identity

# ---- libcurl missing: exit 1, one line, no device touched --------------------------------
printf 'serial,device\nSN-09998,pkcs11:token=dev-01\n' >nocurl.csv
prov_without 1 libcurl.so.4 -- batch nocurl.csv --no-progress
assert_one_error "EST: libcurl.so.4 cannot be loaded"
assert_no_file devices/SN-09998

# ---- the service gone: exit 4, one line, no device touched -------------------------------
station_batch_service_gone
