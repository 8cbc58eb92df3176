#!/usr/bin/env bash
# A multi-node Ray cluster on 127.0.0.1: a head and N worker nodes, each a separate
# `ray start --block` process with its own --temp-dir, for tests and demos of multi-node
# searches on one machine.
#
#   cluster/local_cluster.sh start     # head + $WEN_CLUSTER_WORKERS workers
#   wen search configs/smoke.yaml --address 127.0.0.1:$WEN_CLUSTER_PORT
#   cluster/local_cluster.sh stop-worker 1   # stops worker node 1 only (node-loss tests)
#   cluster/local_cluster.sh start-worker 1  # starts worker node 1 again (a new node)
#   cluster/local_cluster.sh stop      # stops exactly the processes `start` launched
#
# Token authentication (RAY_AUTH_MODE=token) is always on: every node and every `ray` call
# here runs with it, and drivers need the token to join. The token comes from RAY_AUTH_TOKEN,
# else the file RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token, which `start` creates (mode
# 0600) when it is missing; `wen search --address ...` reads the same file.
#
# Settings (environment): WEN_CLUSTER_DIR (state and temp dirs; keep it short, Ray's unix
# sockets live under it; default /tmp/wenc-$USER), WEN_CLUSTER_PORT (GCS port, 6379),
# WEN_CLUSTER_WORKERS (1), WEN_CLUSTER_HEAD_CPUS (1), WEN_CLUSTER_WORKER_CPUS (1),
# WEN_CLUSTER_OBJECT_STORE_MB (256 per node), RAY (the ray executable),
# WEN_CLUSTER_WORKER_PRIVATE_DIR (off by default; see below), WEN_CLUSTER_DASHBOARD_PORT
# (off by default: when set, the head runs Ray's dashboard and Jobs API on 127.0.0.1 at that
# port, so `ray job submit --address http://127.0.0.1:PORT` works).
#
# WEN_CLUSTER_WORKER_PRIVATE_DIR=/some/folder simulates worker nodes that do not share that
# folder with the head (a node-local path on a real cluster): each worker node is started in
# a mount namespace of its own (unshare -m, root only) with an empty private tmpfs mounted over
# the folder, so the worker's processes see an empty folder there while the head and drivers
# see the real one. The folder is created when missing; it must not hold WEN_CLUSTER_DIR (the
# nodes' temp dirs and sockets must stay shared) nor the auth token.
#
# Tests run it inside a private network namespace, so nothing is reachable from outside:
#   unshare -n bash -c 'ip link set lo up; cluster/local_cluster.sh start; ...; cluster/local_cluster.sh stop'
#
# `stop` never runs `ray stop` (that would stop every Ray process of the machine): it sends
# SIGTERM to the `ray start --block` processes it recorded (their reaper stops the node's
# processes), then SIGKILL to what is left of those process groups.
set -euo pipefail

DIR="${WEN_CLUSTER_DIR:-/tmp/wenc-${USER:-root}}"
PORT="${WEN_CLUSTER_PORT:-6379}"
WORKERS="${WEN_CLUSTER_WORKERS:-1}"
HEAD_CPUS="${WEN_CLUSTER_HEAD_CPUS:-1}"
WORKER_CPUS="${WEN_CLUSTER_WORKER_CPUS:-1}"
STORE_MB="${WEN_CLUSTER_OBJECT_STORE_MB:-256}"
RAY="${RAY:-ray}"
PRIVATE="${WEN_CLUSTER_WORKER_PRIVATE_DIR:-}"
DASHBOARD="${WEN_CLUSTER_DASHBOARD_PORT:-}"
PIDS="$DIR/pids"
export RAY_USAGE_STATS_ENABLED=0
export RAY_AUTH_MODE=token

ensure_token() {
    [[ -n "${RAY_AUTH_TOKEN:-}" ]] && return 0
    local path="${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}"
    if [[ ! -s "$path" ]]; then
        [[ -n "${RAY_AUTH_TOKEN_PATH:-}" ]] && {
            echo "local cluster: RAY_AUTH_TOKEN_PATH=$path is missing or empty" >&2; exit 1; }
        # umask 077: the file is 0600 from the moment it exists (Ray writes it with the umask)
        (umask 077; mkdir -p "$(dirname "$path")"; "$RAY" get-auth-token --generate >/dev/null 2>&1)
        [[ -s "$path" ]] || { echo "local cluster: could not create a token at $path" >&2; exit 1; }
    fi
    chmod 600 "$path"
}

check_private() {  # WEN_CLUSTER_WORKER_PRIVATE_DIR must not hide what every node shares
    [[ -n "$PRIVATE" ]] || return 0
    mkdir -p "$PRIVATE"
    local private dir token
    private="$(realpath "$PRIVATE")"
    dir="$(realpath "$DIR")"
    token="$(realpath -m "${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}")"
    if [[ "$private" == / || "$dir/" == "$private/"* || "$token" == "$private/"* ]]; then
        echo "local cluster: WEN_CLUSTER_WORKER_PRIVATE_DIR=$PRIVATE would hide $DIR or the" \
            "auth token from the worker nodes; pick a folder that holds neither" >&2
        exit 1
    fi
    unshare -m --propagation private true 2>/dev/null || {
        echo "local cluster: WEN_CLUSTER_WORKER_PRIVATE_DIR needs 'unshare -m' (root)" >&2; exit 1; }
}

