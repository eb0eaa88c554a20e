#!/usr/bin/env bash
# Tests scripts/start.sh and scripts/stop.sh from the outside: start on a
# free port, refuse a second start, answer /healthz, stop gracefully.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export WSCHAT_RUN_DIR="$(mktemp -d)"
passed=0
failed=0
check() { # check NAME COMMAND...
  local name="$1"; shift
  if "$@"; then passed=$((passed + 1)); echo "ok - $name"; else failed=$((failed + 1)); echo "not ok - $name"; fi
}
cleanup() {
  if [ -f "$WSCHAT_RUN_DIR/wschat.pid" ]; then kill -KILL "$(cat "$WSCHAT_RUN_DIR/wschat.pid")" 2>/dev/null || true; fi
  rm -rf "$WSCHAT_RUN_DIR"
}
trap cleanup EXIT

out="$("$root/scripts/start.sh" 0 --host 127.0.0.1 2>&1)"
echo "$out"
check "start.sh prints the URL" grep -q 'open http://127.0.0.1:[0-9]*/' <<<"$out"
pid="$(cat "$WSCHAT_RUN_DIR/wschat.pid" 2>/dev/null || echo none)"
check "start.sh writes a pid file of a live process" kill -0 "$pid"
url="$(grep -o 'http://127.0.0.1:[0-9]*/' <<<"$out" | head -n 1)"
check "/healthz answers ok" bash -c "[ \"\$(curl -fsS --max-time 2 '${url}healthz')\" = ok ]"
second="$("$root/scripts/start.sh" 0 --host 127.0.0.1 2>&1)"; status=$?
check "a second start is refused" [ "$status" -ne 0 ]
check "the refusal says it is already running" grep -q 'already running' <<<"$second"
check "the first server still runs" kill -0 "$pid"
check "stop.sh succeeds" "$root/scripts/stop.sh"
check "the process is gone" bash -c "! kill -0 $pid 2>/dev/null"
check "the pid file is removed" [ ! -f "$WSCHAT_RUN_DIR/wschat.pid" ]
check "the log shows a graceful shutdown" grep -q 'shutdown complete' "$WSCHAT_RUN_DIR/wschat.log"
bad="$("$root/scripts/start.sh" 0 --no-such-flag 2>&1)"; status=$?
check "start.sh reports a server that cannot start" [ "$status" -ne 0 ]
check "and shows why" grep -q 'no-such-flag' <<<"$bad"

# scripts/cluster.sh: Redis plus two nodes sharing one free port, then stop.
export WSCHAT_CLUSTER_DIR="$WSCHAT_RUN_DIR/cluster"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
out="$("$root/scripts/cluster.sh" start -n 2 -p "$port" -- --host 127.0.0.1 2>&1)"
echo "$out"
check "cluster.sh starts two nodes" grep -q 'cluster running: 2 node' <<<"$out"
status_out="$("$root/scripts/cluster.sh" status)"
check "cluster.sh status lists redis and both nodes" [ "$(grep -c ': running' <<<"$status_out")" -eq 3 ]
check "the shared port answers /healthz" bash -c "[ \"\$(curl -fsS --max-time 2 http://127.0.0.1:$port/healthz)\" = ok ]"
# Nodes count each other at their heartbeat (every 2.5 s by default).
check "a node sees both nodes alive" bash -c "for i in \$(seq 1 50); do curl -fsS --max-time 2 http://127.0.0.1:$port/metrics | grep -q '^wschat_cluster_nodes 2' && exit 0; sleep 0.1; done; exit 1"
pids="$(cat "$WSCHAT_CLUSTER_DIR"/*.pid)"
check "cluster.sh stop succeeds" "$root/scripts/cluster.sh" stop
check "no pid file is left" bash -c "! ls '$WSCHAT_CLUSTER_DIR'/*.pid >/dev/null 2>&1"
check "every node logged a graceful shutdown" [ "$(cat "$WSCHAT_CLUSTER_DIR"/node-*.log | grep -c 'shutdown complete')" -eq 2 ]
for pid in $pids; do kill -KILL "$pid" 2>/dev/null || true; done

echo "scripts: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
