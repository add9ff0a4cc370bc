#!/usr/bin/env bash
# Blue-green deployment of digital-employee on Kubernetes.
#
#   scripts/blue_green_deploy.sh <new_version> [--dry-run]
#
# Procedure:
#   0. run the schema migration Job with the new image and wait for it;
#   1. read the live colour from the Service selector (.spec.selector.color);
#      the idle colour is the other one;
#   2. set the new image on deployment digital-employee-app-<idle> and scale it
#      to the live replica count; wait for the rollout (600 s);
#   3. health-check the idle colour up to 30 times, 10 s apart;
#   4. run the smoke test against the idle colour;
#   5. switch the Service selector to the idle colour;
#   6. keep the old colour running (instant rollback: switch the selector
#      back) and print the command that scales it down after 24 hours.
# A failure in 2-4 rolls the idle colour back (rollout undo, scale to 0) and
# exits non-zero; the live colour keeps serving throughout.
#
# Preconditions (see docs/deployment.md): Deployments
# digital-employee-app-blue and digital-employee-app-green, each labelled and
# selected by color=<colour>, and the Service selecting one colour.
#
# --dry-run prints every kubectl command instead of running it; it needs no
# cluster (the live colour is then taken from LIVE_COLOR, default blue).
#
# Environment:
#   NAMESPACE       default digital-employee
#   IMAGE_REPO      default digital-employee (e.g. ghcr.io/acme/digital-employee)
#   CONTAINER       container name in the Deployment, default digital-employee
#   SERVICE         default digital-employee-service
#   SMOKE_API_KEY   API key for the smoke test (required unless --dry-run)
#   SMOKE_URL       run the smoke test from here against this URL instead of
#                   inside an idle pod (the URL must reach the idle colour)
#   LIVE_COLOR      live colour assumed by --dry-run (blue)
#   HEALTH_ATTEMPTS default 30; HEALTH_INTERVAL default 10 (seconds)
#   MIGRATE         false skips the migration Job (step 0)
set -euo pipefail

readonly APP=digital-employee-app
REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NAMESPACE=${NAMESPACE:-digital-employee}
IMAGE_REPO=${IMAGE_REPO:-digital-employee}
CONTAINER=${CONTAINER:-digital-employee}
SERVICE=${SERVICE:-digital-employee-service}
HEALTH_ATTEMPTS=${HEALTH_ATTEMPTS:-30}
HEALTH_INTERVAL=${HEALTH_INTERVAL:-10}
ROLLOUT_TIMEOUT=600s

DRY_RUN=false
VERSION=""

usage() {
    echo "usage: $0 <new_version> [--dry-run]" >&2
    exit 2
}

log() { printf '[blue-green] %s\n' "$*" >&2; }

for arg in "$@"; do
    case "$arg" in
        --dry-run) DRY_RUN=true ;;
        -h | --help) usage ;;
        -*) echo "unknown option: $arg" >&2; usage ;;
        *)
            [[ -z "$VERSION" ]] || usage
            VERSION=$arg
            ;;
    esac
done
[[ -n "$VERSION" ]] || usage
# Image tags: letters, digits, '_', '.', '-'; at most 128 characters.
if [[ ! "$VERSION" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]]; then
    echo "invalid version/tag: $VERSION" >&2
    exit 2
fi

if [[ "$DRY_RUN" == false && -z "${SMOKE_API_KEY:-}" ]]; then
    echo "SMOKE_API_KEY must be set for the smoke test" >&2
    exit 2
fi

# Stands for the smoke-test key in printed commands.
# shellcheck disable=SC2016 # deliberately not expanded
readonly KEY_PLACEHOLDER='"$SMOKE_API_KEY"'

# Print a command in a copy-pasteable form (single-quoting words with special
# characters), never showing the smoke-test key itself.
show() {
    local out="" word
    for word in "$@"; do
        if [[ "$word" == "$KEY_PLACEHOLDER" || (-n "${SMOKE_API_KEY:-}" && "$word" == "$SMOKE_API_KEY") ]]; then
            word=$KEY_PLACEHOLDER
        elif [[ -z "$word" || "$word" =~ [^A-Za-z0-9_./:=@,+-] ]]; then
            word="'${word//\'/\'\\\'\'}'"
        fi
        out+="${out:+ }$word"
    done
    printf '%s\n' "$out"
}

# Run kubectl against the namespace, or only print it in dry-run mode.
kube() {
    if [[ "$DRY_RUN" == true ]]; then
        show kubectl -n "$NAMESPACE" "$@"
        return 0
    fi
    kubectl -n "$NAMESPACE" "$@"
}

# Sets LIVE from the Service selector.
read_live_color() {
    if [[ "$DRY_RUN" == true ]]; then
        show kubectl -n "$NAMESPACE" get service "$SERVICE" -o 'jsonpath={.spec.selector.color}'
        LIVE=${LIVE_COLOR:-blue}
        return 0
    fi
    LIVE=$(kubectl -n "$NAMESPACE" get service "$SERVICE" -o 'jsonpath={.spec.selector.color}')
}

# Sets REPLICAS from the live Deployment (at least 3).
read_live_replicas() {
    local n=3
    if [[ "$DRY_RUN" == true ]]; then
        show kubectl -n "$NAMESPACE" get deployment "$APP-$LIVE" -o 'jsonpath={.spec.replicas}'
    else
        n=$(kubectl -n "$NAMESPACE" get deployment "$APP-$LIVE" -o 'jsonpath={.spec.replicas}')
    fi
    # Never fewer than the PodDisruptionBudget's minimum of 2, plus one.
    if [[ -z "$n" || "$n" -lt 3 ]]; then n=3; fi
    REPLICAS=$n
}

