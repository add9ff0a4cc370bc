#!/usr/bin/env bash
# API fuzzing: schemathesis generates requests for every operation of /openapi.json and
# checks that no response is a 5xx and every response matches the documented schema.
# FUZZ_MAX_EXAMPLES (default 50) bounds the examples per operation; extra arguments go to
# `schemathesis run` (e.g. --seed 1, --phases fuzzing).
set -euo pipefail
cd "$(dirname "$0")/.."

max_examples="${FUZZ_MAX_EXAMPLES:-50}"
venv=.ci/.venv
if [ ! -x "$venv/bin/schemathesis" ]; then
    python3 -m venv "$venv" 2>/dev/null || {
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
        python3 -m venv "$venv"
    }
    "$venv/bin/pip" install -q --disable-pip-version-check 'schemathesis>=4,<5'
fi

cargo build --locked -q --bin digital-employee
work=$(mktemp -d)
key="fuzz-admin-key-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
env -i PATH="$PATH" DATA_DIR="$work" HOST=127.0.0.1 PORT=0 PROMETHEUS_METRICS_PORT=0 \
    API_KEY_WHITELIST="$key" RATE_LIMIT_REQUESTS=1000000 LOG_LEVEL=info \
    target/debug/digital-employee serve >"$work/serve.log" 2>&1 &
pid=$!
cleanup() {
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# The service binds port 0 and logs the address it got.
addr=""
for _ in $(seq 1 150); do
    addr=$(grep -o '"api":"[^"]*"' "$work/serve.log" 2>/dev/null | head -n1 | cut -d'"' -f4 || true)
    [ -n "$addr" ] && break
    sleep 0.2
done
[ -n "$addr" ] || { echo "the service did not start:"; cat "$work/serve.log"; exit 1; }

"$venv/bin/schemathesis" run "http://$addr/openapi.json" \
    --header "X-API-Key: $key" \
    --checks not_a_server_error,response_schema_conformance \
    --max-examples "$max_examples" \
    --workers 1 \
    --no-color \
    "$@"
