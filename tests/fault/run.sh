#!/usr/bin/env bash
# The fault suite: each scenario starts a fresh three-node cluster in
# containers, runs the workload (ensemble-fault) while it injects faults,
# then checks the history. One line per scenario:
#   PASS name ops=... unavailable_max_ms=... expiry_delay_max_ms=... T_ms=...
#   FAIL name why
# Usage: tests/fault/run.sh [--list] [--secure] [--retry-failed] [SCENARIO...]   (no scenario: all)
# --retry-failed runs a failed scenario once more and reports FLAKY if the
# second run passes (CI uses it; a scenario failing twice fails the suite).
# A scenario listed in known_failing that fails twice is reported XFAIL and
# does not fail the suite: it names an open bug (see docs/faults.md).
# --secure (or FAULT_SECURE=1) runs the cluster in secure mode (deploy/cluster
# up --secure: TLS for clients and peers, authentication required); the CLI,
# the workload and its holders then connect with TLS as user admin (the
# environment of `deploy/cluster env`).
# Reports and histories: tests/fault/out/ (or $FAULT_OUT).
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=faults.sh
. "$here/faults.sh"

scenarios=(leader-crash follower-crash leader-pause leader-isolated client-node-isolated one-way-cut full-restart rolling-restart loss-latency repeated-leader-kills)
# Scenarios that name an open bug (see docs/faults.md); none at present.
known_failing=()
DURATION=${FAULT_DURATION:-30}
out=${FAULT_OUT:-$here/out}

retry=no
secure=${FAULT_SECURE:-0}
while [ $# -gt 0 ]; do
  case "$1" in
    --list) printf '%s\n' "${scenarios[@]}"; exit 0 ;;
    --retry-failed) retry=yes; shift ;;
    --secure) secure=1; shift ;;
    --) shift; break ;;
    -*) echo "unknown option '$1'; usage: tests/fault/run.sh [--list] [--secure] [--retry-failed] [SCENARIO...]" >&2; exit 2 ;;
    *) break ;;
  esac
done
selected=("$@")
[ ${#selected[@]} -eq 0 ] && selected=("${scenarios[@]}")
for s in "${selected[@]}"; do
  printf '%s\n' "${scenarios[@]}" | grep -qx "$s" || { echo "unknown scenario '$s'; see --list" >&2; exit 2; }
done

mkdir -p "$out"
(cd "$root" && cargo build -q --release --bin ensemble-server --bin ensemble \
  && cargo build -q -p ensemble-tests --bin ensemble-fault --bin ensemble-test-holder) || { echo "build failed" >&2; exit 2; }
"$root/deploy/cluster" down --volumes >/dev/null 2>&1 || true
if [ "$secure" = 1 ]; then
  mode=" (secure: TLS + auth)"
  ENSEMBLE_SECURE=1 "$root/deploy/cluster" up --secure >/dev/null || { echo "FAIL setup the cluster did not come up (secure)"; exit 1; }
else
  mode=""
  ENSEMBLE_SECURE=0 "$root/deploy/cluster" up >/dev/null || { echo "FAIL setup the cluster did not come up"; exit 1; }
fi
# The CLI (faults.sh), the workload and its holders follow the cluster's mode:
# ENSEMBLE_TLS_CA, ENSEMBLE_USER and ENSEMBLE_PASSWORD (read from its file) in
# secure mode, none of them in plaintext.
eval "$("$root/deploy/cluster" env)"
FAULT="$root/target/debug/ensemble-fault"

# deploy/cluster knows the compose files of the mode it was brought up in.
fresh_cluster() {
  "$root/deploy/cluster" down --volumes >/dev/null 2>&1
  "$root/deploy/cluster" compose up -d >/dev/null 2>&1
  wait_healthy 90 && wait_leader 30 >/dev/null
}

# The faults of each scenario, run while the workload runs. Each step is
# logged with its UTC time, to line up with the nodes' and clients' logs.
fault() {
  local s=$1 l f net
  sleep 5
  set -x
  case "$s" in
    leader-crash) crash "$(leader)" ;;
    follower-crash) crash "$(follower)" ;;
    leader-pause) l=$(leader); pause "$l"; sleep 5; unpause "$l" ;;
    leader-isolated) l=$(leader); net=$(network "$l"); isolate "$l"; sleep 8; heal "$l" "$net" ;;
    client-node-isolated) f=$(follower); net=$(network "$f"); isolate "$f"; sleep 8; heal "$f" "$net" ;;
    one-way-cut) l=$(leader); f=$(follower); cut_from "$f" "$l"; sleep 8; uncut "$f" ;;
    full-restart) for n in 1 2 3; do crash "$n"; done ;;
    rolling-restart) for n in 1 2 3; do restart "$n"; wait_healthy 60; done ;;
    loss-latency) for n in 1 2 3; do netem "$n" 50ms 5; done; sleep $((DURATION - 10)); for n in 1 2 3; do unnetem "$n"; done ;;
    repeated-leader-kills)
      local end=$((SECONDS + 30))
      while [ $SECONDS -lt $end ]; do l=$(wait_leader 10) && crash "$l"; sleep 2; done ;;
  esac
  set +x
}

