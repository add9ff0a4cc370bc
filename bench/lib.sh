#!/usr/bin/env bash
# Shared helpers for the benchmark scripts: start processes, wait for their JSON
# "listening" lines, read RSS. Sourced, not run.

# bench_init: the common start of a load script. $bin is BIN or the release build and must
# exist; wrk must be installed; $work is a new scratch folder and $pids an empty array of
# processes, all killed (and $work removed) when the script exits.
bench_init() {
    bin=${BIN:-target/release/digital-employee}
    [ -x "$bin" ] || { echo "build first: cargo build --release (or set BIN)" >&2; exit 2; }
    command -v wrk >/dev/null || { echo "install wrk (apt-get install wrk)" >&2; exit 2; }
    work=$(mktemp -d)
    pids=()
    trap bench_cleanup EXIT
}

bench_cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}

# wait_field FILE MESSAGE FIELD: the FIELD of the first JSON log line whose message is MESSAGE.
wait_field() {
    local file=$1 message=$2 field=$3
    for _ in $(seq 1 600); do
        if out=$(python3 - "$file" "$message" "$field" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    try:
        v = json.loads(line)
    except ValueError:
        continue
    if v.get("message") == sys.argv[2]:
        print(v[sys.argv[3]])
        sys.exit(0)
sys.exit(1)
PY
        ); then
            echo "$out"
            return 0
        fi
        sleep 0.05
    done
    echo "no '$message' line in $file" >&2
    return 1
}

# rss_mib PID: resident memory in MiB.
rss_mib() {
    awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"
}

# rss_parts PID: "anon A, file F, shmem S MiB", the parts of the resident memory: the heap
# and stacks, files mapped into the process (the binary, SQLite's database when mapped),
# shared memory (SQLite's WAL index, the -shm file).
rss_parts() {
    awk '/^RssAnon:/ { a = $2 } /^RssFile:/ { f = $2 } /^RssShmem:/ { s = $2 }
         END { printf "anon %.1f, file %.1f, shmem %.1f MiB", a / 1024, f / 1024, s / 1024 }' \
        "/proc/$1/status"
}

# cpu_ticks PID: the CPU time the process has used so far (user + system), in clock ticks.
cpu_ticks() {
    awk '{ print $14 + $15 }' "/proc/$1/stat"
}

# cpu_per_request TICKS_BEFORE TICKS_AFTER WRK_OUTPUT: "X µs per request", the CPU a process
# used between the two readings divided by the requests wrk counted.
cpu_per_request() {
    local hz requests
    hz=$(getconf CLK_TCK)
    requests=$(awk '/requests in/ { print $1 }' <<<"$3")
    awk -v a="$1" -v b="$2" -v hz="$hz" -v n="$requests" \
        'BEGIN { printf "%.1f µs per request", (b - a) * 1e6 / hz / n }'
}

# wrk_summary OUTPUT: "req/s p50 p99" from `wrk --latency` output.
wrk_summary() {
    awk '/Requests\/sec/ { rps = $2 }
         /^ +50%/ { p50 = $2 }
         /^ +99%/ { p99 = $2 }
         /Non-2xx or 3xx responses/ { bad = $NF }
         END { printf "%s req/s, p50 %s, p99 %s", rps, p50, p99
               if (bad) printf " (%s non-2xx!)", bad }' <<<"$1"
}

# free_port: a TCP port free on 127.0.0.1 at the time of asking.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# The helpers below start the sandbox vendor and drive one `serve` process against it. They
# read $bin (the binary), $work (a scratch folder), $vendor (the vendor's address, set by
# start_vendor) and $BENCH_KEY, and append every process they start to the array $pids for
# the caller's clean-up (bench_init sets up $bin, $work and $pids).

# start_vendor [ARGS...]: starts the sandbox vendor on a free port (ARGS go to `sandbox`,
# e.g. --setup FILE), sets $vendor (its address) and $vendor_pid.
start_vendor() {
    env -i PATH="$PATH" "$bin" sandbox --port 0 "$@" >"$work/sandbox.log" 2>&1 &
    vendor_pid=$!
    pids+=("$vendor_pid")
    vendor=$(wait_field "$work/sandbox.log" "sandbox vendor listening" addr)
}

# start_gateway NAME [VAR=VALUE...]: starts `serve` on free ports against the sandbox vendor,
# sets $api, $metrics and $gw (its pid); exits when it is not ready within 30 s.
start_gateway() {
    local name=$1
    shift
    local port mport
    port=$(free_port)
    mport=$(free_port)
    env -i PATH="$PATH" HOST=127.0.0.1 PORT="$port" PROMETHEUS_METRICS_PORT="$mport" \
        DATA_DIR="$work/data-$name" API_KEY_WHITELIST="$BENCH_KEY" AI_CACHE=off LOG_LEVEL=warn \
        RATE_LIMIT_REQUESTS=1000000000 RATE_LIMIT_WINDOW_SECONDS=1 AI_SERVICE_TIMEOUT=300 \
        OPENAI_BASE_URL="http://$vendor/v1" OPENAI_API_KEY=sk-bench "$@" \
        "$bin" serve >"$work/$name.log" 2>&1 &
    gw=$!
    pids+=("$gw")
    api="127.0.0.1:$port"
    metrics="127.0.0.1:$mport"
    for _ in $(seq 1 600); do
        curl -fs -o /dev/null "http://$api/ready" && return 0
        sleep 0.05
    done
    echo "the $name gateway did not become ready" >&2
    cat "$work/$name.log" >&2
    exit 1
}

# employee NAME MODEL
employee() {
    curl -fs -o /dev/null -X POST "http://$api/v1/employees" -H "X-API-Key: $BENCH_KEY" \
        -H 'Content-Type: application/json' \
        -d "{\"name\": \"$1\", \"role\": \"benchmark\", \"model_policy\": [\"openai/$2\"]}"
}

# gauge NAME_WITH_LABELS: its value on the metrics endpoint (0 when absent).
gauge() {
    curl -fs "http://$metrics/metrics" | awk -v s="$1" '$1 == s { print $2; found = 1 } END { if (!found) print 0 }'
}

# submit_tasks EMPLOYEE COUNT [IDS_FILE]: submits COUNT tasks from 16 connections; prints how
# many were refused; writes the accepted tasks' ids to IDS_FILE, one per line, when given.
submit_tasks() {
    python3 - "$api" "$BENCH_KEY" "$1" "$2" "${3:-}" <<'PY'
import http.client, json, sys, threading
addr, key, employee, n, ids_file = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
host, port = addr.split(":")
lock = threading.Lock()
left = [n]
bad = [0]
ids = []
def submit():
    c = http.client.HTTPConnection(host, int(port), timeout=60)
    while True:
        with lock:
            if left[0] == 0:
                return
            left[0] -= 1
            i = left[0]
        c.request("POST", "/v1/tasks", json.dumps({"employee": employee, "input": f"{i} + 1"}),
                  {"X-API-Key": key, "Content-Type": "application/json"})
        r = c.getresponse()
        body = r.read()
        with lock:
            if r.status == 202:
                ids.append(json.loads(body)["id"])
            else:
                bad[0] += 1
threads = [threading.Thread(target=submit) for _ in range(16)]
for t in threads: t.start()
for t in threads: t.join()
if ids_file:
    with open(ids_file, "w") as f:
        f.write("\n".join(ids) + "\n")
print(f"  submitted {n} tasks ({bad[0]} refused)")
PY
}
