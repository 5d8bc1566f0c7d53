#!/usr/bin/env bash
# Makes sure a PostgreSQL server answers where the tests look for one (tests/common/postgres.rs):
# $RESTORECTL_TEST_POSTGRES, else postgres://postgres@127.0.0.1:5432/postgres with trust
# authentication. Does nothing when one answers (this machine runs one). Otherwise installs
# Debian's postgresql package if its binaries are missing, and starts a throwaway cluster with
# trust authentication on 127.0.0.1:5432 in $RESTORECTL_TEST_PG_DIR (default /tmp/restorectl-test-pg),
# which stays running for later test runs.
set -euo pipefail

port="${RESTORECTL_TEST_PG_PORT:-5432}"
answers() {
    # bash's /dev/tcp: no client package needed to ask
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
}
if [ -n "${RESTORECTL_TEST_POSTGRES:-}" ] || answers; then
    exit 0
fi

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$bin" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
        bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    else
        echo "no PostgreSQL server answers on 127.0.0.1:$port and none can be installed here;" \
             "the PostgreSQL tests will say so (and fail under CI=true)" >&2
        exit 0
    fi
fi

# initdb refuses to run as root: the cluster belongs to the postgres user when we are root.
as_owner() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
dir="${RESTORECTL_TEST_PG_DIR:-/tmp/restorectl-test-pg}"
if [ ! -f "$dir/PG_VERSION" ]; then
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres: "$dir"
    chmod 700 "$dir"
    as_owner "$bin/initdb" -D "$dir" -A trust -U postgres >/dev/null
fi
# TLS with Debian's snake-oil certificate (package ssl-cert, a dependency of postgresql): the
# tests check that databaseCaFile verifies the server.
tls=""
cert=/etc/ssl/certs/ssl-cert-snakeoil.pem
key=/etc/ssl/private/ssl-cert-snakeoil.key
if [ -f "$cert" ] && as_owner test -r "$key"; then
    tls="-c ssl=on -c ssl_cert_file=$cert -c ssl_key_file=$key"
fi
as_owner "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir $tls" start >/dev/null
echo "started a PostgreSQL server for the tests in $dir (127.0.0.1:$port, trust)" >&2
