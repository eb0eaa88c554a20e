#!/usr/bin/env bash
# The whole test suite: Rust unit and integration tests, the start/stop
# scripts, a short soak (plain and over TLS), then the browser tests in headless Chromium
# (scripts/test-e2e.sh).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

echo "== packages the tests run (redis-server, nginx, apache2, openssl, systemd, chromium)"
scripts/install-deps.sh

echo "== cargo test"
cargo test --all-targets

echo "== scripts"
scripts/test-scripts.sh

echo "== soak (short: 20 s of good and bad clients)"
scripts/soak.sh 20

echo "== soak over TLS (the same clients over wss/https, 20 s)"
scripts/soak.sh 20 --tls

echo "== browser tests"
scripts/test-e2e.sh