launch() {  # name, ray start arguments...
    local name="$1"; shift
    mkdir -p "$DIR/$name"
    local node=("$RAY" start --block --node-ip-address=127.0.0.1 --temp-dir="$DIR/$name"
        --object-store-memory=$((STORE_MB * 1024 * 1024)) --disable-usage-stats "$@")
    if [[ -n "$PRIVATE" && "$name" == worker* ]]; then
        # a mount namespace of the node's own with an empty tmpfs over $PRIVATE; unshare (no
        # --fork) and sh exec in place, so $! below is still the `ray start` process
        node=(unshare -m --propagation private
            sh -c 'mount -t tmpfs -o mode=0755 wen-private "$0" && exec "$@"' "$PRIVATE" "${node[@]}")
    fi
    # setsid: each node in its own process group, so `stop` can reach stragglers by group
    setsid "${node[@]}" >"$DIR/$name.log" 2>&1 &
    echo "$! $name" >>"$PIDS"
}

wait_for_nodes() {  # count
    local want="$1"
    for _ in $(seq 1 120); do
        if "$RAY" status --address="127.0.0.1:$PORT" 2>/dev/null \
            | python3 -c "import sys; t=sys.stdin.read(); a=t.split('Active:')[1].split('Pending:')[0] if 'Active:' in t else ''; sys.exit(0 if a.count('node_') >= $want else 1)"; then
            return 0
        fi
        sleep 1
    done
    echo "local cluster: $want node(s) did not come up within 120 s; logs in $DIR/*.log" >&2
    return 1
}

start() {
    if [[ -s "$PIDS" ]]; then
        echo "local cluster: $PIDS exists; run '$0 stop' first" >&2
        exit 1
    fi
    mkdir -p "$DIR"
    ensure_token
    check_private
    local dashboard=(--include-dashboard=false)
    [[ -n "$DASHBOARD" ]] && dashboard=(--include-dashboard=true --dashboard-host=127.0.0.1
        --dashboard-port="$DASHBOARD")
    launch head --head --port="$PORT" --num-cpus="$HEAD_CPUS" --num-gpus=0 "${dashboard[@]}"
    wait_for_nodes 1
    for i in $(seq 1 "$WORKERS"); do
        launch "worker$i" --address="127.0.0.1:$PORT" --num-cpus="$WORKER_CPUS" --num-gpus=0
    done
    wait_for_nodes $((WORKERS + 1))
    echo "local cluster up: head 127.0.0.1:$PORT + $WORKERS worker(s); state in $DIR${PRIVATE:+; workers do not see $PRIVATE}"
}

stop() {
    [[ -f "$PIDS" ]] || { echo "local cluster: nothing to stop ($PIDS missing)"; return 0; }
    # workers first, then the head
    tac "$PIDS" | while read -r pid name; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for _ in $(seq 1 20); do
        alive=0
        while read -r pid name; do kill -0 "$pid" 2>/dev/null && alive=1; done <"$PIDS"
        [[ $alive == 0 ]] && break
        sleep 0.5
    done
    sleep 1
    while read -r pid name; do
        kill -KILL -- "-$pid" 2>/dev/null || true   # the node's process group (setsid above)
        # and the rest of the node's session: Ray workers run in process groups of their own
        members=$(ps -o pid= -s "$pid" 2>/dev/null || true)
        [[ -n "$members" ]] && kill -KILL $members 2>/dev/null || true
    done <"$PIDS"
    rm -f "$PIDS"
    echo "local cluster stopped"
}

stop_worker() {  # index: stop worker node N as a lost machine would vanish (SIGKILL)
    local want="worker$1" pid name
    [[ -f "$PIDS" ]] || { echo "local cluster: not running ($PIDS missing)" >&2; exit 1; }
    while read -r pid name; do
        if [[ "$name" == "$want" ]]; then
            # the node's whole session (setsid in launch): Ray's worker processes run in
            # process groups of their own, so the group of `ray start` alone misses them
            local members
            members=$(ps -o pid= -s "$pid" || true)
            [[ -n "$members" ]] && kill -KILL $members 2>/dev/null || true
            echo "local cluster: $want (pid $pid) stopped"
            return 0
        fi
    done <"$PIDS"
    echo "local cluster: no node named $want in $PIDS" >&2
    exit 1
}

start_worker() {  # index: start worker node N again after stop-worker (a replacement machine)
    local want="worker$1" pid name
    [[ -f "$PIDS" ]] || { echo "local cluster: not running ($PIDS missing)" >&2; exit 1; }
    while read -r pid name; do
        if [[ "$name" == "$want" ]] && kill -0 "$pid" 2>/dev/null; then
            echo "local cluster: $want (pid $pid) is still running; stop-worker $1 first" >&2
            exit 1
        fi
    done <"$PIDS"
    awk -v n="$want" '$2 != n' "$PIDS" >"$PIDS.new" && mv "$PIDS.new" "$PIDS"
    launch "$want" --address="127.0.0.1:$PORT" --num-cpus="$WORKER_CPUS" --num-gpus=0
    wait_for_nodes "$(wc -l <"$PIDS")"
    echo "local cluster: $want started again"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    stop-worker) [[ -n "${2:-}" ]] || { echo "usage: $0 stop-worker N" >&2; exit 2; }; stop_worker "$2" ;;
    start-worker) [[ -n "${2:-}" ]] || { echo "usage: $0 start-worker N" >&2; exit 2; }; start_worker "$2" ;;
    *) echo "usage: $0 start|stop|stop-worker N|start-worker N" >&2; exit 2 ;;
esac
