#!/usr/bin/env bash
# A multi-node Ray cluster on 127.0.0.1: a head and N worker nodes, each a separate
# `ray start --block` process with its own --temp-dir, for tests and demos of multi-node
# searches on one machine.
#
#   cluster/local_cluster.sh start     # head + $WEN_CLUSTER_WORKERS workers
#   wen search configs/smoke.yaml --address 127.0.0.1:$WEN_CLUSTER_PORT
#   cluster/local_cluster.sh stop      # stops exactly the processes `start` launched
#
# Settings (environment): WEN_CLUSTER_DIR (state and temp dirs; keep it short, Ray's unix
# sockets live under it; default /tmp/wenc-$USER), WEN_CLUSTER_PORT (GCS port, 6379),
# WEN_CLUSTER_WORKERS (1), WEN_CLUSTER_HEAD_CPUS (1), WEN_CLUSTER_WORKER_CPUS (1),
# WEN_CLUSTER_OBJECT_STORE_MB (256 per node), RAY (the ray executable).
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
PIDS="$DIR/pids"
export RAY_USAGE_STATS_ENABLED=0

launch() {  # name, ray start arguments...
    local name="$1"; shift
    mkdir -p "$DIR/$name"
    # setsid: each node in its own process group, so `stop` can reach stragglers by group
    setsid "$RAY" start --block --node-ip-address=127.0.0.1 --temp-dir="$DIR/$name" \
        --object-store-memory=$((STORE_MB * 1024 * 1024)) --disable-usage-stats "$@" \
        >"$DIR/$name.log" 2>&1 &
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
    launch head --head --port="$PORT" --num-cpus="$HEAD_CPUS" --num-gpus=0 \
        --include-dashboard=false
    wait_for_nodes 1
    for i in $(seq 1 "$WORKERS"); do
        launch "worker$i" --address="127.0.0.1:$PORT" --num-cpus="$WORKER_CPUS" --num-gpus=0
    done
    wait_for_nodes $((WORKERS + 1))
    echo "local cluster up: head 127.0.0.1:$PORT + $WORKERS worker(s); state in $DIR"
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
    done <"$PIDS"
    rm -f "$PIDS"
    echo "local cluster stopped"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
