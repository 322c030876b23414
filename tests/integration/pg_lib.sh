# SPDX-License-Identifier: Apache-2.0
# A PostgreSQL 15 of the test's own (the shared ledger's tests, tests/integration/ledger/, and
# the CA index's, tests/integration/test_ca_index_pg.sh), on top of tests/integration/lib.sh
# (sourced first).

PG_BIN=/usr/lib/postgresql/15/bin

# pg_start NAME: a PostgreSQL cluster in $WORK/pg-NAME, run as the unprivileged user
# postgres (PostgreSQL refuses root; doc/platform.md), listening on 127.0.0.1 on a free port,
# its socket inside its own directory, password authentication (scram) for everyone.
# Sets PG_PORT, PG_PID, PG_DIR and PG_URI (no password in it); the password is in
# $WORK/ledger.pass (journal_password = file:...) and in $WORK/pgpass (PGPASSFILE).
pg_start() {
    PG_DIR=$WORK/pg-$1
    need_file "$PG_BIN/initdb"
    mkdir -p "$PG_DIR"
    write_secret "$WORK/ledger.pass" "$(openssl rand -hex 16)"
    cp "$WORK/ledger.pass" "$PG_DIR/pwfile"
    chown -R postgres: "$PG_DIR"
    setpriv --reuid=postgres --regid=postgres --clear-groups \
        "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres --auth=scram-sha-256 \
        --pwfile="$PG_DIR/pwfile" >"$WORK/log/initdb-$1.log" 2>&1 ||
        fail "initdb: $(tail -n1 "$WORK/log/initdb-$1.log")"
    rm -f "$PG_DIR/pwfile"
    # free_port's port can be taken by another test before postgres binds it: a new port then
    local try
    for try in 1 2 3 4 5; do
        PG_PORT=$(free_port)
        PG_RETRY_BIND=1 pg_run && break
    done
    [ -n "${PG_PID:-}" ] && kill -0 "$PG_PID" 2>/dev/null || fail "postgres did not start on 5 ports"
    PG_URI="postgresql://postgres@127.0.0.1:$PG_PORT/postgres"
    umask 077
    printf '127.0.0.1:%s:*:postgres:%s\n' "$PG_PORT" "$(cat "$WORK/ledger.pass")" >"$WORK/pgpass"
    umask 022
}

# pg_run: starts the cluster of pg_start again (after pg_stop), on the same port.
pg_run() {
    setpriv --reuid=postgres --regid=postgres --clear-groups \
        "$PG_BIN/postgres" -D "$PG_DIR/data" -c listen_addresses=127.0.0.1 -p "$PG_PORT" \
        -c unix_socket_directories="$PG_DIR" >>"$WORK/log/postgres.log" 2>&1 &
    PG_PID=$!
    it_track "$PG_PID"
    if ! wait_port "$PG_PORT" "$PG_PID"; then
        if [ -n "${PG_RETRY_BIND:-}" ] && grep -q "could not create any TCP/IP sockets" "$WORK/log/postgres.log"; then
            wait "$PG_PID" 2>/dev/null || true # it exited: could not bind
            PG_PID=
            return 1
        fi
        fail "postgres did not start: $(tail -n2 "$WORK/log/postgres.log")"
    fi
    # accepting TCP is not yet accepting logins: wait until a query answers
    local i
    for i in $(seq 1 100); do
        pg_q "SELECT 1" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    fail "postgres answers no query: $(tail -n2 "$WORK/log/postgres.log")"
}

# pg_stop: a fast shutdown (SIGINT) of the cluster, by its PID.
pg_stop() {
    kill -INT "$PG_PID" 2>/dev/null || true
    wait "$PG_PID" 2>/dev/null || true
}

# pg_q SQL: one query as the superuser over the socket, unaligned, no headers.
pg_q() {
    PGPASSWORD=$(cat "$WORK/ledger.pass") "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 \
        -h "$PG_DIR" -p "$PG_PORT" -U postgres -d postgres -c "$1"
}

