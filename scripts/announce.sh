#!/usr/bin/env bash
# Publishes an announcement to every chat user through the admin API
# (POST /api/publish, PROTOCOL section 11; docs/admin.md):
#
#   WSCHAT_ADMIN_TOKEN=... scripts/announce.sh "Maintenance at 18:00"
#
# The token comes from WSCHAT_ADMIN_TOKEN, or from the file named by
# WSCHAT_ADMIN_TOKEN_FILE, the same variables the server reads. It never
# appears on a command line (where `ps` would show it): curl reads the
# Authorization header from a pipe.
# The server is WSCHAT_URL (e.g. http://127.0.0.1:9000 or
# https://chat.example.com), else http://127.0.0.1:PORT with PORT from
# WSCHAT_PORT or 9000. For a self-signed certificate set CURL_CA_BUNDLE to
# its PEM file.
#
# Prints the server's JSON answer ({"ok":true,"id":...}); exits 0 on 200,
# 1 on any other answer or if the server cannot be reached, 2 on misuse.
# Needs only bash and curl.
set -euo pipefail

if [ $# -ne 1 ] || [ -z "$1" ]; then
  echo "usage: scripts/announce.sh TEXT   (token in WSCHAT_ADMIN_TOKEN or WSCHAT_ADMIN_TOKEN_FILE)" >&2
  exit 2
fi
if ! command -v curl >/dev/null 2>&1; then
  echo "announce.sh: curl is missing (apt-get install -y curl)" >&2
  exit 2
fi

token="${WSCHAT_ADMIN_TOKEN:-}"
if [ -z "$token" ] && [ -n "${WSCHAT_ADMIN_TOKEN_FILE:-}" ]; then
  if [ ! -r "$WSCHAT_ADMIN_TOKEN_FILE" ]; then
    echo "announce.sh: cannot read WSCHAT_ADMIN_TOKEN_FILE ($WSCHAT_ADMIN_TOKEN_FILE)" >&2
    exit 2
  fi
  # A valid token has no whitespace, so dropping all of it trims it.
  token="$(tr -d ' \t\r\n' <"$WSCHAT_ADMIN_TOKEN_FILE")"
fi
if [ -z "$token" ]; then
  echo "announce.sh: set WSCHAT_ADMIN_TOKEN or WSCHAT_ADMIN_TOKEN_FILE" >&2
  exit 2
fi
url="${WSCHAT_URL:-http://127.0.0.1:${WSCHAT_PORT:-9000}}"
url="${url%/}"

# Prints $1 as the inside of a JSON string: backslash and quote escaped,
# control characters as \u00XX (bash strings cannot hold NUL). Bytes are
# passed through as they are; the server refuses text that is not UTF-8.
json_escape() {
  local LC_ALL=C
  local s="$1" code c
  s="${s//\\/\\\\}"
  s="${s//\"/\\\"}"
  for code in $(seq 1 31); do
    printf -v c "\\x$(printf '%02x' "$code")"
    if [[ $s == *"$c"* ]]; then
      s="${s//"$c"/$(printf '\\u%04x' "$code")}"
    fi
  done
  printf '%s' "$s"
}

body="{\"message\":\"$(json_escape "$1")\"}"
if ! response="$(printf '%s' "$body" | curl -sS --max-time 10 \
  -H @<(printf 'Authorization: Bearer %s\n' "$token") \
  -H 'Content-Type: application/json' \
  --data-binary @- -w '\n%{http_code}' "$url/api/publish")"; then
  echo "announce.sh: no answer from $url" >&2
  exit 1
fi
status="${response##*$'\n'}"
printf '%s\n' "${response%$'\n'*}"
if [ "$status" != 200 ]; then
  echo "announce.sh: HTTP $status from $url/api/publish" >&2
  exit 1
fi
