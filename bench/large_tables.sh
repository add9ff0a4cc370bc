#!/usr/bin/env bash
# Claim latency, GET /v1/tasks and the usage report on an empty database and with a large
# history (1,000,000 ended tasks, 10,000,000 events, 1,000,000 AI call records), on SQLite
# and PostgreSQL; then the time of one retention batch. See bench/large_tables.rs.
# Usage: bench/large_tables.sh [postgres-url]   (PostgreSQL is skipped without a URL)
#   BENCH_SCALE=0.001 bench/large_tables.sh ...   a smoke run (1,000 tasks, 10,000 events)
# PROFILE=release builds optimised (slow first build); the default reuses the dev build.
set -euo pipefail
cd "$(dirname "$0")/.."
pg=${1:-${TEST_DATABASE_URL:-}}
profile=${PROFILE:-dev}
flags=()
if [ "$profile" = release ]; then flags=(--release); fi
cargo build "${flags[@]}" --example bench_large_tables -q
bin=target/$([ "$profile" = release ] && echo release || echo debug)/examples/bench_large_tables
for db in sqlite ${pg:+"$pg"}; do
    BENCH_DB=$db "$bin"
done
