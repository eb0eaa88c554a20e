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
echo "scripts: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
