"""Pure ASGI middleware (no BaseHTTPMiddleware: it buffers responses and hides client disconnects):
request ids, the body-size limit, x-total-time and the per-request metrics; inference requests are
answered by the fast path (``fastpath.py``) without entering the FastAPI app.

An oversized body is refused before it is read: on its Content-Length, or, sent chunked, as soon as
what arrived passes the limit. The 413 is written at once, in full, with ``Connection: close``; then
the rest of the body is read and thrown away, for a bounded time and size, before the connection is
closed. Closing a socket with unread data in it makes the kernel send a reset, which can destroy the
answer before the client reads it (RFC 9112, section 9.6): a client that sends its whole body before
reading (most HTTP libraries) would see a reset connection instead of the 413."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from slimserve.service.api.fastpath import FastPath
from slimserve.service.errors import PayloadTooLarge, RequestTimeout, error_response
from slimserve.service.logs import REQUEST_ID as LOG_REQUEST_ID
from slimserve.service.metrics import Metrics
from slimserve.service.tracing import Tracing
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID = "x-request-id"
# After a 413, how much of the unread body is read and dropped before the connection closes (nginx's
# lingering_close does the same). Bounded, so an endless upload cannot hold the connection.
LINGER_S = 5.0
LINGER_BYTES = 256 << 20
CLIENT_GONE = 499  # nginx's code for "the client closed the connection": counted, never sent

log = logging.getLogger(__name__)


class _Gone(Exception):
    """The client disconnected before its body was complete: nothing of it is processed."""


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


class RequestContext:
    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        max_body_bytes: int,
        fast: FastPath | None = None,
        tracing: Tracing | None = None,
        body_timeout_s: float = 30.0,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.fast = fast
        self.tracing = tracing
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        given = _header(scope, b"x-request-id")
        # An id the client chose is echoed, but only if it is a sane token (it ends up in logs).
        request_id = given if given and len(given) <= 200 and given.isprintable() else uuid.uuid4().hex
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        # The deadline runs from here: time spent reading the body or waiting for a busy event loop
        # counts against it (service/api/serving.py).
        state["received_at"] = time.monotonic()
        LOG_REQUEST_ID.set(request_id)  # every log line of this request names it (service/logs.py)
        status = 500
        traced = self.tracing.start(scope) if self.tracing is not None else None

        async def send_wrapped(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID.encode(), request_id.encode("latin-1")))
                total_ms = (time.perf_counter() - started) * 1000
                headers.append((b"x-total-time", f"{total_ms:.2f}".encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            if scope["method"] in ("POST", "PUT", "PATCH"):
                try:
                    async with asyncio.timeout(self.body_timeout_s):
                        body = await self._read_body(scope, receive)
                except _Gone:
                    status = CLIENT_GONE
                    return
                except TimeoutError:
                    error = RequestTimeout(
                        f"the request body did not arrive within {self.body_timeout_s:g} s"
                    )
                    response = error_response(error, scope["path"])
                    response.headers["connection"] = "close"
                    await response(scope, receive, send_wrapped)
                    return
                if body is None:
                    await self._too_large(scope, receive, send_wrapped)
                    return
                endpoint = self.fast.match(scope) if self.fast is not None else None
                if self.fast is not None and endpoint is not None:
                    await self.fast.handle(endpoint, body, scope, receive, send_wrapped)
                    return
                receive = _replay(body, receive)
            await self.app(scope, receive, send_wrapped)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            model = str(state.get("model", ""))
            self.metrics.request_duration.labels(endpoint, model).observe(time.perf_counter() - started)
            self.metrics.requests.labels(endpoint, model, str(status)).inc()
            if status >= 500:
                log.warning("%s %s answered %d", scope["method"], scope["path"], status)
            if traced is not None:
                assert self.tracing is not None
                self.tracing.end(*traced, status, getattr(route, "path", None))

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The whole body, or None once it passes the limit (declared or streamed)."""
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Gone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The 413, written in full at once; then the unread rest of the body is drained (bounded) and
        the response completed, which closes the connection (``Connection: close``)."""
        response = error_response(
            PayloadTooLarge(f"request body is over the limit of {self.max_body_bytes} bytes"), scope["path"]
        )
        response.headers["connection"] = "close"
        start = {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": response.raw_headers,
        }
        await send(start)
        await send({"type": "http.response.body", "body": response.body, "more_body": True})
        if _header(scope, b"expect") is None:  # a client that asked 100-continue sends no body now
            await _drain(receive)
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _drain(receive: Receive) -> None:
    """Read and drop what the client still sends, until its body ends, it leaves, or the bounds."""
    drained = 0
    deadline = time.monotonic() + LINGER_S
    while drained < LINGER_BYTES:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        try:
            message = await asyncio.wait_for(receive(), left)
        except TimeoutError:
            return
        if message["type"] != "http.request":
            return
        drained += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


def _replay(body: bytes, receive: Receive) -> Receive:
    """Hand the buffered body to the app once, then pass through (so disconnects still arrive)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
