#!/usr/bin/env bash
# Ensemble, ZooKeeper and etcd side by side, in one sitting, on this machine.
#
#   tests/bench/compare.sh
#
# Installs what is missing from Debian's packages (zookeeper 3.8, etcd-server
# 3.4, protobuf-compiler for the etcd client, jq), starts three nodes of each
# system on loopback with default settings (fsync on, a data directory per
# node), builds ensemble-bench with the `compare` feature, and runs the same
# workloads against the three systems, interleaved (every run of a workload
# goes ensemble, zookeeper, etcd before the next run), so ratios come from
# one sitting. Prints a markdown table of medians with the ratios
# Ensemble/ZooKeeper and Ensemble/etcd. Stops everything it started on exit.
#
# Settings (environment):
#   BENCH_DURATION   seconds measured per run (10)
#   BENCH_WARMUP     seconds of load before measuring (2)
#   BENCH_RUNS       runs per workload and system; the table shows medians (3)
#   BENCH_WORKLOADS  space-separated WORKLOAD@CLIENTS (default: the list below);
#                    idle-sessions@N holds N sessions; failover, expiry,
#                    idle-sessions and watch run against Ensemble only
#   BENCH_SYSTEMS    any of: ensemble zookeeper etcd (all three)
#   BENCH_DIR        where data, logs and results go (.bench/compare-DATE in the repository)
#
# Ports: ZooKeeper clients 22181-22183 (quorum 22888-22890, election
# 23888-23890); etcd clients 32379-32381 (peers 32479-32481); Ensemble the
# local cluster's 2181-2183 (deploy/local-cluster.sh).
#
# ZooKeeper's defaults are kept except three settings a loopback benchmark
# needs: maxClientCnxns=0 (the default 60 connections per client address
# would refuse the benchmark's clients, which all come from 127.0.0.1),
# admin.enableServer=false (three AdminServers would fight for port 8080)
# and 4lw.commands.whitelist=srvr (the readiness check).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
duration=${BENCH_DURATION:-10}
warmup=${BENCH_WARMUP:-2}
runs=${BENCH_RUNS:-3}
workloads=${BENCH_WORKLOADS:-"create@16 create@64 create@256 set@64 set@256 get@64 get-linearizable@64 session@64 idle-sessions@10000 failover@16 expiry@1"}
systems=${BENCH_SYSTEMS:-"ensemble zookeeper etcd"}
work=${BENCH_DIR:-$root/.bench/compare-$(date +%Y%m%d-%H%M%S)}
target=${CARGO_TARGET_DIR:-$root/target}
bin=$target/release