# Runs one scenario; prints its line; returns non-zero if it failed.
run_one() {
  local s=$1 duration=$DURATION slack=5000 rc summary
  if ! fresh_cluster; then echo "FAIL $s the cluster did not become healthy"; return 1; fi
  if [ "$s" = repeated-leader-kills ]; then
    # The workload runs on past the storm to see the cluster settle. Dead
    # sessions must still go during the storm: each leader lives about 2 s,
    # long enough to expire what is due, so the bound is only a little
    # wider than the other scenarios' (a leader that renewed deadlines on
    # restart kept them alive until the storm ended, 20 s and more).
    duration=$((DURATION + 15)); slack=8000
  fi
  rm -rf "$out/$s-holders"
  ENSEMBLE_HOLDER_LOG_DIR="$out/$s-holders" "$FAULT" --duration-s "$duration" --expiry-slack-ms "$slack" \
    --history "$out/$s.jsonl" >"$out/$s.out" 2>"$out/$s.err" &
  local wl=$!
  PS4='+ $(date -u +%H:%M:%S.%3N) ' fault "$s" >>"$out/$s.err" 2>&1
  wait "$wl"; rc=$?
  summary=$(tail -1 "$out/$s.out")
  if [ "$s" = loss-latency ] && grep -q 'no netem' "$out/$s.err"; then summary="$summary (loss only: no netem in this kernel)"; fi
  for n in 1 2 3; do unnetem "$n" >/dev/null 2>&1; done
  for n in 1 2 3; do docker logs "$(container "$n")" >"$out/$s.node$n.log" 2>&1; done
  if [ $rc -eq 0 ]; then
    echo "PASS $s $summary"
    return 0
  fi
  echo "FAIL $s $summary; $(grep -m3 '^violation' "$out/$s.err" | tr '\n' ' ')"
  return 1
}

failed=0; npass=0; nfail=0; nxfail=0
for s in "${selected[@]}"; do
  if run_one "$s"; then
    npass=$((npass + 1))
  elif [ $retry = yes ] && { line=$(run_one "$s" | sed 's/^PASS /FLAKY (passed on retry) /'); echo "$line"; [[ $line == FLAKY* ]]; }; then
    npass=$((npass + 1))
  elif printf '%s\n' "${known_failing[@]}" | grep -qx "$s"; then
    echo "XFAIL $s: a known open bug, see docs/faults.md"
    nxfail=$((nxfail + 1))
  else
    failed=1; nfail=$((nfail + 1))
  fi
done
echo "fault suite$mode: $npass passed, $nfail failed, $nxfail known failing"
"$root/deploy/cluster" down --volumes >/dev/null 2>&1
exit $failed
