"""End to end: a tiny NER model built through the real pipeline on a few hundred CoNLL sentences,
then served by a real uvicorn server; its answers are checked against the codec run row by row."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from slimserve.service.engine.runner import OnnxRunner
from slimserve.service.engine.tokenizer import TextTokenizer, pad_rows
from slimserve.service.settings import Settings
from slimserve.service.store import read_manifest, verify_checksums, version_dir
from slimserve.service.tasks.token_classification import Entity, NerCodec, NerParams

from tests.service.conftest import Server, free_port
from tests.tiny import NER_LABELS, build_tiny_store

pytestmark = pytest.mark.slow

STRIDE = 16
LONG = " ".join(
    f"On day {i} Angela Merkel met Emmanuel Macron in Zürich,\tthen flew to São Paulo with the EU team 😀."
    for i in range(12)
)
TEXTS = [LONG, "José\u0301 Müller works for Siemens AG in Frankfurt am Main.", "", "   "]


@pytest.fixture(scope="module")
def ner_store(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    return build_tiny_store(tmp_path_factory.mktemp("ner_store"), models=("ner",))


@pytest.fixture(scope="module")
def ner_server(ner_store: Path) -> Iterator[Server]:
    settings = Settings(store=ner_store, port=free_port(), warmup=False, ner_stride=STRIDE)
    server = Server(settings).start()
    yield server
    server.stop()


def reference(store: Path, variant: str, text: str, aggregation: str) -> list[Entity]:
    """The codec with the served ONNX file, one window per run (no batching, no padding)."""
    directory = version_dir(store, "ner", 1)
    manifest = read_manifest(directory)
    codec = NerCodec(
        TextTokenizer(directory / manifest.tokenizer, manifest.max_seq_len), manifest.labels, STRIDE
    )
    runner = OnnxRunner(directory / manifest.variants[variant].file, intra_op_threads=1)
    prepared = codec.prepare([text], NerParams(aggregation))[0]  # type: ignore[arg-type]
    if text == LONG:
        assert len(prepared.rows) >= 3, "the long text must span several windows"
    logits = []
    for row in prepared.rows:
        batch = pad_rows([row])
        logits.append(runner.run(batch.input_ids, batch.attention_mask, batch.token_type_ids)[0])
    return codec.finish(prepared, logits).entities


def test_build_publishes_four_scored_variants(ner_store: Path) -> None:
    directory = version_dir(ner_store, "ner", 1)
    manifest = read_manifest(directory)
    verify_checksums(directory, manifest)
    assert manifest.task == "token-classification"
    assert manifest.labels == NER_LABELS
    assert set(manifest.variants) == {"fp32", "fp16", "int8", "int8-static"}
    for variant in manifest.variants.values():
        assert 0.0 <= variant.metrics["f1"] <= 1.0
        assert variant.parity.label_agreement > 0.5
    assert "f1" in manifest.reference_metrics


@pytest.mark.parametrize("aggregation", ["simple", "none"])
def test_served_entities_match_the_codec_and_offsets_hold(
    ner_server: Server, ner_store: Path, aggregation: str
) -> None:
    with ner_server.client() as client:
        response = client.post("/v1/ner", json={"inputs": TEXTS, "aggregation": aggregation})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "ner"
    assert body["version"] == 1
    assert {"x-request-id", "x-queue-time", "x-inference-time", "x-total-time"} <= set(response.headers)
    results = body["results"]
    assert len(results) == len(TEXTS)
    # The long text needs several windows; an untrained model tags freely, so entities exist.
    assert results[0]["entities"]
    for text, result in zip(TEXTS, results, strict=True):
        for e in result["entities"]:
            assert text[e["start"] : e["end"]] == e["text"]
        expected = reference(ner_store, body["variant"], text, aggregation)
        got = [Entity(**e) for e in result["entities"]]
        assert [(e.entity, e.start, e.end, e.text) for e in got] == [
            (e.entity, e.start, e.end, e.text) for e in expected
        ]
        assert np.allclose([e.score for e in got], [e.score for e in expected], atol=1e-3)
    assert results[2]["entities"] == [] and results[3]["entities"] == []


def test_one_text_and_defaults(ner_server: Server) -> None:
    with ner_server.client() as client:
        one = client.post("/v1/ner", json={"inputs": "Angela Merkel visited Paris."})
        listed = client.post(
            "/v1/ner", json={"inputs": ["Angela Merkel visited Paris."], "aggregation": "simple"}
        )
    assert one.status_code == 200
    assert one.json()["results"] == listed.json()["results"]


@pytest.mark.parametrize(
    ("payload", "status", "kind"),
    [
        ({"inputs": "x", "aggregation": "first"}, 422, "validation_error"),
        ({"inputs": []}, 422, "validation_error"),
        ({"inputs": "x", "model": "nope"}, 404, "model_not_found"),
    ],
)
def test_errors(ner_server: Server, payload: dict[str, object], status: int, kind: str) -> None:
    with ner_server.client() as client:
        response = client.post("/v1/ner", json=payload)
    assert response.status_code == status
    assert response.json()["error"]["type"] == kind
