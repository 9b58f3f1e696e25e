"""docker/prometheus: the compose Prometheus config and the rules, checked by `promtool` (Debian)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.promql import DOCKER, RULES, load_rules

CONFIG = DOCKER / "prometheus" / "prometheus.yml"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.skip("promtool is not installed (`make sysdeps` installs the Debian package `prometheus`)")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60, check=False)


def test_promtool_checks_the_config_with_its_rules(tmp_path: Path) -> None:
    # The config names the rules by their in-container path; point it at the repository's copy so
    # `check config` also loads and checks them, as Prometheus in compose will.
    config = yaml.safe_load(CONFIG.read_text())
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    config["rule_files"] = [str(RULES)]
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump(config))
    result = _promtool("check", "config", str(local))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout and "rules found" in result.stdout


def test_promtool_checks_the_rules() -> None:
    result = _promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    count = sum(len(group["rules"]) for group in load_rules()["groups"])
    assert f"{count} rules found" in result.stdout


def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(RULES.read_text().replace("sum by (code) (rate(", "sum by (code) (rate(rate(", 1))
    assert _promtool("check", "rules", str(broken)).returncode != 0


def test_alerts_cover_latency_errors_and_saturation() -> None:
    alerts = {r["alert"]: r for g in load_rules()["groups"] for r in g["rules"] if "alert" in r}
    assert {"SlimserveHighP99Latency", "SlimserveHighErrorRate", "SlimserveSaturated"} <= set(alerts)
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"], name
    assert "p99" in alerts["SlimserveHighP99Latency"]["expr"]
    assert "errors" in alerts["SlimserveHighErrorRate"]["expr"]


def test_compose_scrape_job_discovers_every_api_replica() -> None:
    (job,) = [j for j in yaml.safe_load(CONFIG.read_text())["scrape_configs"] if j["job_name"] == "slimserve"]
    (dns,) = job["dns_sd_configs"]
    assert set(dns["names"]) == {"api", "api-gpu"}
    assert dns["port"] == 8000


def test_promtool_unit_tests_of_the_alerts() -> None:
    # Synthetic series drive each alert through pending -> firing with its exact labels and annotations,
    # and prove that 4xx alone never pages (docker/prometheus/tests/slimserve.test.yml).
    result = _promtool("test", "rules", str(DOCKER / "prometheus" / "tests" / "slimserve.test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
