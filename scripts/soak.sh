#!/usr/bin/env bash
# Soak test: builds the release binary, starts a real server on 127.0.0.1
# (port 0) with small limits and drives it for SECONDS (default 60) with
# well-behaved chatters and misbehaving clients (protocol violations,
# garbage heads, abrupt disconnects, stalled readers, floods, silent peers).
# Then checks the server is alive, every chatter got every line in order,
# no connection is left, descriptors and memory are back near their
# baseline, and SIGTERM ends it with status 0.
#
#   scripts/soak.sh [SECONDS] [--tls]
#
# --tls: the same run over wss/https, with a certificate made by `openssl`.
#
# Needs only python3 (standard library). Talks only to 127.0.0.1; every
# client loop stops at the deadline. The server's log goes to
# target/soak/server.log. Prints figures and a final `N passed, N failed`
# line; exits 1 on any failure. See docs/hardening.md for figures.
set -euo pipefail

cd "$(dirname "$0")/.."
seconds=${1:-60}
tls=${2:-}
case $seconds in
'' | *[!0-9]*)
    echo "usage: scripts/soak.sh [SECONDS] [--tls]" >&2
    exit 2
    ;;
esac
case $tls in
'' | --tls) ;;
*)
    echo "usage: scripts/soak.sh [SECONDS] [--tls]" >&2
    exit 2
    ;;
esac
if [ "$seconds" -lt 10 ]; then
    echo "soak: SECONDS must be at least 10" >&2
    exit 2
fi

cargo build --release --quiet --bin wschat
mkdir -p target/soak
# The clients open and close connections quickly; give the driver room.
ulimit -n 4096 2>/dev/null || true
exec python3 scripts/soak.py --binary target/release/wschat --seconds "$seconds" \
    --log "target/soak/server${tls:+-tls}.log" ${tls:+--tls}
