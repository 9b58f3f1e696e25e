"""The Grafana dashboard and its provisioning: the panels operators rely on, wired to the right data."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests.deploy.promql import DOCKER, dashboard_expressions, load_dashboard, substitute

PROVISIONING = DOCKER / "grafana" / "provisioning"


def _panel(dashboard: dict[str, Any], *words: str) -> dict[str, Any]:
    matches = [p for p in dashboard["panels"] if all(w.lower() in p["title"].lower() for w in words)]
    assert len(matches) >= 1, f"no panel titled with {words} in {[p['title'] for p in dashboard['panels']]}"
    return matches[0]


def _exprs(panel: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for t in panel["targets"]]
    assert exprs, f"panel {panel['title']!r} has no queries"
    return exprs


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return load_dashboard()


def test_request_rate_per_endpoint_and_model(dashboard: dict[str, Any]) -> None:
    (expr,) = _exprs(_panel(dashboard, "request rate"))
    assert "rate(slimserve_requests_total" in expr
    assert re.search(r"sum by \(endpoint, model\)", expr)


def test_latency_p50_p95_p99_from_the_request_histogram(dashboard: dict[str, Any]) -> None:
    exprs = _exprs(_panel(dashboard, "latency", "p99"))
    quantiles = set()
    for expr in exprs:
        match = re.match(r"histogram_quantile\(([0-9.]+), sum by \(le, endpoint, model\) \(rate\(", expr)
        assert match, expr
        assert "slimserve_request_duration_seconds_bucket" in expr
        quantiles.add(float(match.group(1)))
    assert quantiles == {0.5, 0.95, 0.99}


def test_queue_time_against_inference_time(dashboard: dict[str, Any]) -> None:
    joined = " ".join(_exprs(_panel(dashboard, "queue time vs inference time")))
    assert "slimserve_queue_duration_seconds" in joined
    assert "slimserve_inference_duration_seconds" in joined
    assert "variant" in joined  # inference time per variant: an int8 vs fp16 swap shows up here


def test_batch_size_and_tokens_per_batch(dashboard: dict[str, Any]) -> None:
    assert any("slimserve_batch_size" in e for e in _exprs(_panel(dashboard, "batch size")))
    assert any("slimserve_batch_tokens" in e for e in _exprs(_panel(dashboard, "tokens per batch")))


def test_queue_depth(dashboard: dict[str, Any]) -> None:
    assert any("slimserve_queue_depth" in e for e in _exprs(_panel(dashboard, "queue depth")))


def test_error_rate_by_status_code(dashboard: dict[str, Any]) -> None:
    (expr,) = _exprs(_panel(dashboard, "error", "code"))
    assert "slimserve_requests_total" in expr
    assert "sum by (code)" in expr
    assert 'code!~"2.."' in expr


def test_served_model_version_variant_and_provider(dashboard: dict[str, Any]) -> None:
    panel = _panel(dashboard, "served model")
    (expr,) = _exprs(panel)
    assert "slimserve_model_info" in expr
    for label in ("model", "version", "variant", "provider", "form", "layers", "parameters"):
        assert label in expr
    assert panel["type"] == "table"


def test_every_query_uses_the_provisioned_datasource_and_substitutes(dashboard: dict[str, Any]) -> None:
    provisioned = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    (source,) = provisioned["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"  # the compose service name
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == source["uid"], panel["title"]
            substitute(target["expr"])  # raises on a variable the dashboard does not define
    assert len(dashboard_expressions()) >= 10


def test_model_and_endpoint_variables_select_all_by_regex(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert set(variables) >= {"model", "endpoint"}
    for variable in variables.values():
        # `.*` is also what the integration test substitutes: what it proves holds for "All".
        assert variable["includeAll"] and variable["allValue"] == ".*"
    per_model = [p for p in dashboard["panels"] if any("$model" in e for e in _exprs(p))]
    assert len(per_model) == len(dashboard["panels"]), "every panel filters by $model"


def test_dashboard_provider_points_at_the_mounted_folder() -> None:
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "slimserve.yml").read_text())["providers"][0]
    compose = yaml.safe_load((DOCKER.parent / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./docker/grafana/dashboards:{provider['options']['path']}:ro" in mounts
    assert provider["type"] == "file"
