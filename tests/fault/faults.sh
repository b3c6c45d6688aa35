#!/usr/bin/env bash
# Fault tools for the containerized cluster (docker-compose.yml). Source it;
# every function takes a node number 1..3. Nothing needs tools inside the
# image: signals and docker act from the host, and iptables / tc run in the
# container's network namespace through nsenter.

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-ensemble}
ENDPOINTS=127.0.0.1:12181,127.0.0.1:12182,127.0.0.1:12183
# The release CLI where cargo (and deploy/cluster up) put it.
target_dir=${CARGO_TARGET_DIR:-$root/target}
case "$target_dir" in /*) ;; *) target_dir="$root/$target_dir" ;; esac
CLI="$target_dir/release/ensemble"

container() { docker ps -a --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME" --filter "label=com.docker.compose.service=ensemble$1" --format '{{.Names}}' | head -1; }
pid_of() { docker inspect -f '{{.State.Pid}}' "$(container "$1")"; }
ip_of() { docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$(container "$1")"; }
network() { docker inspect -f '{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}' "$(container "$1")"; }
in_ns() { local n=$1; shift; nsenter -t "$(pid_of "$n")" -n "$@"; }

# The node that leads now (empty if none answers as leader).
leader() { "$CLI" --endpoints "$ENDPOINTS" cluster status 2>/dev/null | awk '$4 == "leader" { print $2 }' | head -1; }
# Both fail (and print nothing) when no node answers as leader.
need_leader() { local l; l=$(leader); [ -n "$l" ] || { echo "no node answers as leader" >&2; return 1; }; echo "$l"; }
follower() { local l n; l=$(need_leader) || return 1; for n in 1 2 3; do [ "$n" != "$l" ] && { echo "$n"; return 0; }; done; return 1; }
wait_leader() {
  local deadline=$((SECONDS + ${1:-30})) l
  while [ $SECONDS -lt $deadline ]; do l=$(leader); [ -n "$l" ] && { echo "$l"; return 0; }; sleep 0.2; done
  return 1
}

# kill -9 the node's process; the restart policy brings the container back.
# Fails for a node that is not running: its pid reads 0, and `kill -9 0`
# would kill this script's own process group.
crash() {
  local p; p=$(pid_of "$1" 2>/dev/null)
  case "$p" in ''|0|*[!0-9]*) echo "crash: node '$1' is not running" >&2; return 1 ;; esac
  kill -9 "$p"
}
# kill -9 and keep it down until `start`.
stop_hard() { docker kill -s KILL "$(container "$1")" >/dev/null; }
start() { docker start "$(container "$1")" >/dev/null; }
pause() { docker pause "$(container "$1")" >/dev/null; }
unpause() { docker unpause "$(container "$1")" >/dev/null; }
restart() { docker restart -t 5 "$(container "$1")" >/dev/null; }

# Cut the node off its network (peers and clients alike), and back.
isolate() { docker network disconnect "$(network "$1")" "$(container "$1")"; }
heal() { docker network connect --alias "ensemble$1" "$2" "$(container "$1")"; }

# One-way cut: node $1 drops everything arriving from node $2.
cut_from() { in_ns "$1" iptables -A INPUT -s "$(ip_of "$2")" -j DROP; }
uncut() { in_ns "$1" iptables -F INPUT; }

# Latency and loss on the node's interface: tc netem where the kernel has
# it; otherwise (no sch_netem, as on some VM kernels) loss alone, with the
# iptables statistic match, in both directions. Says which it applied.
netem() {
  local n=$1 delay=${2:-50ms} loss=${3:-5}
  if in_ns "$n" tc qdisc replace dev eth0 root netem delay "$delay" loss "${loss}%" 2>/dev/null; then
    echo "node $n: netem delay $delay loss ${loss}%"
  else
    local p; p=$(awk -v l="$loss" 'BEGIN { printf "%.4f", l / 100 }')
    in_ns "$n" iptables -A INPUT -m statistic --mode random --probability "$p" -j DROP
    in_ns "$n" iptables -A OUTPUT -m statistic --mode random --probability "$p" -j DROP
    echo "node $n: no netem in this kernel; loss ${loss}% each way (iptables), no added latency"
  fi
}
unnetem() {
  in_ns "$1" tc qdisc del dev eth0 root 2>/dev/null || true
  in_ns "$1" iptables -F INPUT 2>/dev/null || true
  in_ns "$1" iptables -F OUTPUT 2>/dev/null || true
}

wait_healthy() {
  local deadline=$((SECONDS + ${1:-90})) n all
  while [ $SECONDS -lt $deadline ]; do
    all=yes
    for n in 1 2 3; do
      [ "$(docker inspect -f '{{.State.Health.Status}}' "$(container "$n")" 2>/dev/null)" = healthy ] || all=no
    done
    [ $all = yes ] && return 0
    sleep 0.5
  done
  return 1
}
