"""Open Inference Protocol v2, spoken to by the real clients: Triton's ``tritonclient.http`` and the
kserve SDK's ``InferenceRESTClient``, against a real slimserve on a loopback port. Both send and read
raw (binary) tensors by default; plain JSON is checked with httpx."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from slimserve.service.settings import Settings

from tests.service import fakestore
from tests.service.conftest import Server, free_port

pytestmark = pytest.mark.timeout(120)

triton = pytest.importorskip("tritonclient.http", reason="pip install -e '.[dev]'")
kserve = pytest.importorskip("kserve", reason="pip install -e '.[dev]'")
from tritonclient.utils import InferenceServerException  # noqa: E402

TEXTS = ["Angela Merkel visited Paris.", "my card has not arrived", "a quiet triumph"]


@pytest.fixture(scope="module")
def v2_server(fake_store: Path) -> Iterator[Server]:
    settings = Settings(store=fake_store, port=free_port(), warmup=False, max_inputs=8)
    srv = Server(settings).start()
    yield srv
    srv.stop()


@pytest.fixture
def client(v2_server: Server) -> Iterator[Any]:
    c = triton.InferenceServerClient(url=v2_server.url.removeprefix("http://"))
    yield c
    c.close()


def _text_input(texts: list[str], binary: bool = True) -> Any:
    tensor = triton.InferInput("text", [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=np.object_), binary_data=binary)
    return tensor


def _text(x: bytes | str) -> str:
    """A BYTES element as the clients return it: bytes from raw tensors, str from JSON ones."""
    return x.decode() if isinstance(x, bytes) else x


def _v1(server: Server, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = httpx.post(server.url + path, json=body)
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


# -- tritonclient ----------------------------------------------------------------------------------


def test_triton_server_metadata_and_health(client: Any) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "slimserve"
    assert "binary_tensor_data" in meta["extensions"]


def test_triton_model_metadata_and_readiness(client: Any) -> None:
    meta = client.get_model_metadata("intent")
    assert meta["name"] == "intent" and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert [(o["name"], o["datatype"]) for o in meta["outputs"]] == [("label", "BYTES"), ("score", "FP32")]
    assert client.get_model_metadata("intent", model_version="1")["name"] == "intent"
    ner = client.get_model_metadata("ner")
    assert [(o["name"], o["datatype"]) for o in ner["outputs"]] == [("entities", "BYTES")]
    config = client.get_model_config("intent")  # Triton's model configuration, which perf_analyzer reads
    assert config["max_batch_size"] == 0
    assert config["input"] == [{"name": "text", "data_type": "TYPE_STRING", "dims": [-1]}]
    assert [o["data_type"] for o in config["output"]] == ["TYPE_STRING", "TYPE_FP32"]
    assert client.is_model_ready("sentiment")
    assert client.is_model_ready("sentiment", model_version="1")
    assert not client.is_model_ready("nope")
    assert not client.is_model_ready("sentiment", model_version="7")


@pytest.mark.parametrize("binary", [True, False])
def test_triton_classification_matches_v1(v2_server: Server, client: Any, binary: bool) -> None:
    outputs = [triton.InferRequestedOutput(n, binary_data=binary) for n in ("label", "score")]
    result = client.infer("intent", [_text_input(TEXTS, binary)], outputs=outputs, request_id="r-1")
    labels = [_text(x) for x in result.as_numpy("label")]
    scores = result.as_numpy("score")
    assert scores.dtype == np.float32 and scores.shape == (3,)
    expected = _v1(v2_server, "/v1/classify", {"inputs": TEXTS})["results"]
    assert labels == [r["label"] for r in expected]
    np.testing.assert_allclose(scores, [r["score"] for r in expected], rtol=1e-6)
    response = result.get_response()
    assert response["model_name"] == "intent" and response["model_version"] == "1"
    assert response["id"] == "r-1"


def test_triton_default_outputs_and_top_k(v2_server: Server, client: Any) -> None:
    # No outputs named: tritonclient asks for every output as raw bytes.
    result = client.infer("sentiment", [_text_input(TEXTS)], parameters={"top_k": 2})
    labels = result.as_numpy("label")
    scores = result.as_numpy("score")
    assert labels.shape == (3, 2) and scores.shape == (3, 2)
    expected = _v1(v2_server, "/v1/sentiment", {"inputs": TEXTS, "top_k": 2})["results"]
    for row_labels, row_scores, want in zip(labels, scores, expected, strict=True):
        assert [x.decode() for x in row_labels] == [t["label"] for t in want["top"]]
        np.testing.assert_allclose(row_scores, [t["score"] for t in want["top"]], rtol=1e-6)


def test_triton_classification_extension(client: Any) -> None:
    outputs = [triton.InferRequestedOutput("score", class_count=3)]
    result = client.infer("intent", [_text_input(TEXTS[:1])], outputs=outputs)
    (row,) = result.as_numpy("score")
    entries = [x.decode().split(":") for x in row]
    assert len(entries) == 3
    assert all(fakestore.INTENT_LABELS[int(i)] == label for _, i, label in entries)
    assert [float(s) for s, _, _ in entries] == sorted((float(s) for s, _, _ in entries), reverse=True)


@pytest.mark.parametrize("aggregation", ["simple", "none"])
def test_triton_ner_entities_with_offsets(v2_server: Server, client: Any, aggregation: str) -> None:
    result = client.infer("ner", [_text_input(TEXTS)], parameters={"aggregation": aggregation})
    entities = [json.loads(x) for x in result.as_numpy("entities")]
    expected = _v1(v2_server, "/v1/ner", {"inputs": TEXTS, "aggregation": aggregation})["results"]
    assert entities == [r["entities"] for r in expected]
    for text, found in zip(TEXTS, entities, strict=True):
        for e in found:
            assert text[e["start"] : e["end"]] == e["text"]


def test_triton_versioned_infer(client: Any) -> None:
    result = client.infer("sentiment", [_text_input(TEXTS[:1])], model_version="1")
    assert result.as_numpy("label").shape == (1,)
    with pytest.raises(InferenceServerException) as err:
        client.infer("sentiment", [_text_input(TEXTS[:1])], model_version="2")
    assert err.value.status() == "404"


def test_triton_unknown_model_and_bad_requests(client: Any) -> None:
    with pytest.raises(InferenceServerException) as err:
        client.infer("nope", [_text_input(TEXTS)])
    assert err.value.status() == "404" and "nope" in err.value.message()
    wrong_type = triton.InferInput("text", [2], "FP32")
    wrong_type.set_data_from_numpy(np.zeros(2, dtype=np.float32))
    with pytest.raises(InferenceServerException) as err:
        client.infer("intent", [wrong_type])
    assert err.value.status() == "422" and "BYTES" in err.value.message()
    with pytest.raises(InferenceServerException) as err:
        client.infer("intent", [_text_input(TEXTS)], parameters={"top_k": 0})
    assert err.value.status() == "422"
    with pytest.raises(InferenceServerException) as err:
        client.infer("intent", [_text_input(["x"] * 9)])  # max_inputs is 8
    assert err.value.status() == "413"


# -- the kserve SDK --------------------------------------------------------------------------------


def test_kserve_rest_client(v2_server: Server) -> None:
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    async def run() -> None:
        client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=30))
        try:
            assert await client.is_server_live(v2_server.url)
            assert await client.is_server_ready(v2_server.url)
            assert await client.is_model_ready(v2_server.url, "ner")
            assert not await client.is_model_ready(v2_server.url, "nope")
            for binary in (False, True):
                tensor = InferInput("text", [len(TEXTS)], "BYTES")
                tensor.set_data_from_numpy(np.array(TEXTS, dtype=np.object_), binary_data=binary)
                request = InferRequest("sentiment", [tensor], request_id="k-1")
                response = await client.infer(v2_server.url, request, model_name="sentiment")
                assert response.model_name == "sentiment" and response.id == "k-1"
                outputs = {o.name: o for o in response.outputs}
                labels = [_text(x) for x in outputs["label"].as_numpy()]
                expected = _v1(v2_server, "/v1/sentiment", {"inputs": TEXTS})["results"]
                assert labels == [r["label"] for r in expected]
            tensor = InferInput("text", [1], "BYTES")
            tensor.set_data_from_numpy(np.array(TEXTS[:1], dtype=np.object_), binary_data=False)
            response = await client.infer(v2_server.url, InferRequest("ner", [tensor]), model_name="ner")
            (entities,) = response.outputs[0].as_numpy()
            assert isinstance(json.loads(entities), list)
            with pytest.raises(httpx.HTTPStatusError) as err:
                await client.infer(v2_server.url, InferRequest("nope", [tensor]), model_name="nope")
            assert err.value.response.status_code == 404
            assert err.value.response.json() == {"error": err.value.response.json()["error"]}
        finally:
            await client.close()

    asyncio.run(run())


# -- plain JSON and the error shape -----------------------------------------------------------------


def test_json_request_and_error_shape(v2_server: Server) -> None:
    with httpx.Client(base_url=v2_server.url) as c:
        ok = c.post(
            "/v2/models/intent/infer",
            json={"inputs": [{"name": "text", "shape": [2, 1], "datatype": "BYTES", "data": [["a"], ["b"]]}]},
        )
        assert ok.status_code == 200, ok.text
        assert ok.headers["content-type"] == "application/json"
        for name in ("x-request-id", "x-queue-time", "x-inference-time", "x-total-time"):
            assert name in ok.headers
        outputs = {o["name"]: o for o in ok.json()["outputs"]}
        assert outputs["label"]["shape"] == [2] and len(outputs["label"]["data"]) == 2
        infer = "/v2/models/intent/infer"
        text = {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a"]}
        # What the schema refuses is 422, as on /v1; parts that disagree are 400 (the protocol's code).
        bad = {
            "malformed": (422, c.post(infer, content=b"{", headers={"content-type": "application/json"})),
            "unknown field": (422, c.post(infer, json={"inputs": [text], "extra": 1})),
            "input name": (422, c.post(infer, json={"inputs": [{**text, "name": "input_ids"}]})),
            "datatype": (422, c.post(infer, json={"inputs": [{**text, "datatype": "INT64", "data": [1]}]})),
            "two inputs": (422, c.post(infer, json={"inputs": [text, text]})),
            "top_k type": (422, c.post(infer, json={"inputs": [text], "parameters": {"top_k": "3"}})),
            "shape": (400, c.post(infer, json={"inputs": [{**text, "shape": [3]}]})),
            "output of another task": (
                400,
                c.post(infer, json={"inputs": [text], "outputs": [{"name": "entities"}]}),
            ),
            "parameter of another task": (
                400,
                c.post(infer, json={"inputs": [text], "parameters": {"aggregation": "simple"}}),
            ),
        }
        for case, (status, r) in bad.items():
            assert r.status_code == status, (case, r.text)
            body = r.json()
            assert list(body) == ["error"] and isinstance(body["error"], str), case
        too_long = c.post(
            "/v2/models/intent/infer",
            json={
                "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["word " * 300]}],
                "parameters": {"truncate": False},
            },
        )
        assert too_long.status_code == 400 and isinstance(too_long.json()["error"], str)
        missing = c.get("/v2/models/nope")
        assert missing.status_code == 404 and isinstance(missing.json()["error"], str)
        assert c.get("/v2/nowhere").json().keys() == {"error"}
        # /v1 keeps the contract's envelope.
        assert c.post("/v1/classify", json={"inputs": []}).json()["error"]["type"] == "validation_error"


def test_v2_requires_the_key_where_v1_does(make_server: Any, fake_store: Path) -> None:
    srv = make_server(fake_store, api_keys=["k"])
    body = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}
    with httpx.Client(base_url=srv.url) as c:
        assert c.get("/v2/health/ready").status_code == 200
        assert c.get("/v2").status_code == 200
        denied = c.post("/v2/models/intent/infer", json=body)
        assert denied.status_code == 401 and list(denied.json()) == ["error"]
        assert c.get("/v2/models/intent").status_code == 401
        ok = c.post("/v2/models/intent/infer", json=body, headers={"authorization": "Bearer k"})
        assert ok.status_code == 200
    client = triton.InferenceServerClient(url=srv.url.removeprefix("http://"))
    try:
        result = client.infer("intent", [_text_input(["a"])], headers={"authorization": "Bearer k"})
        assert result.as_numpy("label").shape == (1,)
    finally:
        client.close()


def test_v2_requests_are_counted_by_route(v2_server: Server, client: Any) -> None:
    before = v2_server.metric(
        "slimserve_requests_total", {"endpoint": "/v2/models/{name}/infer", "model": "intent", "code": "200"}
    )
    client.infer("intent", [_text_input(["a"])])
    after = v2_server.metric(
        "slimserve_requests_total", {"endpoint": "/v2/models/{name}/infer", "model": "intent", "code": "200"}
    )
    assert after == before + 1


def test_fast_path_and_fastapi_routes_answer_alike(make_server: Any, fake_store: Path) -> None:
    """/v2 and /hf inference is answered from the middleware's fast path; with it off, by the FastAPI
    routes. Both run the same handler: same statuses, bodies and error shapes, keys included."""
    text = {"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a", "Angela Merkel"]}
    requests: list[tuple[str, Any, dict[str, str]]] = [
        ("/v2/models/intent/infer", {"inputs": [text], "parameters": {"top_k": 2}}, {}),
        ("/v2/models/ner/versions/1/infer", {"inputs": [text]}, {}),
        ("/v2/models/ner/versions/9/infer", {"inputs": [text]}, {}),
        ("/v2/models/nope/infer", {"inputs": [text]}, {}),
        ("/v2/models/intent/infer", {"inputs": [{**text, "shape": [3]}]}, {}),
        ("/v2/models/intent/infer", b"{", {}),
        ("/v2/models/intent/infer", {"inputs": [text]}, {"authorization": "Bearer wrong"}),
        ("/hf/models/intent", {"inputs": "where is my card", "parameters": {"top_k": 2}}, {}),
        ("/hf/models/ner", {"inputs": ["Angela Merkel", "x"]}, {}),
        ("/hf/models/sentiment/predict", {"inputs": ["fine", "dull"]}, {}),
        ("/hf/models/ner/predict", {"inputs": "x"}, {}),
        ("/hf/models/intent", {"inputs": []}, {}),
        ("/hf/models/intent", {"inputs": "x"}, {"authorization": "Bearer wrong"}),
    ]
    answers = []
    for fast in (True, False):
        srv = make_server(fake_store, fast_path=fast, api_keys=["k"])
        got = []
        with httpx.Client(base_url=srv.url) as c:
            for path, body, headers in requests:
                auth = {"authorization": "Bearer k", **headers}
                r = (
                    c.post(path, content=body, headers={**auth, "content-type": "application/json"})
                    if isinstance(body, bytes)
                    else c.post(path, json=body, headers=auth)
                )
                got.append((path, r.status_code, r.headers["content-type"], r.json()))
        answers.append(got)
        label = {"endpoint": "/v2/models/{name}/versions/{version}/infer", "model": "ner", "code": "200"}
        assert srv.metric("slimserve_requests_total", label) == 1
    assert answers[0] == answers[1]
    assert {status for _, status, _, _ in answers[0]} >= {200, 400, 401, 404, 422}