die() { echo "compare: $*" >&2; exit 1; }
say() { echo "compare: $*" >&2; }
has() { case " $systems " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true

# ---- packages -------------------------------------------------------------
need=()
[ -x /usr/share/zookeeper/bin/zkServer.sh ] || need+=(zookeeper)
command -v etcd >/dev/null || need+=(etcd-server)
command -v protoc >/dev/null || need+=(protobuf-compiler)
command -v jq >/dev/null || need+=(jq)
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  command -v apt-get >/dev/null || die "apt-get not found: install ${need[*]} by hand"
  # Never let a package's service start on the ports we use.
  policy_added=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && policy_added=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  [ -n "$policy_added" ] && rm -f /usr/sbin/policy-rc.d
fi
export PROTOC=${PROTOC:-$(command -v protoc)}

# ---- build ----------------------------------------------------------------
say "building (release) ensemble-server, ensemble and ensemble-bench --features compare"
(cd "$root" && cargo build --release -p ensemble-server -p ensemble-cli -p ensemble-bench \
  --features ensemble-bench/compare >&2)
bench_bin=$bin/ensemble-bench

# ---- processes ------------------------------------------------------------
mkdir -p "$work"
results=$work/results.jsonl
: >"$results"
pids=()
export ENSEMBLE_BIN_DIR=$bin ENSEMBLE_CLUSTER_DIR=$work/ensemble
ensemble_started=

cleanup() {
  local code=$?
  trap - EXIT INT TERM
  if [ -n "$ensemble_started" ]; then "$root/deploy/local-cluster.sh" stop >/dev/null 2>&1 || true; fi
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  say "stopped everything started; data, logs and results in $work"
  exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in 2181 2182 2183 2881 2882 2883 7001 7002 7003 22181 22182 22183 22888 22889 22890 23888 23889 23890 \
  32379 32380 32381 32479 32480 32481; do
  port_busy "$p" && die "port $p is in use (another cluster running?); stop it first"
done

# A line of text from a TCP port: ask (for ZooKeeper's four-letter words and
# etcd's /health) without nc or curl.
ask() {
  local port=$1 request=$2
  timeout 3 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port && printf '%b' '$request' >&3 && cat <&3" 2>/dev/null || true
}

start_zookeeper() {
  local servers="" n
  for n in 1 2 3; do servers+="server.$n=127.0.0.1:$((22887 + n)):$((23887 + n))"$'\n'; done
  for n in 1 2 3; do
    local d=$work/zookeeper/node$n
    mkdir -p "$d/data"
    echo "$n" >"$d/data/myid"
    cat >"$d/zoo.cfg" <<EOF
tickTime=2000
initLimit=10
syncLimit=5
dataDir=$d/data
clientPort=$((22180 + n))
clientPortAddress=127.0.0.1
maxClientCnxns=0
admin.enableServer=false
4lw.commands.whitelist=srvr
$servers
EOF
    java -Dzookeeper.log.dir="$d" -Dzookeeper.root.logger=INFO,CONSOLE \
      -cp "/etc/zookeeper/conf:/usr/share/java/zookeeper.jar" \
      org.apache.zookeeper.server.quorum.QuorumPeerMain "$d/zoo.cfg" >"$d/zookeeper.log" 2>&1 &
    pids+=($!)
  done
  local deadline=$((SECONDS + 60)) modes
  while [ $SECONDS -lt $deadline ]; do
    modes=""
    for n in 1 2 3; do modes+=$(ask $((22180 + n)) 'srvr' | awk '/^Mode:/ {print $2}')" "; done
    case "$modes" in *leader*) [ "$(echo "$modes" | grep -o follower | wc -l)" -eq 2 ] && { say "zookeeper up: $modes"; return; } ;; esac
    sleep 0.5
  done
  die "ZooKeeper did not form a quorum within 60 s; see $work/zookeeper/node*/zookeeper.log"
}

start_etcd() {
  local cluster="" n
  for n in 1 2 3; do cluster+="e$n=http://127.0.0.1:$((32478 + n)),"; done
  for n in 1 2 3; do
    local d=$work/etcd/node$n
    mkdir -p "$d"
    etcd --name "e$n" --data-dir "$d/data" \
      --listen-client-urls "http://127.0.0.1:$((32378 + n))" --advertise-client-urls "http://127.0.0.1:$((32378 + n))" \
      --listen-peer-urls "http://127.0.0.1:$((32478 + n))" --initial-advertise-peer-urls "http://127.0.0.1:$((32478 + n))" \
      --initial-cluster "${cluster%,}" --initial-cluster-state new --initial-cluster-token ensemble-compare \
      >"$d/etcd.log" 2>&1 &
    pids+=($!)
  done
  local deadline=$((SECONDS + 60)) healthy
  while [ $SECONDS -lt $deadline ]; do
    healthy=0
    for n in 1 2 3; do
      ask $((32378 + n)) 'GET /health HTTP/1.0\r\n\r\n' | grep -q '"health":"true"' && healthy=$((healthy + 1))
    done
    [ $healthy -eq 3 ] && { say "etcd up"; return; }
    sleep 0.5
  done
  die "etcd did not become healthy within 60 s; see $work/etcd/node*/etcd.log"
}

start_ensemble() {
  ensemble_started=1
  "$root/deploy/local-cluster.sh" start >&2
}

endpoints_of() {
  case $1 in
    ensemble) echo 127.0.0.1:2181,127.0.0.1:2182,127.0.0.1:2183 ;;
    zookeeper) echo 127.0.0.1:22181,127.0.0.1:22182,127.0.0.1:22183 ;;
    etcd) echo 127.0.0.1:32379,127.0.0.1:32380,127.0.0.1:32381 ;;
  esac
}

ensemble_only() { case $1 in idle-sessions | failover | expiry | watch) return 0 ;; *) return 1 ;; esac; }

# One run: WORKLOAD@N against SYSTEM; appends its JSON line (with "label") to results.
run_one() {
  local spec=$1 system=$2 run=$3 workload=${1%@*} n=${1#*@}
  local args=(--backend "$system" --endpoints "$(endpoints_of "$system")" --duration "$duration" --warmup "$warmup" --json --quiet)
  case $workload in
    get-linearizable) args+=(--clients "$n" get --linearizable) ;;
    idle-sessions) args+=(idle-sessions "$n") ;;
    failover) args+=(--clients "$n" failover --kill-cmd "$root/deploy/local-cluster.sh kill {id}"
      --restart-cmd "$root/deploy/local-cluster.sh start-node {id}") ;;
    expiry) args+=(expiry --rounds 1) ;;
    *) args+=(--clients "$n" "$workload") ;;
  esac
  local log=$work/runs/$spec.$system.$run.txt line
  mkdir -p "$work/runs"
  if "$bench_bin" "${args[@]}" >"$log" 2>&1; then
    line=$(grep '^{' "$log" | tail -1)
    echo "$line" | jq -c --arg spec "$spec" --argjson run "$run" '. + {"label": $spec, "run": $run}' >>"$results"
    say "$(printf '%-22s %-9s run %s: %10.1f ops/s  p99 %s ms  errors %s' "$spec" "$system" "$run" \
      "$(echo "$line" | jq .ops_per_sec)" "$(echo "$line" | jq -r '.latency_ms.p99 // "-" | if type == "number" then (. * 10 | round / 10) else . end')" \
      "$(echo "$line" | jq .errors)")"
  else
    say "$spec against $system (run $run) FAILED; see $log"
    tail -3 "$log" >&2 || true
  fi
}

