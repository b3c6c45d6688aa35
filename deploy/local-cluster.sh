#!/usr/bin/env bash
# Runs a three-node Ensemble cluster on loopback from the release build.
#
#   deploy/local-cluster.sh start          build if needed, start 3 nodes, wait for a leader
#   deploy/local-cluster.sh stop           stop every node (SIGTERM, then SIGKILL)
#   deploy/local-cluster.sh status         one line per node: node N ADDRESS ROLE
#   deploy/local-cluster.sh kill N         kill -9 node N
#   deploy/local-cluster.sh start-node N   start node N again with its data
#
# Clients: 127.0.0.1:2181, :2182, :2183. Peers: 127.0.0.1:2881..2883.
# Metrics (GET /metrics): 127.0.0.1:7001..7003.
# Data and logs: $ENSEMBLE_CLUSTER_DIR (default: .cluster in the repository).
# ENSEMBLE_BIN_DIR picks another build (default: target/release).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dir=${ENSEMBLE_CLUSTER_DIR:-$root/.cluster}
bin=${ENSEMBLE_BIN_DIR:-$root/target/release}
nodes=(1 2 3)
peers="1=127.0.0.1:2881/127.0.0.1:2181,2=127.0.0.1:2882/127.0.0.1:2182,3=127.0.0.1:2883/127.0.0.1:2183"

client_addr() { echo "127.0.0.1:$((2180 + $1))"; }
metrics_addr() { echo "127.0.0.1:$((7000 + $1))"; }
pid_of() { [ -f "$dir/node$1.pid" ] && cat "$dir/node$1.pid" || true; }
alive() { local p; p=$(pid_of "$1"); [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }

die() { echo "local-cluster: $*" >&2; exit 1; }

ensure_built() {
  if [ -z "${ENSEMBLE_BIN_DIR:-}" ]; then
    (cd "$root" && cargo build --release --bin ensemble-server --bin ensemble >&2)
  fi
  [ -x "$bin/ensemble-server" ] || die "no server binary at $bin/ensemble-server"
  [ -x "$bin/ensemble" ] || die "no CLI binary at $bin/ensemble"
}

start_node() {
  local n=$1
  case "$n" in 1|2|3) ;; *) die "node must be 1, 2 or 3, not '$n'";; esac
  if alive "$n"; then echo "node $n already running (pid $(pid_of "$n"))"; return; fi
  mkdir -p "$dir/node$n"
  "$bin/ensemble-server" --id "$n" --peers "$peers" --data-dir "$dir/node$n" \
    --metrics-addr "$(metrics_addr "$n")" >>"$dir/node$n.log" 2>&1 &
  echo $! >"$dir/node$n.pid"
  sleep 0.3
  if ! alive "$n"; then
    tail -3 "$dir/node$n.log" >&2
    die "node $n exited at once (is its port taken by another cluster?)"
  fi
  echo "node $n started (pid $(pid_of "$n"), client $(client_addr "$n"), metrics http://$(metrics_addr "$n")/metrics, log $dir/node$n.log)"
}

role_of() {
  local n=$1 line
  if ! alive "$n"; then echo down; return; fi
  line=$("$bin/ensemble" --endpoints "$(client_addr "$n")" cluster status 2>/dev/null | head -1 || true)
  case "$line" in
    "node "*" down"|"") echo down ;;
    *) echo "$line" | awk '{print $4}' ;;
  esac
}

wait_for_leader() {
  local deadline=$((SECONDS + 30))
  while [ $SECONDS -lt $deadline ]; do
    for n in "${nodes[@]}"; do
      if [ "$(role_of "$n")" = leader ]; then echo "leader: node $n ($(client_addr "$n"))"; return 0; fi
    done
    sleep 0.2
  done
  die "no leader elected within 30 s; see $dir/node*.log"
}

cmd=${1:-}
case "$cmd" in
  start)
    ensure_built
    mkdir -p "$dir"
    for n in "${nodes[@]}"; do start_node "$n"; done
    wait_for_leader
    ;;
  start-node)
    [ $# -eq 2 ] || die "usage: $0 start-node N"
    [ -x "$bin/ensemble-server" ] || ensure_built
    start_node "$2"
    ;;
  kill)
    [ $# -eq 2 ] || die "usage: $0 kill N"
    alive "$2" || die "node $2 is not running"
    kill -9 "$(pid_of "$2")"
    echo "node $2 killed"
    ;;
  stop)
    for n in "${nodes[@]}"; do
      if alive "$n"; then kill "$(pid_of "$n")"; fi
    done
    for n in "${nodes[@]}"; do
      for _ in $(seq 50); do alive "$n" || break; sleep 0.1; done
      if alive "$n"; then kill -9 "$(pid_of "$n")"; fi
      rm -f "$dir/node$n.pid"
    done
    echo "stopped"
    ;;
  status)
    [ -x "$bin/ensemble" ] || die "no CLI binary at $bin/ensemble; run start first"
    for n in "${nodes[@]}"; do echo "node $n $(client_addr "$n") $(role_of "$n")"; done
    ;;
  *)
    die "usage: $0 start|stop|status|kill N|start-node N"
    ;;
esac
