#!/usr/bin/env bash
# The official OpenAI and Anthropic Python SDKs against a running gateway backed by the
# sandbox vendor over real HTTP: the OpenAI SDK on chat completions, Responses,
# embeddings and models; the Anthropic SDK on /v1/messages, once with a model the
# sandbox serves in the OpenAI format and once in the Anthropic format.
# Usage: .ci/sdk.sh [path/to/digital-employee]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/debug/digital-employee}
[ -x "$bin" ] || cargo build --locked --quiet
# Pinned, so a new SDK release cannot change what passes.
sdks=(openai==3.57.0 anthropic==2.14.0)
venv="${HOME}/.cache/digital-employee-ci/sdk-venv"
pinned() {
    "$venv/bin/python" - "${sdks[@]}" <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version
try:
    ok = all(version(n) == v for n, v in (s.split("==") for s in sys.argv[1:]))
except PackageNotFoundError:
    ok = False
sys.exit(0 if ok else 1)
PY
}
if [ ! -x "$venv/bin/python" ] || ! pinned; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "${sdks[@]}"
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

# The same sandbox twice: as `openai` (OpenAI format) and as `sbclaude` (Anthropic format).
providers="[{\"name\":\"sbclaude\",\"format\":\"anthropic\",\"base_url\":\"http://$vendor\",\"api_key\":\"sk-sandbox-ci\"}]"
env -i PATH="$PATH" HOST=127.0.0.1 PORT=0 PROMETHEUS_METRICS_PORT=0 DATA_DIR="$work/data" \
    API_KEY_WHITELIST=sdk-gateway-key OPENAI_BASE_URL="http://$vendor/v1" OPENAI_API_KEY=sk-sandbox-ci \
    AI_PROVIDERS="$providers" \
    "$bin" serve >"$work/serve.log" 2>&1 &
pids+=($!)
api=$(wait_field "$work/serve.log" "listening" api)

status=0
"$venv/bin/python" tests/sdk/openai_sdk_check.py "http://$api/v1" sdk-gateway-key || status=1
# The Anthropic SDK adds /v1 itself. The last argument: whether the vendor format says
# which stop sequence ended an answer (only the Anthropic format does).
"$venv/bin/python" tests/sdk/anthropic_sdk_check.py "http://$api" sdk-gateway-key gpt-4o-mini 0 || status=1
"$venv/bin/python" tests/sdk/anthropic_sdk_check.py "http://$api" sdk-gateway-key sbclaude/claude-sonnet-4 1 || status=1
exit "$status"
