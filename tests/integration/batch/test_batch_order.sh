#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The results file is in manifest order (doc/provisioner-manifest.5.scd, RESULTS: one results
# row per manifest row, in the manifest's order) however the workers finish: 300 rows over four
# tokens in turn, --jobs 4, so that neighbouring rows are issued by different workers. Every row's
# results line names its own serial, status and x_ column; a second run, every row
# already-issued, writes the same rows in the same order. A guard for the batch's memory work
# (issue 23): the results written from the journal row by row must keep this order, and each
# line's certificate must be its row's.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/batch_lib.sh"
it_setup
need sqlite3
batch_ca
for t in 1 2 3 4; do
    token_init "$(printf 'dev-%02d' "$t")"
done
echo "serial,device,cn,x_token" >order.csv
for ((n = 1; n <= 300; n++)); do
    # serials not sorted in manifest order, so that a sort by serial would show
    label=$(printf 'dev-%02d' $((n % 4 + 1)))
    printf 'SN-%05d,pkcs11:token=%s,,%s\n' $(((n * 7919) % 100000)) "$label" "$label" >>order.csv
done

prov 0 batch order.csv --jobs 4 --no-progress
assert_grep "$PROV_OUT" '^300 rows: 300 issued, 0 already-issued, 0 failed '
tail -n +2 order.csv | cut -d, -f1,4 >"$WORK/log/want"
tail -n +2 order.results.csv | awk -F, '{ print $1 "," $NF }' >"$WORK/log/got"
cmp -s "$WORK/log/want" "$WORK/log/got" ||
    fail "results not in manifest order: $(diff "$WORK/log/want" "$WORK/log/got" | head -n4 | tr '\n' ' ')"
[ "$(tail -n +2 order.results.csv | cut -d, -f2 | sort -u)" = issued ] ||
    fail "results: a status other than issued"
assert_eq "$(head -n1 order.results.csv)" \
    "serial,status,cert_serial,sha256,not_after,storage,error,x_token" "results header"
# each line's certificate is its own row's in the journal (the results read the journal a
# page of rows at a time: a row given its neighbour's would show here)
sqlite3 -separator , order.journal.sqlite "SELECT d.serial, c.cert_serial, c.sha256 FROM device d
    JOIN certificate c ON c.id = d.cert_id" | sort >"$WORK/log/journal-certs"
tail -n +2 order.results.csv | cut -d, -f1,3,4 | sort >"$WORK/log/results-certs"
[ "$(wc -l <"$WORK/log/results-certs")" = 300 ] || fail "results: not 300 certificates"
cmp -s "$WORK/log/journal-certs" "$WORK/log/results-certs" ||
    fail "results name other certificates than the journal: $(diff "$WORK/log/journal-certs" "$WORK/log/results-certs" | head -n4 | tr '\n' ' ')"
cp order.results.csv "$WORK/log/first.csv"

prov 0 batch order.csv --jobs 4 --no-progress
assert_grep "$PROV_OUT" '^300 rows: 0 issued, 300 already-issued, 0 failed '
sed 's/,issued,/,already-issued,/' "$WORK/log/first.csv" >"$WORK/log/first-again.csv"
cmp -s "$WORK/log/first-again.csv" order.results.csv ||
    fail "second run's results differ: $(diff "$WORK/log/first-again.csv" order.results.csv | head -n4 | tr '\n' ' ')"
