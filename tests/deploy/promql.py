"""The PromQL the deployment ships: every expression in the Grafana dashboard and the Prometheus rules.

Shared by the static dashboard checks and the integration test that evaluates each expression against
a real Prometheus scraping a real slimserve.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
DASHBOARD = DOCKER / "grafana" / "dashboards" / "slimserve.json"
RULES = DOCKER / "prometheus" / "rules" / "slimserve.yml"

# What Grafana would put in place of its variables. "All" on a multi-value variable is the regex `.*`
# (the dashboard sets allValue to it), so the test sees what a default dashboard view queries.
GRAFANA_VARIABLES = {
    "$__rate_interval": "30s",
    "$__interval": "5s",
    "$__range": "5m",
    "$model": ".*",
    "$endpoint": ".*",
}
_COMPARISON = re.compile(r"\s(==|!=|>=|<=|>|<)\s+(?!bool\b)")


@dataclass(frozen=True)
class Expression:
    source: str  # where it lives, for failure messages: "dashboard panel 'Request rate' A"
    promql: str  # ready to send to Prometheus


def load_dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def load_rules() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(RULES.read_text())
    return data


def substitute(expr: str) -> str:
    # Longest names first: `$__rate_interval` must not be cut by a shorter variable name.
    for name in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, GRAFANA_VARIABLES[name])
    leftover = re.search(r"\$\w+", expr)
    if leftover:
        raise ValueError(f"dashboard variable {leftover.group(0)} has no test substitution: {expr}")
    return expr


def with_bool(expr: str) -> str:
    """An alert expression that keeps a sample per watched series whatever the threshold.

    An alert's `X > threshold` is empty while nothing fires; `X > bool threshold` returns 0 or 1 for
    every series of X, so "returns data" proves the alert watches series that exist.
    """
    return _COMPARISON.sub(lambda m: f" {m.group(1)} bool ", expr)


def dashboard_expressions() -> list[Expression]:
    found: list[Expression] = []
    for panel in load_dashboard()["panels"]:
        for target in panel.get("targets", []):
            found.append(
                Expression(
                    f"dashboard panel {panel['title']!r} {target['refId']}", substitute(target["expr"])
                )
            )
    return found


def rule_expressions() -> list[Expression]:
    found: list[Expression] = []
    for group in load_rules()["groups"]:
        for rule in group["rules"]:
            if "record" in rule:
                found.append(Expression(f"recording rule {rule['record']}", rule["expr"]))
            else:
                found.append(Expression(f"alert {rule['alert']} (as bool)", with_bool(rule["expr"])))
    return found
