#!/usr/bin/env bash
# The official MCP Python SDK (pinned) both ways, on SQLite and on PostgreSQL: a real
# SDK-built MCP server whose tools employees call, and the SDK's client against /mcp.
# Fails unless the checks ran to their end on both backends.
# Usage: .ci/mcp_sdk.sh [path/to/digital-employee]   (PostgreSQL on 127.0.0.1:5432)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/debug/digital-employee}
[ -x "$bin" ] || cargo build --locked --quiet
MCP_SDK_VERSION=2.3.0
venv="${HOME}/.cache/digital-employee-ci/mcp-venv"
if [ ! -x "$venv/bin/python" ] || [ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("mcp"))' 2>/dev/null)" != "$MCP_SDK_VERSION" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "mcp==$MCP_SDK_VERSION"
fi
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# shellcheck source=bench/lib.sh
source bench/lib.sh
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 1 200); do
        python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $1), 0.2)" 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on port $1"; return 1
}

env -i PATH="$PATH" "$bin" sandbox --port 0 --require-key sk-sandbox-ci >"$work/sandbox.log" 2>&1 &
pids+=($!)
vendor=$(wait_field "$work/sandbox.log" "sandbox vendor listening" addr)

tool_port=$(free_port)
"$venv/bin/python" tests/sdk/mcp_tool_server.py "$tool_port" >"$work/tools.log" 2>&1 &
pids+=($!)
wait_port "$tool_port"

run_on() {
    local label=$1 db=$2 log="$work/serve-$1.log"
    env -i PATH="$PATH" HOST=127.0.0.1 PORT=0 PROMETHEUS_METRICS_PORT=0 DATA_DIR="$work/data-$label" \
        DATABASE_URL="$db" API_KEY_WHITELIST=mcp-sdk-admin-key RATE_LIMIT_REQUESTS=100000 \
        EGRESS_ALLOW_CIDRS=127.0.0.1/32 TASK_POLL_INTERVAL=0.05 \
        OPENAI_BASE_URL="http://$vendor/v1" OPENAI_API_KEY=sk-sandbox-ci \
        "$bin" serve >"$log" 2>&1 &
    local pid=$!
    pids+=("$pid")
    local api
    api=$(wait_field "$log" "listening" api)
    if ! "$venv/bin/python" tests/sdk/mcp_sdk_check.py "http://$api" mcp-sdk-admin-key \
        "http://$vendor" "http://127.0.0.1:$tool_port/mcp" | tee "$work/check-$label.out"; then
        echo "MCP SDK checks failed on $label; the service log:"; tail -n 50 "$log"; exit 1
    fi
    grep -qE '^mcp-sdk: [0-9]+ passed, 0 failed$' "$work/check-$label.out" \
        || { echo "the MCP SDK checks did not run to the end on $label"; exit 1; }
    kill "$pid"
    curl -s -X POST -H 'Authorization: Bearer sk-sandbox-ci' "http://$vendor/__sandbox/reset" >/dev/null || true
}

sqlite_url="sqlite://$work/data-sqlite/digital-employee.db"
mkdir -p "$work/data-sqlite"
run_on sqlite "$sqlite_url"

pg_base=${MCP_SDK_PG_URL:-postgres://postgres@127.0.0.1:5432}
db="de_mcp_sdk_$$"
psql "$pg_base/postgres" -qc "CREATE DATABASE $db" >/dev/null
trap 'psql "$pg_base/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true; cleanup' EXIT
DATABASE_URL="$pg_base/$db" "$bin" migrate >/dev/null
run_on postgres "$pg_base/$db"
echo "MCP SDK checks passed on SQLite and PostgreSQL"