# The schema must be migrated before pods of the new version can become ready
# (`serve` refuses an outdated schema). The live colour keeps running on the
# migrated schema, so migrations must be backward compatible (expand, then
# contract in a later release). Runs deploy/k8s/migrate-job.yaml under a
# per-version name with the new image.
migrate() {
    local job manifest
    job="digital-employee-migrate-$(printf '%s' "$VERSION" | tr 'A-Z_.' 'a-z--')"
    job=${job:0:63}
    job=${job%-}
    manifest="$REPO_DIR/deploy/k8s/migrate-job.yaml"
    local -a edit=(sed -e "s#image: digital-employee:.*#image: $IMAGE#"
        -e "s#name: digital-employee-migrate\$#name: $job#" "$manifest")
    if [[ "$DRY_RUN" == true ]]; then
        printf '%s | %s\n' "$(show "${edit[@]}")" "$(show kubectl -n "$NAMESPACE" apply -f -)"
    else
        [[ -f "$manifest" ]] || { echo "missing $manifest" >&2; return 1; }
        "${edit[@]}" | kubectl -n "$NAMESPACE" apply -f -
    fi
    kube wait --for=condition=complete "job/$job" "--timeout=$ROLLOUT_TIMEOUT"
}

rollback() {
    local reason=$1
    log "FAILED: $reason; rolling back $APP-$IDLE (traffic stays on $LIVE)"
    kube rollout undo "deployment/$APP-$IDLE" || true
    kube scale "deployment/$APP-$IDLE" --replicas=0 || true
    exit 1
}

health_check() {
    local attempt
    for ((attempt = 1; attempt <= HEALTH_ATTEMPTS; attempt++)); do
        if kube exec "deployment/$APP-$IDLE" -c "$CONTAINER" -- \
            digital-employee health-check --only app --url http://127.0.0.1:8000; then
            log "health check passed (attempt $attempt)"
            return 0
        fi
        log "health check failed (attempt $attempt/$HEALTH_ATTEMPTS); retrying in ${HEALTH_INTERVAL}s"
        sleep "$HEALTH_INTERVAL"
    done
    return 1
}

smoke_test() {
    if [[ -n "${SMOKE_URL:-}" ]]; then
        if [[ "$DRY_RUN" == true ]]; then
            show digital-employee smoke --url "$SMOKE_URL" --api-key "${SMOKE_API_KEY:-$KEY_PLACEHOLDER}"
            return 0
        fi
        digital-employee smoke --url "$SMOKE_URL" --api-key "$SMOKE_API_KEY"
    else
        # Inside an idle pod, against itself: needs nothing on this machine
        # but kubectl, and never touches the live colour.
        kube exec "deployment/$APP-$IDLE" -c "$CONTAINER" -- \
            digital-employee smoke --url http://127.0.0.1:8000 --api-key "${SMOKE_API_KEY:-$KEY_PLACEHOLDER}"
    fi
}

LIVE=""
REPLICAS=3
IMAGE="$IMAGE_REPO:$VERSION"
if [[ "$DRY_RUN" == true ]]; then
    log "dry run: printing kubectl commands instead of running them"
fi
read_live_color
case "$LIVE" in
    blue) IDLE=green ;;
    green) IDLE=blue ;;
    *)
        echo "service/$SERVICE has no blue/green colour in its selector (got '${LIVE}');" \
            "see docs/deployment.md for the blue-green setup" >&2
        exit 1
        ;;
esac
read_live_replicas
log "live colour: $LIVE, deploying $IMAGE to $IDLE ($REPLICAS replicas)"

# 0. schema migration with the new image (nothing to roll back yet)
if [[ "${MIGRATE:-true}" == true ]]; then
    migrate || { log "FAILED: migration job; nothing was changed on $APP-$IDLE"; exit 1; }
fi

# 1-2. new image on the idle colour, wait for the rollout
kube set image "deployment/$APP-$IDLE" "$CONTAINER=$IMAGE" || rollback "set image"
kube scale "deployment/$APP-$IDLE" "--replicas=$REPLICAS" || rollback "scale up"
kube rollout status "deployment/$APP-$IDLE" "--timeout=$ROLLOUT_TIMEOUT" || rollback "rollout did not finish within $ROLLOUT_TIMEOUT"

# 3. health
health_check || rollback "health check failed $HEALTH_ATTEMPTS times"

# 4. smoke test
smoke_test || rollback "smoke test failed"

# 5. switch traffic
kube patch service "$SERVICE" --type=merge -p "{\"spec\":{\"selector\":{\"color\":\"$IDLE\"}}}" ||
    rollback "could not switch service/$SERVICE"
log "service/$SERVICE now selects $IDLE ($IMAGE)"

# 6. keep the old colour for an instant switch back
log "the old colour $LIVE keeps running. To switch back:"
show kubectl -n "$NAMESPACE" patch service "$SERVICE" --type=merge -p "{\"spec\":{\"selector\":{\"color\":\"$LIVE\"}}}"
log "after 24 hours without problems, scale it down:"
show kubectl -n "$NAMESPACE" scale "deployment/$APP-$LIVE" --replicas=0
