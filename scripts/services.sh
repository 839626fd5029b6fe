#!/usr/bin/env bash
# Makes sure the servers the tests need are up, and exports where they are:
#   ORDO_TEST_POSTGRES_URL, ORDO_TEST_REDIS_URL, ORDO_TEST_REDIS_CLUSTER_URL.
# Uses PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379 when they answer;
# otherwise starts private instances under .test-servers/ (installing the Debian packages
# when they are missing). A Redis Cluster of three masters is always started privately.
# Source it: `. scripts/services.sh`. It fails, never skips, when a server cannot be had.

_ordo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_ordo_servers="$_ordo_root/.test-servers"
mkdir -p "$_ordo_servers"
# Something on a port that accepts and never answers must fail the check, not hang it:
# psql waits this long to connect, redis-cli calls run under `timeout 3`.
export PGCONNECT_TIMEOUT="${PGCONNECT_TIMEOUT:-5}"

_say() { printf 'services: %s\n' "$*" >&2; }
_die() { printf 'services: ERROR: %s\n' "$*" >&2; return 1; }

_apt_install() {
    # Installs Debian packages when we may (root with apt-get); else says what to install.
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        _say "installing $* (apt-get)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1 \
            || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null; } \
            || _die "could not install $*; install them by hand: apt-get install $*"
    else
        _die "missing $*: install them (Debian: apt-get install $*)"
    fi
}

