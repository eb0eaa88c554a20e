#!/usr/bin/env bash
# Retakes the README screenshots on purpose: runs the screenshot test (which
# writes target/screenshots/ only) and copies the pictures into docs/.
#
#   scripts/update-screenshots.sh                  # history, an announcement, two people
#   WSCHAT_E2E_V2=0 scripts/update-screenshots.sh  # the plain scene
#
# Check the new pictures (git diff --stat docs/, an image viewer) before committing them.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

rm -f target/screenshots/screenshot.png target/screenshots/screenshot-phone.png
scripts/test-e2e.sh screenshots.test.mjs
for f in screenshot.png screenshot-phone.png; do
    if [[ ! -s "target/screenshots/$f" ]]; then
        echo "update-screenshots: target/screenshots/$f was not written" >&2
        exit 1
    fi
    cp "target/screenshots/$f" "docs/$f"
    echo "update-screenshots: docs/$f updated"
done
