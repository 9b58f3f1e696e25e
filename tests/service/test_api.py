"""Every endpoint and every error of the contract, against a real server on a loopback port."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.service import fakestore
from tests.service.conftest import Server

pytestmark = pytest.mark.timeout(120)


def test_sentiment_one_text_and_a_list_are_aligned(server: Server) -> None:
    with server.client() as c:
        one = c.post("/v1/sentiment", json={"inputs": "a quiet triumph"})
        many = c.post("/v1/sentiment", json={"inputs": ["a quiet triumph", "dull", "a quiet triumph"]})
    assert one.status_code == 200, one.text
    body = one.json()
    assert (body["model"], body["version"], body["variant"]) == ("sentiment", 1, "int8")
    assert len(body["results"]) == 1
    assert body["results"][0]["label"] in fakestore.SENTIMENT_LABELS
    assert "top" not in body["results"][0]
    results = many.json()["results"]
    assert len(results) == 3
    assert results[0] == results[2] == body["results"][0]
    for name in ("x-request-id", "x-queue-time", "x-inference-time", "x-total-time"):
        assert name in one.headers
    assert float(one.headers["x-total-time"]) >= float(one.headers["x-inference-time"]) >= 0


def test_classify_defaults_to_intent_and_lists_top_k(server: Server) -> None:
    with server.client() as c:
        r = c.post("/v1/classify", json={"inputs": ["my card has not arrived"], "top_k": 3})
        other = c.post("/v1/classify", json={"inputs": "fine", "model": "sentiment"})
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "intent"
    result = r.json()["results"][0]
    top = result["top"]
    assert len(top) == 3
    assert [t["score"] for t in top] == sorted((t["score"] for t in top), reverse=True)
    assert (top[0]["label"], top[0]["score"]) == (result["label"], result["score"])
    assert other.json()["model"] == "sentiment"


def test_bodies_match_the_response_schemas(server: Server) -> None:
    """The inference routes build their JSON by hand (no pydantic round trip): it must still be exactly
    the documented models, no field more or less, and the content type must say JSON."""
    from slimserve.service.api import schemas

    with server.client() as c:
        answers = {
            schemas.ClassifyResponse: [
                c.post("/v1/sentiment", json={"inputs": ["fine", "dull"]}),
                c.post("/v1/classify", json={"inputs": "where is my card", "top_k": 2}),
            ],
            schemas.NerResponse: [
                c.post("/v1/ner", json={"inputs": ["Angela Merkel visited Paris.", "nothing here"]}),
                c.post("/v1/ner", json={"inputs": "Angela Merkel visited Paris.", "aggregation": "none"}),
            ],
        }
    for model, responses in answers.items():
        for r in responses:
            assert r.status_code == 200, r.text
            assert r.headers["content-type"] == "application/json"
            body = r.json()
            parsed = model.model_validate(body)
            assert parsed.model_dump(mode="json", exclude_none=True) == body


def test_request_id_is_echoed(server: Server) -> None:
    r = httpx.get(server.url + "/healthz", headers={"x-request-id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    assert httpx.get(server.url + "/healthz").headers["x-request-id"] != "abc-123"


def test_models_lists_what_is_served(server: Server) -> None:
    models = {m["name"]: m for m in httpx.get(server.url + "/v1/models").json()["models"]}
    assert set(models) == {"sentiment", "intent", "ner"}
    intent = models["intent"]
    assert intent["task"] == "sequence-classification"
    assert intent["labels"] == fakestore.INTENT_LABELS
    assert (intent["version"], intent["variant"], intent["provider"]) == (1, "int8", "CPUExecutionProvider")
    assert intent["max_seq_len"] == 64
    assert intent["metrics"] == {"accuracy": 0.5, "macro_f1": 0.5}


def test_probes_and_openapi(server: Server) -> None:
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(server.url + "/readyz").status_code == 200
    spec = httpx.get(server.url + "/openapi.json").json()
    for path in ("/v1/sentiment", "/v1/classify", "/v1/ner", "/v1/models", "/healthz", "/readyz", "/metrics"):
        assert path in spec["paths"]
    assert "503" in spec["paths"]["/v1/classify"]["post"]["responses"]


def error(r: httpx.Response) -> tuple[int, str]:
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message"}, body
    assert body["error"]["message"]
    return r.status_code, body["error"]["type"]


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"inputs": []}, (422, "validation_error")),
        ({"inputs": "x", "colour": "red"}, (422, "validation_error")),
        ({"inputs": 3}, (422, "validation_error")),
        ({"inputs": "x", "top_k": 0}, (422, "validation_error")),
        ({}, (422, "validation_error")),
        ({"inputs": "x", "model": "nope"}, (404, "model_not_found")),
        ({"inputs": "x", "model": "ner"}, (404, "model_not_found")),
        ({"inputs": ["x"] * 9}, (413, "payload_too_large")),
        ({"inputs": "word " * 100, "truncate": False}, (400, "input_too_long")),
    ],
)
def test_contract_errors(server: Server, payload: dict[str, Any], expected: tuple[int, str]) -> None:
    assert error(httpx.post(server.url + "/v1/classify", json=payload)) == expected


def test_malformed_json_and_non_json(server: Server) -> None:
    bad = httpx.post(
        server.url + "/v1/sentiment", content=b'{"inputs": ', headers={"content-type": "application/json"}
    )
    assert error(bad) == (422, "validation_error")
    assert "JSON" in bad.json()["error"]["message"]


def test_truncation_is_the_default(server: Server) -> None:
    r = httpx.post(server.url + "/v1/sentiment", json={"inputs": "word " * 100})
    assert r.status_code == 200


def test_body_over_the_byte_limit(fake_store: Path, make_server: Any) -> None:
    srv = make_server(fake_store, max_body_bytes=200)
    assert error(httpx.post(srv.url + "/v1/sentiment", json={"inputs": "x" * 300})) == (
        413,
        "payload_too_large",
    )
    # A streamed body without Content-Length is counted too.
    chunks = iter([b'{"inputs": "', b"y" * 300, b'"}'])
    assert error(httpx.post(srv.url + "/v1/sentiment", content=chunks)) == (413, "payload_too_large")
    assert httpx.post(srv.url + "/v1/sentiment", json={"inputs": "short"}).status_code == 200


def test_bad_deadline_header(server: Server) -> None:
    r = httpx.post(server.url + "/v1/sentiment", json={"inputs": "x"}, headers={"x-deadline-ms": "soon"})
    assert error(r) == (422, "validation_error")


def test_api_keys(fake_store: Path, make_server: Any) -> None:
    srv = make_server(fake_store, api_keys=["k1", "k2"])
    url = srv.url
    assert error(httpx.post(url + "/v1/sentiment", json={"inputs": "x"})) == (401, "unauthorized")
    wrong = httpx.post(url + "/v1/sentiment", json={"inputs": "x"}, headers={"authorization": "Bearer k3"})
    assert error(wrong) == (401, "unauthorized")
    ok = httpx.post(url + "/v1/sentiment", json={"inputs": "x"}, headers={"authorization": "Bearer k2"})
    assert ok.status_code == 200
    assert error(httpx.get(url + "/v1/models")) == (401, "unauthorized")
    # Probes stay open; /metrics needs a key only when metrics_auth is set.
    for path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(url + path).status_code == 200


def test_metrics_auth(fake_store: Path, make_server: Any) -> None:
    srv = make_server(fake_store, api_keys=["k1"], metrics_auth=True)
    assert error(httpx.get(srv.url + "/metrics")) == (401, "unauthorized")
    assert httpx.get(srv.url + "/metrics", headers={"authorization": "Bearer k1"}).status_code == 200


def test_not_ready_while_the_store_cannot_load(tmp_path: Path, make_server: Any) -> None:
    store = tmp_path / "store"
    version = fakestore.publish(store, "sentiment", 1, fakestore.SENTIMENT_LABELS)
    (version / "model.int8.onnx").write_bytes(b"corrupt")
    srv = make_server(store, ready=False)
    # Loading fails (sha256 mismatch): the process lives, but is never ready and answers not_ready.
    assert httpx.get(srv.url + "/healthz").status_code == 200
    ready = httpx.get(srv.url + "/readyz")
    assert error(ready) == (503, "not_ready")
    assert "sha256" in ready.json()["error"]["message"]
    assert error(httpx.post(srv.url + "/v1/sentiment", json={"inputs": "x"})) == (503, "not_ready")


def test_metrics_cover_the_contract(server: Server) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    httpx.post(server.url + "/v1/sentiment", json={"inputs": ["a", "b"]})
    httpx.post(server.url + "/v1/classify", json={"inputs": "x", "model": "nope"})
    families = {f.name: f for f in text_string_to_metric_families(httpx.get(server.url + "/metrics").text)}
    expected = {
        "slimserve_request_duration_seconds": {"endpoint", "model"},
        "slimserve_requests": {"endpoint", "model", "code"},
        "slimserve_queue_duration_seconds": {"model"},
        "slimserve_tokenize_duration_seconds": {"model"},
        "slimserve_inference_duration_seconds": {"model", "variant"},
        "slimserve_batch_size": {"model"},
        "slimserve_batch_tokens": {"model"},
        "slimserve_queue_depth": {"model"},
        "slimserve_model_info": {"model", "version", "variant", "provider"},
    }
    for name, labels in expected.items():
        assert name in families, name
        sample_labels = {k for s in families[name].samples for k in s.labels if k not in ("le",)}
        assert labels <= sample_labels, (name, sample_labels)
    ok = [s for s in families["slimserve_requests"].samples if s.name == "slimserve_requests_total"]
    assert any(s.labels == {"endpoint": "/v1/sentiment", "model": "sentiment", "code": "200"} for s in ok)
    # An unknown model name never becomes a label value.
    assert not any("nope" in v for s in ok for v in s.labels.values())
    info = {s.labels["model"]: s.labels for s in families["slimserve_model_info"].samples}
    # A version-1 manifest names no architecture (those labels stay empty); its variant's name is
    # its precision.
    assert info["intent"] == {
        "model": "intent",
        "version": "1",
        "variant": "int8",
        "provider": "CPUExecutionProvider",
        "form": "teacher",
        "precision": "int8",
        "layers": "",
        "parameters": "",
    }


FAST_PATH_CASES: list[tuple[str, dict[str, str], bytes]] = [
    ("/v1/sentiment", {}, b'{"inputs": ["a quiet triumph", "dull"]}'),
    ("/v1/classify", {}, b'{"inputs": "my card has not arrived", "top_k": 3}'),
    ("/v1/classify", {}, b'{"inputs": "fine", "model": "sentiment"}'),
    ("/v1/ner", {}, b'{"inputs": ["Angela Merkel visited Paris.", "x"], "aggregation": "none"}'),
    ("/v1/ner", {}, b'{"inputs": "Angela Merkel visited Paris."}'),
    ("/v1/classify", {}, b'{"inputs": "x", "model": "nope"}'),
    ("/v1/classify", {}, b'{"inputs": "x", "model": "ner"}'),
    ("/v1/classify", {}, b'{"inputs": ["x", "x", "x", "x", "x", "x", "x", "x", "x"]}'),
    ("/v1/sentiment", {}, b'{"inputs": "' + b"word " * 100 + b'", "truncate": false}'),
    ("/v1/sentiment", {"x-deadline-ms": "0"}, b'{"inputs": "x"}'),
    ("/v1/sentiment", {}, b'{"inputs": [], "top_k": 1}'),
    ("/v1/sentiment", {}, b'{"inputs": "x", "colour": "red"}'),
    ("/v1/sentiment", {}, b'{"inputs": '),
    ("/v1/sentiment", {"content-type": "text/plain"}, b'{"inputs": "x"}'),
    ("/v1/sentiment", {"content-type": "application/json; charset=utf-8"}, b'{"inputs": "x"}'),
]


def test_fast_path_answers_exactly_like_the_fastapi_routes(fake_store: Path, make_server: Any) -> None:
    """Well-formed inference requests skip FastAPI (service/api/fastpath.py); the answers, errors and
    headers must be the same as the routes' for every kind of request, answered or passed on."""
    limits = {"max_inputs": 8}
    fast: Server = make_server(fake_store, **limits)
    slow: Server = make_server(fake_store, fast_path=False, **limits)
    for path, headers, body in FAST_PATH_CASES:
        sent = {"content-type": "application/json", **headers}
        a = httpx.post(fast.url + path, content=body, headers=sent)
        b = httpx.post(slow.url + path, content=body, headers=sent)
        assert (a.status_code, a.json()) == (b.status_code, b.json()), (path, body)
        assert a.headers["content-type"] == b.headers["content-type"]
        for name in ("x-queue-time", "x-inference-time", "retry-after"):
            assert (name in a.headers) == (name in b.headers), (name, path, body)
    for srv in (fast, slow):  # the fast path labels its requests with the same route templates
        assert srv.metric("slimserve_requests_total", {"endpoint": "/v1/ner", "code": "200"}) == 2


def test_fast_path_leaves_auth_failures_to_the_routes(fake_store: Path, make_server: Any) -> None:
    srv: Server = make_server(fake_store, api_keys=["k1"])
    body = {"inputs": "fine"}
    missing = httpx.post(srv.url + "/v1/sentiment", json=body)
    wrong = httpx.post(srv.url + "/v1/sentiment", json=body, headers={"authorization": "Bearer k2"})
    right = httpx.post(srv.url + "/v1/sentiment", json=body, headers={"authorization": "Bearer k1"})
    assert error(missing) == error(wrong) == (401, "unauthorized")
    assert missing.headers["www-authenticate"] == "Bearer"
    assert right.status_code == 200
