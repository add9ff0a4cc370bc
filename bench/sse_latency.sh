#!/usr/bin/env bash
# Cross-replica live-event latency: two replicas on PostgreSQL, tasks run on A, followed over
# SSE on B; latency from each event's write to its receipt by B's client, p50/p95/p99.
# Usage: bench/sse_latency.sh [postgres-url]   (default: $TEST_DATABASE_URL)
# PROFILE=release builds optimised (slow first build); the default reuses the dev build.
set -euo pipefail
cd "$(dirname "$0")/.."
pg=${1:-${TEST_DATABASE_URL:-}}
if [ -z "$pg" ]; then
    echo "usage: bench/sse_latency.sh postgres://…" >&2
    exit 2
fi
profile=${PROFILE:-dev}
flags=()
if [ "$profile" = release ]; then flags=(--release); fi
cargo build "${flags[@]}" --example bench_sse_latency -q
bin=target/$([ "$profile" = release ] && echo release || echo debug)/examples/bench_sse_latency
BENCH_DB=$pg "$bin"
