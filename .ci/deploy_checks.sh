#!/usr/bin/env bash
# Checks every deployment artifact with the tool that consumes it:
#
#   nginx -t, promtool (config, rules, rule unit tests), amtool,
#   kubernetes-validate --strict, docker-compose config, yamllint, shellcheck,
#   the Grafana dashboard, the kustomization, the blue-green script (dry run
#   and rollback against a stub kubectl) and the Dockerfile's invariants.
#
#   bash .ci/deploy_checks.sh
#
# Installs what is missing from Debian 12 packages and PyPI (needs root for
# apt-get); idempotent. Prints one line per check and stops at the first
# failure, naming it and showing its output.
#
# Environment:
#   DEPLOY_CHECKS_CACHE         where the kubernetes-validate virtualenv lives
#                               (default ~/.cache/digital-employee-ci)
#   DEPLOY_CHECKS_METRICS_FILE  a /metrics scrape of a running instance: every
#                               metric named by the dashboard and the alert
#                               rules must appear in it (skipped when unset)
#   DEPLOY_CHECKS_PENDING_METRICS  names allowed to be missing from that scrape
#                               (see .ci/deploy_checks.py; .ci/topology.sh sets it)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

readonly K8S_VALIDATE_VERSION=1.37.0
# Kubernetes versions the manifests are validated against: the oldest one
# supported here and the newest schema kubernetes-validate ships.
readonly K8S_VERSIONS=(1.30.0 1.37.0)
readonly APT_PACKAGES=(nginx prometheus prometheus-alertmanager shellcheck yamllint
    docker-compose openssl ca-certificates python3-venv)

CACHE=${DEPLOY_CHECKS_CACHE:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/digital-employee-ci}
VENV=$CACHE/venv-kubernetes-validate-$K8S_VALIDATE_VERSION
WORK=$(mktemp -d "${TMPDIR:-/tmp}/deploy-checks.XXXXXX")
POLICY_RC_CREATED=false

cleanup() {
    rm -rf "$WORK"
    if [[ "$POLICY_RC_CREATED" == true ]]; then rm -f /usr/sbin/policy-rc.d; fi
}
trap cleanup EXIT

STARTED=$SECONDS
PASSED=0

# ------------------------------------------------------------------ installing

