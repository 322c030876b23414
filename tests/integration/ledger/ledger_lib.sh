# SPDX-License-Identifier: Apache-2.0
# Helpers for the shared-ledger tests (doc/ledger.md), on top of tests/integration/lib.sh and
# tests/integration/batch/batch_lib.sh (sourced first): a PostgreSQL 15 of the test's own.

. "$(dirname "${BASH_SOURCE[0]}")/../pg_lib.sh"

# ledger_fixture: the test's work dir, a CA (batch_ca), a PostgreSQL (pg_start main) and the
# config's journal pointing at it (ledger_config).
ledger_fixture() {
    it_setup
    batch_ca
    pg_start main
    ledger_config
}

# ledger_lot TOKENS PER_TOKEN: ledger_fixture, a lot.csv of make_lot, the tokens behind
# p11_server and the ledger's schema (ledger init).
ledger_lot() {
    ledger_fixture
    make_lot lot.csv "$1" "$2"
    p11_server
    prov 0 ledger init
}

# ledger_config: [provisioner] journal = the cluster's URI, password from ledger.pass.
ledger_config() {
    sed -i "s|^\[provisioner\]\$|[provisioner]\njournal = $PG_URI\njournal_password = file:$WORK/ledger.pass|" \
        "$PROVISIONER_CONFIG"
}

# p11_server: the SoftHSM2 tokens behind one `p11-kit server`, out of the tool's processes,
# so that several stations on one machine do not rewrite a token's token.object under each
# other (a SoftHSM2 hazard: another process then sees the token vanish). The config's
# pkcs11_module becomes p11-kit's client module; the server is stopped by its PID.
p11_server() {
    local env client
    client=$(pkg-config --variable=p11_module_path p11-kit-1)/p11-kit-client.so
    need_file "$client"
    env=$(p11-kit server -s --provider "$SOFTHSM_MODULE" -n "$WORK/p11.sock" "pkcs11:") ||
        fail "p11-kit server failed to start"
    P11_PID=$(sed -n 's/.*P11_KIT_SERVER_PID=\([0-9]*\);.*/\1/p' <<<"$env")
    [ -n "$P11_PID" ] || fail "p11-kit server: no PID in its output: $env"
    it_track "$P11_PID"
    for _ in $(seq 1 100); do
        [ -S "$WORK/p11.sock" ] && break
        sleep 0.05
    done
    [ -S "$WORK/p11.sock" ] || fail "p11-kit server: $WORK/p11.sock did not appear"
    export P11_KIT_SERVER_ADDRESS="unix:path=$WORK/p11.sock"
    sed -i "s|^pkcs11_module = .*|pkcs11_module = $client|" "$PROVISIONER_CONFIG"
}

# assert_tokens_match_ledger [--except-idless] LABEL...: each token's private keys, public
# keys and certificates are exactly the keys of the ledger's rows on it: none left over, none
# missing. --except-idless leaves out objects without a CKA_ID (a SIGKILL inside SoftHSM2's
# key generation can leave such objects, which no record can name).
assert_tokens_match_ledger() {
    local t k idless='^$' # no object line is empty: nothing left out
    if [ "$1" = --except-idless ]; then
        idless=' -$'
        shift
    fi
    for t in "$@"; do
        pg_q "SELECT encode(key_id, 'hex') FROM device WHERE device_uri = 'pkcs11:token=$t'
              AND state = 'proven' ORDER BY 1" >"$WORK/log/want-$t"
        token_objects "$t" | { grep -v -- "$idless" || true; } >"$WORK/log/objects-$t"
        for k in privkey pubkey cert; do
            awk -v k=$k '$1 == k { print $2 }' "$WORK/log/objects-$t" | sort >"$WORK/log/got-$t-$k"
            cmp -s "$WORK/log/got-$t-$k" "$WORK/log/want-$t" ||
                fail "token $t: $k objects are not the ledger's keys: $(diff "$WORK/log/got-$t-$k" "$WORK/log/want-$t" | grep '^[<>]' | tr '\n' ' ')"
        done
    done
}

# pg_standby: a streaming standby of the cluster of pg_start, made by pg_basebackup -R, on a
# port of its own, and the primary made to wait for it on every commit (synchronous).
# Sets SB_PORT, SB_PID, SB_DIR; PG_URI2 names both hosts, for a read-write session.
pg_standby() {
    SB_DIR=$WORK/pg-standby
    mkdir -p "$SB_DIR"
    chown postgres: "$SB_DIR"
    PGPASSWORD=$(cat "$WORK/ledger.pass") setpriv --reuid=postgres --regid=postgres --clear-groups \
        "$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$PG_PORT" -U postgres -D "$SB_DIR/data" -R \
        -X stream >"$WORK/log/basebackup.log" 2>&1 ||
        fail "pg_basebackup: $(tail -n1 "$WORK/log/basebackup.log")"
    # as pg_start: free_port's port can be taken by another test before the standby binds it
    local try
    for try in 1 2 3 4 5; do
        SB_PORT=$(free_port)
        setpriv --reuid=postgres --regid=postgres --clear-groups \
            "$PG_BIN/postgres" -D "$SB_DIR/data" -c listen_addresses=127.0.0.1 -p "$SB_PORT" \
            -c unix_socket_directories="$SB_DIR" -c cluster_name=standby \
            >"$WORK/log/standby-$try.log" 2>&1 &
        SB_PID=$!
        it_track "$SB_PID"
        wait_port "$SB_PORT" "$SB_PID" && break
        grep -q "could not create any TCP/IP sockets" "$WORK/log/standby-$try.log" ||
            fail "the standby did not start: $(tail -n2 "$WORK/log/standby-$try.log")"
        wait "$SB_PID" 2>/dev/null || true # it exited: could not bind
        SB_PID=
    done
    [ -n "$SB_PID" ] || fail "the standby did not start on 5 ports"
    pg_q "ALTER SYSTEM SET synchronous_standby_names = '*'" >/dev/null
    pg_q "SELECT pg_reload_conf()" >/dev/null
    for _ in $(seq 1 100); do
        [ "$(pg_q "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'")" = 1 ] && break
        sleep 0.1
    done
    [ "$(pg_q "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'")" = 1 ] ||
        fail "the standby is not a synchronous one"
    printf '127.0.0.1:%s:*:postgres:%s\n' "$SB_PORT" "$(cat "$WORK/ledger.pass")" >>"$WORK/pgpass"
    PG_URI2="postgresql://postgres@127.0.0.1:$PG_PORT,127.0.0.1:$SB_PORT/postgres?target_session_attrs=read-write"
}

# pg_failover: stops the primary (fast), promotes the standby and lets it commit alone (the
# promoted server keeps synchronous_standby_names, and would wait forever for a standby).
# The standby becomes PG_PORT/PG_PID/PG_DIR for pg_q.
pg_failover() {
    pg_stop
    setpriv --reuid=postgres --regid=postgres --clear-groups \
        "$PG_BIN/pg_ctl" promote -w -D "$SB_DIR/data" >"$WORK/log/promote.log" 2>&1 ||
        fail "pg_ctl promote: $(tail -n1 "$WORK/log/promote.log")"
    PG_PORT=$SB_PORT PG_PID=$SB_PID PG_DIR=$SB_DIR
    pg_q "ALTER SYSTEM SET synchronous_standby_names = ''" >/dev/null
    pg_q "SELECT pg_reload_conf()" >/dev/null
}
