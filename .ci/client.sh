#!/usr/bin/env bash
# A client generated from the served /openapi.json by a standard generator
# (openapi-python-client, pinned) builds and drives the service: create an employee,
# submit tasks, list them by cursor, read one to its end (.ci/client/smoke.py).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.ci/.venv-client
if [ ! -x "$venv/bin/openapi-python-client" ]; then
    python3 -m venv "$venv" 2>/dev/null || {
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
        python3 -m venv "$venv"
    }
    "$venv/bin/pip" install -q --disable-pip-version-check 'openapi-python-client==0.29.1'
fi

cargo build --locked -q --bin digital-employee
work=$(mktemp -d)
key="client-admin-key-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
env -i PATH="$PATH" DATA_DIR="$work" HOST=127.0.0.1 PORT=0 PROMETHEUS_METRICS_PORT=0 \
    API_KEY_WHITELIST="$key" LOG_LEVEL=info \
    target/debug/digital-employee serve >"$work/serve.log" 2>&1 &
pid=$!
cleanup() {
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
addr=""
for _ in $(seq 1 150); do
    addr=$(grep -o '"api":"[^"]*"' "$work/serve.log" 2>/dev/null | head -n1 | cut -d'"' -f4 || true)
    [ -n "$addr" ] && break
    sleep 0.2
done
[ -n "$addr" ] || { echo "the service did not start:"; cat "$work/serve.log"; exit 1; }

curl -fsS "http://$addr/openapi.json" -o "$work/openapi.json"
# The generator must take the whole document: any warning (a skipped endpoint or model)
# fails this step.
(cd "$work" && "$OLDPWD/$venv/bin/openapi-python-client" generate --path openapi.json \
    --meta none --output-path client --config "$OLDPWD/.ci/client/generator.yaml") >"$work/generate.log" 2>&1 ||
    { cat "$work/generate.log"; exit 1; }
if grep -qiE 'warning|unable' "$work/generate.log"; then
    cat "$work/generate.log"; echo "the generator skipped parts of the document"; exit 1
fi
PYTHONPATH="$work" "$venv/bin/python" .ci/client/smoke.py "http://$addr" "$key"
