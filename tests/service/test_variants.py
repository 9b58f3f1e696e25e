"""Serving by policy: which variant a model is served with, and that /v1/models tells the truth."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from slimserve.service import store
from slimserve.service.engine.tokenizer import TextTokenizer, pad
from slimserve.service.variants import VariantNotFound, choose_variant

from tests.service import fakestore
from tests.service.conftest import Server


def arch(layers: int, heads: int = 12, ffn: int = 1536) -> dict[str, Any]:
    return {
        "layers": layers,
        "heads": [heads] * layers,
        "ffn": [ffn] * layers,
        "parameters": 1_000_000 * layers,
        "flops_per_token": 10_000_000 * layers,
    }


def spec(
    precision: str, accuracy: float, b32_ms: float, form: str = "teacher", layers: int = 6
) -> dict[str, Any]:
    return {
        "precision": precision,
        "form": form,
        "metrics": {"accuracy": accuracy, "macro_f1": accuracy - 0.01},
        "architecture": arch(layers),
        "latency_ms": {"batch_1": b32_ms / 20, "batch_32": b32_ms},
    }


# fp32 is the most accurate, l3-int8 the build's CPU choice, l3-fp16 its CUDA choice.
SCHEMA2 = {
    "fp32": spec("fp32", 0.91, 400.0),
    "fp16": spec("fp16", 0.905, 600.0),
    "int8": spec("int8", 0.90, 200.0),
    "l3-fp16": spec("fp16", 0.89, 300.0, form="l3", layers=3),
    "l3-int8": spec("int8", 0.885, 100.0, form="l3", layers=3),
}
RECOMMENDED = {"cpu": "l3-int8", "cuda": "l3-fp16"}


def publish_schema2(root: Path, name: str = "sentiment", version: int = 1) -> Path:
    return fakestore.publish(
        root, name, version, fakestore.SENTIMENT_LABELS, seed=11, variants=SCHEMA2, recommended=RECOMMENDED
    )


def as_version_1(directory: Path) -> None:
    """Rewrite a manifest as a version-1 build wrote it: no schema-2 fields at all."""
    path = directory / store.MANIFEST
    raw = json.loads(path.read_text())
    raw["schema_version"] = 1
    for key in ("recommended", "policy"):
        raw.pop(key, None)
    for variant in raw["variants"].values():
        for key in ("precision", "form", "architecture", "latency_ms"):
            variant.pop(key, None)
    path.write_text(json.dumps(raw, indent=2))


def direct_scores(directory: Path, variant: str, text: str) -> list[float]:
    """Softmax of the variant's ONNX file run directly: which file answered a request."""
    batch = pad(TextTokenizer(directory / "tokenizer.json", 64).encode([text]))
    session = ort.InferenceSession(
        str(directory / f"model.{variant}.onnx"), providers=["CPUExecutionProvider"]
    )
    feeds = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
    feeds["token_type_ids"] = batch.token_type_ids
    logits = session.run(None, feeds)[0][0]
    e = np.exp(logits - logits.max())
    return list(e / e.sum())


def served(srv: Server, name: str = "sentiment") -> dict[str, Any]:
    return {m["name"]: m for m in httpx.get(srv.url + "/v1/models").json()["models"]}[name]


def answer(srv: Server, text: str) -> dict[str, Any]:
    r = httpx.post(srv.url + "/v1/sentiment", json={"inputs": text})
    assert r.status_code == 200, r.text
    return dict(r.json())


# -- the choice itself ---------------------------------------------------------------------------------


def manifest(tmp_path: Path, v1: bool = False) -> store.Manifest:
    directory = publish_schema2(tmp_path / "store")
    if v1:
        as_version_1(directory)
    return store.read_manifest(directory)


def test_choice_by_setting(tmp_path: Path) -> None:
    m = manifest(tmp_path)
    assert choose_variant(m, "recommended", "cpu") == "l3-int8"
    assert choose_variant(m, "recommended", "cuda") == "l3-fp16"
    assert choose_variant(m, "best", "cpu") == choose_variant(m, "best", "cuda") == "fp32"
    assert choose_variant(m, "int8", "cuda") == "int8"
    with pytest.raises(VariantNotFound, match=r"'l2-int8'.*setting 'variants'.*fp16, fp32, int8, l3-fp16"):
        choose_variant(m, "l2-int8", "cpu", "variants")


def test_version_1_manifests_keep_the_old_preference(tmp_path: Path) -> None:
    v1 = fakestore.publish(tmp_path / "store", "sentiment", 1, fakestore.SENTIMENT_LABELS)
    as_version_1(v1)
    m = store.read_manifest(v1)
    assert (m.schema_version, m.recommended, m.variants["int8"].architecture) == (1, {}, None)
    assert choose_variant(m, "recommended", "cpu") == "int8"
    assert choose_variant(m, "recommended", "cuda") == "fp32"  # no fp16 in this version
    assert store.precision_of("int8", m.variants["int8"]) == "int8"


