#!/usr/bin/env bash
# Starts wschat in the background: scripts/start.sh [PORT] [FLAGS...]
# Builds the release binary if needed, writes run/wschat.pid and appends to
# run/wschat.log, waits until /healthz answers and prints the URL.
# WSCHAT_RUN_DIR moves the pid and log files elsewhere.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
run_dir="${WSCHAT_RUN_DIR:-$root/run}"
pid_file="$run_dir/wschat.pid"
log_file="$run_dir/wschat.log"
mkdir -p "$run_dir"

if [ -f "$pid_file" ]; then
  pid="$(cat "$pid_file")"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    echo "wschat is already running (pid $pid, log $log_file); stop it with scripts/stop.sh" >&2
    exit 1
  fi
  rm -f "$pid_file"   # stale: the process is gone
fi

(cd "$root" && cargo build --release --quiet --bin wschat)
binary="$root/target/release/wschat"

marker="--- wschat start $(date -u +%Y-%m-%dT%H:%M:%SZ) ---"
echo "$marker" >>"$log_file"
nohup "$binary" "$@" >>"$log_file" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$pid_file"

# The server prints "listening on http://ADDR/" once bound; then /healthz must answer.
url=""
for _ in $(seq 1 100); do
  if ! kill -0 "$pid" 2>/dev/null; then
    rm -f "$pid_file"
    echo "wschat exited during start-up; the end of $log_file says why:" >&2
    sed -n "/^$marker\$/,\$p" "$log_file" | tail -n 5 >&2
    exit 1
  fi
  url="$(sed -n "/^$marker\$/,\$p" "$log_file" | sed -n 's/^listening on \(http:[^ ]*\)$/\1/p' | tail -n 1)"
  if [ -n "$url" ]; then
    probe="${url/0.0.0.0/127.0.0.1}"
    probe="${probe/\[::\]/[::1]}"
    if curl -fsS --max-time 1 "${probe}healthz" >/dev/null 2>&1; then
      local_url="${url/0.0.0.0/localhost}"
      local_url="${local_url/\[::\]/localhost}"
      echo "wschat is running (pid $pid): open $local_url  (log: $log_file)"
      exit 0
    fi
  fi
  sleep 0.1
done
echo "wschat (pid $pid) did not answer /healthz within 10 s; see $log_file" >&2
exit 1
