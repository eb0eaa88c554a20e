#!/usr/bin/env bash
# A local cluster: a private redis-server plus N wschat nodes sharing one port.
#
#   scripts/cluster.sh [start] [-n NODES] [-p PORT] [-- EXTRA WSCHAT FLAGS...]
#   scripts/cluster.sh stop
#   scripts/cluster.sh status
#
# start: Redis on a free 127.0.0.1 port (no persistence), then NODES (default
# 2) nodes on PORT (default 9000) with --reuse-port --redis redis://127.0.0.1:P,
# each waited for until /healthz answers. Pid files and logs go to
# WSCHAT_CLUSTER_DIR (default run/cluster). stop: SIGTERM to every node (each
# publishes its users' leaves before it exits), then to Redis; SIGKILL only
# after 15 s. Every process is stopped by the PID in its pid file.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
run_dir="${WSCHAT_CLUSTER_DIR:-$root/run/cluster}"

die() { echo "cluster.sh: $*" >&2; exit 1; }

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# Sends SIGTERM to the process in pid file $1 and waits for it to exit.
stop_pid_file() {
  local file="$1" pid
  [ -f "$file" ] || return 0
  pid="$(cat "$file")"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 1 150); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "pid $pid ($file) ignored SIGTERM for 15 s; sending SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$file"
}

do_stop() {
  local f
  shopt -s nullglob
  # Nodes first, while Redis is still there to carry their leaves.
  for f in "$run_dir"/node-*.pid; do
    stop_pid_file "$f"
  done
  stop_pid_file "$run_dir/redis.pid"
  echo "cluster stopped"
}

do_status() {
  local f
  shopt -s nullglob
  for f in "$run_dir"/redis.pid "$run_dir"/node-*.pid; do
    if alive "$f"; then
      echo "$(basename "$f" .pid): running (pid $(cat "$f"))"
    else
      echo "$(basename "$f" .pid): not running"
    fi
  done
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

do_start() {
  local nodes=2 port=9000
  while [ $# -gt 0 ]; do
    case "$1" in
      -n) nodes="${2:?-n takes a number}"; shift 2 ;;
      -p) port="${2:?-p takes a port}"; shift 2 ;;
      --) shift; break ;;
      *) die "unknown argument $1 (see the top of $0)" ;;
    esac
  done
  [[ "$nodes" =~ ^[1-9][0-9]*$ ]] || die "-n wants a positive number, got $nodes"
  command -v redis-server >/dev/null || die "redis-server is missing: apt-get install -y redis-server"
  mkdir -p "$run_dir"
  if alive "$run_dir/redis.pid"; then
    die "a cluster is already running in $run_dir; stop it with $0 stop"
  fi

  local redis_port
  redis_port="$(free_port)"
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
    --daemonize no >>"$run_dir/redis.log" 2>&1 </dev/null &
  echo $! >"$run_dir/redis.pid"
  echo "$redis_port" >"$run_dir/redis.port"
  for _ in $(seq 1 50); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$redis_port") 2>/dev/null; then break; fi
    alive "$run_dir/redis.pid" || die "redis-server exited; see $run_dir/redis.log"
    sleep 0.1
  done

  (cd "$root" && cargo build --release --quiet --bin wschat)
  local binary="$root/target/release/wschat" i pid ok
  for i in $(seq 1 "$nodes"); do
    echo "--- node $i start $(date -u +%Y-%m-%dT%H:%M:%SZ) ---" >>"$run_dir/node-$i.log"
    nohup "$binary" "$port" --reuse-port --redis "redis://127.0.0.1:$redis_port" "$@" \
      >>"$run_dir/node-$i.log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$run_dir/node-$i.pid"
  done
  # With SO_REUSEPORT a probe reaches some node, not a chosen one: each node
  # is judged alive by its process, the cluster by /healthz answering 200.
  ok=""
  for _ in $(seq 1 100); do
    for i in $(seq 1 "$nodes"); do
      alive "$run_dir/node-$i.pid" || { do_stop >/dev/null; die "node $i exited; see $run_dir/node-$i.log"; }
    done
    if curl -fsS --max-time 1 "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then
      ok=1
      break
    fi
    sleep 0.1
  done
  [ -n "$ok" ] || { do_stop >/dev/null; die "no healthy node on port $port within 10 s; logs in $run_dir"; }
  echo "cluster running: $nodes node(s) on http://localhost:$port/, redis on 127.0.0.1:$redis_port (run dir $run_dir)"
}

case "${1:-start}" in
  stop) do_stop ;;
  status) do_status ;;
  start) shift || true; do_start "$@" ;;
  *) do_start "$@" ;;
esac
