#!/usr/bin/env bash
# The official OpenAI Python SDK against a running gateway backed by the sandbox vendor
# over real HTTP. Usage: .ci/openai_sdk.sh [path/to/digital-employee]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/debug/digital-employee}
[ -x "$bin" ] || cargo build --locked --quiet
venv="${HOME}/.cache/digital-employee-ci/sdk-venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import openai' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check openai
fi
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# wait_field FILE MESSAGE FIELD, shared with the benchmarks.
# shellcheck source=bench/lib.sh
source bench/lib.sh

env -i PATH="$PATH" "$bin" sandbox --port 0 --require-key sk-sandbox-ci >"$work/sandbox.log" 2>&1 &
pids+=($!)
vendor=$(wait_field "$work/sandbox.log" "sandbox vendor listening" addr)

env -i PATH="$PATH" HOST=127.0.0.1 PORT=0 PROMETHEUS_METRICS_PORT=0 DATA_DIR="$work/data" \
    API_KEY_WHITELIST=sdk-gateway-key OPENAI_BASE_URL="http://$vendor/v1" OPENAI_API_KEY=sk-sandbox-ci \
    "$bin" serve >"$work/serve.log" 2>&1 &
pids+=($!)
api=$(wait_field "$work/serve.log" "listening" api)

"$venv/bin/python" tests/sdk/openai_sdk_check.py "http://$api/v1" sdk-gateway-key
