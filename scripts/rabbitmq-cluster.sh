#!/usr/bin/env bash
# A throwaway 3-node RabbitMQ cluster on this machine, for the cluster tests
# and for trying the worker against a cluster by hand. It is separate from
# the machine's own broker (rabbit@localhost on 5672), which it never
# touches: its own node names, ports, data directories, plugins file and
# Erlang cookie, all under one directory.
#
#   scripts/rabbitmq-cluster.sh start          start the 3 nodes and cluster them
#   scripts/rabbitmq-cluster.sh stop           stop them and delete their data
#   scripts/rabbitmq-cluster.sh status         the cluster's status, per node up or down
#   scripts/rabbitmq-cluster.sh urls           the AMQP URLs, comma-separated (for AMQP_URL)
#   scripts/rabbitmq-cluster.sh kill N         kill -9 node N's Erlang VM (N = 1, 2, 3)
#   scripts/rabbitmq-cluster.sh restart N      start node N again; it rejoins the cluster
#   scripts/rabbitmq-cluster.sh ctl N ARGS...  rabbitmqctl against node N
#   scripts/rabbitmq-cluster.sh queues N ARGS... rabbitmq-queues against node N
#
# Node N is prov-cN@localhost, AMQP on 127.0.0.1:568N (guest/guest),
# Erlang distribution on 2568N. PROV_CLUSTER_DIR (default
# /tmp/provisioner-rabbitmq-cluster) holds everything. Exit status 3 from
# `start` means RabbitMQ is not installed.
set -euo pipefail

DIR="${PROV_CLUSTER_DIR:-/tmp/provisioner-rabbitmq-cluster}"
NODES=(1 2 3)
# The package's own scripts: /usr/sbin's wrappers switch to the rabbitmq
# user and its home, whose cookie is the machine broker's.
RMQ_BIN="${RABBITMQ_BIN_DIR:-/usr/lib/rabbitmq/bin}"
START_TIMEOUT_S="${PROV_CLUSTER_START_TIMEOUT_S:-120}"

node_name() { echo "prov-c$1@localhost"; }
amqp_port() { echo $((5680 + $1)); }
dist_port() { echo $((25680 + $1)); }
node_dir() { echo "$DIR/node$1"; }
pid_file() { echo "$(node_dir "$1")/beam.pid"; }

# The environment every server and CLI call of node N runs with.
node_env() {
    local n="$1" d
    d="$(node_dir "$n")"
    echo HOME="$DIR/home" \
        RABBITMQ_CONF_ENV_FILE="$DIR/rabbitmq-env.conf" \
        RABBITMQ_NODENAME="$(node_name "$n")" \
        RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
        RABBITMQ_NODE_PORT="$(amqp_port "$n")" \
        RABBITMQ_DIST_PORT="$(dist_port "$n")" \
        RABBITMQ_MNESIA_BASE="$d/mnesia" \
        RABBITMQ_LOG_BASE="$d/log" \
        RABBITMQ_CONFIG_FILE="$d/rabbitmq.conf" \
        RABBITMQ_ADVANCED_CONFIG_FILE="$d/advanced.config" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$DIR/enabled_plugins" \
        RABBITMQ_PID_FILE="$(pid_file "$n")"
}

with_node_env() {
    local n="$1"
    shift
    # shellcheck disable=SC2046
    env $(node_env "$n") "$@"
}

ctl() {
    local n="$1"
    shift
    with_node_env "$n" "$RMQ_BIN/rabbitmqctl" -n "$(node_name "$n")" "$@"
}

queues() {
    local n="$1"
    shift
    with_node_env "$n" "$RMQ_BIN/rabbitmq-queues" -n "$(node_name "$n")" "$@"
}

beam_pid() {
    local f
    f="$(pid_file "$1")"
    [ -s "$f" ] && cat "$f"
}

node_running() {
    local pid
    pid="$(beam_pid "$1" 2>/dev/null)" || return 1
    kill -0 "$pid" 2>/dev/null
}

prepare() {
    mkdir -p "$DIR/home"
    if [ ! -s "$DIR/home/.erlang.cookie" ]; then
        # A cookie of its own: the machine broker's nodes cannot talk to these.
        head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DIR/home/.erlang.cookie"
        chmod 400 "$DIR/home/.erlang.cookie"
    fi
    # Nothing from the machine's /etc/rabbitmq/rabbitmq-env.conf.
    cat >"$DIR/rabbitmq-env.conf" <<'EOF'
ERL_EPMD_ADDRESS=127.0.0.1
EOF
    # The consistent-hash exchange for partitions; no management or
    # Prometheus listeners, so no ports beyond AMQP and distribution.
    echo '[rabbitmq_consistent_hash_exchange].' >"$DIR/enabled_plugins"
    for n in "${NODES[@]}"; do
        local d
        d="$(node_dir "$n")"
        mkdir -p "$d/mnesia" "$d/log"
        cat >"$d/rabbitmq.conf" <<EOF
listeners.tcp.default = 127.0.0.1:$(amqp_port "$n")
loopback_users.guest = true
log.file.level = info
log.console = false
# A node killed and restarted rejoins; the tests run on a small machine.
disk_free_limit.absolute = 50MB
EOF
        # Erlang distribution on loopback only, like AMQP.
        echo '[{kernel, [{inet_dist_use_interface, {127,0,0,1}}]}].' >"$d/advanced.config"
    done
}

