"""Hugging Face task shapes, spoken to by the real ``huggingface_hub.InferenceClient`` against a real
slimserve on a loopback port (one base URL per model), every response validated against the published
task JSON schemas (tests/service/hf_task_schemas, from ``@huggingface/tasks``); TEI's /predict and
/info with httpx."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from slimserve.service.settings import Settings

from tests.service import fakestore
from tests.service.conftest import Server, free_port

pytestmark = pytest.mark.timeout(120)

hub = pytest.importorskip("huggingface_hub", reason="pip install -e '.[dev]'")
jsonschema = pytest.importorskip("jsonschema", reason="pip install -e '.[dev]'")

SCHEMAS = Path(__file__).parent / "hf_task_schemas"
TEXT = "Angela Merkel visited Paris with Siemens AG."


def _validator(task: str, kind: str) -> Any:
    from referencing import Registry, Resource

    resources = [SCHEMAS / "common-definitions.json", *SCHEMAS.glob("*/*.json")]
    registry: Registry[Any] = Registry().with_resources(
        (doc["$id"], Resource.from_contents(doc)) for doc in (json.loads(p.read_text()) for p in resources)
    )
    schema = json.loads((SCHEMAS / task / f"{kind}.json").read_text())
    return jsonschema.Draft6Validator(schema, registry=registry)


@pytest.fixture(autouse=True)
def _online_for_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    # The suite runs with HF_HUB_OFFLINE=1 (no hub downloads), and huggingface_hub's offline mode blocks
    # every request its session makes, a loopback URL included. Here it only ever talks to slimserve.
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


@pytest.fixture(scope="module")
def hf_server(fake_store: Path) -> Iterator[Server]:
    settings = Settings(store=fake_store, port=free_port(), warmup=False, max_inputs=8)
    srv = Server(settings).start()
    yield srv
    srv.stop()


def _client(server: Server, name: str, **kwargs: Any) -> Any:
    return hub.InferenceClient(model=f"{server.url}/hf/models/{name}", **kwargs)


def _v1(server: Server, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = httpx.post(server.url + path, json=body)
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


def test_text_classification_with_the_hub_client(hf_server: Server) -> None:
    for name, path in (("sentiment", "/v1/sentiment"), ("intent", "/v1/classify")):
        out = _client(hf_server, name).text_classification(TEXT)
        labels = fakestore.SENTIMENT_LABELS if name == "sentiment" else fakestore.INTENT_LABELS
        assert sorted(o.label for o in out) == sorted(labels)  # every label, unless top_k
        assert [o.score for o in out] == sorted((o.score for o in out), reverse=True)
        expected = _v1(hf_server, path, {"inputs": TEXT, "top_k": len(labels)})["results"][0]["top"]
        assert [(o.label, pytest.approx(o.score)) for o in out] == [
            (t["label"], t["score"]) for t in expected
        ]
    top2 = _client(hf_server, "intent").text_classification(TEXT, top_k=2)
    assert len(top2) == 2
    # base_url= (the OpenAI-style alias of model=) reaches the same per-model URL.
    aliased = hub.InferenceClient(base_url=f"{hf_server.url}/hf/models/intent").text_classification(
        TEXT, top_k=2
    )
    assert [(o.label, o.score) for o in aliased] == [(o.label, o.score) for o in top2]


@pytest.mark.parametrize("strategy", ["none", "simple", "first", "average", "max"])
def test_token_classification_with_the_hub_client(hf_server: Server, strategy: str) -> None:
    out = _client(hf_server, "ner").token_classification(TEXT, aggregation_strategy=strategy)
    expected = _v1(hf_server, "/v1/ner", {"inputs": TEXT, "aggregation": strategy})["results"][0]["entities"]
    key = "entity" if strategy == "none" else "entity_group"
    got = [(getattr(o, key), o.word, o.start, o.end, pytest.approx(o.score)) for o in out]
    assert got == [(e["entity"], e["text"], e["start"], e["end"], e["score"]) for e in expected]
    for o in out:
        assert TEXT[o.start : o.end] == o.word


def test_responses_match_the_published_task_schemas(hf_server: Server) -> None:
    text_in, text_out = (
        _validator("text-classification", "input"),
        _validator("text-classification", "output"),
    )
    ner_in, ner_out = (
        _validator("token-classification", "input"),
        _validator("token-classification", "output"),
    )
    with httpx.Client(base_url=hf_server.url) as c:
        for body in (
            {"inputs": TEXT},
            {"inputs": TEXT, "parameters": {"top_k": 3, "function_to_apply": "softmax"}},
        ):
            text_in.validate(body)
            r = c.post("/hf/models/intent", json=body)
            assert r.status_code == 200, r.text
            (ranked,) = r.json()  # one list per input: what InferenceClient reads
            text_out.validate(ranked)
        for strategy in ("none", "simple", "first", "average", "max"):
            body = {"inputs": TEXT, "parameters": {"aggregation_strategy": strategy, "ignore_labels": ["O"]}}
            ner_in.validate(body)
            r = c.post("/hf/models/ner", json=body)
            assert r.status_code == 200, r.text
            ner_out.validate(r.json())
        # A list of texts: one answer per text, each valid.
        many = c.post("/hf/models/ner", json={"inputs": [TEXT, "nothing"]}).json()
        assert len(many) == 2
        for item in many:
            ner_out.validate(item)


def test_ignore_labels_filters_groups(hf_server: Server) -> None:
    with httpx.Client(base_url=hf_server.url) as c:
        everything = c.post(
            "/hf/models/ner", json={"inputs": TEXT, "parameters": {"ignore_labels": []}}
        ).json()
        kinds = {e["entity_group"] for e in everything}
        assert kinds, "the fake model tags something"
        dropped = sorted(kinds)[0]
        fewer = c.post(
            "/hf/models/ner", json={"inputs": TEXT, "parameters": {"ignore_labels": [dropped]}}
        ).json()
        assert [e for e in everything if e["entity_group"] != dropped] == fewer


def test_tei_predict_and_info(hf_server: Server) -> None:
    with httpx.Client(base_url=hf_server.url) as c:
        one = c.post("/hf/models/sentiment/predict", json={"inputs": TEXT})
        assert one.status_code == 200, one.text
        assert {r["label"] for r in one.json()} == set(fakestore.SENTIMENT_LABELS)
        many = c.post("/hf/models/sentiment/predict", json={"inputs": [TEXT, "dull"]}).json()
        assert len(many) == 2 and many[0] == one.json()
        long = c.post("/hf/models/sentiment/predict", json={"inputs": "word " * 300})
        assert long.status_code == 400 and long.json()["error_type"] == "input_too_long"
        cut = c.post("/hf/models/sentiment/predict", json={"inputs": "word " * 300, "truncate": True})
        assert cut.status_code == 200
        raw = c.post("/hf/models/sentiment/predict", json={"inputs": TEXT, "raw_scores": True})
        assert raw.status_code == 422
        ner = c.post("/hf/models/ner/predict", json={"inputs": TEXT})
        assert ner.status_code == 404 and ner.json()["error_type"] == "model_not_found"
        info = c.get("/hf/models/intent/info").json()
        assert info["model_id"] == "intent" and info["model_dtype"] == "int8"
        assert info["model_type"]["classifier"]["id2label"] == {
            str(i): x for i, x in enumerate(fakestore.INTENT_LABELS)
        }
        assert info["max_client_batch_size"] == 8 and info["pipeline_tag"] == "text-classification"


def test_errors_are_tei_shaped_with_v1_status_codes(hf_server: Server) -> None:
    with pytest.raises(hub.errors.HfHubHTTPError) as err:
        _client(hf_server, "nope").text_classification(TEXT)
    assert err.value.response.status_code == 404
    assert err.value.response.json()["error_type"] == "model_not_found"
    with httpx.Client(base_url=hf_server.url) as c:
        cases = {
            "unknown field": (422, c.post("/hf/models/intent", json={"inputs": TEXT, "model": "x"})),
            "empty list": (422, c.post("/hf/models/intent", json={"inputs": []})),
            "wrong type": (
                422,
                c.post("/hf/models/intent", json={"inputs": TEXT, "parameters": {"top_k": "2"}}),
            ),
            "sigmoid": (
                400,
                c.post(
                    "/hf/models/intent", json={"inputs": TEXT, "parameters": {"function_to_apply": "sigmoid"}}
                ),
            ),
            "too many": (413, c.post("/hf/models/intent", json={"inputs": ["x"] * 9})),
            "other task's parameters": (
                400,
                c.post(
                    "/hf/models/intent", json={"inputs": TEXT, "parameters": {"aggregation_strategy": "max"}}
                ),
            ),
        }
        for case, (status, r) in cases.items():
            assert r.status_code == status, (case, r.text)
            assert set(r.json()) == {"error", "error_type"}, case


def test_hf_takes_the_key_where_v1_does(make_server: Any, fake_store: Path) -> None:
    srv = make_server(fake_store, api_keys=["k"])
    with pytest.raises(hub.errors.HfHubHTTPError) as err:
        _client(srv, "sentiment").text_classification(TEXT)
    assert err.value.response.status_code == 401
    assert _client(srv, "sentiment", token="k").text_classification(TEXT)


def test_v1_ner_takes_the_new_aggregations(hf_server: Server) -> None:
    for strategy in ("first", "average", "max"):
        body = _v1(hf_server, "/v1/ner", {"inputs": [TEXT], "aggregation": strategy})
        for e in body["results"][0]["entities"]:
            assert TEXT[e["start"] : e["end"]] == e["text"] and "-" not in e["entity"]
