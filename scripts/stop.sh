#!/usr/bin/env bash
# Stops the wschat started by scripts/start.sh: SIGTERM (graceful: every
# client gets close 1001), waits for the process to exit, removes the pid file.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
run_dir="${WSCHAT_RUN_DIR:-$root/run}"
pid_file="$run_dir/wschat.pid"

if [ ! -f "$pid_file" ]; then
  echo "wschat is not running (no $pid_file)"
  exit 0
fi
pid="$(cat "$pid_file")"
if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
  echo "wschat is not running (stale pid file removed)"
  rm -f "$pid_file"
  exit 0
fi
kill -TERM "$pid"
# The server waits at most --shutdown-timeout (2 s by default) for close replies.
for _ in $(seq 1 150); do
  if ! kill -0 "$pid" 2>/dev/null; then
    rm -f "$pid_file"
    echo "wschat stopped (pid $pid)"
    exit 0
  fi
  sleep 0.1
done
echo "wschat (pid $pid) did not exit within 15 s of SIGTERM; sending SIGKILL" >&2
kill -KILL "$pid" 2>/dev/null || true
rm -f "$pid_file"
exit 1
