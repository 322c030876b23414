#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The connection lost while COMMIT is in flight (doc/ledger.md, "Failures: fail closed"): the
# outcome is read back from the ledger, never guessed. The batch reaches the ledger through a
# TCP proxy (cut_proxy.py) and each certificate's COMMIT is held in a deferred trigger
# (pg_sleep) of the test's own:
# - SN-00001: the proxy cuts the connection while the server is inside COMMIT; the server
#   goes on and commits, the client never hears it;
# - SN-00002: the server terminates the backend inside COMMIT (pg_terminate_backend): the
#   transaction is rolled back.
# After the batch: no certificate in any row's storage that the ledger does not hold as the
# row's current one, and every key whose certificate the ledger holds still on the token.
# The trigger dropped, the same command completes the lot: every row once, the token holding
# exactly the ledger's keys, the audit verifying.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../batch/batch_lib.sh"
. "$(dirname "$0")/ledger_lib.sh"
ledger_lot 1 2
python3 "$PROV_SOURCE_ROOT/tests/integration/ledger/cut_proxy.py" "$WORK/proxy.port" "$PG_PORT" \
    2>log/proxy.err &
proxy_pid=$!
it_track "$proxy_pid"
wait_file "$WORK/proxy.port" "$proxy_pid" || fail "the proxy did not start: $(cat log/proxy.err)"
sed -i "s|^journal = .*|journal = postgresql://postgres@127.0.0.1:$(cat "$WORK/proxy.port")/postgres|" \
    "$PROVISIONER_CONFIG"
pg_q "CREATE TABLE slow_commit(serial TEXT PRIMARY KEY);
      CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS \$\$ BEGIN
        IF EXISTS (SELECT 1 FROM slow_commit WHERE serial = NEW.device_serial) THEN
          PERFORM pg_sleep(4);
        END IF;
        RETURN NULL;
      END \$\$;
      CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON certificate
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit();
      INSERT INTO slow_commit VALUES ('SN-00001'), ('SN-00002')" >/dev/null

# sleeping_commit NOT_PID: the PID of a backend of the tool asleep in the trigger (30 s)
sleeping_commit() {
    local p
    for _ in $(seq 1 300); do
        p=$(pg_q "SELECT pid FROM pg_stat_activity WHERE wait_event = 'PgSleep'
                  AND application_name = 'provisioner' AND pid <> $1 LIMIT 1")
        [ -n "$p" ] && { echo "$p"; return 0; }
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

"$PROVISIONER" batch lot.csv --station C --jobs 1 --no-progress >log/cut.out 2>log/cut.err \
    </dev/null &
pid=$!
it_track "$pid"
first=$(sleeping_commit 0) || fail "SN-00001's COMMIT never waited: $(cat log/cut.err)"
kill -USR1 "$proxy_pid" # the client loses the connection; the server commits
second=$(sleeping_commit "$first") || fail "SN-00002's COMMIT never waited: $(cat log/cut.err)"
assert_eq "$(pg_q "SELECT pg_terminate_backend($second)")" t "SN-00002's backend terminated"
wait "$pid" && rc=0 || rc=$?
cat log/cut.out log/cut.err
[ "$rc" -ne 0 ] || fail "the batch exited 0 with both COMMITs broken: $(cat log/cut.out)"
# each broken COMMIT is said as such, with what was done about it; not libpq's own words
for sn in SN-00001 SN-00002; do
    assert_grep log/cut.err "serial $sn: .*COMMIT.*outcome is unknown.*read back"
done
if grep -q "server closed the connection\|terminating connection\|no connection to the server" log/cut.err; then
    fail "libpq's text instead of the unknown outcome: $(cat log/cut.err)"
fi

# read back, never guessed: storage holds only what the ledger holds; no certified key gone
for sn in SN-00001 SN-00002; do
    held=$(pg_q "SELECT sha256 FROM certificate WHERE device_serial = '$sn' AND superseded IS NULL")
    if [ -e "devices/$sn/client.der" ]; then
        [ -n "$held" ] || fail "$sn: storage has a certificate the ledger does not hold"
        assert_eq "$(sha256sum <"devices/$sn/client.der" | cut -c1-64)" "$held" \
            "$sn: the certificate in storage is the ledger's"
    fi
    if [ -n "$held" ]; then
        key=$(pg_q "SELECT encode(key_id, 'hex') FROM certificate WHERE device_serial = '$sn'
                    AND superseded IS NULL")
        token_objects dev-01 | grep -qx "privkey $key" ||
            fail "$sn: the ledger holds its certificate but its key $key is gone from the token"
    fi
done
assert_eq "$(pg_q "SELECT count(*) FROM certificate WHERE device_serial = 'SN-00001'")" 1 \
    "SN-00001's certificate (committed while the client was cut off)"
assert_eq "$(pg_q "SELECT count(*) FROM certificate WHERE device_serial = 'SN-00002'")" 0 \
    "SN-00002's certificate (its COMMIT rolled back)"

pg_q "DROP TRIGGER slow_commit ON certificate" >/dev/null
prov 0 ledger release --station C
prov 0 batch lot.csv --station C --no-progress
assert_grep "$PROV_OUT" '^2 rows: '
assert_grep "$PROV_OUT" ' 0 failed '
assert_eq "$(pg_q "SELECT count(*) FROM certificate")" 2 "certificates: every row once"
assert_eq "$(pg_q "SELECT count(*) FROM device WHERE state = 'proven'")" 2 "proven rows"
assert_tokens_match_ledger dev-01
prov 0 ledger verify
