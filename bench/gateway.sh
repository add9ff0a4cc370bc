#!/usr/bin/env bash
# Router overhead: the same chat completion sent straight to the sandbox vendor and
# through the gateway (/v1/chat/completions → router → sandbox over HTTP, zero vendor
# latency, cache off), at fixed rates and flat out. Reports p50/p99 of both, the added
# latency, the maximum throughput, RSS under load, the CPU time the gateway and the
# vendor each spend per request flat out (from /proc/PID/stat), and the router's own
# overhead histogram (ai_gateway_overhead_seconds). Then the other protocols at
# PROTOCOL_RATE (1000/s): /v1/messages (Anthropic in) against the sandbox's own
# /v1/messages, and /v1/responses (stored, and with "store": false) against the direct
# chat completion it makes.
#
# BUDGET=on puts a tenant budget in force, so every call reserves and settles; off by
# default.
#
# TRACING=on exports a span for every request (OTLP/HTTP, 100 % sampling) to a local sink
# that accepts and discards the batches, to measure what tracing adds; off by default.
#
# PACING=jitter (default) spreads each connection's requests at random around the mean
# interval, as independent clients would; PACING=fixed sends all connections in lockstep
# (bursts of CONNS requests). See bench/chat.lua.
#
# BIN names another build to measure (default target/release/digital-employee), so two
# builds can be compared in interleaved runs. PROTOCOLS=off skips the other protocols.
# API_THREADS is passed to the gateway when set (0 = the API on the shared runtime).
#
#   cargo build --release && bench/gateway.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
bench_init
duration=${DURATION:-15s}
rates=${RATES:-"500 1000 2000"}
conns=${CONNS:-32}
export BENCH_KEY=bench-key-0123456789 CONNS=$conns

start_vendor

threads=()
if [ -n "${API_THREADS:-}" ]; then
    threads=(API_THREADS="$API_THREADS")
fi

otel=()
if [ "${TRACING:-off}" = on ]; then
    sink_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    python3 - "$sink_port" >"$work/sink.log" 2>&1 <<'PY' &
import http.server, sys
class Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
PY
    pids+=($!)
    otel=(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$sink_port" OTEL_TRACES_SAMPLER=always_on)
    echo "tracing on: every request exported to the sink on port $sink_port"
fi

env -i PATH="$PATH" "${threads[@]}" "${otel[@]}" HOST=127.0.0.1 PORT=0 PROMETHEUS_METRICS_PORT=0 \
    DATA_DIR="$work/data" API_KEY_WHITELIST=$BENCH_KEY AI_CACHE=off LOG_LEVEL="${GATEWAY_LOG_LEVEL:-info}" \
    RATE_LIMIT_REQUESTS=1000000000 RATE_LIMIT_WINDOW_SECONDS=1 \
    OPENAI_BASE_URL="http://$vendor/v1" OPENAI_API_KEY=sk-bench \
    "$bin" serve >"$work/serve.log" 2>&1 &
pids+=($!)
gw_pid=$!
api=$(wait_field "$work/serve.log" "listening" api)
metrics=$(wait_field "$work/serve.log" "listening" metrics)
echo "vendor http://$vendor  gateway http://$api  pacing ${PACING:-jitter} ($conns connections)"

# BUDGET=on: a tenant budget far above what the run spends, so every call reserves its
# maximum cost before the vendor call and settles after (the budget's cost).
if [ "${BUDGET:-off}" = on ]; then
    curl -sf -X POST -H "authorization: Bearer $BENCH_KEY" -H 'content-type: application/json' \
        -d '{"scope":"tenant","period":"month","limit_usd":1000000000}' \
        "http://$api/v1/budgets" >/dev/null || { echo "cannot create the bench budget" >&2; exit 1; }
    echo "budget on: every call reserves and settles against a tenant budget"
fi

# Reference: what a second hop alone costs here, through nginx (one worker, keep-alive
# upstream, no logic). Skipped when nginx is not installed.
proxy=""
if command -v nginx >/dev/null; then
    mkdir -p "$work/nginx/logs"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    {
        echo "worker_processes 1; error_log $work/nginx/logs/error.log warn;"
        echo "pid $work/nginx/nginx.pid; events { worker_connections 1024; }"
        echo "http { access_log off; upstream vendor { server $vendor; keepalive 64; }"
        echo "  server { listen 127.0.0.1:$port; location / { proxy_pass http://vendor;"
        echo "    proxy_http_version 1.1; proxy_set_header Connection \"\"; } } }"
    } >"$work/nginx/nginx.conf"
    nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -g "daemon off;" &
    pids+=($!)
    proxy="http://127.0.0.1:$port"
    # Ready once it answers anything over HTTP.
    for _ in $(seq 50); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "$proxy/" || true)" != 000 ] && break
        sleep 0.1
    done
