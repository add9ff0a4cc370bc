#!/usr/bin/env bash
# Our gateway side by side with two peers, each in front of the same mock vendor (our
# sandbox, zero latency) and under the same wrk loads: closed loop with 8 and with 64
# connections, then paced at PEERS_RATE/s (1000) with bench/chat.lua's pacing (wrk2 is
# not packaged for Debian; chat.lua paces plain wrk). One table at the end: req/s, p50,
# p99 per load, RSS after the loads, and the time from start to the first ready answer.
#
# Peers, pinned, installed into PEERS_DIR (default ~/.cache/de-peers, reused next time):
#   LiteLLM proxy   PyPI  litellm[proxy]==$LITELLM_VERSION   (a venv)
#   Portkey gateway npm   @portkey-ai/gateway@$PORTKEY_VERSION
# Everything listens on 127.0.0.1; the peers are told not to fetch anything at start.
#
#   cargo build --release && bench/peers.sh
#   PEERS_INSTALL_ONLY=1 bench/peers.sh        # only install (and check) the peers
#   PEERS=ours DURATION=5s bench/peers.sh      # a subset: ours, litellm, portkey
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
LITELLM_VERSION=${LITELLM_VERSION:-1.100.5}
PORTKEY_VERSION=${PORTKEY_VERSION:-1.15.2}
dir=${PEERS_DIR:-$HOME/.cache/de-peers}
bin=${BIN:-target/release/digital-employee}
duration=${DURATION:-15s}
rate=${PEERS_RATE:-1000}
peers=${PEERS:-"ours litellm portkey"}
mkdir -p "$dir"

install_litellm() {
    local venv="$dir/litellm-$LITELLM_VERSION"
    if [ ! -x "$venv/bin/litellm" ]; then
        echo "installing litellm[proxy]==$LITELLM_VERSION into $venv" >&2
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q --disable-pip-version-check "litellm[proxy]==$LITELLM_VERSION" >&2
    fi
    "$venv/bin/python" -c 'import importlib.metadata as m; print("litellm", m.version("litellm"))' >&2
}

install_portkey() {
    local root="$dir/portkey-$PORTKEY_VERSION"
    if [ ! -d "$root/node_modules/@portkey-ai/gateway" ]; then
        echo "installing @portkey-ai/gateway@$PORTKEY_VERSION into $root" >&2
        mkdir -p "$root"
        (cd "$root" && npm install --silent --no-audit --no-fund "@portkey-ai/gateway@$PORTKEY_VERSION" >&2)
    fi
    node -e 'console.error("portkey", require(process.argv[1]).version)' \
        "$root/node_modules/@portkey-ai/gateway/package.json"
}

for p in $peers; do
    case $p in
        litellm) install_litellm ;;
        portkey) install_portkey ;;
    esac
done
if [ -n "${PEERS_INSTALL_ONLY:-}" ]; then exit 0; fi

bench_init
export BENCH_KEY=bench-key-0123456789

start_vendor

# wait_ready URL PID: polls URL until it answers 200; prints the milliseconds since $t0.
wait_ready() {
    local url=$1 pid=$2
    for _ in $(seq 1 1200); do
        if curl -fs -o /dev/null "$url"; then
            echo $(( ($(date +%s%N) - t0) / 1000000 ))
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || { echo "the process exited" >&2; return 1; }
        sleep 0.05
    done
    echo "not ready after 60 s" >&2
    return 1
}

# start_peer NAME PORT: starts it on PORT, sets $pid, $ready_ms and $headers (extra
# request headers, one per line, for bench/chat.lua).
start_peer() {
    local name=$1 port=$2
    headers=""
    t0=$(date +%s%N)
    case $name in
        ours)
            env -i PATH="$PATH" HOST=127.0.0.1 PORT="$port" PROMETHEUS_METRICS_PORT="$(free_port)" \
                DATA_DIR="$work/data" API_KEY_WHITELIST=$BENCH_KEY AI_CACHE=off LOG_LEVEL=warn \
                RATE_LIMIT_REQUESTS=1000000000 RATE_LIMIT_WINDOW_SECONDS=1 \
                OPENAI_BASE_URL="http://$vendor/v1" OPENAI_API_KEY=sk-bench \
                "$bin" serve >"$work/ours.log" 2>&1 &
            pid=$!
            ready_ms=$(wait_ready "http://127.0.0.1:$port/ready" "$pid")
            ;;
        litellm)
            cat >"$work/litellm.yaml" <<YAML
