"""docker-compose.yml, validated by a real compose implementation (Debian's `docker-compose`).

`docker-compose config` validates the file against the compose schema and resolves anchors,
profiles and variables without a Docker engine, so it runs here; `make sysdeps` installs it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"


def _compose(*args: str, file: Path = COMPOSE_FILE) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (`make sysdeps` installs the Debian package)")
    # The file refuses to run without these (secure defaults); any values do for `config`.
    env = {**os.environ, "SLIMSERVE_API_KEYS": '["test-key"]', "GRAFANA_ADMIN_PASSWORD": "test-password"}
    return subprocess.run(
        [binary, "--project-directory", str(ROOT), "-f", str(file), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


def _config(*profiles: str) -> dict[str, Any]:
    flags = [arg for profile in profiles for arg in ("--profile", profile)]
    result = _compose(*flags, "config")
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = yaml.safe_load(result.stdout)
    return data


def _volumes(service: dict[str, Any]) -> list[str]:
    """Volume mounts as `source:target[:ro]` whatever syntax the implementation prints."""
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            mounts.append(volume)
        else:
            suffix = ":ro" if volume.get("read_only") else ""
            mounts.append(f"{volume['source']}:{volume['target']}{suffix}")
    return mounts


def test_the_compose_file_is_valid_in_every_profile() -> None:
    for profiles in ((), ("gpu",), ("build",), ("gpu", "build")):
        flags = [arg for profile in profiles for arg in ("--profile", profile)]
        result = _compose(*flags, "config", "--quiet")
        assert result.returncode == 0, f"profiles {profiles}: {result.stderr}"


def test_the_validator_rejects_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(
        COMPOSE_FILE.read_text().replace("restart: unless-stopped", "restart_policy: always", 1)
    )
    result = _compose("config", "--quiet", file=broken)
    assert result.returncode != 0
    assert "restart_policy" in result.stderr


def test_default_stack_is_api_prometheus_grafana() -> None:
    services = _config("gpu", "build")["services"]
    by_profile = {name: tuple(svc.get("profiles", ())) for name, svc in services.items()}
    assert by_profile == {
        "api": (),
        "prometheus": (),
        "grafana": (),
        "api-gpu": ("gpu",),
        "build": ("build",),
    }


def test_serving_mounts_the_store_read_only_and_build_writes_it() -> None:
    services = _config("gpu", "build")["services"]
    for name in ("api", "api-gpu"):
        assert "models:/models:ro" in _volumes(services[name]), name
        assert "/readyz" in " ".join(services[name]["healthcheck"]["test"]), name
        assert services[name]["environment"]["SLIMSERVE_STORE"] == "/models"
    assert "models:/models" in [m.removesuffix(":rw") for m in _volumes(services["build"])]
    assert services["build"]["build"]["dockerfile"] == "docker/Dockerfile.build"
    assert services["api"]["build"]["dockerfile"] == "docker/Dockerfile.cpu"
    assert services["api-gpu"]["build"]["dockerfile"] == "docker/Dockerfile.gpu"


def test_gpu_profile_reserves_an_nvidia_device() -> None:
    api_gpu = _config("gpu")["services"]["api-gpu"]
    (device,) = api_gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia"
    assert "gpu" in device["capabilities"]


def test_ports_and_monitoring_wiring() -> None:
    services = {name: svc for name, svc in _config()["services"].items() if not svc.get("profiles")}
    published = {
        name: {
            # "HOST_IP:PUBLISHED:TARGET" or "PUBLISHED:TARGET" in the short syntax
            int(p["published"]) if isinstance(p, dict) else int(str(p).split(":")[-2])
            for p in svc["ports"]
        }
        for name, svc in services.items()
    }
    assert published == {"api": {8000}, "prometheus": {9090}, "grafana": {3000}}
    prometheus_mounts = _volumes(services["prometheus"])
    assert f"{ROOT}/docker/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prometheus_mounts
    assert f"{ROOT}/docker/prometheus/rules:/etc/prometheus/rules:ro" in prometheus_mounts
    grafana_env = services["grafana"]["environment"]
    assert grafana_env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert grafana_env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"


def test_the_stack_refuses_to_start_without_api_keys_or_a_grafana_password() -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (`make sysdeps` installs the Debian package)")
    for missing in ("SLIMSERVE_API_KEYS", "GRAFANA_ADMIN_PASSWORD"):
        env = {"SLIMSERVE_API_KEYS": '["k"]', "GRAFANA_ADMIN_PASSWORD": "p"}
        del env[missing]
        base = {
            k: v for k, v in os.environ.items() if k not in ("SLIMSERVE_API_KEYS", "GRAFANA_ADMIN_PASSWORD")
        }
        result = subprocess.run(
            [binary, "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE), "config", "--quiet"],
            capture_output=True, text=True, timeout=60, check=False, env={**base, **env},
        )  # fmt: skip
        assert result.returncode != 0 and missing in result.stderr, missing