def test_a_recommendation_naming_a_missing_variant_falls_back(tmp_path: Path) -> None:
    m = manifest(tmp_path).model_copy(update={"recommended": {"cpu": "gone"}})
    assert choose_variant(m, "recommended", "cpu") == "int8"


# -- served --------------------------------------------------------------------------------------------


def test_the_recommended_variant_is_served_by_default(tmp_path: Path, make_server: Any) -> None:
    directory = publish_schema2(tmp_path / "store")
    srv: Server = make_server(tmp_path / "store")
    info = served(srv)
    assert (info["variant"], info["precision"], info["form"]) == ("l3-int8", "int8", "l3")
    assert info["architecture"] == arch(3)
    assert info["recommended"] == RECOMMENDED
    assert info["metrics"] == SCHEMA2["l3-int8"]["metrics"]
    # The answer names the variant /v1/models names, and comes from that file.
    text = "a quiet triumph"
    body = answer(srv, text)
    assert body["variant"] == "l3-int8"
    scores = direct_scores(directory, "l3-int8", text)
    assert body["results"][0]["score"] == pytest.approx(max(scores), abs=1e-5)
    assert max(direct_scores(directory, "fp32", text)) != pytest.approx(max(scores), abs=1e-5)
    labels = {"model": "sentiment", "variant": "l3-int8", "form": "l3", "precision": "int8", "layers": "3"}
    assert srv.metric("slimserve_model_info", labels | {"parameters": str(arch(3)["parameters"])}) == 1


def test_best_globally_and_a_per_model_override(tmp_path: Path, make_server: Any) -> None:
    publish_schema2(tmp_path / "store", "sentiment")
    publish_schema2(tmp_path / "store", "intent")
    srv: Server = make_server(tmp_path / "store", variant="best", variants={"intent": "recommended"})
    assert served(srv, "sentiment")["variant"] == "fp32"
    assert served(srv, "intent")["variant"] == "l3-int8"
    assert answer(srv, "fine")["variant"] == "fp32"
    srv2: Server = make_server(tmp_path / "store", variants={"sentiment": "int8"})
    assert (served(srv2, "sentiment")["variant"], served(srv2, "intent")["variant"]) == ("int8", "l3-int8")


def test_a_cuda_fallback_serves_and_reports_the_cpu_choice(tmp_path: Path, make_server: Any) -> None:
    publish_schema2(tmp_path / "store")
    # No GPU here: the CUDA choice (l3-fp16) is asked for, ONNX Runtime runs on CPU, so the CPU choice
    # is what serves, and what /v1/models and the answers say.
    srv: Server = make_server(tmp_path / "store", device="cuda")
    info = served(srv)
    if info["provider"] == "CUDAExecutionProvider":
        pytest.skip("a GPU is visible: no fallback to observe")
    assert (info["variant"], info["provider"]) == ("l3-int8", "CPUExecutionProvider")
    assert answer(srv, "fine")["variant"] == "l3-int8"


def test_an_unknown_variant_is_a_clear_load_error(tmp_path: Path, make_server: Any) -> None:
    publish_schema2(tmp_path / "store")
    srv: Server = make_server(tmp_path / "store", ready=False, variant="l2-int8")
    ready = httpx.get(srv.url + "/readyz")
    assert ready.status_code == 503
    message = ready.json()["error"]["message"]
    assert "'l2-int8'" in message and "setting 'variant'" in message and "l3-int8" in message


def test_a_version_1_manifest_still_serves(tmp_path: Path, make_server: Any) -> None:
    as_version_1(fakestore.publish(tmp_path / "store", "sentiment", 1, fakestore.SENTIMENT_LABELS))
    srv: Server = make_server(tmp_path / "store")
    info = served(srv)
    assert (info["variant"], info["precision"], info["form"], info["architecture"]) == (
        "int8",
        "int8",
        "teacher",
        None,
    )
    assert info["recommended"] == {}
    assert answer(srv, "fine")["variant"] == "int8"


def test_a_reload_to_a_version_without_the_asked_variant_is_refused(tmp_path: Path, make_server: Any) -> None:
    publish_schema2(tmp_path / "store")
    srv: Server = make_server(tmp_path / "store", variants={"sentiment": "l3-int8"})
    assert served(srv)["variant"] == "l3-int8"
    fakestore.publish(tmp_path / "store", "sentiment", 2, fakestore.SENTIMENT_LABELS)  # fp32 + int8 only
    refused = httpx.post(srv.url + "/v1/models/sentiment/reload", timeout=60)
    assert refused.status_code == 409
    assert "'l3-int8'" in refused.json()["error"]["message"]
    assert "setting 'variants'" in refused.json()["error"]["message"]
    assert (served(srv)["version"], served(srv)["variant"]) == (1, "l3-int8")
