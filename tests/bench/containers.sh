#!/usr/bin/env bash
# Every ensemble-bench workload against the docker-compose cluster
# (deploy/cluster), one after another; stops at the first that fails.
#
#   tests/bench/containers.sh          against a running cluster (deploy/cluster up)
#   tests/bench/containers.sh --up     bring it up first, and down (with its volumes) at the end
#
# BENCH_DURATION (s, default 5), BENCH_CLIENTS (default 64), BENCH_IDLE
# (idle sessions, default 10000). Output: the human tables on stdout, the
# JSON lines in $BENCH_OUT (default .bench/containers.jsonl).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
D=${BENCH_DURATION:-5}
C=${BENCH_CLIENTS:-64}
IDLE=${BENCH_IDLE:-10000}
out=${BENCH_OUT:-$root/.bench/containers.jsonl}
E=127.0.0.1:12181,127.0.0.1:12182,127.0.0.1:12183
B=$root/target/release/ensemble-bench

cargo build -q --release -p ensemble-bench
if [ "${1:-}" = --up ]; then
  deploy/cluster up >/dev/null
  trap 'deploy/cluster down --volumes >/dev/null 2>&1' EXIT
fi
mkdir -p "$(dirname "$out")"
: >"$out"

run() {
  echo "== ensemble-bench $*"
  local json
  json=$(mktemp)
  "$B" --endpoints "$E" --duration "$D" --warmup 1 --quiet --json "$@" | tee "$json"
  grep '^{' "$json" >>"$out" || { echo "no JSON line from: $*" >&2; exit 1; }
  rm -f "$json"
}

run -c "$C" create
run -c "$C" set
run -c "$C" get
run -c "$C" get --linearizable
run -c "$C" mixed
run -c "$C" session
run -c "$C" watch
run idle-sessions "$IDLE" --server-pids "$(deploy/cluster pids)"
run -c 16 failover --kill-cmd "$root/deploy/cluster kill {id}" --restart-cmd "$root/deploy/cluster start {id}"
run expiry --rounds 2
echo "containers: every workload ran against the docker-compose cluster ($(wc -l <"$out") runs; $out)"