has ensemble && start_ensemble
has zookeeper && start_zookeeper
has etcd && start_etcd

for spec in $workloads; do
  case $spec in *@*) ;; *) die "workload '$spec' is not WORKLOAD@CLIENTS" ;; esac
  for run in $(seq "$runs"); do
    for system in $systems; do
      if ensemble_only "${spec%@*}" && [ "$system" != ensemble ]; then continue; fi
      run_one "$spec" "$system" "$run"
    done
  done
done

# ---- the table ------------------------------------------------------------
# Median (lower middle for an even count) and range of a column of numbers.
median() { sort -g | awk '{a[NR] = $1} END {if (NR) print a[int((NR + 1) / 2)]}'; }
range() { sort -g | awk 'NR == 1 {lo = $1} {hi = $1} END {if (NR && lo == hi) printf "%s", lo; else if (NR) printf "%s–%s", lo, hi}'; }
values() { jq -r --arg l "$1" --arg b "$2" "select(.label == \$l and .backend == \$b) | $3 // empty" "$results"; }
cell() {
  local ops p99
  ops=$(values "$1" "$2" .ops_per_sec | median)
  p99=$(values "$1" "$2" .latency_ms.p99 | median)
  [ -n "$ops" ] && printf '%.0f (p99 %.1f ms)' "$ops" "$p99" || printf -- '—'
}
ratio() {
  local a b
  a=$(values "$1" ensemble .ops_per_sec | median)
  b=$(values "$1" "$2" .ops_per_sec | median)
  if [ -n "$a" ] && [ -n "$b" ]; then awk -v a="$a" -v b="$b" 'BEGIN {if (b > 0) printf "%.2f×", a / b; else print "—"}'; else printf -- '—'; fi
}

{
  echo
  echo "Medians of $runs run(s) of ${duration} s (warmup ${warmup} s), $(nproc) cores, $(date -u +%Y-%m-%d); ops/s (p99 latency)."
  echo
  echo "| workload | ZooKeeper | etcd | Ensemble | Ensemble / ZK | Ensemble / etcd |"
  echo "|---|---|---|---|---|---|"
  for spec in $workloads; do
    w=${spec%@*} n=${spec#*@}
    case $w in
      idle-sessions)
        kib=$(values "$spec" ensemble .extra.kib_per_session_per_node | median)
        cpu=$(values "$spec" ensemble .extra.cpu_pct_total | median)
        exp=$(values "$spec" ensemble .extra.sessions_expired | range)
        echo "| $n idle sessions | | | ${kib:-—} KiB/session/node, ${cpu:-—} % CPU (3 nodes), expired ${exp:-—} | | |" ;;
      failover)
        first=$(values "$spec" ensemble .extra.kill_to_first_write_ms | range)
        gap=$(values "$spec" ensemble .extra.longest_gap_ms | range)
        exp=$(values "$spec" ensemble .extra.sessions_expired | range)
        echo "| leader kill → first write (@$n) | | | ${first:-—} ms (longest gap ${gap:-—} ms, sessions expired ${exp:-—}) | | |" ;;
      expiry)
        t=$(values "$spec" ensemble .extra.timeout_ms | median)
        ack=$(values "$spec" ensemble '.extra.rounds[].last_ack_to_gone_t' | range)
        kill=$(values "$spec" ensemble '.extra.rounds[].kill_to_gone_t' | range)
        echo "| holder killed → ephemeral gone everywhere (T = ${t:-?} ms) | | | ${ack:-—}·T after its last ack, ${kill:-—}·T after the kill | | |" ;;
      watch)
        echo "| watch, $n watchers: set → last event | | | $(cell "$spec" ensemble) | | |" ;;
      *)
        echo "| $w @$n | $(cell "$spec" zookeeper) | $(cell "$spec" etcd) | $(cell "$spec" ensemble) | $(ratio "$spec" zookeeper) | $(ratio "$spec" etcd) |" ;;
    esac
  done
} | tee "$work/table.md"
