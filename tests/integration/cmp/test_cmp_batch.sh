#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# A station with no CA token and no CA PIN issues a lot of 100 SoftHSM2 devices through the
# CA service (doc/ca-service.md): its config says [ca] url = cmp://..., its identity key is on
# its own token (made with `provisioner csr --profile station`, certified and registered on
# the CA host with `ca station add`), the lot is registered there with `ca lot add`.
# - every device's certificate passes `openssl verify -x509_strict`; the CA index holds 100
#   for the lot, each issued by cmp:STATION-B; nothing in the station's config, environment
#   or files holds the CA PIN;
# - the lot's cap (the CA's data) first 10 short: the run stops there (exit 1, the rest
#   refused), and the same run resumes to the end once the CA's operator raises the cap,
#   each device issued once;
# - a station_cert that is no certificate, or not station_key's, is refused (exit 2, one
#   line) before the service is asked or a device touched;
# - with the service gone, a new lot's run exits 4 with one line before any device is touched.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../batch/batch_lib.sh"
. "$(dirname "$0")/cmp_lib.sh"
it_setup
need sqlite3
N=${PROV_TEST_SANITIZED:+20}
N=${N:-100}
batch_ca
cmp_profiles
# the station (station_batch, cmp_lib.sh); the lot's cap 10 short first: the run stops there,
# and resumes once the CA raises it
station_batch cmp $((N - 10))
prov 1 batch lot.csv --no-progress
assert_eq "$(sql_q "$IT_CA_DIR/index.sqlite" "SELECT count(*) FROM certificate
    WHERE lot = 'LOT-IT-1'")" $((N - 10)) "the cap holds: the lot issued up to it"
assert_grep "$CMP_LOG" 'the cap of every lot it may serve is reached' "the refusals are logged"
(cd "$WORK" && PROVISIONER_CONFIG=$CA_CONFIG prov 0 ca lot add LOT-IT-1 --count "$N" \
    --station STATION-B)
prov 0 batch lot.csv --no-progress
station_batch_check cmp

# the resumed run issued only the rest: one issuance per device in the service's log
assert_eq "$(grep -c 'outcome="issued"' "$CMP_LOG")" "$N" "issuances in the service's log"

# ---- a station identity that does not hold together: exit 2 before anything is asked ----
station_batch_bad_identity

# ---- the service gone: exit 4, one line, no device touched -------------------------------
station_batch_service_gone
