#!/usr/bin/env bash
# The web console in a real browser: installs Debian's chromium and the pinned
# playwright-core, starts the built binary on loopback with a fresh SQLite database, and
# runs tests/browser. Fails when Chromium did not run. Screenshots go to target/browser/.
# Usage: .ci/browser.sh [path/to/digital-employee]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/debug/digital-employee}
[ -x "$bin" ] || cargo build --locked
shots=target/browser
rm -rf "$shots"
mkdir -p "$shots"

if ! command -v chromium >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium
fi
if ! command -v npm >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm
fi
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)

data=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
key="browser-admin-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
HOST=127.0.0.1 PORT=$port PROMETHEUS_METRICS_PORT=$mport DATA_DIR="$data" \
    API_KEY_WHITELIST="$key" RATE_LIMIT_REQUESTS=100000 TASK_POLL_INTERVAL=0.05 \
    LOG_LEVEL=warn "$bin" serve >"$shots/server.log" 2>&1 &
server=$!
cleanup() { kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$data"; }
trap cleanup EXIT
for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$port/ready" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -fsS "http://127.0.0.1:$port/ready" >/dev/null || { echo "the server did not become ready"; cat "$shots/server.log"; exit 1; }

status=0
CONSOLE_URL="http://127.0.0.1:$port" CONSOLE_ADMIN_KEY="$key" SCREENSHOT_DIR="$PWD/$shots" \
    CHROMIUM="$(command -v chromium)" \
    node --test --test-concurrency=1 tests/browser/console.test.mjs || status=$?
[ "$status" = 0 ] || { echo "browser suite failed"; exit "$status"; }
[ -s "$shots/chromium-version.txt" ] || { echo "Chromium did not run"; exit 1; }
count=$(find "$shots" -name '*.png' | wc -l)
echo "Chromium $(cat "$shots/chromium-version.txt"): $count screenshots in $shots"
[ "$count" -ge 10 ] || { echo "expected a screenshot per scenario"; exit 1; }
