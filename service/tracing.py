"""OpenTelemetry tracing: off by default, on with the setting ``tracing``.

When on, every HTTP request gets a server span (continuing the caller's W3C ``traceparent``), and an
inference request gets three children: ``tokenize``, ``queue wait`` and ``inference`` (batch size,
model version and variant as attributes). Spans go to an OTLP/HTTP collector (``otlp_endpoint``)
under ``service_name``; ``trace_sample_ratio`` of new traces are recorded (a caller's sampling
decision in ``traceparent`` is followed).

The engine already measures every stage for the metrics, so the children are recorded after the
answer from those timings (with their real start and end times), not opened around the hot path.
Nothing here imports OpenTelemetry until ``setup`` is called with tracing on: the SDK and the OTLP
exporter are the optional extra ``slimserve[tracing]`` (the API package comes with FastAPI, which
imports it for its own, unconfigured and so no-op, telemetry), and with tracing off a request costs
one attribute test in the middleware and one context-variable read.
"""

from __future__ import annotations

import time
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from slimserve.service.settings import Settings

if TYPE_CHECKING:
    from slimserve.service.engine.batcher import EngineResult
    from slimserve.service.registry import Served

ACTIVE: ContextVar[Active | None] = ContextVar("slimserve_trace", default=None)
"""The current request's span, while tracing is on (``run_inference`` records its stages under it)."""


class TracingUnavailable(RuntimeError):
    """Tracing was asked for but the OpenTelemetry packages are not installed."""


def _wall_ns(perf: float, now_perf: float, now_ns: int) -> int:
    """A ``time.perf_counter()`` instant as epoch nanoseconds."""
    return now_ns - int((now_perf - perf) * 1e9)


@dataclass(slots=True)
class Active:
    """One request's span, and how to make its children."""

    span: Any
    tracer: Any
    context: Any

    def record(self, served: Served, result: EngineResult) -> None:
        """The request's tokenize, queue-wait and inference spans, from the engine's own timings."""
        if not self.span.is_recording():  # sampled out: nothing to add to
            return
        now_perf, now_ns = time.perf_counter(), time.time_ns()
        model = {"slimserve.model": served.name, "slimserve.model_version": served.version}
        stages: list[tuple[str, float, float, dict[str, Any]]] = []
        if result.tokenize_s or result.tokenized_at:
            stages.append(("tokenize", result.tokenized_at, result.tokenize_s, {}))
        if result.enqueued_at:
            started = result.enqueued_at + result.queue_s
            stages.append(("queue wait", result.enqueued_at, result.queue_s, {}))
            batch = {"slimserve.batch_size": result.batch_rows, "slimserve.variant": served.variant}
            stages.append(("inference", started, result.inference_s, batch))
        for name, start, seconds, extra in stages:
            begin = _wall_ns(start, now_perf, now_ns)
            span = self.tracer.start_span(
                name, context=self.context, start_time=begin, attributes={**model, **extra}
            )
            span.end(end_time=begin + int(seconds * 1e9))
        self.span.set_attribute("slimserve.model", served.name)
        self.span.set_attribute("slimserve.model_version", served.version)


class Tracing:
    """The tracer and its provider; built by :func:`setup`."""

    def __init__(self, provider: Any) -> None:
        from opentelemetry import context, trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._provider = provider
        self._tracer = provider.get_tracer("slimserve")
        self._context = context
        self._trace = trace
        self._propagator = TraceContextTextMapPropagator()
        self._server = trace.SpanKind.SERVER

    def start(self, scope: dict[str, Any]) -> tuple[Active, tuple[Any, Token[Active | None]]]:
        """A server span for the request, its parent from the caller's ``traceparent`` if any; the
        span is made current (``ACTIVE`` and the OpenTelemetry context) until :meth:`end`."""
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", ())}
        parent = self._propagator.extract(carrier)
        method = scope.get("method", "GET")
        span = self._tracer.start_span(
            method,
            context=parent,
            kind=self._server,
            attributes={"http.request.method": method, "url.path": scope.get("path", "")},
        )
        ctx = self._trace.set_span_in_context(span, parent)
        active = Active(span, self._tracer, ctx)
        return active, (self._context.attach(ctx), ACTIVE.set(active))

    def end(
        self, active: Active, tokens: tuple[Any, Token[Active | None]], status: int, route: str | None
    ) -> None:
        span = active.span
        otel_token, active_token = tokens
        try:
            if span.is_recording():  # a sampled-out span has no name and keeps no attributes
                if route:
                    span.update_name(f"{span.name} {route}")
                    span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(self._trace.Status(self._trace.StatusCode.ERROR))
            span.end()
        finally:
            ACTIVE.reset(active_token)
            self._context.detach(otel_token)

    def shutdown(self) -> None:
        self._provider.shutdown()


def setup(settings: Settings, exporter: Any = None) -> Tracing | None:
    """None when tracing is off (nothing imported). ``exporter`` replaces the OTLP exporter (tests
    pass the SDK's in-memory one) and is flushed span by span."""
    if not settings.tracing:
        return None
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    except ImportError as exc:
        raise TracingUnavailable(
            f"tracing is on but OpenTelemetry is not installed ({exc}); pip install 'slimserve[tracing]'"
        ) from exc
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.service_name}),
        sampler=ParentBased(TraceIdRatioBased(settings.trace_sample_ratio)),
    )
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint)))
    return Tracing(provider)
