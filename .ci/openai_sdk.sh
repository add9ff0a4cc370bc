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

# Waits for a JSON log line with the given message and prints the given field.
wait_field() {
    local file=$1 message=$2 field=$3
    for _ in $(seq 1 300); do
        if out=$(python3 - "$file" "$message" "$field" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    try:
        v = json.loads(line)
    except ValueError:
        continue
    if v.get("message") == sys.argv[2]:
        print(v[sys.argv[3]])
        sys.exit(0)
sys.exit(1)
PY
        ); then
            echo "$out"
            return 0
        fi
        sleep 0.1
    done
    echo "no '$message' line in $file" >&2
    cat "$file" >&2
    return 1
}

env -i PATH="$PATH" "$bin" sandbox --port 0 --require-key sk-sandbox-ci >"$work/sandbox.log" 2>&1 &
pids+=($!)
vendor=$(wait_field "$work/sandbox.log" "sandbox vendor listening" addr)

env -i PATH="$PATH" HOST=127.0.0.1 PORT=0 PROMETHEUS_METRICS_PORT=0 DATA_DIR="$work/data" \
    API_KEY_WHITELIST=sdk-gateway-key OPENAI_BASE_URL="http://$vendor/v1" OPENAI_API_KEY=sk-sandbox-ci \
    "$bin" serve >"$work/serve.log" 2>&1 &
pids+=($!)
api=$(wait_field "$work/serve.log" "listening" api)

"$venv/bin/python" tests/sdk/openai_sdk_check.py "http://$api/v1" sdk-gateway-key
