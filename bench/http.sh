#!/usr/bin/env bash
# Foundation figures: release binary size, time from start to /ready 200, idle RSS, and
# wrk throughput of GET /health and GET /v1/employees/{id} on SQLite (and PostgreSQL
# when BENCH_DATABASE_URL is set; it must be an empty, migratable database).
#
#   cargo build --release && bench/http.sh
#   BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench bench/http.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
bin=target/release/digital-employee
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 2; }
command -v wrk >/dev/null || { echo "install wrk (apt-get install wrk)" >&2; exit 2; }
duration=${DURATION:-10s}
work=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
key=bench-key-0123456789

echo "binary: $(stat -c %s "$bin" | awk '{ printf "%.1f MiB", $1 / 1048576 }')"

run_backend() {
    local name=$1 url=$2
    if [[ $url == postgres* ]]; then
        env -i PATH="$PATH" DATABASE_URL="$url" "$bin" migrate >/dev/null
    fi
    local start end
    start=$(date +%s%N)
    env -i PATH="$PATH" HOST=127.0.0.1 PORT=18080 PROMETHEUS_METRICS_PORT=19090 LOG_LEVEL=warn \
        DATA_DIR="$work/data-$name" DATABASE_URL="$url" API_KEY_WHITELIST=$key \
        RATE_LIMIT_REQUESTS=1000000000 RATE_LIMIT_WINDOW_SECONDS=1 \
        "$bin" serve >"$work/$name.log" 2>&1 &
    pid=$!
    until curl -fs -o /dev/null http://127.0.0.1:18080/ready; do sleep 0.005; done
    end=$(date +%s%N)
    echo "[$name] start to /ready 200: $(( (end - start) / 1000000 )) ms"
    sleep 1
    echo "[$name] idle RSS: $(rss_mib "$pid") MiB"
    local id
    id=$(curl -fs -X POST http://127.0.0.1:18080/v1/employees -H "X-API-Key: $key" \
        -H 'Content-Type: application/json' -d '{"name":"bench","role":"benchmark"}' |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
    local out
    out=$(wrk -t2 -c64 -d"$duration" --latency http://127.0.0.1:18080/health)
    echo "[$name] GET /health: $(wrk_summary "$out")"
    out=$(wrk -t2 -c64 -d"$duration" --latency -H "X-API-Key: $key" \
        "http://127.0.0.1:18080/v1/employees/$id")
    echo "[$name] GET /v1/employees/{id}: $(wrk_summary "$out")"
    echo "[$name] RSS after load: $(rss_mib "$pid") MiB"
    kill -TERM "$pid"
    wait "$pid" || true
    pid=""
}

run_backend sqlite "sqlite://$work/data-sqlite/bench.db"
if [ -n "${BENCH_DATABASE_URL:-}" ]; then
    run_backend postgres "$BENCH_DATABASE_URL"
fi
