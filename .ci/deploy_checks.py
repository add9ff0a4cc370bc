#!/usr/bin/env python3
"""Structural checks of the deployment files that no off-the-shelf tool does.

Run by .ci/deploy_checks.sh with the virtualenv's Python (it has PyYAML):

    deploy_checks.py dashboard      Grafana dashboard parses and has the panels
    deploy_checks.py kustomization  deploy/k8s/kustomization.yaml lists every
                                    manifest and never touches selectors
    deploy_checks.py compose FILE   `docker-compose config` output has the
                                    required services and start-up order
    deploy_checks.py metrics FILE   every metric named by the dashboard and the
                                    alert rules is in FILE (a /metrics scrape
                                    of a running instance), except the ones
                                    that come from Prometheus or the exporters
                                    and the ones named in
                                    DEPLOY_CHECKS_PENDING_METRICS (space-separated;
                                    their code is on another branch: reported, and
                                    refused once they are exported)

Each prints what it checked and exits 1 with a reason on the first problem.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy/monitoring/grafana/dashboards/digital-employee.json"
ALERT_RULES = ROOT / "deploy/monitoring/alert_rules.yml"
K8S = ROOT / "deploy/k8s"


class CheckError(Exception):
    pass


def require(condition: bool, message: str) -> None:
    if not condition:
        raise CheckError(message)


# --------------------------------------------------------------------- dashboard

# (panel title, substrings that one of its queries must contain)
REQUIRED_PANELS = [
    ("Service status", ['up{job="digital-employee"}']),
    ("Request QPS by method and endpoint", ["sum by (method, endpoint) (rate(http_requests_total[5m]))"]),
    ("Response time P50 / P95 / P99", ["histogram_quantile(0.50,", "http_request_duration_seconds_bucket"]),
    ("Response time P50 / P95 / P99", ["histogram_quantile(0.95,", "http_request_duration_seconds_bucket"]),
    ("Response time P50 / P95 / P99", ["histogram_quantile(0.99,", "http_request_duration_seconds_bucket"]),
    ("AI calls by service and status", ["sum by (service, status)", "ai_requests_total"]),
    ("Tokens per hour by service and model", ["sum by (service, model) (increase(ai_tokens_used_total[1h]))"]),
    ("Tasks finished by status", ["tasks_total"]),
    ("Task duration P95", ["histogram_quantile(0.95,", "task_duration_seconds_bucket"]),
    ("Queue depth by status", ["digital_employee_queue_depth"]),
    ("AI cost per hour by service and model", ["ai_cost_usd_total"]),
]


def check_dashboard() -> None:
    try:
        dash = json.loads(DASHBOARD.read_text())
    except json.JSONDecodeError as err:
        raise CheckError(f"{DASHBOARD.name} is not valid JSON: {err}") from err
    require(dash.get("title") == "Digital Employee System Monitoring", "wrong dashboard title")
    require("digital-employee" in dash.get("tags", []), "dashboard lacks the digital-employee tag")
    require(dash.get("uid"), "dashboard has no uid")
    panels = dash.get("panels", [])
    ids = [p.get("id") for p in panels]
    require(len(ids) == len(set(ids)), f"duplicate panel ids: {ids}")
    queries: dict[str, list[str]] = {}
    for panel in panels:
        require("gridPos" in panel, f"panel {panel.get('title')!r} has no gridPos")
        if panel.get("type") == "row":
            continue
        title = panel.get("title", "")
        require(panel.get("datasource", {}).get("uid") == "prometheus",
                f"panel {title!r} does not use the provisioned datasource (uid prometheus)")
        targets = panel.get("targets", [])
        require(targets, f"panel {title!r} has no queries")
        for target in targets:
            require(target.get("expr"), f"panel {title!r} has a target without expr")
        queries.setdefault(title, []).extend(t["expr"] for t in targets)
    for title, needles in REQUIRED_PANELS:
        require(title in queries, f"missing panel {title!r}")
        require(any(all(n in q for n in needles) for q in queries[title]),
                f"panel {title!r} has no query containing {needles}")
    # The datasource uid the panels use must be the provisioned one.
    ds = yaml.safe_load((ROOT / "deploy/monitoring/grafana/provisioning/datasources/prometheus.yml").read_text())
    require(any(d.get("uid") == "prometheus" for d in ds.get("datasources", [])),
            "the provisioned datasource does not have uid prometheus")
    print(f"dashboard: {len(queries)} panels, {sum(map(len, queries.values()))} queries, all required panels present")


# ----------------------------------------------------------------- kustomization

def check_kustomization() -> None:
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    require(kust.get("namespace") == "digital-employee", "kustomization namespace is not digital-employee")
    listed = kust.get("resources", [])
    require(len(listed) == len(set(listed)), "a resource is listed twice")
    on_disk = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    missing = sorted(set(on_disk) - set(listed))
    unknown = sorted(set(listed) - set(on_disk))
    require(not missing, f"manifests not listed in kustomization.yaml: {missing}")
    require(not unknown, f"kustomization.yaml lists files that do not exist: {unknown}")
    require("commonLabels" not in kust, "use `labels` (with includeSelectors: false), not the deprecated commonLabels")
    pairs: dict[str, str] = {}
    for entry in kust.get("labels", []):
        require(entry.get("includeSelectors") is False,
                "labels must set includeSelectors: false (selectors are immutable and the "
                "NetworkPolicy's peer selectors must not be rewritten)")
        pairs.update(entry.get("pairs", {}))
    require(pairs.get("app.kubernetes.io/name") == "digital-employee", "common label app.kubernetes.io/name missing")
    require(pairs.get("app.kubernetes.io/version") == "1.0.0", 'common label app.kubernetes.io/version "1.0.0" missing')
    # Every container image must be covered by the images transformer.
    image_names = {i["name"] for i in kust.get("images", [])}
    for name in listed:
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            spec = ((doc or {}).get("spec") or {}).get("template", {}).get("spec", {})
            for container in spec.get("containers", []):
                base = container["image"].rsplit(":", 1)[0]
                require(base in image_names,
                        f"{name}: image {container['image']} is not in kustomization.yaml images")
    print(f"kustomization: {len(listed)} resources, all present; labels stay out of selectors")


# ----------------------------------------------------------------------- compose

def check_compose(path: str) -> None:
    cfg = yaml.safe_load(Path(path).read_text())
    services = cfg.get("services", {})
    for name in ["app", "migrate", "nginx", "db", "redis", "prometheus", "grafana"]:
        require(name in services, f"compose service {name!r} missing")
    app = services["app"]
    require(app.get("deploy", {}).get("replicas") == 3, "app must run 3 replicas")
    limits = app["deploy"].get("resources", {}).get("limits", {})
    require(limits.get("memory") and limits.get("cpus"), "app needs cpu and memory limits")
    deps = app.get("depends_on", {})
    require(deps.get("migrate", {}).get("condition") == "service_completed_successfully",
            "app must wait for migrate to complete successfully")
    require(deps.get("db", {}).get("condition") == "service_healthy", "app must wait for a healthy db")
    require(services["migrate"].get("command") == ["migrate"], "migrate must run `migrate`")
    require("pg_isready" in " ".join(services["db"].get("healthcheck", {}).get("test", [])),
            "db healthcheck must use pg_isready")
    test = app.get("healthcheck", {}).get("test", [])
    require("health-check" in test and "curl" not in " ".join(test),
            "app healthcheck must use the binary's health-check")
    env = app.get("environment", {})
    for key in ["APP_ENV", "DATABASE_URL", "REDIS_URL", "OPENAI_API_KEY", "CLAUDE_API_KEY",
                "JWT_SECRET_KEY", "API_KEY_WHITELIST", "LOG_LEVEL"]:
        require(key in env, f"app environment lacks {key}")
    require(env["APP_ENV"] == "production", "APP_ENV must be production")
    print(f"compose: {len(services)} services; app x3 waits for migrate and a healthy db")


# ----------------------------------------------------------------------- metrics

PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
    "offset", "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values", "group", "inf", "nan",
}
# Series that the application does not export itself.
EXTERNAL = re.compile(r"^(up|pg_\w+|redis_\w+|nginx_\w+|node_\w+|container_\w+)$")


def metric_names(expr: str) -> set[str]:
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)          # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)                     # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)                    # range selectors
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        word = match.group(0)
        following = expr[match.end():].lstrip()
        if following.startswith("(") or word.lower() in PROMQL_WORDS:
            continue
        if re.fullmatch(r"\d+[smhdwy]", word):
            continue
        names.add(word)
    return names


def referenced_metrics() -> set[str]:
    exprs = []
    for panel in json.loads(DASHBOARD.read_text()).get("panels", []):
        exprs.extend(t["expr"] for t in panel.get("targets", []))
    rules = yaml.safe_load(ALERT_RULES.read_text())
    for group in rules["groups"]:
        exprs.extend(rule["expr"] for rule in group["rules"])
    names: set[str] = set()
    for expr in exprs:
        names |= metric_names(expr)
    return names


def pending_metrics() -> set[str]:
    """DEPLOY_CHECKS_PENDING_METRICS: space-separated metric names that the dashboard or
    the alerts may name before the service exports them (their code is on another
    branch). A histogram's name covers its _bucket, _sum and _count series."""
    names = set(os.environ.get("DEPLOY_CHECKS_PENDING_METRICS", "").split())
    return names | {f"{n}{s}" for n in names for s in ("_bucket", "_sum", "_count")}


