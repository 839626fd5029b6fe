#!/usr/bin/env bash
# A local Redis Cluster of three masters for ordo-redis tests and experiments.
#
#   scripts/redis-cluster.sh start DIR BASE_PORT   # masters on 127.0.0.1:BASE_PORT+1..+3
#   scripts/redis-cluster.sh stop DIR
#   scripts/redis-cluster.sh status DIR
#
# Each node runs daemonized with its config, data, AOF, log and pidfile under DIR/<port>/,
# with appendonly yes and appendfsync always (the settings ordo-redis asks for). `start` is
# idempotent: a healthy cluster already running from DIR is left alone. Then point the tests
# at it:
#
#   ORDO_TEST_REDIS_CLUSTER_URL=redis+cluster://127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003
set -euo pipefail

NODES=3
WAIT_SECONDS=30

die() {
    echo "redis-cluster.sh: $*" >&2
    exit 1
}

usage() {
    sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

need_tools() {
    local missing=()
    command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
    command -v redis-cli >/dev/null 2>&1 || missing+=(redis-cli)
    if ((${#missing[@]} > 0)); then
        die "${missing[*]} not found on PATH. Install Redis 7 first, e.g.: apt-get install redis-server (Debian/Ubuntu; it ships redis-cli too)"
    fi
}

# The ports a cluster in DIR uses, as recorded by `start`.
recorded_ports() {
    local dir=$1
    [[ -f "$dir/ports" ]] || die "no cluster recorded in $dir (missing $dir/ports)"
    cat "$dir/ports"
}

is_up() { # port
    [[ "$(timeout 3 redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null || true)" == "PONG" ]]
}

cluster_info() { # port field
    timeout 3 redis-cli -h 127.0.0.1 -p "$1" cluster info 2>/dev/null | tr -d '\r' | sed -n "s/^$2://p"
}

healthy() { # ports...
    local port
    (($# > 0)) || return 1 # no recorded node is no cluster
    for port in "$@"; do
        is_up "$port" || return 1
        [[ "$(cluster_info "$port" cluster_state)" == "ok" ]] || return 1
        [[ "$(cluster_info "$port" cluster_known_nodes)" == "$#" ]] || return 1
    done
}

start_node() { # dir port
    local dir=$1 port=$2
    local node_dir="$dir/$port"
    mkdir -p "$node_dir"
    cat >"$node_dir/redis.conf" <<EOF
# Written by scripts/redis-cluster.sh
bind 127.0.0.1
port $port
daemonize yes
pidfile $node_dir/redis.pid
logfile $node_dir/redis.log
dir $node_dir
cluster-enabled yes
cluster-config-file nodes.conf
cluster-node-timeout 5000
appendonly yes
appendfsync always
save ""
EOF
    redis-server "$node_dir/redis.conf" || die "redis-server on port $port did not start; see $node_dir/redis.log"
}

wait_until() { # description command...
    local what=$1
    shift
    local deadline=$((SECONDS + WAIT_SECONDS))
    until "$@"; do
        ((SECONDS < deadline)) || die "timed out after ${WAIT_SECONDS}s waiting for $what"
        sleep 0.2
    done
}

all_up() {
    local port
    for port in "$@"; do is_up "$port" || return 1; done
}

cmd_start() {
    local dir=$1 base=$2
    [[ "$base" =~ ^[0-9]+$ ]] || die "BASE_PORT must be a number, got '$base'"
    ((base + NODES <= 65535)) || die "BASE_PORT $base is too high"
    need_tools
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)

    local ports=() i
    for ((i = 1; i <= NODES; i++)); do ports+=($((base + i))); done
    if [[ -f "$dir/ports" && "$(cat "$dir/ports")" != "${ports[*]}" ]]; then
        die "$dir already holds a cluster on ports $(cat "$dir/ports"); stop it first or use another DIR"
    fi

    if healthy "${ports[@]}"; then
        echo "Redis Cluster already running and healthy on ports ${ports[*]} (data in $dir)"
        return 0
    fi

    echo "${ports[*]}" >"$dir/ports"
    local port
    for port in "${ports[@]}"; do
        if is_up "$port"; then
            # Ours (pidfile under DIR) or somebody else's?
            [[ -f "$dir/$port/redis.pid" ]] && kill -0 "$(cat "$dir/$port/redis.pid")" 2>/dev/null ||
                die "port $port is already in use by a process that is not this cluster's node; pick another BASE_PORT"
        else
            start_node "$dir" "$port"
        fi
    done
    wait_until "the nodes to answer PING" all_up "${ports[@]}"

    # Create the cluster unless every node already knows the others (a restart of an
    # existing cluster: nodes.conf brings the slot map back).
    local assigned
    assigned=$(cluster_info "${ports[0]}" cluster_slots_assigned)
    if [[ "$assigned" == "0" ]]; then
        local addrs=()
        for port in "${ports[@]}"; do addrs+=("127.0.0.1:$port"); done
        redis-cli --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes >"$dir/create.log" 2>&1 ||
            die "redis-cli --cluster create failed; see $dir/create.log"
    fi

    wait_until "cluster_state:ok on all nodes" healthy "${ports[@]}"
    local list
    list=$(printf '127.0.0.1:%s,' "${ports[@]}")
    echo "Redis Cluster up on ports ${ports[*]} (data in $dir)"
    echo "ORDO_TEST_REDIS_CLUSTER_URL=redis+cluster://${list%,}"
}

cmd_stop() {
    local dir=$1
    [[ -d "$dir" ]] || die "no such directory: $dir"
    local port pid stopped=0
    for port in $(recorded_ports "$dir"); do
        local pidfile="$dir/$port/redis.pid"
        [[ -f "$pidfile" ]] || continue
        pid=$(cat "$pidfile")
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid"
            local deadline=$((SECONDS + WAIT_SECONDS))
            while kill -0 "$pid" 2>/dev/null; do
                ((SECONDS < deadline)) || die "redis-server $pid (port $port) did not stop"
                sleep 0.1
            done
            stopped=$((stopped + 1))
        fi
        rm -f "$pidfile"
    done
    echo "stopped $stopped node(s) of the cluster in $dir (data kept; remove $dir to start afresh)"
}

cmd_status() {
    local dir=$1 port
    need_tools
    # (Checked here: a failure inside the command substitutions below would not exit.)
    [[ -f "$dir/ports" ]] || die "no cluster recorded in $dir (missing $dir/ports)"
    for port in $(recorded_ports "$dir"); do
        if is_up "$port"; then
            echo "127.0.0.1:$port up, cluster_state:$(cluster_info "$port" cluster_state)"
        else
            echo "127.0.0.1:$port down"
        fi
    done
    healthy $(recorded_ports "$dir")
}

case "${1:-}" in
start) (($# == 3)) || usage; cmd_start "$2" "$3" ;;
stop) (($# == 2)) || usage; cmd_stop "$2" ;;
status) (($# == 2)) || usage; cmd_status "$2" ;;
*) usage ;;
esac
