#!/usr/bin/env bash
# The standard wschat benchmark matrix, driven by the wschat-bench load
# generator (src/bin/wschat-bench). See docs/benchmarks.md for the method.
#
#   scripts/bench.sh [--quick] [--vs node | --vs '<command with {port}>'] [--out DIR] [--no-build] [--no-pin]
#   scripts/bench.sh --cluster [--quick] [--out DIR] [--no-build] [--no-pin]
#
#   --quick      a short run (under two minutes for wschat alone)
#   --vs node    also run the bundled Node `ws` chat peer (bench/node-peer),
#                case by case next to wschat, and print wschat/peer ratios
#   --vs CMD     the same with any server command; {port} is replaced by a
#                free port (e.g. --vs './other-server --port {port}')
#   --out DIR    where results.csv, logs and the report go
#                (default target/bench/<UTC time>)
#   --no-build   use the release binaries as they are
#   --no-pin     do not pin to cores (a machine shared with other work: a
#                busy core 1 starves a pinned generator)
#   --cluster    instead of the matrix: 1 node against 2 nodes + a private
#                redis-server (both nodes and Redis on the server's core),
#                1 000 clients, 10 senders, 0.1 and 1 M frames/s, alternating
#                (docs/cluster.md, "Measured")
#
# Every server runs pinned to core 0 and the generator to core 1 (taskset),
# on 127.0.0.1 only, one fresh server process per case. Each generator run is
# bounded by its own durations and by `timeout`.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

QUICK=0
VS=""
OUT=""
BUILD=1
PIN=1
CLUSTER=0
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --vs) VS="${2:?--vs needs a value}"; shift ;;
    --out) OUT="${2:?--out needs a value}"; shift ;;
    --no-build) BUILD=0 ;;
    --no-pin) PIN=0 ;;
    --cluster) CLUSTER=1 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "bench.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

OUT=${OUT:-target/bench/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
CSV="$OUT/results.csv"
LOG="$OUT/bench.log"
: >"$LOG"

say() { echo "$*" | tee -a "$LOG"; }

if [ "$BUILD" = 1 ]; then
  say "== building (release)"
  cargo build --release --bin wschat --bin wschat-bench 2>&1 | tail -n 2
fi
BENCH="$ROOT/target/release/wschat-bench"
[ -x "$BENCH" ] || { echo "bench.sh: $BENCH missing (build first)" >&2; exit 1; }

# Ten thousand connections need more descriptors than the usual soft limit;
# servers started from here inherit the raised limit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
FDS=$(ulimit -n)

if [ "$PIN" = 1 ] && [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  PIN_SERVER=(taskset -c 0)
  PIN_BENCH=(taskset -c 1)
  PINNING="server on core 0, generator on core 1 (taskset)"
else
  PIN_SERVER=()
  PIN_BENCH=()
  PINNING="not pinned"
fi

CPU_MODEL=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
LOAD=$(cut -d" " -f1-3 /proc/loadavg)
say "== machine: $(nproc) cores, ${CPU_MODEL:-unknown CPU}, Linux $(uname -r), fd limit $FDS, load average $LOAD at start"
say "== pinning: $PINNING"
say "== results: $CSV"

LABELS=(wschat)
CMDS=("$ROOT/target/release/wschat {port} --host 127.0.0.1 --rate-limit 0 --echo --max-connections 20000")
if [ "$VS" = node ]; then
  command -v node >/dev/null || { echo "bench.sh: --vs node needs node" >&2; exit 1; }
  if [ ! -d bench/node-peer/node_modules/ws ]; then
    say "== installing bench/node-peer (npm ci)"
    (cd bench/node-peer && npm ci --no-audit --no-fund >/dev/null)
  fi
  LABELS+=(node-ws)
  CMDS+=("node $ROOT/bench/node-peer/server.js {port} --host 127.0.0.1 --echo")
elif [ -n "$VS" ]; then
  case "$VS" in *"{port}"*) ;; *) echo "bench.sh: --vs command needs {port}" >&2; exit 2 ;; esac
  LABELS+=(vs)
  CMDS+=("$VS")
fi

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

