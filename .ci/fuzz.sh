#!/usr/bin/env bash
# API fuzzing: schemathesis generates requests for every operation of /openapi.json, in
# every phase (examples, coverage, fuzzing, stateful), and runs every check (`--checks
# all`): no 5xx, responses and statuses as documented, schema-valid requests accepted,
# schema-violating ones rejected, auth enforced. Settings and the reasons for each
# per-operation setting: .ci/schemathesis.toml.
#
# Runs against SQLite, then against PostgreSQL when FUZZ_DATABASE_URL (or
# TEST_DATABASE_URL) is set; FUZZ_MAX_EXAMPLES (default 100) bounds the examples per
# operation; extra arguments go to `schemathesis run` (e.g. --seed 1).
set -euo pipefail
cd "$(dirname "$0")/.."

max_examples="${FUZZ_MAX_EXAMPLES:-100}"
venv=.ci/.venv
if [ ! -x "$venv/bin/schemathesis" ] || ! "$venv/bin/schemathesis" --version | grep -q '4\.32\.5'; then
    python3 -m venv "$venv" 2>/dev/null || {
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
        python3 -m venv "$venv"
    }
    "$venv/bin/pip" install -q --disable-pip-version-check 'schemathesis==4.32.5'
fi

cargo build --locked -q --bin digital-employee

fuzz() {
    local label=$1 database_url=$2
    shift 2
    local work key pid addr status
    work=$(mktemp -d)
    key="fuzz-admin-key-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
    if [ -n "$database_url" ]; then
        env -i PATH="$PATH" DATA_DIR="$work" DATABASE_URL="$database_url" \
            target/debug/digital-employee migrate >"$work/migrate.log" 2>&1 ||
            { echo "migrating $label failed:"; cat "$work/migrate.log"; return 1; }
    fi
    # The failed-authentication limit stays out of the way: the auth checks send bad
    # credentials on purpose, hundreds of times, from one address.
    env -i PATH="$PATH" DATA_DIR="$work" HOST=127.0.0.1 PORT=0 PROMETHEUS_METRICS_PORT=0 \
        ${database_url:+DATABASE_URL="$database_url"} \
        API_KEY_WHITELIST="$key" RATE_LIMIT_REQUESTS=1000000 AUTH_FAILURE_LIMIT=1000000 \
        LOG_LEVEL=info target/debug/digital-employee serve >"$work/serve.log" 2>&1 &
    pid=$!
    addr=""
    for _ in $(seq 1 150); do
        addr=$(grep -o '"api":"[^"]*"' "$work/serve.log" 2>/dev/null | head -n1 | cut -d'"' -f4 || true)
        [ -n "$addr" ] && break
        sleep 0.2
    done
    if [ -z "$addr" ]; then
        echo "the service did not start ($label):"; cat "$work/serve.log"
        kill "$pid" 2>/dev/null || true
        return 1
    fi
    echo "--- schemathesis against $label ($addr)"
    set +e
    "$venv/bin/schemathesis" --config-file .ci/schemathesis.toml run "http://$addr/openapi.json" \
        --header "X-API-Key: $key" \
        --checks all \
        --max-examples "$max_examples" \
        --workers 1 \
        --no-color \
        "$@" 2>&1 | tee "$work/fuzz.log"
    status=${PIPESTATUS[0]}
    set -e
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    # Every phase must have run: a phase skipped for want of data is no test.
    for phase in Examples Coverage Fuzzing Stateful; do
        if ! grep -qE "(✅|❌) +$phase" "$work/fuzz.log"; then
            echo "the $phase phase did not run against $label"; status=1
        fi
    done
    echo "$label: $(grep -E '^=+ .* in [0-9.]+s =+$' "$work/fuzz.log" | tail -n1)"
    rm -rf "$work"
    return "$status"
}

rc=0
fuzz SQLite "" "$@" || rc=1
pg_url="${FUZZ_DATABASE_URL:-${TEST_DATABASE_URL:-}}"
if [ -n "$pg_url" ]; then
    # A database of its own, so the run starts empty and leaves the test database alone.
    admin_url="${pg_url%/*}/postgres"
    db="fuzz_$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')"
    psql "$admin_url" -qc "CREATE DATABASE $db" >/dev/null
    trap 'psql "$admin_url" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true' EXIT
    fuzz PostgreSQL "${pg_url%/*}/$db" "$@" || rc=1
elif [ "${REQUIRE_BACKEND_TESTS:-}" = 1 ]; then
    echo "REQUIRE_BACKEND_TESTS=1 but no FUZZ_DATABASE_URL or TEST_DATABASE_URL: PostgreSQL was not fuzzed"
    exit 1
fi
exit "$rc"
