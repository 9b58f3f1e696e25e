"""Service fixtures: a fake (real ONNX) store and real uvicorn servers on loopback ports."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from slimserve.service.app import create_app
from slimserve.service.settings import Settings

from tests.service import fakestore


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A real uvicorn server running ``create_app(settings)`` on a thread."""

    def __init__(self, settings: Settings, **app_options: Any) -> None:
        self.settings = settings
        self.app = create_app(settings, **app_options)
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=settings.port, lifespan="on", log_level="warning",
            timeout_graceful_shutdown=5,
        )  # fmt: skip
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{settings.port}"

    def start(self, ready: bool = True) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.server.started:
                if not ready:
                    return self
                if httpx.get(self.url + "/readyz").status_code == 200:
                    return self
            time.sleep(0.02)
        raise RuntimeError("server did not become ready within 60 s")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        """A sample's value from /metrics, read through prometheus-client's parser."""
        from prometheus_client.parser import text_string_to_metric_families

        text = httpx.get(self.url + "/metrics").text
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                    total += sample.value
        return total


@pytest.fixture(scope="session")
def fake_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fakestore.build(tmp_path_factory.mktemp("store"))


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def make(store: Path, ready: bool = True, span_exporter: Any = None, **overrides: Any) -> Server:
        settings = Settings(**{"store": store, "port": free_port(), "warmup": False, **overrides})
        options = {"span_exporter": span_exporter} if span_exporter is not None else {}
        server = Server(settings, **options).start(ready=ready)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def server(fake_store: Path) -> Iterator[Server]:
    settings = Settings(store=fake_store, port=free_port(), warmup=False, max_inputs=8)
    srv = Server(settings).start()
    yield srv
    srv.stop()
