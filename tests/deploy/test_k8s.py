"""docker/k8s: the manifests, validated against the Kubernetes API's JSON schemas (kubernetes-validate,
schemas bundled in the wheel, so it works offline), plus the wiring between the objects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

K8S = Path(__file__).resolve().parents[2] / "docker" / "k8s"
KUBERNETES_VERSION = "1.30.0"
# Not core API objects: a kustomize file and a Prometheus Operator CRD (no schema bundled for either).
NOT_IN_THE_CORE_API = {"kustomization.yaml", "servicemonitor.yaml"}

kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install -e '.[dev]'")


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((K8S / name).read_text())
    return data


def _manifests() -> list[str]:
    return sorted(p.name for p in K8S.glob("*.yaml"))


@pytest.mark.parametrize("name", sorted(set(_manifests()) - NOT_IN_THE_CORE_API))
def test_manifest_is_valid_against_the_api_schema(name: str) -> None:
    kubernetes_validate.validate(_load(name), KUBERNETES_VERSION, strict=True)


def test_the_validator_rejects_a_misspelled_field() -> None:
    deployment = _load("deployment.yaml")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinessProb"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = _load("kustomization.yaml")
    assert set(kustomization["resources"]) == set(_manifests()) - {"kustomization.yaml"}


def test_deployment_probes_resources_and_read_only_store() -> None:
    pod = _load("deployment.yaml")["spec"]["template"]
    (api,) = pod["spec"]["containers"]
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["resources"]["requests"]["cpu"] and api["resources"]["requests"]["memory"]
    assert {"name": "models", "mountPath": "/models", "readOnly": True} in api["volumeMounts"]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert (
        volumes["models"]["persistentVolumeClaim"]["claimName"]
        == _load("model-store-pvc.yaml")["metadata"]["name"]
    )
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True


def test_build_job_writes_the_same_store() -> None:
    job = _load("build-job.yaml")["spec"]["template"]["spec"]
    (volume,) = job["volumes"]
    assert volume["persistentVolumeClaim"]["claimName"] == _load("model-store-pvc.yaml")["metadata"]["name"]
    (build,) = job["containers"]
    assert {"name": "models", "mountPath": "/models"} in build["volumeMounts"]


def test_service_hpa_pdb_and_monitor_select_the_deployment() -> None:
    deployment = _load("deployment.yaml")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = _load("service.yaml")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    hpa = _load("hpa.yaml")["spec"]
    assert hpa["scaleTargetRef"]["kind"] == "Deployment"
    assert hpa["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["minReplicas"] >= 2
    assert _load("pdb.yaml")["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    monitor = _load("servicemonitor.yaml")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


def _pod_specs() -> dict[str, dict[str, Any]]:
    return {
        "deployment.yaml": _load("deployment.yaml")["spec"]["template"]["spec"],
        "build-job.yaml": _load("build-job.yaml")["spec"]["template"]["spec"],
    }


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_no_pod_mounts_a_service_account_token() -> None:
    for name, spec in _pod_specs().items():
        assert spec["automountServiceAccountToken"] is False, name


def test_api_keys_come_from_a_secret_and_are_required() -> None:
    (api,) = _pod_specs()["deployment.yaml"]["containers"]
    keys = _env(api)["SLIMSERVE_API_KEYS"]["secretKeyRef"]
    assert keys["name"] == "slimserve-api-keys" and not keys.get("optional", False)
    assert _env(api)["SLIMSERVE_ADMIN_KEYS"]["secretKeyRef"]["name"] == "slimserve-api-keys"


def test_shutdown_fits_inside_the_termination_grace() -> None:
    """preStop, then the server's drain, then exit: all before Kubernetes sends SIGKILL."""
    spec = _pod_specs()["deployment.yaml"]
    (api,) = spec["containers"]
    command = " ".join(api["lifecycle"]["preStop"]["exec"]["command"])
    pre_stop = float(command.split("sleep(")[1].split(")")[0])
    grace = float(_env(api)["SLIMSERVE_SHUTDOWN_GRACE_S"])
    assert pre_stop >= 2
    assert spec["terminationGracePeriodSeconds"] >= pre_stop + grace + 5


def test_threads_match_the_cpu_limit() -> None:
    (api,) = _pod_specs()["deployment.yaml"]["containers"]
    env = _env(api)
    limit = float(api["resources"]["limits"]["cpu"])
    assert int(env["SLIMSERVE_RUNNER_THREADS"]) * int(env["SLIMSERVE_INTRA_OP_THREADS"]) <= limit


def test_network_policy_admits_only_the_namespace_and_scrapers_and_denies_egress() -> None:
    policy = _load("networkpolicy.yaml")["spec"]
    pod_labels = _load("deployment.yaml")["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    assert policy["egress"] == []
    (rule,) = policy["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    for peer in rule["from"]:
        assert peer.get("podSelector") == {} or peer["namespaceSelector"]["matchLabels"]
