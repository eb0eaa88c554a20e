#!/usr/bin/env bash
# Tests scripts/start.sh, scripts/stop.sh and scripts/announce.sh from the
# outside: start on a free port, refuse a second start, answer /healthz,
# stop gracefully; publish an announcement through the admin API.
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

# scripts/announce.sh against a real server with the admin API: the text
# arrives exactly (read back from the history by a minimal WebSocket
# client), a wrong token is refused with status 1, misuse is status 2.
token_file="$WSCHAT_RUN_DIR/token"
printf '  announce-test-token-0123456789\n' >"$token_file"
out="$("$root/scripts/start.sh" 0 --host 127.0.0.1 --admin-token-file "$token_file" 2>&1)"
url="$(grep -o 'http://127.0.0.1:[0-9]*/' <<<"$out" | head -n 1)"
check "start.sh starts a server with the admin API" [ -n "$url" ]
text=$'Maintenance "at" 18:00 \\ back\tsoon – ü'
answer="$(WSCHAT_URL="$url" WSCHAT_ADMIN_TOKEN_FILE="$token_file" "$root/scripts/announce.sh" "$text")"; status=$?
check "announce.sh exits 0 on success" [ "$status" -eq 0 ]
check "announce.sh prints the answer with the id" grep -qE '^\{"ok":true,"id":"[A-Za-z0-9_-]+"\}$' <<<"$answer"
# The history's last message, read over a WebSocket (python3, no modules).
history_last() {
  python3 - "${url#http://}" <<'PY'
import base64, json, os, socket, sys
host, port = sys.argv[1].rstrip("/").split(":")
s = socket.create_connection((host, int(port)), timeout=5)
key = base64.b64encode(os.urandom(16)).decode()
s.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
          f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
buf = b""
def need(n):
    global buf
    while len(buf) < n:
        chunk = s.recv(65536)
        if not chunk:
            sys.exit("connection closed")
        buf += chunk
while b"\r\n\r\n" not in buf:
    need(len(buf) + 1)
head, buf = buf.split(b"\r\n\r\n", 1)
assert head.startswith(b"HTTP/1.1 101"), head
def message():
    global buf
    need(2)
    n, at = buf[1] & 0x7F, 2
    if n == 126:
        need(4); n, at = int.from_bytes(buf[2:4], "big"), 4
    elif n == 127:
        need(10); n, at = int.from_bytes(buf[2:10], "big"), 10
    need(at + n)
    payload, buf = buf[at:at + n], buf[at + n:]
    return json.loads(payload)
assert message()["type"] == "users"
history = message()
assert history["type"] == "history", history
print(json.dumps(history["messages"][-1], ensure_ascii=False))
PY
}
last="$(history_last)"
check "the announcement is kept with the id announce.sh printed" \
  python3 -c 'import json,sys; m=json.loads(sys.argv[1]); a=json.loads(sys.argv[2]); sys.exit(not (m["event"]=="announce" and m["id"]==a["id"] and m["message"]==sys.argv[3]))' "$last" "$answer" "${text}"
WSCHAT_URL="$url" WSCHAT_ADMIN_TOKEN="wrong-token-0123456789" "$root/scripts/announce.sh" "nope" >/dev/null 2>&1; status=$?
check "announce.sh exits 1 on a wrong token" [ "$status" -eq 1 ]
env -u WSCHAT_ADMIN_TOKEN -u WSCHAT_ADMIN_TOKEN_FILE WSCHAT_URL="$url" "$root/scripts/announce.sh" "no token" >/dev/null 2>&1; status=$?
check "announce.sh exits 2 without a token" [ "$status" -eq 2 ]
WSCHAT_URL="$url" WSCHAT_ADMIN_TOKEN_FILE="$token_file" "$root/scripts/announce.sh" >/dev/null 2>&1; status=$?
check "announce.sh exits 2 without a text" [ "$status" -eq 2 ]
check "the token is not in the log" bash -c "! grep -q announce-test-token '$WSCHAT_RUN_DIR/wschat.log'"
check "the admin requests are logged" grep -q 'admin request from 127.0.0.1:[0-9]*: POST /api/publish -> 200' "$WSCHAT_RUN_DIR/wschat.log"
check "stop.sh stops the admin server" "$root/scripts/stop.sh"

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
