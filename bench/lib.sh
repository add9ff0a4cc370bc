#!/usr/bin/env bash
# Shared helpers for the benchmark scripts: start processes, wait for their JSON
# "listening" lines, read RSS. Sourced, not run.

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

# wrk_summary OUTPUT: "req/s p50 p99" from `wrk --latency` output.
wrk_summary() {
    awk '/Requests\/sec/ { rps = $2 }
         /^ +50%/ { p50 = $2 }
         /^ +99%/ { p99 = $2 }
         /Non-2xx or 3xx responses/ { bad = $NF }
         END { printf "%s req/s, p50 %s, p99 %s", rps, p50, p99
               if (bad) printf " (%s non-2xx!)", bad }' <<<"$1"
}
