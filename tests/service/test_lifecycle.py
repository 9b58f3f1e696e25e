"""Model lifecycle under bad files: start-up fallback, pins, polling that survives anything, reloads
that answer 409 with the cause, store scans off the event loop, coalesced reloads, and
background work that ends with the server."""

from __future__ import annotations

import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from slimserve.service import store

from tests.service import fakestore
from tests.service.conftest import Server
from tests.service.test_load import corrupt_version, wait_for

pytestmark = pytest.mark.timeout(120)

LABELS = fakestore.SENTIMENT_LABELS


def models(srv: Server) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(srv.url + "/v1/models").json()
    return body


def served_version(srv: Server) -> int:
    return int(models(srv)["models"][0]["version"])


def corrupt_tokenizer(directory: Path) -> None:
    """A tokenizer.json that `tokenizers` refuses (it raises a plain Exception), checksum updated."""
    (directory / "tokenizer.json").write_text('{"not": "a tokenizer"}', encoding="utf-8")
    manifest = store.read_manifest(directory)
    manifest.files["tokenizer.json"] = store.sha256_file(directory / "tokenizer.json")
    manifest.write(directory)


def test_start_up_serves_the_highest_version_that_loads(tmp_path: Path, make_server: Any) -> None:
    root = tmp_path / "store"
    fakestore.publish(root, "sentiment", 1, LABELS, seed=1)
    fakestore.publish(root, "sentiment", 2, LABELS, seed=2)
    corrupt_version(fakestore.publish(root, "sentiment", 3, LABELS), "model.int8.onnx", b"not onnx")
    srv: Server = make_server(root)
    assert served_version(srv) == 2
    refused = models(srv)["refused"]
    assert [(r["name"], r["version"], r["retrying"]) for r in refused] == [("sentiment", 3, False)]
    assert "ONNX" in refused[0]["reason"]
    assert srv.metric("slimserve_model_reloads_total", {"model": "sentiment", "outcome": "failed"}) == 1
    assert httpx.post(srv.url + "/v1/sentiment", json={"inputs": "fine"}).status_code == 200


def test_a_pinned_version_that_does_not_load_fails_start_up_clearly(tmp_path: Path, make_server: Any) -> None:
    root = tmp_path / "store"
    fakestore.publish(root, "sentiment", 1, LABELS, seed=1)
    corrupt_version(fakestore.publish(root, "sentiment", 2, LABELS), "model.int8.onnx", b"not onnx")
    srv: Server = make_server(root, ready=False, pins={"sentiment": 2})

    def message() -> str:
        r = httpx.get(srv.url + "/readyz")
        return str(r.json()["error"]["message"]) if r.status_code == 503 else ""

    wait_for(lambda: "pinned to v2" in message())
    assert "never swapped" in message() and "ONNX" in message()


