#!/usr/bin/env bash
# Gateway CPU per request of several builds (or settings) side by side: one sandbox
# vendor, one gateway per NAME=BIN[:VAR=VALUE,...] argument, all started at once; then
# ROUNDS rounds (default 3), each loading every gateway in turn with wrk (32 connections)
# for DURATION seconds (default 10) flat out, and first at PACE requests/s when PACE is
# set. Prints req/s, p50, p99 and the gateway's CPU time per request (/proc/PID/stat) of
# every run. Loading the gateways in turn, against the same vendor, in the same minutes,
# is what makes builds comparable on a machine whose speed drifts.
#
#   bench/side_by_side.sh base=/tmp/old-build new=target/release/digital-employee \
#       one=target/release/digital-employee:API_THREADS=1
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
[ $# -gt 0 ] || { echo "usage: bench/side_by_side.sh NAME=BIN[:VAR=VALUE,...] ..." >&2; exit 2; }
BIN=${BIN:-${1#*=}}
BIN=${BIN%%:*}
bench_init
export BENCH_KEY=bench-key-0123456789 CONNS=32
start_vendor
names=()
apis=()
gws=()
for spec in "$@"; do
    name=${spec%%=*}
    rest=${spec#*=}
    build=${rest%%:*}
    settings=()
    if [[ $rest == *:* ]]; then IFS=, read -ra settings <<<"${rest#*:}"; fi
    [ -x "$build" ] || { echo "$name: no executable at $build" >&2; exit 2; }
    mkdir -p "$work/$name"
    env -i PATH="$PATH" "${settings[@]}" HOST=127.0.0.1 PORT=0 PROMETHEUS_METRICS_PORT=0 \
        DATA_DIR="$work/$name/data" API_KEY_WHITELIST=$BENCH_KEY AI_CACHE=off LOG_LEVEL=info \
        RATE_LIMIT_REQUESTS=1000000000 RATE_LIMIT_WINDOW_SECONDS=1 \
        OPENAI_BASE_URL="http://$vendor/v1" OPENAI_API_KEY=sk-bench \
        "$build" serve >"$work/$name/serve.log" 2>&1 &
    pids+=($!)
    gws+=($!)
    names+=("$name")
    apis+=("$(wait_field "$work/$name/serve.log" listening api)")
done
for round in $(seq "${ROUNDS:-3}"); do
    for i in "${!names[@]}"; do
        for rate in ${PACE:-} 0; do
            before=$(cpu_ticks "${gws[$i]}")
            out=$(RATE=$rate wrk -t2 -c32 -d"${DURATION:-10}s" --latency -s bench/chat.lua \
                "http://${apis[$i]}/v1/chat/completions")
            echo "round $round ${names[$i]} rate=$rate $(wrk_summary "$out")" \
                "$(cpu_per_request "$before" "$(cpu_ticks "${gws[$i]}")" "$out")"
        done
    done
done