install_tools() {
    local missing=()
    command -v nginx >/dev/null || missing+=(nginx)
    command -v promtool >/dev/null || missing+=(prometheus)
    command -v amtool >/dev/null || missing+=(prometheus-alertmanager)
    command -v shellcheck >/dev/null || missing+=(shellcheck)
    command -v yamllint >/dev/null || missing+=(yamllint)
    command -v docker-compose >/dev/null || missing+=(docker-compose)
    command -v openssl >/dev/null || missing+=(openssl)
    [[ -e /etc/ssl/certs/ca-certificates.crt ]] || missing+=(ca-certificates)
    { [[ -x /usr/bin/python3 ]] && /usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null; } ||
        missing+=(python3-venv)

    if ((${#missing[@]} > 0)); then
        echo "installing: ${missing[*]}"
        if [[ $(id -u) -ne 0 ]]; then
            echo "FAIL install: need root to apt-get install ${missing[*]}" >&2
            exit 1
        fi
        # Debian starts a service when its package is installed (nginx on :80,
        # prometheus on :9090); these are tools here, so forbid that for the
        # duration of the install when nothing else already decides it.
        if [[ ! -e /usr/sbin/policy-rc.d ]]; then
            printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
            chmod 755 /usr/sbin/policy-rc.d
            POLICY_RC_CREATED=true
        fi
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}" >/dev/null
        if [[ "$POLICY_RC_CREATED" == true ]]; then
            rm -f /usr/sbin/policy-rc.d
            POLICY_RC_CREATED=false
        fi
    fi

    if ! "$VENV/bin/kubernetes-validate" --version >/dev/null 2>&1; then
        echo "installing: kubernetes-validate $K8S_VALIDATE_VERSION (PyPI) into $VENV"
        rm -rf "$VENV"
        mkdir -p "$CACHE"
        /usr/bin/python3 -m venv "$VENV"
        PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/pip" install -q "kubernetes-validate==$K8S_VALIDATE_VERSION"
    fi
}

# --------------------------------------------------------------------- running

# check NAME FUNCTION: runs FUNCTION with errexit in a subshell, output to a
# log; prints "ok NAME" or the log and "FAIL NAME", and stops on failure.
check() {
    local name=$1 fn=$2 log="$WORK/log.$((PASSED + 1))" t0=$SECONDS rc
    set +e
    (
        set -euo pipefail
        "$fn"
    ) >"$log" 2>&1
    rc=$?
    set -e
    if ((rc != 0)); then
        sed 's/^/    /' "$log" | tail -n 60
        echo "FAIL $name"
        echo "deploy-checks: $PASSED passed, 1 failed"
        exit 1
    fi
    PASSED=$((PASSED + 1))
    printf 'ok   %-58s %3ds\n' "$name" $((SECONDS - t0))
}

fail() {
    echo "error: $*" >&2
    return 1
}

# ---------------------------------------------------------------------- checks

check_nginx() {
    local dir="$WORK/nginx"
    mkdir -p "$dir/ssl" "$dir/logs" "$dir/temp"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
        -keyout "$dir/ssl/tls.key" -out "$dir/ssl/tls.crt" 2>/dev/null
    grep -q 'ssl_certificate     /etc/nginx/ssl/tls.crt;' deploy/nginx/nginx.conf ||
        fail "nginx.conf must read the certificate from /etc/nginx/ssl/tls.crt"
    grep -q 'ssl_certificate_key /etc/nginx/ssl/tls.key;' deploy/nginx/nginx.conf ||
        fail "nginx.conf must read the key from /etc/nginx/ssl/tls.key"
    # Certificate, logs and temp files under the temp dir, so no root paths
    # are needed or touched.
    sed -e "s#/etc/nginx/ssl/#$dir/ssl/#g" \
        -e "s#/var/log/nginx/#$dir/logs/#g" \
        -e "s#^http {#http {\n    client_body_temp_path $dir/temp/body;\n    proxy_temp_path $dir/temp/proxy;\n    fastcgi_temp_path $dir/temp/fastcgi;\n    uwsgi_temp_path $dir/temp/uwsgi;\n    scgi_temp_path $dir/temp/scgi;#" \
        deploy/nginx/nginx.conf >"$dir/nginx.conf"
    nginx -t -p "$dir/" -c "$dir/nginx.conf" -e stderr -g "pid $dir/nginx.pid;"
}

check_nginx_invariants() {
    local conf=deploy/nginx/nginx.conf compose="$WORK/nginx.compose.conf"
    # limit_req_zone must be at http level (nginx -t enforces the context);
    # the settings the specification asks for:
    # shellcheck disable=SC2016 # a literal nginx variable
    grep -Eq 'limit_req_zone \$binary_remote_addr zone=[a-z_]+:[0-9]+m rate=10r/s;' "$conf" || fail "rate 10r/s"
    grep -Eq 'limit_req zone=[a-z_]+ burst=20' "$conf" || fail "burst 20"
    grep -q 'limit_req_status 429;' "$conf" || fail "limit_req_status 429"
    grep -q 'ssl_protocols TLSv1.2 TLSv1.3;' "$conf" || fail "TLS 1.2/1.3 only"
    grep -q 'max-age=63072000' "$conf" || fail "HSTS max-age"
    grep -q 'proxy_next_upstream error timeout http_502 http_503;' "$conf" || fail "proxy_next_upstream"
    if grep -Eq '^[^#]*non_idempotent' "$conf"; then fail "non_idempotent must not be retried"; fi
    grep -q 'location ~ \^/v1/tasks/\[\^/\]+/events\$' "$conf" || fail "SSE location"
    grep -Eq 'location \^~ /metrics \{' "$conf" || fail "/metrics must be blocked"
    for header in Strict-Transport-Security X-Frame-Options X-Content-Type-Options X-XSS-Protection Referrer-Policy; do
        grep -Eq "add_header $header .* always;" "$conf" || fail "header $header (with always)"
    done
    # Headers the application sets as well are hidden from the upstream, or they go out twice.
    for header in X-Frame-Options X-Content-Type-Options Referrer-Policy; do
        grep -q "proxy_hide_header $header;" "$conf" || fail "proxy_hide_header $header"
    done
    # Docker Compose's upstream rewrite keeps exactly one `server app:8000`.
    sed -f deploy/nginx/compose-upstream.sed "$conf" >"$compose"
    [[ $(grep -c 'server app:8000 max_fails=3 fail_timeout=10s;' "$compose") -eq 1 ]] ||
        fail "compose-upstream.sed must produce one server app:8000"
    if grep -q 'server 127\.0\.0\.1:800' "$compose"; then fail "compose-upstream.sed left a loopback server"; fi
    echo "nginx invariants hold"
}

check_promtool_config() {
    promtool check config deploy/monitoring/prometheus.yml
}

check_promtool_rules() {
    promtool check rules deploy/monitoring/alert_rules.yml
}

check_promtool_test() {
    promtool test rules deploy/monitoring/alert_rules_test.yml
    # every alert has unit tests
    local alert count=0
    while read -r alert; do
        count=$((count + 1))
        grep -q "alertname: $alert\$" deploy/monitoring/alert_rules_test.yml ||
            fail "alert $alert has no unit test"
    done < <(sed -n 's/^ *- alert: *//p' deploy/monitoring/alert_rules.yml)
    ((count > 0)) || fail "no alerts found in alert_rules.yml"
    echo "all $count alerts have unit tests"
}

check_amtool() {
    amtool check-config deploy/monitoring/alertmanager.yml
}

check_kubernetes_validate() {
    local version manifests=()
    mapfile -t manifests < <(find deploy/k8s -maxdepth 1 -name '*.yaml' ! -name kustomization.yaml | sort)
    ((${#manifests[@]} > 0)) || fail "no manifests in deploy/k8s"
    for version in "${K8S_VERSIONS[@]}"; do
        "$VENV/bin/kubernetes-validate" --strict -k "$version" "${manifests[@]}"
    done
}

check_kustomization() {
    "$VENV/bin/python" .ci/deploy_checks.py kustomization
}

check_compose() {
    # Example values only, so that the required ${VAR:?} secrets resolve.
    export DB_PASSWORD=example-db-password JWT_SECRET_KEY=example-jwt-secret \
        API_KEY_WHITELIST=example-key GRAFANA_PASSWORD=example-grafana \
        OPENAI_API_KEY=sk-example CLAUDE_API_KEY=sk-ant-example
    docker-compose -f deploy/docker-compose.prod.yml config -q
    docker-compose -f deploy/docker-compose.prod.yml -f deploy/docker-compose.tracing.yml config -q
    docker-compose -f deploy/docker-compose.prod.yml config >"$WORK/compose.rendered.yml"
    "$VENV/bin/python" .ci/deploy_checks.py compose "$WORK/compose.rendered.yml"
    # and it must refuse to start without its secrets
    if env -u DB_PASSWORD docker-compose -f deploy/docker-compose.prod.yml config -q 2>/dev/null; then
        fail "compose accepted a missing DB_PASSWORD"
    fi
}

check_yamllint() {
    yamllint --strict -c .yamllint.yaml .yamllint.yaml deploy .github
}

# The scripts shipped with the deployment must be clean at shellcheck's
# default severity (style and info included). Other bash files under .ci/
# (the CI gate, owned by the application side) must have no warnings or
# errors; their info/style notes are printed but do not fail the check.
check_shellcheck() {
    local strict=() relaxed=() file
    for file in scripts/*.sh .ci/*; do
        [[ -f "$file" ]] || continue
        if [[ "$file" != *.sh ]] && ! head -n 1 "$file" | grep -Eq '^#!.*\b(ba)?sh\b'; then
            continue
        fi
        case "$file" in
            scripts/*.sh | .ci/deploy_checks.sh | .ci/topology.sh) strict+=("$file") ;;
            *) relaxed+=("$file") ;;
        esac
    done
    ((${#strict[@]} > 0)) || fail "no shell scripts found"
    echo "shellcheck ${strict[*]}"
    shellcheck -x "${strict[@]}"
    if ((${#relaxed[@]} > 0)); then
        echo "shellcheck --severity=warning ${relaxed[*]}"
        shellcheck -x --severity=warning "${relaxed[@]}"
        shellcheck -x "${relaxed[@]}" || echo "(info/style notes above do not fail this check)"
    fi
}

check_dashboard() {
    "$VENV/bin/python" .ci/deploy_checks.py dashboard
}

check_metric_names() {
    "$VENV/bin/python" .ci/deploy_checks.py metrics "$DEPLOY_CHECKS_METRICS_FILE"
}

check_blue_green_dry_run() {
    local out="$WORK/bg.out" expected line
    env -u SMOKE_API_KEY scripts/blue_green_deploy.sh 1.2.3 --dry-run >"$out"
    cat "$out"
    expected=(
        "kubectl -n digital-employee get service digital-employee-service -o 'jsonpath={.spec.selector.color}'"
        "| kubectl -n digital-employee apply -f -"
        "kubectl -n digital-employee wait --for=condition=complete job/digital-employee-migrate-1-2-3 --timeout=600s"
        "kubectl -n digital-employee set image deployment/digital-employee-app-green digital-employee=digital-employee:1.2.3"
        "kubectl -n digital-employee rollout status deployment/digital-employee-app-green --timeout=600s"
        "kubectl -n digital-employee exec deployment/digital-employee-app-green -c digital-employee -- digital-employee health-check --only app --url http://127.0.0.1:8000"
        "digital-employee smoke --url http://127.0.0.1:8000 --api-key \"\$SMOKE_API_KEY\""
        "kubectl -n digital-employee patch service digital-employee-service --type=merge -p '{\"spec\":{\"selector\":{\"color\":\"green\"}}}'"
        "kubectl -n digital-employee scale deployment/digital-employee-app-blue --replicas=0"
    )
    for line in "${expected[@]}"; do
        grep -qF -- "$line" "$out" || fail "dry run did not print: $line"
    done
    # the other direction
    LIVE_COLOR=green scripts/blue_green_deploy.sh 1.2.3 --dry-run >"$out.green"
    grep -qF "set image deployment/digital-employee-app-blue " "$out.green" || fail "green -> blue"
    # bad input is refused
    if scripts/blue_green_deploy.sh >/dev/null 2>&1; then fail "accepted no version"; fi
    if scripts/blue_green_deploy.sh 'x;rm' --dry-run >/dev/null 2>&1; then fail "accepted a bad tag"; fi
}

# A stub kubectl records its calls. When the idle colour's rollout, health
# check or smoke test fails, the script must undo it, scale it to 0, never
# touch the Service, and exit non-zero. When everything succeeds it must
# switch the Service and keep the old colour running.
check_blue_green_rollback() {
    local bin="$WORK/stub-bin" calls="$WORK/kubectl.calls"
    mkdir -p "$bin"
    cat >"$bin/kubectl" <<'STUB'
#!/usr/bin/env bash
echo "$*" >>"$KUBECTL_CALLS"
case "$*" in
    *"get service"*) printf 'blue' ;;
    *"get deployment"*) printf '4' ;;
    *"rollout status"*) [[ "${STUB_FAIL:-}" == rollout ]] && exit 1 ;;
    *"health-check"*) [[ "${STUB_FAIL:-}" == health ]] && exit 1 ;;
    *" smoke "*) [[ "${STUB_FAIL:-}" == smoke ]] && exit 1 ;;
esac
cat >/dev/null || true   # drain `apply -f -` input
exit 0
STUB
    chmod +x "$bin/kubectl"

    local step attempts
    for step in rollout health smoke; do
        : >"$calls"
        if PATH="$bin:$PATH" KUBECTL_CALLS="$calls" STUB_FAIL=$step SMOKE_API_KEY=test-key \
            HEALTH_ATTEMPTS=3 HEALTH_INTERVAL=0 scripts/blue_green_deploy.sh 1.2.3 </dev/null; then
            fail "a failed $step must exit non-zero"
        fi
        echo "--- $step fails:"
        cat "$calls"
        grep -q 'rollout undo deployment/digital-employee-app-green' "$calls" || fail "$step: no rollout undo"
        grep -q 'scale deployment/digital-employee-app-green --replicas=0' "$calls" ||
            fail "$step: idle colour not scaled to 0"
        if grep -q 'patch service' "$calls"; then fail "$step: service switched despite the failure"; fi
    done
    attempts=$(grep -c 'health-check' "$calls")
    [[ "$attempts" -eq 1 ]] || fail "health checked $attempts times before a smoke failure"
    : >"$calls"
    PATH="$bin:$PATH" KUBECTL_CALLS="$calls" STUB_FAIL=health SMOKE_API_KEY=test-key \
        HEALTH_ATTEMPTS=3 HEALTH_INTERVAL=0 scripts/blue_green_deploy.sh 1.2.3 </dev/null || true
    attempts=$(grep -c 'health-check' "$calls")
    [[ "$attempts" -eq 3 ]] || fail "health check polled $attempts times, want HEALTH_ATTEMPTS=3"

    : >"$calls"
    PATH="$bin:$PATH" KUBECTL_CALLS="$calls" SMOKE_API_KEY=test-key \
        scripts/blue_green_deploy.sh 1.2.3 </dev/null
    grep -q 'scale deployment/digital-employee-app-green --replicas=4' "$calls" || fail "idle not scaled to the live count"
    grep -q 'patch service digital-employee-service --type=merge -p {"spec":{"selector":{"color":"green"}}}' "$calls" ||
        fail "service not switched to green"
    if grep -q 'scale deployment/digital-employee-app-blue' "$calls"; then fail "old colour must be kept"; fi
}

check_dockerfile() {
    local final
    [[ -f Dockerfile && -f .dockerignore ]] || fail "Dockerfile and .dockerignore must exist"
    # The final stage: everything after the last FROM.
    final=$(awk '/^FROM /{buf=""} {buf=buf $0 "\n"} END{printf "%s", buf}' Dockerfile)
    [[ $(grep -c '^FROM ' Dockerfile) -ge 2 ]] || fail "not a multi-stage build"
    grep -q '^FROM rust:1\.95-slim-bookworm\|^ARG RUST_IMAGE=rust:1\.95-slim-bookworm' Dockerfile ||
        fail "builder must be rust:1.95-slim-bookworm"
    grep -Eq '^RUN .*cargo build --release --locked|^[[:space:]]+(&& )?cargo build --release --locked' Dockerfile ||
        fail "cargo build must use --release --locked"
    grep -q '^COPY Cargo.toml Cargo.lock' Dockerfile || fail "dependency layer must copy Cargo.toml and Cargo.lock first"
    grep -Eq '^USER (appuser|[1-9][0-9]*)(:[0-9a-z]+)?[[:space:]]*$' <<<"$final" ||
        fail "final stage must switch to appuser or a numeric non-root USER"
    if grep -Eq '^USER (root|0)(:|[[:space:]]*$)' <<<"$final"; then fail "final stage runs as root"; fi
    grep -q '^HEALTHCHECK --interval=30s --timeout=10s --start-period=5s --retries=3' <<<"$final" ||
        fail "HEALTHCHECK with the specification's timings"
    grep -A2 '^HEALTHCHECK' <<<"$final" | grep -q 'health-check' || fail "HEALTHCHECK must use the binary"
    if grep -Eiq 'curl|wget' <<<"$(grep -A2 '^HEALTHCHECK' <<<"$final")"; then fail "HEALTHCHECK must not need curl"; fi
    grep -q '^STOPSIGNAL SIGTERM' <<<"$final" || fail "STOPSIGNAL SIGTERM"
    grep -Eq '^EXPOSE 8000 9000$' <<<"$final" || fail "EXPOSE 8000 9000"
    grep -q '^ENTRYPOINT \["/usr/local/bin/digital-employee"\]' <<<"$final" || fail "ENTRYPOINT"
    grep -q '^CMD \["serve"\]' <<<"$final" || fail 'CMD ["serve"]'
    grep -qx 'target' .dockerignore || fail ".dockerignore must exclude target"
    grep -qx '.git' .dockerignore || fail ".dockerignore must exclude .git"
    echo "Dockerfile invariants hold"
}

# ------------------------------------------------------------------------ main

install_tools
echo "tools: $(nginx -v 2>&1 | sed 's/^nginx version: //'), $(promtool --version 2>&1 | head -n 1 | awk '{print $1, $3}')," \
    "$(amtool --version 2>&1 | head -n 1 | awk '{print $1, $3}'), shellcheck $(shellcheck --version | sed -n 's/^version: //p')," \
    "$(yamllint --version), $(docker-compose version --short 2>/dev/null | sed 's/^/docker-compose /')," \
    "kubernetes-validate $("$VENV/bin/kubernetes-validate" --version 2>&1 | awk '{print $NF}'), $(openssl version | awk '{print $1, $2}')"

check "nginx -t (deploy/nginx/nginx.conf, self-signed cert)" check_nginx
check "nginx settings and compose upstream rewrite" check_nginx_invariants
check "promtool check config (prometheus.yml)" check_promtool_config
check "promtool check rules (alert_rules.yml)" check_promtool_rules
check "promtool test rules (alert_rules_test.yml)" check_promtool_test
check "amtool check-config (alertmanager.yml)" check_amtool
check "kubernetes-validate --strict (deploy/k8s, ${K8S_VERSIONS[*]})" check_kubernetes_validate
check "kustomization lists every manifest" check_kustomization
check "docker-compose config (docker-compose.prod.yml)" check_compose
check "yamllint (deploy/, .github/)" check_yamllint
check "shellcheck (scripts/*.sh, .ci/*)" check_shellcheck
check "grafana dashboard JSON and panels" check_dashboard
if [[ -n "${DEPLOY_CHECKS_METRICS_FILE:-}" ]]; then
    check "metric names vs $DEPLOY_CHECKS_METRICS_FILE" check_metric_names
else
    echo "skip metric names vs a live scrape (set DEPLOY_CHECKS_METRICS_FILE)"
fi
check "blue_green_deploy.sh --dry-run" check_blue_green_dry_run
check "blue_green_deploy.sh rollback (stub kubectl)" check_blue_green_rollback
check "Dockerfile invariants" check_dockerfile

echo "all deployment checks passed in $((SECONDS - STARTED))s"
echo "deploy-checks: $PASSED passed, 0 failed"
