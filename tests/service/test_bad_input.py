"""What a hostile or careless client sends: every answer is a contract status with its envelope, the
same whether the fast path or the FastAPI routes answer it, and no connection is reset."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from slimserve.service.settings import Settings

from tests.service.conftest import Server, free_port

pytestmark = pytest.mark.timeout(120)

JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def pair(fake_store: Path) -> Iterator[tuple[Server, Server]]:
    """The same settings with the fast path on and off."""
    servers = [
        Server(
            Settings(store=fake_store, port=free_port(), warmup=False, fast_path=fast, max_body_bytes=4096)
        ).start()
        for fast in (True, False)
    ]
    yield servers[0], servers[1]
    for s in servers:
        s.stop()


def both(pair: tuple[Server, Server], path: str, body: bytes, headers: dict[str, str] | None = None) -> Any:
    """The answer, after checking that the fast path and the routes gave the very same one."""
    fast, slow = (
        httpx.post(s.url + path, content=body, headers={**JSON, **(headers or {})}, timeout=30) for s in pair
    )
    assert (fast.status_code, fast.json()) == (slow.status_code, slow.json()), body[:200]
    return fast


def envelope(r: httpx.Response) -> tuple[int, str]:
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message"}, body
    assert body["error"]["message"]
    return r.status_code, body["error"]["type"]


@pytest.mark.parametrize("path", ["/v1/sentiment", "/v1/classify", "/v1/ner"])
@pytest.mark.parametrize(
    "body",
    [
        # Was 500 internal on the routes (the tokenizer refused the str), a fall-through on the fast path.
        rb'{"inputs": "bad \ud800 surrogate"}',
        rb'{"inputs": ["fine", "Angela \udc00 Merkel"]}',
        rb'{"inputs": "\ud83d"}',
        # Were 400 `http_error` ("There was an error parsing the body").
        b'{"inputs": "\xff\xfe not utf-8"}',
        b'{"inputs": ' + b"[" * 1500 + b"]" * 1500 + b"}",
        b"[" * 4000,
        # Malformed JSON of every kind.
        b'{"inputs": ',
        b"",
        b"\xef\xbb\xbf" + b'{"inputs": "x"}',
        b'{"inputs": "x",}',
        b"null",
    ],
)
def test_malformed_bodies_are_422_on_both_paths(pair: tuple[Server, Server], path: str, body: bytes) -> None:
    assert envelope(both(pair, path, body)) == (422, "validation_error")


def test_no_http_error_type_on_any_path(pair: tuple[Server, Server]) -> None:
    for headers in ({"content-type": "text/plain"}, {"content-type": "application/x-www-form-urlencoded"}):
        assert envelope(both(pair, "/v1/sentiment", b'{"inputs": "x"}', headers)) == (422, "validation_error")
    for fast in pair:
        assert envelope(httpx.get(fast.url + "/v1/ner")) == (405, "method_not_allowed")
        assert envelope(httpx.get(fast.url + "/nowhere")) == (404, "not_found")


def test_a_valid_surrogate_pair_is_served(pair: tuple[Server, Server]) -> None:
    r = both(pair, "/v1/ner", rb'{"inputs": "Angela \ud83d\ude00 Merkel"}')
    assert r.status_code == 200
    for e in r.json()["results"][0]["entities"]:
        assert "Angela 😀 Merkel"[e["start"] : e["end"]] == e["text"]


def test_a_long_review_is_truncated_by_default_and_refused_without_truncation(
    pair: tuple[Server, Server], fake_store: Path, make_server: Any
) -> None:
    """Was 413: a 20,000-character cap per text, although `truncate` defaults to true."""
    srv = make_server(fake_store)  # default limits: a 1 MiB body
    text = " ".join(["word"] * 5000)  # 24,999 characters
    ok = httpx.post(srv.url + "/v1/sentiment", json={"inputs": text}, timeout=30)
    assert ok.status_code == 200, ok.text
    cut = httpx.post(srv.url + "/v1/sentiment", json={"inputs": " ".join(["word"] * 62)}, timeout=30)
    assert ok.json()["results"] == cut.json()["results"]  # the window (64) holds 62 pieces
    refused = httpx.post(srv.url + "/v1/sentiment", json={"inputs": text, "truncate": False}, timeout=30)
    assert envelope(refused) == (400, "input_too_long")
    ner = httpx.post(srv.url + "/v1/ner", json={"inputs": text}, timeout=30)
    assert ner.status_code == 200, ner.text


def test_model_work_is_capped_per_request_in_tokens(fake_store: Path, make_server: Any) -> None:
    """Was: NER windows were made after admission, so one body of long texts became thousands of
    windows holding the runners until the deadline. Now every row (windows included) is counted."""
    srv = make_server(fake_store, max_request_tokens=2000, max_queue_tokens=4000)
    # 200 pieces: 6 windows of at most 64 (62 pieces and 2 specials, 32 shared with the next): ~380 tokens.
    words = " ".join(["word"] * 200)
    assert httpx.post(srv.url + "/v1/ner", json={"inputs": [words] * 3}, timeout=30).status_code == 200
    too_much = httpx.post(srv.url + "/v1/ner", json={"inputs": [words] * 6}, timeout=30)
    assert envelope(too_much) == (413, "payload_too_large")
    assert "tokens" in too_much.json()["error"]["message"]
    # Classification counts a truncated text at the window, not at its length.
    many = httpx.post(srv.url + "/v1/sentiment", json={"inputs": [words] * 30}, timeout=30)
    assert many.status_code == 200


def raw_post(port: int, head: bytes, chunks: Iterator[bytes]) -> tuple[bytes, str | None]:
    """Send a request as most clients do (the whole body first, then read); the answer and any
    socket error."""
    error = None
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        try:
            s.sendall(head)
            for chunk in chunks:
                s.sendall(chunk)
        except OSError as exc:
            error = f"send: {exc!r}"
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
        except OSError as exc:
            error = (error or "") + f" recv: {exc!r}"
    return data, error


@pytest.mark.parametrize("connection", ["close", "keep-alive"])
def test_an_oversized_body_is_answered_413_and_closed_cleanly(
    pair: tuple[Server, Server], connection: str
) -> None:
    """Was: with `Connection: close` the server closed with the body unread, and the kernel reset the
    connection under the client (a send error, and on a real network often no answer at all)."""
    for srv in pair:
        size = 30_000_000
        head = (
            f"POST /v1/sentiment HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Connection: {connection}\r\nContent-Length: {size}\r\n\r\n"
        ).encode()
        data, error = raw_post(srv.settings.port, head, (b"a" * 1_000_000 for _ in range(30)))
        assert error is None, error
        assert data.startswith(b"HTTP/1.1 413 "), data[:200]
        assert b"connection: close" in data.lower()
        assert b'"type":"payload_too_large"' in data
        # Chunked: stopped at the limit, answered, drained, closed.
        head = (
            b"POST /v1/ner HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        chunks = [b"%x\r\n%s\r\n" % (100_000, b"b" * 100_000) for _ in range(50)] + [b"0\r\n\r\n"]
        data, error = raw_post(srv.settings.port, head, iter(chunks))
        assert error is None, error
        assert data.startswith(b"HTTP/1.1 413 ") and b'"type":"payload_too_large"' in data
        # The server goes on serving.
        assert httpx.post(srv.url + "/v1/sentiment", json={"inputs": "fine"}).status_code == 200


def test_an_oversized_declared_body_is_refused_before_it_is_sent(pair: tuple[Server, Server]) -> None:
    """With `Expect: 100-continue` the client waits: the 413 comes without the body ever being sent."""
    for srv in pair:
        head = (
            b"POST /v1/sentiment HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Expect: 100-continue\r\nContent-Length: 50000000\r\n\r\n"
        )
        with socket.create_connection(("127.0.0.1", srv.settings.port), timeout=10) as s:
            s.sendall(head)
            answer = s.recv(65536)
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:100]