SPID=""
PORT=""
# start_server LABEL COMMAND: a fresh server on a free port; sets SPID, PORT.
start_server() {
  local label=$1 cmd=$2
  PORT=$(free_port)
  cmd=${cmd//\{port\}/$PORT}
  # `exec` keeps the PID: taskset execs bash, bash execs the server.
  # RUST_LOG=warn: wschat logs every connection at info, which would be
  # measured too (the Node peer logs nothing); set RUST_LOG to override.
  RUST_LOG="${RUST_LOG:-warn}" "${PIN_SERVER[@]}" bash -c "exec $cmd" >>"$OUT/$label-server.log" 2>&1 &
  SPID=$!
  local i
  for i in $(seq 1 150); do
    if ! kill -0 "$SPID" 2>/dev/null; then
      echo "bench.sh: $label exited at start; see $OUT/$label-server.log" >&2
      exit 1
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  echo "bench.sh: $label did not listen on $PORT within 15 s" >&2
  stop_server
  exit 1
}

stop_server() {
  [ -n "$SPID" ] || return 0
  kill -TERM "$SPID" 2>/dev/null || true
  local i
  for i in $(seq 1 50); do
    kill -0 "$SPID" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$SPID" 2>/dev/null || true
  wait "$SPID" 2>/dev/null || true
  SPID=""
}
CPIDS=()
CREDIS=""
stop_cluster() {
  local p
  # Nodes first, while Redis is still there to carry their leaves.
  for p in "${CPIDS[@]}" $CREDIS; do
    kill -TERM "$p" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  CPIDS=()
  CREDIS=""
}
trap 'stop_server; stop_cluster' EXIT

# cluster_case ARGS...: the generator with ARGS against 2 fresh nodes and a
# fresh Redis, all pinned like a server; the clients alternate between them.
cluster_case() {
  command -v redis-server >/dev/null || { echo "bench.sh: redis-server is missing: apt-get install -y redis-server" >&2; exit 1; }
  local rp pa pb i p
  rp=$(free_port)
  "${PIN_SERVER[@]}" redis-server --port "$rp" --bind 127.0.0.1 --save "" --appendonly no >>"$OUT/redis.log" 2>&1 &
  CREDIS=$!
  for i in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/$rp") 2>/dev/null && break; sleep 0.1; done
  pa=$(free_port)
  pb=$(free_port)
  for p in "$pa" "$pb"; do
    RUST_LOG="${RUST_LOG:-warn}" "${PIN_SERVER[@]}" "$ROOT/target/release/wschat" "$p" --host 127.0.0.1 \
      --rate-limit 0 --max-connections 20000 --redis "redis://127.0.0.1:$rp" >>"$OUT/cluster-node.log" 2>&1 &
    CPIDS+=($!)
  done
  say ""
  say "-- cluster2: wschat-bench $* (nodes on ports $pa, $pb; redis on $rp)"
  # The generator waits for /healthz 200 on both nodes itself.
  timeout 900 "${PIN_BENCH[@]}" "$BENCH" "$@" --port "$pa,$pb" --server-pid "${CPIDS[0]}" \
    --server-pid "${CPIDS[1]}" --redis-pid "$CREDIS" --label cluster2 --csv "$CSV" 2>&1 | tee -a "$LOG" \
    || say "   (wschat-bench failed: $?)"
  stop_cluster
  sleep 1
}

# bench_case ARGS...: runs the generator with ARGS against every server in
# turn, each freshly started.
bench_case() {
  local n
  for n in "${!LABELS[@]}"; do
    start_server "${LABELS[$n]}" "${CMDS[$n]}"
    say ""
    say "-- ${LABELS[$n]}: wschat-bench $*"
    timeout 900 "${PIN_BENCH[@]}" "$BENCH" "$@" --port "$PORT" --server-pid "$SPID" \
      --label "${LABELS[$n]}" --csv "$CSV" 2>&1 | tee -a "$LOG" || say "   (wschat-bench failed: $?)"
    stop_server
    sleep 1 # let TIME_WAIT and the scheduler settle between cases
  done
}

START=$(date +%s)
if [ "$CLUSTER" = 1 ]; then
  if [ "$QUICK" = 1 ]; then F=(--duration 2 --warmup 0.5 --drain 1); else F=(--duration 10 --warmup 1 --drain 2); fi
  for rate in 100 1000; do
    bench_case fanout --clients 1000 --senders 10 --rate "$rate" "${F[@]}"
    cluster_case fanout --clients 1000 --senders 10 --rate "$rate" "${F[@]}"
  done
elif [ "$QUICK" = 1 ]; then
  F=(--duration 2 --warmup 0.5 --drain 1)
  R=(--duration 1.5 --warmup 0.3 --drain 1 --ramp --ramp-factor 2 --ramp-steps 5 --ramp-refine 1)
  bench_case fanout --clients 100 --senders 10 --rate 2000 "${F[@]}"
  bench_case fanout --clients 1000 --senders 10 --rate 1000 "${F[@]}"
  bench_case fanout --clients 100 --senders 10 --rate 4000 "${R[@]}"
  bench_case fanout --clients 1000 --senders 10 --rate 400 "${R[@]}" --ramp-steps 4 # later flags win
  bench_case connect --clients 2000 --concurrency 100 --hold 0.5
  bench_case echo --clients 16 --duration 2 --warmup 0.5
  bench_case echo --clients 16 --pipeline 8 --duration 2 --warmup 0.5
else
  F=(--duration 10 --warmup 2 --drain 3)
  R=(--duration 5 --warmup 1 --drain 2 --ramp --ramp-factor 2 --ramp-steps 8 --ramp-refine 3)
  # Issue 5's method: 10 senders, ~100-byte messages. 1 000 clients at
  # 0.1, 1 and 4.5 M frames/s, then 100 clients at 1 M; then ramps.
  for rate in 100 1000 4500; do
    bench_case fanout --clients 1000 --senders 10 --rate "$rate" "${F[@]}"
  done
  bench_case fanout --clients 100 --senders 10 --rate 10000 "${F[@]}"
  bench_case fanout --clients 1000 --senders 10 --rate 1000 "${R[@]}"
  bench_case fanout --clients 100 --senders 10 --rate 4000 "${R[@]}"
  bench_case connect --clients 10000 --concurrency 100 --hold 2
  # A burst past the usual listen backlog of 128: shows SYN drops, if any.
  bench_case connect --clients 10000 --concurrency 1000 --hold 1
  # One message in flight per connection measures round-trip latency (both
  # sides mostly wait); eight in flight measures throughput.
  bench_case echo --clients 16 --duration 10 --warmup 1
  bench_case echo --clients 16 --pipeline 8 --duration 10 --warmup 1
fi
say ""
say "== finished in $(($(date +%s) - START)) s"

REPORT="$OUT/report.md"
{
  echo "Machine: $(nproc) cores, ${CPU_MODEL:-unknown CPU}, Linux $(uname -r); $PINNING; load average $LOAD at start, $(cut -d" " -f1-3 /proc/loadavg) at the end."
  echo
  python3 scripts/bench_report.py tables "$CSV"
} >"$REPORT"
python3 scripts/bench_report.py svg "$CSV" "$OUT/fanout.svg" || true
echo
cat "$REPORT"
echo
echo "report: $REPORT; chart: $OUT/fanout.svg; rows: $CSV"
