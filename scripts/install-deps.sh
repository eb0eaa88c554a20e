#!/usr/bin/env bash
# Installs the Debian packages the tests run for real: redis-server (the
# cluster tests), nginx and apache2 (the reverse-proxy recipes), openssl
# (test certificates, s_client), systemd (systemd-analyze verify), chromium
# (the page), curl. As root it installs what is missing; otherwise it stops
# with the exact command to run. Nothing is skipped silently.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "$1" ]; }
have redis-server || need+=(redis-server)
have nginx || have /usr/sbin/nginx || need+=(nginx)
have apache2 || have /usr/sbin/apache2 || need+=(apache2)
have openssl || need+=(openssl)
have systemd-analyze || need+=(systemd)
have /usr/bin/chromium || need+=(chromium)
have curl || need+=(curl)
have python3 || need+=(python3)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "The tests need these Debian packages: ${need[*]}. Install them with:" >&2
  echo "    sudo apt-get update && sudo apt-get install -y --no-install-recommends ${need[*]}" >&2
  exit 1
fi
echo "installing: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update </dev/null
apt-get install -y --no-install-recommends "${need[@]}" </dev/null
# The packages' own services are not what the tests use: each test starts
# its own processes on free loopback ports.
for svc in redis-server nginx apache2; do
  if command -v systemctl >/dev/null 2>&1; then systemctl stop "$svc" >/dev/null 2>&1 || true; fi
  if command -v service >/dev/null 2>&1; then service "$svc" stop >/dev/null 2>&1 || true; fi
done
