"""OpenTelemetry tracing, recorded by the SDK's in-memory exporter from a real server on a loopback
port: a server span per request continuing the caller's W3C traceparent, with tokenize / queue wait /
inference children on every API surface; and neither the SDK nor the exporter imported when it is off."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from slimserve.service.settings import Settings

from tests.service.conftest import Server, free_port

pytestmark = pytest.mark.timeout(120)

sdk = pytest.importorskip("opentelemetry.sdk.trace", reason="pip install -e '.[tracing]'")
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import SpanKind  # noqa: E402

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
STAGES = ("tokenize", "queue wait", "inference")


@pytest.fixture(scope="module")
def traced(fake_store: Path) -> Iterator[tuple[Server, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    settings = Settings(
        store=fake_store, port=free_port(), warmup=False, tracing=True, service_name="test-svc"
    )
    srv = Server(settings, span_exporter=exporter).start()
    yield srv, exporter
    srv.stop()


def _spans_of(exporter: InMemorySpanExporter, trace_id: int, count: int) -> list[Any]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        spans = [s for s in exporter.get_finished_spans() if s.context.trace_id == trace_id]
        if len(spans) >= count:
            return spans
        time.sleep(0.02)
    raise AssertionError(f"expected {count} spans of trace {trace_id:x}, got {len(spans)}")


@pytest.mark.parametrize(
    ("method", "path", "body", "route"),
    [
        ("POST", "/v1/classify", {"inputs": ["my card has not arrived", "hi"]}, "/v1/classify"),
        ("POST", "/v1/ner", {"inputs": "Angela Merkel visited Paris."}, "/v1/ner"),
        (
            "POST",
            "/v2/models/sentiment/infer",
            {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["fine"]}]},
            "/v2/models/{name}/infer",
        ),
        ("POST", "/hf/models/intent", {"inputs": "where is my card"}, "/hf/models/{name}"),
    ],
)
def test_request_span_continues_the_callers_trace_with_stage_children(
    traced: tuple[Server, InMemorySpanExporter], method: str, path: str, body: dict[str, Any], route: str
) -> None:
    srv, exporter = traced
    exporter.clear()
    r = httpx.request(method, srv.url + path, json=body, headers={"traceparent": TRACEPARENT})
    assert r.status_code == 200, r.text
    spans = _spans_of(exporter, int(TRACE_ID, 16), 4)
    (server,) = [s for s in spans if s.kind == SpanKind.SERVER]
    assert server.parent is not None and server.parent.span_id == int(PARENT_ID, 16)
    assert server.name == f"{method} {route}"
    assert server.attributes["http.route"] == route
    assert server.attributes["http.response.status_code"] == 200
    assert server.resource.attributes["service.name"] == "test-svc"
    children = {
        s.name: s for s in spans if s.parent is not None and s.parent.span_id == server.context.span_id
    }
    assert set(children) == set(STAGES)
    for name in STAGES:
        child = children[name]
        assert child.attributes["slimserve.model_version"] == 1
        assert server.start_time <= child.start_time <= child.end_time <= server.end_time, name
    assert children["tokenize"].end_time <= children["queue wait"].end_time <= children["inference"].end_time
    assert children["inference"].attributes["slimserve.batch_size"] >= 1
    assert children["inference"].attributes["slimserve.variant"] == "int8"


def test_without_traceparent_a_new_trace_starts_and_errors_are_spans_too(
    traced: tuple[Server, InMemorySpanExporter],
) -> None:
    srv, exporter = traced
    exporter.clear()
    assert httpx.post(srv.url + "/v1/classify", json={"inputs": []}).status_code == 422
    deadline = time.monotonic() + 10
    while not exporter.get_finished_spans() and time.monotonic() < deadline:
        time.sleep(0.02)
    (span,) = exporter.get_finished_spans()
    assert span.parent is None
    assert span.attributes["http.response.status_code"] == 422


def test_sampling_ratio_zero_records_only_what_the_caller_sampled(make_server: Any, fake_store: Path) -> None:
    exporter = InMemorySpanExporter()
    srv = make_server(fake_store, tracing=True, trace_sample_ratio=0.0, span_exporter=exporter)
    body = {"inputs": "where is my card"}
    assert httpx.post(srv.url + "/v1/classify", json=body).status_code == 200
    assert (
        httpx.post(srv.url + "/v1/classify", json=body, headers={"traceparent": TRACEPARENT}).status_code
        == 200
    )
    spans = _spans_of(exporter, int(TRACE_ID, 16), 4)
    assert {s.context.trace_id for s in exporter.get_finished_spans()} == {int(TRACE_ID, 16)}
    assert {s.name for s in spans} == {"POST /v1/classify", *STAGES}


def test_tracing_off_imports_no_opentelemetry_sdk(fake_store: Path) -> None:
    # The API package (no-op unless a provider is set) comes with FastAPI itself, which imports it;
    # the SDK and the OTLP exporter are slimserve's optional extra and stay out when tracing is off.
    code = (
        "import sys\n"
        "from slimserve.service.app import create_app\n"
        "from slimserve.service.settings import Settings\n"
        f"create_app(Settings(store={str(fake_store)!r}))\n"
        "prefixes = ('opentelemetry.sdk', 'opentelemetry.exporter')\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(prefixes))\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_a_sampled_out_request_ends_cleanly_and_resets_the_context() -> None:
    """Sampled out, the server span is a NonRecordingSpan (no name, no attributes): ending it must not
    raise (that raised after the answer and made uvicorn drop the keep-alive connection)."""
    from slimserve.service import tracing

    traces = tracing.setup(Settings(tracing=True, trace_sample_ratio=0.0), InMemorySpanExporter())
    assert traces is not None
    scope = {"type": "http", "method": "POST", "path": "/v1/classify", "headers": []}
    active, tokens = traces.start(scope)
    assert not active.span.is_recording() and tracing.ACTIVE.get() is active
    traces.end(active, tokens, 200, "/v1/classify")
    assert tracing.ACTIVE.get() is None
    traces.shutdown()