fi

for rate in $rates; do
    direct=$(RATE=$rate wrk -t2 -c"$conns" -d"$duration" --latency -s bench/chat.lua \
        "http://$vendor/v1/chat/completions")
    via=$(RATE=$rate wrk -t2 -c"$conns" -d"$duration" --latency -s bench/chat.lua \
        "http://$api/v1/chat/completions")
    echo "rate $rate/s  direct:  $(wrk_summary "$direct")"
    echo "rate $rate/s  gateway: $(wrk_summary "$via")  RSS $(rss_mib "$gw_pid") MiB"
    if [ -n "$proxy" ]; then
        ref=$(RATE=$rate wrk -t2 -c"$conns" -d"$duration" --latency -s bench/chat.lua \
            "$proxy/v1/chat/completions")
        echo "rate $rate/s  nginx:   $(wrk_summary "$ref")  (reference: the second hop alone)"
    fi
done
gw_cpu=$(cpu_ticks "$gw_pid")
vendor_cpu=$(cpu_ticks "$vendor_pid")
flat=$(RATE=0 wrk -t2 -c"$conns" -d"$duration" --latency -s bench/chat.lua "http://$api/v1/chat/completions")
echo "flat out gateway: $(wrk_summary "$flat")  RSS $(rss_mib "$gw_pid") MiB"
echo "  CPU: gateway $(cpu_per_request "$gw_cpu" "$(cpu_ticks "$gw_pid")" "$flat")," \
    "vendor $(cpu_per_request "$vendor_cpu" "$(cpu_ticks "$vendor_pid")" "$flat")"
flat=$(RATE=0 wrk -t2 -c"$conns" -d"$duration" --latency -s bench/chat.lua "http://$vendor/v1/chat/completions")
echo "flat out direct:  $(wrk_summary "$flat")"
# The other protocols at one rate: each against the direct vendor call it makes.
if [ "${PROTOCOLS:-on}" = on ]; then
    prate=${PROTOCOL_RATE:-1000}
    messages_body='{"model":"gpt-4o-mini","max_tokens":256,"messages":[{"role":"user","content":"Summarise the quarterly report in one line."}]}'
    responses_body='{"model":"gpt-4o-mini","input":"Summarise the quarterly report in one line."}'
    unstored_body='{"model":"gpt-4o-mini","input":"Summarise the quarterly report in one line.","store":false}'
    run_body() { # BODY URL
        BENCH_BODY=$1 RATE=$prate wrk -t2 -c"$conns" -d"$duration" --latency -s bench/chat.lua "$2"
    }
    echo "rate $prate/s  messages direct:  $(wrk_summary "$(run_body "$messages_body" "http://$vendor/v1/messages")")"
    echo "rate $prate/s  messages gateway: $(wrk_summary "$(run_body "$messages_body" "http://$api/v1/messages")")  (OpenAI-format vendor behind)"
    echo "rate $prate/s  responses gateway: $(wrk_summary "$(run_body "$responses_body" "http://$api/v1/responses")")  (stored)"
    echo "rate $prate/s  responses gateway: $(wrk_summary "$(run_body "$unstored_body" "http://$api/v1/responses")")  (store: false)"
    echo "rate $prate/s  chat direct:      $(wrk_summary "$(RATE=$prate wrk -t2 -c"$conns" -d"$duration" --latency -s bench/chat.lua "http://$vendor/v1/chat/completions")")  (what /v1/responses calls)"
fi

echo "router overhead histogram (seconds, cumulative):"
curl -fs "http://$metrics/metrics" | grep '^ai_gateway_overhead_seconds' | sed 's/^/  /'
if [ "${TRACING:-off}" = on ]; then
    echo "spans exported and dropped:"
    curl -fs "http://$metrics/metrics" | grep -E '^otel_spans_(exported|dropped)_total' | sed 's/^/  /'
fi
