#!/usr/bin/env bash
# End-to-end task throughput (submit -> succeeded) and submit latency, one replica, the
# in-process sandbox vendor, SQLite and PostgreSQL, WORKER_CONCURRENCY 32 and 256.
# Usage: bench/tasks.sh [postgres-url]   (PostgreSQL is skipped without a URL)
# PROFILE=release builds optimised (slow first build); the default reuses the dev build.
set -euo pipefail
cd "$(dirname "$0")/.."
pg=${1:-${TEST_DATABASE_URL:-}}
profile=${PROFILE:-dev}
flags=()
if [ "$profile" = release ]; then flags=(--release); fi
cargo build "${flags[@]}" --example bench_tasks -q
bin=target/$([ "$profile" = release ] && echo release || echo debug)/examples/bench_tasks
for db in sqlite ${pg:+"$pg"}; do
    for workers in 32 256; do
        BENCH_DB=$db WORKER_CONCURRENCY=$workers "$bin"
    done
done
