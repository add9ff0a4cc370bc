#!/usr/bin/env bash
# SQLite's reader connections against read load: for each count in READERS ("2 4 16"),
# one `serve` process on SQLite with DB_MAX_CONNECTIONS set to it is filled with FILL
# one-step tasks (10000, run to their end against the sandbox vendor), then measured for
# DURATION (10s) each:
#   reads  - wrk -t2 -c32 flat out on task reads (bench/reads.lua: a page of the list,
#            one task, its events, in turn, at random ids)
#   mixed  - the same reads while tasks are submitted at TASK_RATE/s (500) and run
# and prints req/s, p50, p99 of each load and the RSS after it. Counts are measured in
# turn, ROUNDS (2) times, so a drift of the machine does not favour one of them.
#
#   cargo build --release && bench/readers.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
bench_init
readers=${READERS:-2 4 16}
fill=${FILL:-10000}
duration=${DURATION:-10s}
task_rate=${TASK_RATE:-500}
rounds=${ROUNDS:-2}
export BENCH_KEY=bench-key-0123456789 CONNS=32

start_vendor

# wait_succeeded N: polls the metrics until N tasks succeeded or failed (deadline 300 s).
wait_succeeded() {
    local deadline=$((SECONDS + 300)) done_
    while [ $SECONDS -lt $deadline ]; do
        done_=$(awk -v a="$(gauge 'tasks_total{status="succeeded"}')" \
            -v b="$(gauge 'tasks_total{status="failed"}')" 'BEGIN { print a + b }')
        if awk -v d="$done_" -v n="$1" 'BEGIN { exit !(d >= n) }'; then return 0; fi
        sleep 0.2
    done
    echo "tasks did not finish within 300 s" >&2
    exit 1
}

for round in $(seq 1 "$rounds"); do
    for n in $readers; do
        name="r$n-$round"
        start_gateway "$name" DB_MAX_CONNECTIONS="$n"
        employee reader gpt-4o-mini
        submit_tasks reader "$fill" "$work/ids-$name.txt" >/dev/null
        wait_succeeded "$fill"
        out=$(IDS_FILE="$work/ids-$name.txt" wrk -t2 -c32 -d"$duration" --latency \
            -s bench/reads.lua "http://$api")
        echo "[round $round, DB_MAX_CONNECTIONS=$n] reads: $(wrk_summary "$out"); RSS $(rss_mib "$gw") MiB"
        BENCH_BODY='{"employee": "reader", "input": "2 + 2"}' RATE=$task_rate wrk -t1 -c32 \
            -d"$duration" --latency -s bench/chat.lua "http://$api/v1/tasks" >"$work/submits.txt" 2>&1 &
        load=$!
        pids+=("$load")
        out=$(IDS_FILE="$work/ids-$name.txt" wrk -t1 -c32 -d"$duration" --latency \
            -s bench/reads.lua "http://$api")
        wait "$load" || true
        echo "[round $round, DB_MAX_CONNECTIONS=$n] mixed: reads $(wrk_summary "$out");" \
            "submits $(wrk_summary "$(cat "$work/submits.txt")"); RSS $(rss_mib "$gw") MiB"
        kill -TERM "$gw"
        wait "$gw" || true
    done
done