start_node() {
    local n="$1"
    if node_running "$n"; then
        return 0
    fi
    rm -f "$(pid_file "$n")"
    # Its own session: the node outlives the shell (or test) that started it.
    # shellcheck disable=SC2046
    setsid env $(node_env "$n") \
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="+S 2:2 +sbwt none +sbwtdcpu none +sbwtdio none" \
        "$RMQ_BIN/rabbitmq-server" >"$(node_dir "$n")/log/stdout.log" 2>&1 </dev/null &
}

await_node() {
    local n="$1"
    local deadline=$((SECONDS + START_TIMEOUT_S))
    # Until the node registers with epmd the CLI cannot reach it at all.
    until ctl "$n" -q await_startup --timeout 10 >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            break
        fi
        sleep 1
    done
    if [ "$SECONDS" -ge "$deadline" ]; then
        echo "node $(node_name "$n") did not start within ${START_TIMEOUT_S} s; see $(node_dir "$n")/log" >&2
        tail -n 20 "$(node_dir "$n")/log/stdout.log" >&2 || true
        return 1
    fi
    # The pid file may trail the boot by a moment.
    for _ in $(seq 1 50); do
        [ -s "$(pid_file "$n")" ] && return 0
        sleep 0.1
    done
    echo "node $(node_name "$n") wrote no pid file" >&2
    return 1
}

clustered() {
    local running
    running="$(ctl 1 -q cluster_status --formatter json 2>/dev/null |
        grep -o '"running_nodes":\[[^]]*\]')" || return 1
    for n in "${NODES[@]}"; do
        case "$running" in *"$(node_name "$n")"*) ;; *) return 1 ;; esac
    done
}

cmd_start() {
    if [ ! -x "$RMQ_BIN/rabbitmq-server" ]; then
        echo "RabbitMQ is not installed ($RMQ_BIN/rabbitmq-server missing)" >&2
        exit 3
    fi
    for n in "${NODES[@]}"; do
        local port
        port="$(amqp_port "$n")"
        if ! node_running "$n" && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "port $port is taken by something else; set PROV_CLUSTER_DIR or free it" >&2
            exit 1
        fi
    done
    prepare
    for n in "${NODES[@]}"; do start_node "$n"; done
    for n in "${NODES[@]}"; do await_node "$n"; done
    if ! clustered; then
        for n in 2 3; do
            ctl "$n" -q stop_app >/dev/null
            ctl "$n" -q join_cluster "$(node_name 1)" >>"$DIR/join.log" 2>&1
            ctl "$n" -q start_app >/dev/null
        done
    fi
    if ! clustered; then
        echo "the nodes did not form a cluster" >&2
        ctl 1 cluster_status >&2 || true
        exit 1
    fi
    echo "cluster up: $(cmd_urls)"
}

cmd_stop() {
    for n in "${NODES[@]}"; do
        if node_running "$n"; then
            ctl "$n" -q stop >/dev/null 2>&1 || true
        fi
    done
    for n in "${NODES[@]}"; do
        local pid
        if pid="$(beam_pid "$n" 2>/dev/null)"; then
            for _ in $(seq 1 50); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.2
            done
            kill -9 "$pid" 2>/dev/null || true
        fi
    done
    # Only what `start` made, whatever PROV_CLUSTER_DIR points at.
    for n in "${NODES[@]}"; do rm -rf "$(node_dir "$n")"; done
    rm -rf "$DIR/home"
    rm -f "$DIR/enabled_plugins" "$DIR/rabbitmq-env.conf" "$DIR/join.log"
    rmdir "$DIR" 2>/dev/null || true
    echo "cluster stopped"
}

cmd_status() {
    for n in "${NODES[@]}"; do
        if node_running "$n"; then
            echo "$(node_name "$n"): up (pid $(beam_pid "$n"), amqp 127.0.0.1:$(amqp_port "$n"))"
        else
            echo "$(node_name "$n"): down"
        fi
    done
    for n in "${NODES[@]}"; do
        if node_running "$n"; then
            ctl "$n" cluster_status
            return 0
        fi
    done
}

cmd_urls() {
    local urls=()
    for n in "${NODES[@]}"; do
        urls+=("amqp://guest:guest@127.0.0.1:$(amqp_port "$n")/%2f")
    done
    (
        IFS=,
        echo "${urls[*]}"
    )
}

node_arg() {
    case "${1:-}" in
    1 | 2 | 3) echo "$1" ;;
    *)
        echo "expected a node number 1, 2 or 3, got \`${1:-}\`" >&2
        exit 2
        ;;
    esac
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
urls) cmd_urls ;;
kill)
    n="$(node_arg "${2:-}")"
    pid="$(beam_pid "$n")" || {
        echo "node $n has no pid file" >&2
        exit 1
    }
    kill -9 "$pid"
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "killed $(node_name "$n") (pid $pid)"
    ;;
restart)
    n="$(node_arg "${2:-}")"
    start_node "$n"
    await_node "$n"
    echo "restarted $(node_name "$n")"
    ;;
ctl)
    n="$(node_arg "${2:-}")"
    shift 2
    ctl "$n" "$@"
    ;;
queues)
    n="$(node_arg "${2:-}")"
    shift 2
    queues "$n" "$@"
    ;;
*)
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
