"""docker-compose.yml's secure defaults, read as YAML (no compose binary needed): keys required,
monitoring on loopback without admin defaults, a stop grace longer than the server's drain."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _services() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())  # merges x-api
    return dict(data["services"])


def _seconds(value: str) -> float:
    return float(value.removesuffix("s"))


def test_the_api_requires_keys_and_stops_after_its_drain() -> None:
    for name in ("api", "api-gpu"):
        service = _services()[name]
        env = service["environment"]
        assert env["SLIMSERVE_API_KEYS"].startswith("${SLIMSERVE_API_KEYS:?"), (
            name
        )  # refuses to start without
        assert _seconds(service["stop_grace_period"]) > float(env["SLIMSERVE_SHUTDOWN_GRACE_S"]), name


def test_prometheus_and_grafana_are_not_open() -> None:
    services = _services()
    assert not any("enable-lifecycle" in arg for arg in services["prometheus"]["command"])
    for name in ("prometheus", "grafana"):
        for port in services[name]["ports"]:
            assert str(port).startswith("127.0.0.1:"), (name, port)
    password = services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    assert password.startswith("${GRAFANA_ADMIN_PASSWORD:?"), password
