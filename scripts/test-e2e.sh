#!/usr/bin/env bash
# Browser tests for the web client (web/index.html), in e2e/.
#
# Needs Debian's Chromium at /usr/bin/chromium and Node 20+. Safe to run
# again and again: it installs only what is missing or out of date.
#
#   scripts/test-e2e.sh                       # builds target/debug/wschat first
#   WSCHAT_BIN=target/release/wschat scripts/test-e2e.sh
#   CI=true scripts/test-e2e.sh               # may apt-get install chromium
#
# Extra arguments go to `node --test` (e.g. a single file: chat.test.mjs).
# Screenshots go to
# target/screenshots/; scripts/update-screenshots.sh copies them into docs/.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

chromium=/usr/bin/chromium
if [[ ! -x "$chromium" ]]; then
    if [[ -n "${CI:-}" ]]; then
        echo "test-e2e: $chromium missing; installing Debian's chromium (CI is set)"
        sudo=()
        if [[ "$(id -u)" != 0 ]]; then sudo=(sudo -n); fi
        "${sudo[@]}" apt-get update </dev/null
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y --no-install-recommends chromium </dev/null
    else
        echo "test-e2e: $chromium not found. Install Debian's Chromium first:" >&2
        echo "    sudo apt-get install chromium" >&2
        echo "(or run with CI=true to let this script install it)" >&2
        exit 1
    fi
fi

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "test-e2e: node and npm (Node 20 or later) are needed" >&2
    exit 1
fi

# npm ci only when node_modules does not match package-lock.json.
lock_sum="$(sha256sum e2e/package-lock.json | cut -d' ' -f1)"
stamp=e2e/node_modules/.wschat-lock-sha256
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$lock_sum" || ! -d e2e/node_modules/playwright-core ]]; then
    (cd e2e && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund </dev/null)
    echo "$lock_sum" > "$stamp"
fi

if [[ -z "${WSCHAT_BIN:-}" ]]; then
    cargo build --bin wschat </dev/null
    export WSCHAT_BIN="$root/target/debug/wschat"
fi

cd e2e
if [[ $# -eq 0 ]]; then
    for f in *.test.mjs; do
        set -- "$@" "$f"
    done
fi
# The TAP reporter ends with the "# pass N" / "# fail N" summary lines.
exec node --test --test-reporter=tap --test-concurrency=1 "$@" </dev/null