def test_polling_survives_bad_files_and_serves_the_next_good_version(
    tmp_path: Path, make_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "store"
    fakestore.publish(root, "sentiment", 1, LABELS, seed=1)
    srv: Server = make_server(root, poll_interval_s=0.05)
    (root / "sentiment" / "²").mkdir()  # isdigit() but not int(): polling used to die on it
    corrupt_tokenizer(fakestore.publish(root, "sentiment", 2, LABELS))
    bad_manifest = fakestore.publish(root, "sentiment", 3, LABELS)
    (bad_manifest / "manifest.json").write_bytes(b"\xff\xfe not json")
    wait_for(lambda: {r["version"] for r in models(srv)["refused"]} == {2, 3})
    reasons = {r["version"]: r["reason"] for r in models(srv)["refused"]}
    assert "tokenizer" in reasons[2].lower() or "Exception" in reasons[2]
    assert "manifest" in reasons[3]
    assert served_version(srv) == 1
    fakestore.publish(root, "sentiment", 4, LABELS, seed=4)
    wait_for(lambda: served_version(srv) == 4)
    failed = srv.metric("slimserve_model_reloads_total", {"outcome": "failed"})
    time.sleep(0.3)  # refused for their content: not tried again
    assert srv.metric("slimserve_model_reloads_total", {"outcome": "failed"}) == failed == 2


def test_polling_retries_a_version_refused_for_an_io_error(tmp_path: Path, make_server: Any) -> None:
    root = tmp_path / "store"
    fakestore.publish(root, "sentiment", 1, LABELS, seed=1)
    srv: Server = make_server(root, poll_interval_s=0.05)
    v2 = fakestore.publish(root, "sentiment", 2, LABELS, seed=2)
    (v2 / "manifest.json").rename(v2 / "manifest.saved")
    (v2 / "manifest.json").mkdir()  # reading it is an OSError (IsADirectoryError): maybe transient
    wait_for(lambda: [r["retrying"] for r in models(srv)["refused"]] == [True])
    (v2 / "manifest.json").rmdir()
    (v2 / "manifest.saved").rename(v2 / "manifest.json")
    wait_for(lambda: served_version(srv) == 2)
    assert models(srv)["refused"] == []


def test_reload_answers_409_with_the_cause_for_any_bad_file(tmp_path: Path, make_server: Any) -> None:
    root = tmp_path / "store"
    fakestore.publish(root, "sentiment", 1, LABELS, seed=1)
    srv: Server = make_server(root)
    (root / "sentiment" / "²").mkdir()
    cases = {
        "tokenizer": corrupt_tokenizer,
        "manifest": lambda d: (d / "manifest.json").write_text("{", encoding="utf-8"),
        "leaves the version directory": lambda d: _escape(d),
        "sha256": lambda d: (d / "tokenizer.json").write_text("{}", encoding="utf-8"),
    }
    for version, (expected, spoil) in enumerate(cases.items(), start=2):
        directory = fakestore.publish(root, "sentiment", version, LABELS, seed=version)
        spoil(directory)
        r = httpx.post(srv.url + "/v1/models/sentiment/reload", timeout=60)
        assert r.status_code == 409, (expected, r.text)
        assert r.json()["error"]["type"] == "reload_failed"
        assert expected.lower() in r.json()["error"]["message"].lower(), r.text
        shutil.rmtree(directory)
    assert served_version(srv) == 1
    assert srv.metric("slimserve_model_reloads_total", {"outcome": "failed"}) == len(cases)


def _escape(directory: Path) -> None:
    manifest = store.read_manifest(directory)
    manifest.variants["int8"].file = "../1/model.int8.onnx"
    manifest.write(directory)


def test_store_scans_run_off_the_event_loop(
    tmp_path: Path, make_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "store"
    fakestore.publish(root, "sentiment", 1, LABELS, seed=1)
    srv: Server = make_server(root)
    hung = threading.Event()
    release = threading.Event()
    real = store.versions

    def hanging_versions(*args: Any) -> list[int]:
        hung.set()
        release.wait(10)  # a hung network mount
        return real(*args)

    monkeypatch.setattr(store, "versions", hanging_versions)
    with ThreadPoolExecutor(1) as pool:
        reload = pool.submit(httpx.post, srv.url + "/v1/models/sentiment/reload", timeout=60)
        assert hung.wait(10)
        started = time.monotonic()
        health = httpx.get(srv.url + "/healthz", timeout=5)
        elapsed = time.monotonic() - started
        release.set()
        assert reload.result().status_code == 200
    assert health.status_code == 200
    assert elapsed < 5  # answered while the scan hung (not a timing assertion: the call would time out)


def test_concurrent_reloads_share_one_load(tmp_path: Path, make_server: Any) -> None:
    root = tmp_path / "store"
    fakestore.publish(root, "sentiment", 1, LABELS, seed=1)
    srv: Server = make_server(root, warmup=True)
    fakestore.publish(root, "sentiment", 2, LABELS, seed=2)
    with ThreadPoolExecutor(6) as pool:
        results = list(
            pool.map(lambda _: httpx.post(srv.url + "/v1/models/sentiment/reload", timeout=60), range(6))
        )
    assert all(r.status_code == 200 for r in results)
    assert {r.json()["version"] for r in results} == {2}
    # One load at start-up, and far fewer than six for six concurrent requests.
    assert srv.metric("slimserve_model_reloads_total", {"outcome": "ok"}) < 1 + 6


def test_a_background_task_that_dies_is_logged(
    tmp_path: Path, make_server: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from slimserve.service.registry import Registry

    async def broken_poll(self: Registry) -> None:
        raise RuntimeError("poll bug")

    monkeypatch.setattr(Registry, "poll", broken_poll)
    root = tmp_path / "store"
    fakestore.publish(root, "sentiment", 1, LABELS, seed=1)
    with caplog.at_level("ERROR", logger="slimserve.service"):
        make_server(root, poll_interval_s=0.05)
        wait_for(lambda: any("store-poll died" in r.getMessage() for r in caplog.records))


def test_polling_ends_with_the_registry(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import asyncio

    from slimserve.service.metrics import Metrics
    from slimserve.service.registry import Registry
    from slimserve.service.settings import Settings

    async def scenario() -> None:
        settings = Settings(store=tmp_path, poll_interval_s=0.01)
        with ThreadPoolExecutor(1) as pool:
            registry = Registry(settings, Metrics(), pool, threading.BoundedSemaphore(1))
            await registry.close(0)
            # A poll still scheduled when the registry closed ends; it does not scan a closed catalog.
            await asyncio.wait_for(registry.poll(), 5)

    with caplog.at_level("ERROR", logger="slimserve.service"):
        asyncio.run(scenario())
    assert not [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]


def test_a_start_up_that_finishes_during_shutdown_starts_no_poll(
    tmp_path: Path, make_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from slimserve.service.registry import Registry

    proceed = threading.Event()
    polls: list[str] = []

    async def slow_load_all(self: Registry) -> None:
        # A start-up step that finishes even when cancelled (Python 3.11's wait_for could do this).
        try:
            await asyncio.get_running_loop().run_in_executor(None, proceed.wait, 10)
        except asyncio.CancelledError:
            proceed.wait(10)

    async def counted_poll(self: Registry) -> None:
        polls.append("started")

    monkeypatch.setattr(Registry, "load_all", slow_load_all)
    monkeypatch.setattr(Registry, "poll", counted_poll)
    root = tmp_path / "store"
    fakestore.publish(root, "sentiment", 1, LABELS, seed=1)
    srv: Server = make_server(root, ready=False, poll_interval_s=0.05)
    stopper = threading.Thread(target=srv.stop)
    stopper.start()
    time.sleep(0.2)  # the shutdown has begun and cancelled the start-up
    proceed.set()
    stopper.join(30)
    assert not stopper.is_alive() and not srv.thread.is_alive()
    assert polls == []


def test_a_hung_store_scan_fails_as_transient_after_its_time_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from slimserve.service.catalog import Catalog
    from slimserve.service.errors import ReloadFailed
    from slimserve.service.settings import Settings

    release = threading.Event()
    monkeypatch.setattr(store, "versions", lambda *_a: release.wait(10) and [])
    catalog = Catalog(Settings(store=tmp_path), timeout_s=0.2)
    try:
        with pytest.raises(ReloadFailed, match="did not answer within") as info:
            asyncio.run(catalog.versions("sentiment"))
        assert info.value.transient
    finally:
        release.set()
        catalog.close()
