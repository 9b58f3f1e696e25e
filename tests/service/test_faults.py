"""Faults inside the engine never lose a request: runner errors, dead and hung runner threads, wrongly
shaped logits, reloads with no grace, a busy tokenizer pool, a request larger than the queue."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from slimserve.service.engine import batcher

from tests.service import fakestore
from tests.service.conftest import Server
from tests.service.test_load import wait_for

pytestmark = pytest.mark.timeout(120)


def sentiment(srv: Server, text: str = "fine", **headers: str) -> httpx.Response:
    return httpx.post(srv.url + "/v1/sentiment", json={"inputs": text}, headers=headers, timeout=30)


def intent(srv: Server) -> httpx.Response:
    return httpx.post(srv.url + "/v1/classify", json={"inputs": "where is my card"}, timeout=30)


def kind(r: httpx.Response) -> str:
    return str(r.json()["error"]["type"])


def test_an_unexpected_error_in_a_batch_is_answered_and_the_runner_survives(
    fake_store: Path, make_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    srv: Server = make_server(fake_store, runner_threads=1)
    real_pad = batcher.pad_rows
    calls = {"n": 0}

    def buggy_pad(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise IndexError("a padding bug")
        return real_pad(*args, **kwargs)

    monkeypatch.setattr(batcher, "pad_rows", buggy_pad)
    failed = sentiment(srv, **{"x-deadline-ms": "5000"})
    assert failed.status_code == 500 and kind(failed) == "internal"
    assert sentiment(srv).status_code == 200  # the one runner thread is still there
    assert srv.metric("slimserve_runner_errors_total", {"model": "sentiment"}) == 1
    assert httpx.get(srv.url + "/readyz").status_code == 200


class _Fatal(BaseException):
    """Escapes ``except Exception``: the kind of error that used to kill a runner thread."""


def test_a_dead_runner_thread_is_replaced_then_the_model_marked_unready(
    fake_store: Path, make_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    srv: Server = make_server(fake_store, runner_threads=1)

    real_pad = batcher.pad_rows

    def fatal_pad(*args: Any, **kwargs: Any) -> Any:
        if "sentiment" in threading.current_thread().name:
            raise _Fatal("thread-killing error")
        return real_pad(*args, **kwargs)

    monkeypatch.setattr(batcher, "pad_rows", fatal_pad)
    for _ in range(batcher.MAX_THREAD_DEATHS):
        r = sentiment(srv, **{"x-deadline-ms": "5000"})
        assert r.status_code == 500 and kind(r) == "internal"  # answered, not a 504 at the deadline
        assert httpx.get(srv.url + "/readyz").status_code == 200  # a replacement thread took over
    assert sentiment(srv).status_code == 500
    ready = httpx.get(srv.url + "/readyz")
    assert ready.status_code == 503 and "sentiment" in ready.json()["error"]["message"]
    r = sentiment(srv)
    assert r.status_code == 500 and "unhealthy" in r.json()["error"]["message"]
    assert intent(srv).status_code == 200  # other models are unaffected


@pytest.mark.parametrize("fault", ["raise", "shape"])
def test_injected_runner_faults_answer_promptly_and_spare_other_models(
    fake_store: Path, make_server: Any, fault: str
) -> None:
    srv: Server = make_server(fake_store, debug_faults={"sentiment": fault})
    r = sentiment(srv, **{"x-deadline-ms": "8000"})
    assert r.status_code == 500 and kind(r) == "internal", r.text
    if fault == "shape":
        assert "shape" in r.json()["error"]["message"]
    assert intent(srv).status_code == 200
    assert httpx.get(srv.url + "/readyz").status_code == 200  # a failing batch is not a dead runner
    assert srv.metric("slimserve_runner_errors_total", {"model": "sentiment"}) == 1
    assert srv.metric("slimserve_requests_total", {"model": "sentiment", "code": "500"}) == 1


def test_a_hung_run_is_timed_out_its_slot_released_and_the_model_marked_unready(
    fake_store: Path, make_server: Any
) -> None:
    # One slot for every model: while the hung run holds it, nothing else can run.
    srv: Server = make_server(fake_store, runner_threads=1, debug_faults={"sentiment": "hang"})
    r = sentiment(srv, **{"x-deadline-ms": "300"})
    assert r.status_code == 504 and kind(r) == "timeout"
    wait_for(lambda: srv.metric("slimserve_runner_hangs_total", {"model": "sentiment"}) == 1)
    assert intent(srv).status_code == 200  # the slot was given back
    ready = httpx.get(srv.url + "/readyz")
    assert ready.status_code == 503 and "stuck" in ready.json()["error"]["message"]
    started = time.monotonic()
    r = sentiment(srv)
    assert r.status_code == 500 and "unhealthy" in r.json()["error"]["message"]
    assert time.monotonic() - started < 5  # refused at once, not after the 10 s deadline


def test_a_reload_with_no_grace_hands_queued_requests_to_the_new_version(
    tmp_path: Path, make_server: Any
) -> None:
    root = tmp_path / "store"
    fakestore.publish(root, "sentiment", 1, fakestore.SENTIMENT_LABELS, seed=1)
    srv: Server = make_server(
        root, runner_threads=1, debug_runner_delay_ms=300, shutdown_grace_s=0, max_batch_size=1
    )
    fakestore.publish(root, "sentiment", 2, fakestore.SENTIMENT_LABELS, seed=2)
    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(sentiment, srv, f"text {i}", **{"x-deadline-ms": "8000"}) for i in range(6)]
        wait_for(lambda: srv.metric("slimserve_queue_duration_seconds_count") >= 1)
        started = time.monotonic()
        assert httpx.post(srv.url + "/v1/models/sentiment/reload", timeout=60).status_code == 200
        responses = [f.result() for f in futures]
    assert [r.status_code for r in responses] == [200] * 6
    assert {r.json()["version"] for r in responses} >= {2}
    assert time.monotonic() - started < 8  # none waited for its deadline


def test_the_tokenizer_pool_honours_deadlines(fake_store: Path, make_server: Any) -> None:
    srv: Server = make_server(fake_store, tokenize_inline_chars=0, tokenizer_threads=1)
    registry = srv.app.state.registry
    engine = registry._engines["sentiment"]
    calls: list[list[str]] = []
    real_prepare = engine.codec.prepare

    def counting_prepare(texts: list[str], params: Any) -> Any:
        calls.append(texts)
        return real_prepare(texts, params)

    engine.codec.prepare = counting_prepare
    release = threading.Event()
    registry._pool.submit(release.wait, 20)  # the one tokenizer thread is busy (another model's long text)
    started = time.monotonic()
    r = sentiment(srv, "expires in the pool", **{"x-deadline-ms": "300"})
    waited = time.monotonic() - started
    release.set()
    assert r.status_code == 504 and kind(r) == "timeout"
    assert waited < 10  # at its deadline, not when the pool got to it
    assert sentiment(srv, "after").status_code == 200
    assert calls == [["after"]]  # the expired request was never tokenized


def test_more_inputs_than_the_queue_admits_is_413_not_503(fake_store: Path, make_server: Any) -> None:
    srv: Server = make_server(fake_store, max_queue=2, max_inputs=8)
    r = httpx.post(srv.url + "/v1/sentiment", json={"inputs": ["a", "b", "c"]})
    assert r.status_code == 413 and kind(r) == "payload_too_large"
    assert "max_queue" in r.json()["error"]["message"]


def test_warm_up_runs_under_the_device_slot(fake_store: Path) -> None:
    from tests.service.test_engine import EngineHarness

    class Slot:
        def __init__(self) -> None:
            self.acquired = 0
            self.lock = threading.Lock()

        def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
            self.acquired += 1
            return self.lock.acquire()

        def release(self) -> None:
            self.lock.release()

    slot = Slot()
    from slimserve.service import store

    h = EngineHarness(store.version_dir(fake_store, "sentiment", 1), batcher.BatchPolicy(), device_lock=slot)
    try:
        h.engine.warmup([16, 32], [101, 2000, 102])
        assert slot.acquired == 3  # two lengths and one multi-row batch, each under the slot
    finally:
        h.close()
