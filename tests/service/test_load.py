"""Behaviour under load: coalescing, backpressure, deadlines, disconnects, reloads, SIGTERM drain.

A debug setting slows each batch down (``debug_runner_delay_ms``) so that "the runner is busy" is a
fact, not a race; everything else is the real code path."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.service import fakestore
from tests.service.conftest import Server, free_port

pytestmark = pytest.mark.timeout(180)


def wait_for(predicate: Any, limit_s: float = 20.0) -> None:
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached")


def post(url: str, text: str = "a fine film", **kwargs: Any) -> httpx.Response:
    return httpx.post(url + "/v1/sentiment", json={"inputs": text}, **{"timeout": 30, **kwargs})


def test_concurrent_requests_are_coalesced(fake_store: Path, make_server: Any) -> None:
    srv: Server = make_server(fake_store, debug_runner_delay_ms=100)
    n = 16
    with ThreadPoolExecutor(n) as pool:
        codes = list(pool.map(lambda i: post(srv.url, f"text number {i}").status_code, range(n)))
    assert codes == [200] * n
    batches = srv.metric("slimserve_batch_size_count", {"model": "sentiment"})
    rows = srv.metric("slimserve_batch_size_sum", {"model": "sentiment"})
    assert rows == n
    assert batches < n  # several requests shared a batch


def test_overload_is_503_with_retry_after_while_probes_answer(fake_store: Path, make_server: Any) -> None:
    srv: Server = make_server(fake_store, max_queue=4, debug_runner_delay_ms=1500, retry_after_s=2)
    with ThreadPoolExecutor(1) as pool:
        busy = pool.submit(
            lambda: httpx.post(srv.url + "/v1/sentiment", json={"inputs": ["a"] * 4}, timeout=30)
        )
        wait_for(lambda: srv.metric("slimserve_tokenize_duration_seconds_count", {"model": "sentiment"}) >= 1)
        refused = post(srv.url)
        health = httpx.get(srv.url + "/healthz")
        ready = httpx.get(srv.url + "/readyz")
        assert busy.result().status_code == 200
    assert refused.status_code == 503
    assert refused.json()["error"]["type"] == "overloaded"
    assert refused.headers["retry-after"] == "2"
    assert health.status_code == 200 and ready.status_code == 200
    assert post(srv.url).status_code == 200  # the queue drained


def test_deadline_is_504_and_expired_work_is_dropped(fake_store: Path, make_server: Any) -> None:
    # One runner thread: the second request must wait behind the first.
    srv: Server = make_server(fake_store, debug_runner_delay_ms=800, runner_threads=1)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(post, srv.url, "first")
        wait_for(lambda: srv.metric("slimserve_queue_duration_seconds_count", {"model": "sentiment"}) >= 1)
        late = post(srv.url, "second", headers={"x-deadline-ms": "100"})
        assert first.result().status_code == 200
    assert late.status_code == 504
    assert late.json()["error"]["type"] == "timeout"
    # The expired request never reached the runner: only the first request's batch ran.
    assert post(srv.url, "third").status_code == 200
    assert srv.metric("slimserve_batch_size_count", {"model": "sentiment"}) == 2


def test_a_client_that_leaves_has_its_queued_work_dropped(fake_store: Path, make_server: Any) -> None:
    srv: Server = make_server(fake_store, debug_runner_delay_ms=800, runner_threads=1)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(post, srv.url, "first")
        wait_for(lambda: srv.metric("slimserve_queue_duration_seconds_count", {"model": "sentiment"}) >= 1)
        with pytest.raises(httpx.ReadTimeout):
            post(srv.url, "impatient", timeout=0.2)
        assert first.result().status_code == 200
    wait_for(lambda: srv.metric("slimserve_requests_total", {"code": "499"}) == 1)
    assert post(srv.url, "third").status_code == 200
    assert srv.metric("slimserve_batch_size_count", {"model": "sentiment"}) == 2


def test_ner_endpoint(server: Server) -> None:
    text = "Angela Merkel visited Paris"
    r = httpx.post(server.url + "/v1/ner", json={"inputs": [text, "x"], "aggregation": "none"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["model"], body["version"]) == ("ner", 1)
    assert len(body["results"]) == 2
    for entity in body["results"][0]["entities"]:
        assert text[entity["start"] : entity["end"]] == entity["text"]
        assert entity["entity"] in fakestore.NER_LABELS
    bad = httpx.post(server.url + "/v1/ner", json={"inputs": text, "aggregation": "longest"})
    assert bad.status_code == 422
    wrong_task = httpx.post(server.url + "/v1/ner", json={"inputs": text, "model": "sentiment"})
    assert wrong_task.json()["error"]["type"] == "model_not_found"


class Load:
    """Closed-loop clients sending requests until stopped (bounded in count)."""

    def __init__(self, url: str, clients: int = 4, limit: int = 2000) -> None:
        self.url = url
        self.codes: list[int] = []
        self.stop = threading.Event()
        self.limit = limit
        self.threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(clients)]
        for t in self.threads:
            t.start()

    def _loop(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as c:
            while not self.stop.is_set() and len(self.codes) < self.limit:
                self.codes.append(
                    c.post("/v1/sentiment", json={"inputs": ["under load", "again"]}).status_code
                )

    def finish(self) -> list[int]:
        self.stop.set()
        for t in self.threads:
            t.join(30)
        return self.codes


def test_reload_under_load_good_and_corrupt_versions(tmp_path: Path, make_server: Any) -> None:
    store = tmp_path / "store"
    fakestore.publish(store, "sentiment", 1, fakestore.SENTIMENT_LABELS, seed=1)
    srv: Server = make_server(store)
    load = Load(srv.url)
    try:
        wait_for(lambda: len(load.codes) >= 20)
        fakestore.publish(store, "sentiment", 2, fakestore.SENTIMENT_LABELS, seed=5)
        good = httpx.post(srv.url + "/v1/models/sentiment/reload", timeout=60)
        assert good.status_code == 200, good.text
        assert (good.json()["version"], good.json()["previous_version"]) == (2, 1)
        seen = len(load.codes)
        wait_for(lambda: len(load.codes) >= seen + 20)

        bad_sha = fakestore.publish(store, "sentiment", 3, fakestore.SENTIMENT_LABELS)
        (bad_sha / "model.int8.onnx").write_bytes(b"tampered")
        refused = httpx.post(srv.url + "/v1/models/sentiment/reload", timeout=60)
        assert refused.status_code == 409
        assert refused.json()["error"]["type"] == "reload_failed"
        assert "sha256" in refused.json()["error"]["message"]
        shutil.rmtree(bad_sha)

        bad_onnx = fakestore.publish(store, "sentiment", 4, fakestore.SENTIMENT_LABELS)
        corrupt_version(bad_onnx, "model.int8.onnx", b"not an onnx graph")
        refused = httpx.post(srv.url + "/v1/models/sentiment/reload", timeout=60)
        assert refused.status_code == 409 and "ONNX" in refused.json()["error"]["message"]
        shutil.rmtree(bad_onnx)

        wrong_labels = fakestore.publish(store, "sentiment", 5, fakestore.INTENT_LABELS[:3])
        corrupt_version(wrong_labels, "model.int8.onnx", (store / "sentiment/2/model.int8.onnx").read_bytes())
        refused = httpx.post(srv.url + "/v1/models/sentiment/reload", timeout=60)
        assert refused.status_code == 409 and "labels" in refused.json()["error"]["message"]
        seen = len(load.codes)
        wait_for(lambda: len(load.codes) >= seen + 20)
    finally:
        codes = load.finish()
    assert codes and set(codes) == {200}
    models = httpx.get(srv.url + "/v1/models").json()["models"]
    assert models[0]["version"] == 2
    assert srv.metric("slimserve_model_reloads_total", {"model": "sentiment", "outcome": "failed"}) == 3
    assert srv.metric("slimserve_model_info", {"model": "sentiment", "version": "2"}) == 1
    assert srv.metric("slimserve_model_info", {"model": "sentiment", "version": "1"}) == 0
    assert error_type(httpx.post(srv.url + "/v1/models/nope/reload")) == "model_not_found"


def test_reload_keeps_a_pinned_model_on_its_pin(tmp_path: Path, make_server: Any) -> None:
    store = tmp_path / "store"
    fakestore.publish(store, "sentiment", 1, fakestore.SENTIMENT_LABELS, seed=1)
    fakestore.publish(store, "sentiment", 2, fakestore.SENTIMENT_LABELS, seed=5)
    srv: Server = make_server(store, pins={"sentiment": 1})
    assert httpx.get(srv.url + "/v1/models").json()["models"][0]["version"] == 1
    fakestore.publish(store, "sentiment", 3, fakestore.SENTIMENT_LABELS, seed=6)
    reloaded = httpx.post(srv.url + "/v1/models/sentiment/reload", timeout=60)
    assert reloaded.status_code == 200, reloaded.text
    assert (reloaded.json()["version"], reloaded.json()["previous_version"]) == (1, 1)


def error_type(r: httpx.Response) -> str:
    return str(r.json()["error"]["type"])


def corrupt_version(directory: Path, file: str, content: bytes) -> None:
    """Replace a file and record its new sha256, so that only the content is wrong."""
    from slimserve.service import store

    (directory / file).write_bytes(content)
    manifest = store.read_manifest(directory)
    for variant in manifest.variants.values():
        if variant.file == file:
            variant.sha256 = store.sha256_file(directory / file)
            variant.bytes = len(content)
    manifest.write(directory)


@pytest.mark.slow
def test_sigterm_drains_in_flight_requests(fake_store: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "SLIMSERVE_LOG_LEVEL": "warning"}
    slimserve = str(Path(sys.executable).parent / "slimserve")
    cmd = [slimserve, "serve", "--store", str(fake_store), "--port", str(port)]
    cmd += ["--debug-runner-delay-ms", "700", "--no-warmup", "--model", "sentiment"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: proc.poll() is not None or _ready(url), limit_s=60)
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        with ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(post, url, f"in flight {i}") for i in range(3)]
            wait_for(lambda: _metric(url, "slimserve_tokenize_duration_seconds_count") >= 3)
            proc.send_signal(signal.SIGTERM)
            codes = [f.result().status_code for f in futures]
        assert codes == [200, 200, 200]
        assert proc.wait(60) == 0, proc.stdout.read().decode() if proc.stdout else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/readyz").status_code == 200
    except httpx.TransportError:
        return False


def _metric(url: str, name: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(url + "/metrics").text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


def test_store_polling_picks_up_a_new_version(tmp_path: Path, make_server: Any) -> None:
    store = tmp_path / "store"
    fakestore.publish(store, "sentiment", 1, fakestore.SENTIMENT_LABELS, seed=1)
    srv: Server = make_server(store, poll_interval_s=0.05)
    bad = fakestore.publish(store, "sentiment", 2, fakestore.SENTIMENT_LABELS)
    (bad / "model.int8.onnx").write_bytes(b"tampered")
    wait_for(lambda: srv.metric("slimserve_model_reloads_total", {"outcome": "failed"}) == 1)
    fakestore.publish(store, "sentiment", 3, fakestore.SENTIMENT_LABELS, seed=7)

    def version() -> int:
        return int(httpx.get(srv.url + "/v1/models").json()["models"][0]["version"])

    wait_for(lambda: version() == 3)
    # The refused version was tried once, not on every poll.
    assert srv.metric("slimserve_model_reloads_total", {"outcome": "failed"}) == 1


def test_polling_loads_models_that_appear_after_start_up(
    tmp_path: Path, make_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    store = tmp_path / "store"
    store.mkdir()
    with caplog.at_level("WARNING", logger="slimserve.service"):
        srv: Server = make_server(store, poll_interval_s=0.05, pins={"intent": 2})
    assert any("holds no model" in r.getMessage() for r in caplog.records)
    r = httpx.post(srv.url + "/v1/sentiment", json={"inputs": ["hello"]})
    assert r.status_code == 404 and r.json()["error"]["type"] == "model_not_found"

    fakestore.publish(store, "sentiment", 1, fakestore.SENTIMENT_LABELS, seed=1)
    fakestore.publish(store, "intent", 1, fakestore.INTENT_LABELS, seed=2)

    def served() -> dict[str, int]:
        models = httpx.get(srv.url + "/v1/models").json()["models"]
        return {m["name"]: int(m["version"]) for m in models}

    wait_for(lambda: served() == {"sentiment": 1})
    assert httpx.post(srv.url + "/v1/sentiment", json={"inputs": ["hello"]}).status_code == 200
    # intent is pinned to v2: v1 is never loaded, v2 is as soon as it is published.
    time.sleep(0.3)
    assert "intent" not in served()
    fakestore.publish(store, "intent", 2, fakestore.INTENT_LABELS, seed=3)
    wait_for(lambda: served() == {"sentiment": 1, "intent": 2})