def check_metrics(path: str) -> None:
    exported = set()
    for line in Path(path).read_text().splitlines():
        if line and not line.startswith("#"):
            exported.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    wanted = {n for n in referenced_metrics() if not EXTERNAL.match(n)}
    pending = pending_metrics()
    missing = sorted(wanted - exported - pending)
    require(not missing, f"named by the dashboard or alerts but not exported: {missing}")
    declared = set(os.environ.get("DEPLOY_CHECKS_PENDING_METRICS", "").split())
    landed = sorted(n for n in declared
                    if n in exported or any(f"{n}{s}" in exported for s in ("_bucket", "_sum", "_count")))
    require(not landed, f"exported now, remove from the pending list: {landed}")
    unused = sorted(n for n in declared
                    if not ({n} | {f"{n}{s}" for s in ("_bucket", "_sum", "_count")}) & wanted)
    require(not unused, f"pending but named by no dashboard query or alert: {unused}")
    waiting = sorted(wanted & pending - exported)
    print(f"metrics: {len(wanted) - len(waiting)} of {len(wanted)} application metrics referenced are exported"
          + (f"; pending (not exported yet): {waiting}" if waiting else ""))


def main(argv: list[str]) -> int:
    commands = {
        "dashboard": (check_dashboard, 0),
        "kustomization": (check_kustomization, 0),
        "compose": (check_compose, 1),
        "metrics": (check_metrics, 1),
        "list-metrics": (lambda: print("\n".join(sorted(referenced_metrics()))), 0),
    }
    if len(argv) < 2 or argv[1] not in commands or len(argv) - 2 != commands[argv[1]][1]:
        print(__doc__, file=sys.stderr)
        return 2
    func, _ = commands[argv[1]]
    try:
        func(*argv[2:])
    except CheckError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
