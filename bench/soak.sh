#!/usr/bin/env bash
# Memory over time. Two parts, one gateway process each:
#
# 1. Soak: SOAK_DURATION seconds (600) of mixed load at about half of this machine's
#    capacity: chat completions through the gateway to the sandbox vendor, paced at
#    SOAK_GATEWAY_RATE/s (2000), and one-step tasks submitted at SOAK_TASK_RATE/s (500)
#    and run against the same vendor. RSS is sampled every SOAK_SAMPLE seconds (10); the
#    growth from the first sample after SOAK_WARMUP seconds (60) to the last must stay
#    under SOAK_MAX_GROWTH percent (5).
# 2. In flight: INFLIGHT_TASKS tasks (10000) submitted against a slow vendor (every answer
#    takes SLOW_MS, 60000 ms) with WORKER_CONCURRENCY 4096 (the most one replica runs);
#    the peak RSS while they are in flight must stay under INFLIGHT_MAX_MIB (200).
#    INFLIGHT_WORKERS sets that WORKER_CONCURRENCY (how many of them run at once).
#    SOAK_DURATION=0 skips part 1.
#
# Exits 1 when a limit is passed. Everything listens on 127.0.0.1; wrk and python3 are
# the load generators. BIN picks the binary (default the release build):
#   cargo build --release && bench/soak.sh
#   BIN=target/debug/digital-employee SOAK_DURATION=40 SOAK_WARMUP=10 INFLIGHT_TASKS=500 bench/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
bench_init
duration=${SOAK_DURATION:-600}
warmup=${SOAK_WARMUP:-60}
sample=${SOAK_SAMPLE:-10}
max_growth=${SOAK_MAX_GROWTH:-5}
gateway_rate=${SOAK_GATEWAY_RATE:-2000}
task_rate=${SOAK_TASK_RATE:-500}
inflight=${INFLIGHT_TASKS:-10000}
slow_ms=${SLOW_MS:-60000}
inflight_max=${INFLIGHT_MAX_MIB:-200}
inflight_workers=${INFLIGHT_WORKERS:-4096}
export BENCH_KEY=bench-key-0123456789 CONNS=32
# The vendor: every model answers at once except gpt-4o, which takes SLOW_MS.
echo "{\"faults\": [{\"model\": \"gpt-4o\", \"fault\": {\"kind\": \"latency\", \"ms\": $slow_ms}}]}" >"$work/setup.json"
start_vendor --setup "$work/setup.json"

status=0

if [ "$duration" -gt 0 ]; then
    echo "== soak: ${duration}s, gateway ${gateway_rate}/s + tasks ${task_rate}/s, RSS every ${sample}s"
    start_gateway soak
    employee soak gpt-4o-mini
    RATE=$gateway_rate wrk -t1 -c32 -d"${duration}s" --latency -s bench/chat.lua \
        "http://$api/v1/chat/completions" >"$work/wrk-gateway.txt" 2>&1 &
    load1=$!
    pids+=("$load1")
    BENCH_BODY='{"employee": "soak", "input": "2 + 2"}' RATE=$task_rate wrk -t1 -c32 -d"${duration}s" \
        --latency -s bench/chat.lua "http://$api/v1/tasks" >"$work/wrk-tasks.txt" 2>&1 &
    load2=$!
    pids+=("$load2")
    start=$SECONDS
    base=""
    while kill -0 "$load1" 2>/dev/null || kill -0 "$load2" 2>/dev/null; do
        sleep "$sample"
        t=$((SECONDS - start))
        rss=$(rss_mib "$gw")
        echo "  t=${t}s RSS ${rss} MiB ($(rss_parts "$gw"))"
        if [ -z "$base" ] && [ "$t" -ge "$warmup" ]; then base=$rss; fi
        last=$rss
    done
    wait "$load1" "$load2" || true
    echo "gateway load: $(wrk_summary "$(cat "$work/wrk-gateway.txt")")"
    echo "task submits: $(wrk_summary "$(cat "$work/wrk-tasks.txt")")"
    echo "tasks succeeded: $(gauge 'tasks_total{status="succeeded"}'), failed: $(gauge 'tasks_total{status="failed"}')"
    if [ -z "$base" ]; then
        echo "soak shorter than the warm-up (${warmup}s): no growth measured"
    else
        growth=$(awk -v a="$base" -v b="$last" 'BEGIN { printf "%.1f", (b - a) * 100 / a }')
        echo "RSS after ${warmup}s: ${base} MiB, at the end: ${last} MiB, growth ${growth} %"
        if awk -v g="$growth" -v m="$max_growth" 'BEGIN { exit !(g >= m) }'; then
            echo "FAIL: RSS grew by ${growth} % (limit ${max_growth} %)"
            status=1
        fi
    fi
    kill -TERM "$gw"
    wait "$gw" || true
fi

echo "== in flight: ${inflight} tasks against a vendor that answers in ${slow_ms} ms, ${inflight_workers} running at once"
start_gateway inflight WORKER_CONCURRENCY="$inflight_workers" DB_MAX_CONNECTIONS=32
employee slow gpt-4o
idle=$(rss_mib "$gw")
submit_tasks slow "$inflight"
peak=$idle
for _ in $(seq 1 10); do
    sleep 2
    rss=$(rss_mib "$gw")
    if awk -v a="$rss" -v b="$peak" 'BEGIN { exit !(a > b) }'; then peak=$rss; fi
done
running=$(gauge 'digital_employee_queue_depth{status="running"}')
queued=$(gauge 'digital_employee_queue_depth{status="queued"}')
echo "RSS idle ${idle} MiB, peak ${peak} MiB with ${running} running and ${queued} queued"
if awk -v p="$peak" -v m="$inflight_max" 'BEGIN { exit !(p >= m) }'; then
    echo "FAIL: RSS ${peak} MiB with tasks in flight (limit ${inflight_max} MiB)"
    status=1
fi
exit "$status"
