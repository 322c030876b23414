# SPDX-License-Identifier: Apache-2.0
# Shell helpers shared by scripts/demo.sh, the integration tests (tests/integration/lib.sh,
# tpm/tpm_lib.sh) and the benchmarks. Sourced; defines functions only. Each returns non-zero
# instead of exiting, so that every caller reports failure its own way (die, fail).

# common_free_port [pair]: a TCP port on 127.0.0.1 that nothing accepts on right now (callers
# retry when a server then cannot bind it). With "pair": P such that P and P+1 are free, below
# the ephemeral range (swtpm's TCTI opens a connection per command; TIME-WAIT sockets on
# ephemeral ports must not collide with swtpm's ports).
common_free_port() {
    local pair=${1:-} low i p
    low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range)
    for i in $(seq 1 100); do
        if [ "$pair" = pair ]; then
            p=$((10000 + RANDOM % (low - 10002)))
        else
            p=$((20000 + RANDOM % 40000))
        fi
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue
        if [ "$pair" = pair ]; then
            (exec 3<>"/dev/tcp/127.0.0.1/$((p + 1))") 2>/dev/null && continue
        fi
        echo "$p"
        return 0
    done
    return 1
}

# common_engine_conf FILE MODULE: an OPENSSL_CONF that loads the libp11 pkcs11 engine on the
# PKCS#11 module MODULE (for the TLS clients the tests and the demo drive: curl, s_client).
common_engine_conf() {
    local enginedir
    enginedir=$(openssl version -e | sed 's/^ENGINESDIR: "\(.*\)"$/\1/')
    [ -f "$enginedir/pkcs11.so" ] || return 1
    cat >"$1" <<CONF
openssl_conf = openssl_init
[openssl_init]
engines = engine_section
[engine_section]
pkcs11 = pkcs11_section
[pkcs11_section]
engine_id = pkcs11
dynamic_path = $enginedir/pkcs11.so
MODULE_PATH = $2
init = 0
CONF
}
