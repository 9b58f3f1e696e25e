"""docker/k8s/kserve: the KServe InferenceServices, checked against KServe's own API types (the kserve
SDK's models, generated from its CRDs: every key must be a field of its type, recursively) and their
pod part against the Kubernetes API schema (kubernetes-validate, strict), plus the wiring: the v2
health probes, the port KServe routes to, the shared model store, and the GPU resource."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

K8S = Path(__file__).resolve().parents[2] / "docker" / "k8s"
KSERVE = K8S / "kserve"
KUBERNETES_VERSION = "1.30.0"
FILES = ["inferenceservice-cpu.yaml", "inferenceservice-gpu.yaml"]

kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install -e '.[dev]'")
kserve_models = pytest.importorskip("kserve.models", reason="pip install -e '.[dev]'")


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def _model_class(name: str) -> Any:
    import kubernetes.client.models as k8s_models

    return getattr(kserve_models, name, None) or getattr(k8s_models, name)


def unknown_fields(value: Any, type_name: str, where: str = "") -> list[str]:
    """Keys in ``value`` that the generated API type ``type_name`` does not have, recursively."""
    listed = re.fullmatch(r"list\[(.+)\]", type_name)
    if listed:
        return [
            p for i, item in enumerate(value) for p in unknown_fields(item, listed.group(1), f"{where}[{i}]")
        ]
    mapped = re.fullmatch(r"dict\(str, (.+)\)", type_name)
    if mapped:
        return [p for k, v in value.items() for p in unknown_fields(v, mapped.group(1), f"{where}.{k}")]
    if not type_name.startswith("V1") or not isinstance(value, dict):
        return []
    cls = _model_class(type_name)
    by_json = {json: attr for attr, json in cls.attribute_map.items()}
    problems = []
    for key, item in value.items():
        if key not in by_json:
            problems.append(f"{where}.{key}")
        else:
            problems += unknown_fields(item, cls.openapi_types[by_json[key]], f"{where}.{key}")
    return problems


@pytest.mark.parametrize("name", FILES)
def test_inference_service_has_only_kserve_fields(name: str) -> None:
    isvc = _load(KSERVE / name)
    assert (isvc["apiVersion"], isvc["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    assert unknown_fields(isvc, "V1beta1InferenceService") == []


def test_the_field_check_catches_a_misspelling() -> None:
    isvc = _load(KSERVE / FILES[0])
    isvc["spec"]["predictor"]["minReplica"] = isvc["spec"]["predictor"].pop("minReplicas")
    isvc["spec"]["predictor"]["containers"][0]["readinessProb"] = {}
    assert sorted(unknown_fields(isvc, "V1beta1InferenceService")) == [
        ".spec.predictor.containers[0].readinessProb",
        ".spec.predictor.minReplica",
    ]


@pytest.mark.parametrize("name", FILES)
def test_predictor_pod_is_valid_against_the_kubernetes_schema(name: str) -> None:
    predictor = dict(_load(KSERVE / name)["spec"]["predictor"])
    kserve_only = {
        "minReplicas",
        "maxReplicas",
        "scaleMetric",
        "scaleTarget",
        "timeout",
        "containerConcurrency",
    }
    pod_spec = {k: v for k, v in predictor.items() if k not in kserve_only}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "predictor"}, "spec": pod_spec}
    kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("name", FILES)
def test_predictor_speaks_v2_on_the_kserve_port_from_the_shared_store(name: str) -> None:
    isvc = _load(KSERVE / name)
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    predictor = isvc["spec"]["predictor"]
    (container,) = predictor["containers"]
    assert container["name"] == "kserve-container"
    assert container["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]
    assert (
        "--port" in container["args"] and container["args"][container["args"].index("--port") + 1] == "8080"
    )
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": 8080}
    assert {"name": "models", "mountPath": "/models", "readOnly": True} in container["volumeMounts"]
    volumes = {v["name"]: v for v in predictor["volumes"]}
    store_claim = _load(K8S / "model-store-pvc.yaml")["metadata"]["name"]
    assert volumes["models"]["persistentVolumeClaim"]["claimName"] == store_claim
    assert predictor["minReplicas"] <= predictor["maxReplicas"] and predictor["scaleMetric"] == "cpu"
    gpu = container["resources"]["limits"].get("nvidia.com/gpu")
    assert (gpu == "1") == name.endswith("gpu.yaml")
    assert container["image"] == ("slimserve-gpu" if gpu else "slimserve-cpu")