model_list:
  - model_name: gpt-4o-mini
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: http://$vendor/v1
      api_key: sk-bench
YAML
            env -i PATH="$PATH" HOME="$work" LITELLM_LOCAL_MODEL_COST_MAP=True \
                LITELLM_TELEMETRY=False LITELLM_LOG=ERROR \
                "$dir/litellm-$LITELLM_VERSION/bin/litellm" --config "$work/litellm.yaml" \
                --host 127.0.0.1 --port "$port" --num_workers 1 --telemetry False \
                >"$work/litellm.log" 2>&1 &
            pid=$!
            ready_ms=$(wait_ready "http://127.0.0.1:$port/health/liveliness" "$pid")
            ;;
        portkey)
            local root="$dir/portkey-$PORTKEY_VERSION/node_modules/@portkey-ai/gateway"
            env -i PATH="$PATH" HOME="$work" node "$root/build/start-server.js" --port="$port" \
                >"$work/portkey.log" 2>&1 &
            pid=$!
            ready_ms=$(wait_ready "http://127.0.0.1:$port/" "$pid")
            headers=$(printf 'x-portkey-provider: openai\nx-portkey-custom-host: http://%s/v1' "$vendor")
            ;;
    esac
    pids+=("$pid")
}

# One request first: the peer must answer the chat completion (not just its health).
check_answer() {
    local url=$1
    local args=(-fs -X POST "$url" -H 'Content-Type: application/json'
        -H "Authorization: Bearer $BENCH_KEY" -H "X-API-Key: $BENCH_KEY")
    while IFS= read -r h; do [ -n "$h" ] && args+=(-H "$h"); done <<<"$headers"
    curl "${args[@]}" -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}' |
        python3 -c 'import json,sys; assert json.load(sys.stdin)["choices"][0]["message"]["content"]'
}

rows=()
for name in $peers; do
    port=$(free_port)
    start_peer "$name" "$port"
    url="http://127.0.0.1:$port/v1/chat/completions"
    if ! check_answer "$url"; then
        echo "$name: no valid chat completion; see its log:" >&2
        tail -n 20 "$work/$name.log" >&2
        rows+=("$(printf '%-8s %s' "$name" "failed to answer")")
        kill "$pid" 2>/dev/null || true
        continue
    fi
    line=$(printf '%-8s %8s' "$name" "$ready_ms")
    for load in c8 c64 paced; do
        case $load in
            c8) out=$(BENCH_HEADERS=$headers RATE=0 CONNS=8 wrk -t2 -c8 -d"$duration" --latency -s bench/chat.lua "$url") ;;
            c64) out=$(BENCH_HEADERS=$headers RATE=0 CONNS=64 wrk -t2 -c64 -d"$duration" --latency -s bench/chat.lua "$url") ;;
            paced) out=$(BENCH_HEADERS=$headers RATE=$rate CONNS=32 wrk -t2 -c32 -d"$duration" --latency -s bench/chat.lua "$url") ;;
        esac
        # "N req/s, p50 X, p99 Y" → three columns.
        line+=$(wrk_summary "$out" | awk -F'[ ,]+' '{ printf " %10s %9s %9s", $1, $4, $6 }')
        if grep -q 'Non-2xx' <<<"$out"; then line+="!"; fi
    done
    line+=$(printf ' %9s' "$(rss_mib "$pid")")
    rows+=("$line")
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
done

echo
echo "$(date -u +%F) $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo); duration $duration per load; ! = some non-2xx"
printf '%-8s %8s %10s %9s %9s %10s %9s %9s %10s %9s %9s %9s\n' peer ready_ms \
    c8_rps c8_p50 c8_p99 c64_rps c64_p50 c64_p99 "${rate}_rps" "${rate}_p50" "${rate}_p99" rss_mib
for r in "${rows[@]}"; do echo "$r"; done