_pg_bin() {
    # The directory of PostgreSQL's server binaries (initdb, pg_ctl).
    local d
    for d in /usr/lib/postgresql/*/bin; do
        [ -x "$d/initdb" ] && { echo "$d"; return 0; }
    done
    command -v initdb >/dev/null 2>&1 && { dirname "$(command -v initdb)"; return 0; }
    return 1
}

ordo_postgres() {
    if [ -n "${ORDO_TEST_POSTGRES_URL:-}" ]; then
        _say "PostgreSQL: using ORDO_TEST_POSTGRES_URL as given"
        return 0
    fi
    command -v psql >/dev/null 2>&1 || _apt_install postgresql-client || return 1
    if psql "postgres://postgres@127.0.0.1:5432/test" -qAtc 'select 1' >/dev/null 2>&1; then
        export ORDO_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:5432/test"
        _say "PostgreSQL: using the server on 127.0.0.1:5432"
        return 0
    fi
    local port=55432 dir="$_ordo_servers/postgres"
    local url="postgres://postgres@127.0.0.1:$port/test"
    if psql "$url" -qAtc 'select 1' >/dev/null 2>&1; then
        export ORDO_TEST_POSTGRES_URL="$url"
        _say "PostgreSQL: using the private server on port $port"
        return 0
    fi
    local bin
    bin="$(_pg_bin)" || { _apt_install postgresql postgresql-contrib || return 1; bin="$(_pg_bin)"; } || _die "PostgreSQL server binaries not found after install" || return 1
    _say "PostgreSQL: starting a private server on port $port ($dir)"
    local run_as=()
    if [ "$(id -u)" = 0 ]; then
        id postgres >/dev/null 2>&1 || useradd --system --home-dir "$dir" postgres
        run_as=(runuser -u postgres --)
    fi
    if [ ! -s "$dir/PG_VERSION" ]; then
        mkdir -p "$dir" && chown -R "$( [ "$(id -u)" = 0 ] && echo postgres || id -un )" "$dir"
        "${run_as[@]}" "$bin/initdb" -D "$dir" -U postgres -A trust >/dev/null || _die "initdb failed" || return 1
    fi
    "${run_as[@]}" "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w \
        -o "-p $port -k /tmp -c listen_addresses=127.0.0.1" start >/dev/null \
        || _die "PostgreSQL did not start; see $dir/server.log" || return 1
    psql "postgres://postgres@127.0.0.1:$port/postgres" -qAtc 'create database test' >/dev/null 2>&1 || true
    psql "$url" -qAtc 'select 1' >/dev/null || _die "PostgreSQL on port $port does not answer" || return 1
    export ORDO_TEST_POSTGRES_URL="$url"
}

ordo_redis() {
    if [ -n "${ORDO_TEST_REDIS_URL:-}" ]; then
        _say "Redis: using ORDO_TEST_REDIS_URL as given"
        return 0
    fi
    command -v redis-server >/dev/null 2>&1 || _apt_install redis-server || return 1
    if timeout 3 redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then
        export ORDO_TEST_REDIS_URL="redis://127.0.0.1:6379"
        _say "Redis: using the server on 127.0.0.1:6379"
        return 0
    fi
    local port=56379 dir="$_ordo_servers/redis"
    mkdir -p "$dir"
    if ! timeout 3 redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null | grep -q PONG; then
        _say "Redis: starting a private server on port $port"
        redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --dir "$dir" \
            --appendonly yes --appendfsync always --save "" \
            --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" >/dev/null \
            || _die "redis-server did not start; see $dir/redis.log" || return 1
        local i
        for i in $(seq 1 50); do
            timeout 3 redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null | grep -q PONG && break
            sleep 0.1
        done
    fi
    timeout 3 redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null | grep -q PONG || _die "Redis on port $port does not answer" || return 1
    export ORDO_TEST_REDIS_URL="redis://127.0.0.1:$port"
}

ordo_redis_cluster() {
    if [ -n "${ORDO_TEST_REDIS_CLUSTER_URL:-}" ]; then
        _say "Redis Cluster: using ORDO_TEST_REDIS_CLUSTER_URL as given"
        return 0
    fi
    command -v redis-server >/dev/null 2>&1 || _apt_install redis-server || return 1
    # Cluster bus ports are the data ports + 10000. Keep both below the kernel's
    # ephemeral range (32768-60999 on Linux), where an outgoing connection may already
    # hold the port: data ports 20001-20003, bus ports 30001-30003.
    local base=20000
    # A cluster already answering there (a run before this one left it, or another
    # checkout's run uses it) is used as it is and left running; one started here is
    # stopped by ordo_stop_started_servers.
    if timeout 3 redis-cli -h 127.0.0.1 -p $((base + 1)) ping 2>/dev/null | grep -q PONG; then
        _ordo_started_cluster=""
    else
        _ordo_started_cluster="$_ordo_servers/redis-cluster"
    fi
    "$_ordo_root/scripts/redis-cluster.sh" start "$_ordo_servers/redis-cluster" "$base" >&2 \
        || _die "could not start the test Redis Cluster (scripts/redis-cluster.sh)" || return 1
    export ORDO_TEST_REDIS_CLUSTER_URL="redis+cluster://127.0.0.1:$((base + 1)),127.0.0.1:$((base + 2)),127.0.0.1:$((base + 3))"
}

# Stops the servers this shell started for the tests (today: the Redis Cluster), so that
# a finished run leaves no private server behind.
ordo_stop_started_servers() {
    if [ -n "${_ordo_started_cluster:-}" ]; then
        "$_ordo_root/scripts/redis-cluster.sh" stop "$_ordo_started_cluster" >/dev/null 2>&1 || true
    fi
}

ordo_chromium() {
    # The browser tests drive Debian's Chromium through chromedriver.
    if [ -n "${ORDO_TEST_CHROMIUM:-}" ] && [ -n "${ORDO_TEST_CHROMEDRIVER:-}" ]; then
        _say "Chromium: using ORDO_TEST_CHROMIUM and ORDO_TEST_CHROMEDRIVER as given"
        return 0
    fi
    if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
        _apt_install chromium chromium-driver || return 1
    fi
    command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 \
        || _die "chromium or chromedriver still missing: apt-get install chromium chromium-driver" || return 1
    _say "Chromium: $(chromedriver --version 2>/dev/null | cut -d' ' -f1-2)"
}
