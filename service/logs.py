"""Logging for the serving process: every line names the request it belongs to.

The middleware sets :data:`REQUEST_ID` for each request (the ``x-request-id`` answered to the
client); a filter copies it onto every log record made in that request's context, and the engine
carries it to the runner threads so a failed batch names the requests it failed."""

from __future__ import annotations

import contextvars
import logging

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        return True


def configure(level: str) -> None:
    """Root logging with the request id in every line (``-`` outside a request)."""
    logging.basicConfig(level=level.upper(), format=FORMAT)
    for handler in logging.getLogger().handlers:
        handler.addFilter(RequestIdFilter())
