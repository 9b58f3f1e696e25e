"""Serving-benchmark machinery: server processes on loopback (cold start, RSS), a closed-loop load
generator bounded in time and count, and latency statistics."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx


@dataclass(frozen=True, slots=True)
class Phase:
    server: str
    concurrency: int
    requests: int
    errors: int
    seconds: float
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    rss_mb: float


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


class ServerProcess:
    """A server in its own process; ``start`` returns the seconds from spawn to /readyz 200."""

    def __init__(self, name: str, cmd: list[str], port: int, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.cmd = cmd
        self.url = f"http://127.0.0.1:{port}"
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = Path(os.environ.get("TMPDIR", "/tmp")) / f"slimserve-bench-{name}-{port}.log"

    def start(self, limit_s: float = 300) -> float:
        started = time.perf_counter()
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        end = time.monotonic() + limit_s
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return time.perf_counter() - started
            except httpx.TransportError:
                pass
            time.sleep(0.01)
        raise RuntimeError(f"{self.name} was not ready within {limit_s} s; see {self.log}")

    def served_variant(self, model: str) -> str | None:
        """The variant /v1/models says it serves for ``model`` (None for a server without it)."""
        try:
            listing = httpx.get(self.url + "/v1/models", timeout=5).json()
        except (httpx.HTTPError, ValueError):
            return None
        entries = listing.get("models", listing) if isinstance(listing, dict) else listing
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict) and entry.get("name") == model:
                return str(entry.get("variant"))
        return None

    def rss_mb(self) -> float:
        import psutil

        if self.proc is None:
            return float("nan")
        root = psutil.Process(self.proc.pid)
        procs = [root, *root.children(recursive=True)]
        return sum(p.memory_info().rss for p in procs) / 2**20

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def closed_loop(
    url: str, path: str, texts: Sequence[str], concurrency: int, max_requests: int, max_seconds: float
) -> tuple[list[float], int, float]:
    """Each of ``concurrency`` clients sends one text, waits for the answer, sends the next."""
    latencies: list[float] = []
    errors = 0
    sent = 0
    end = time.perf_counter() + max_seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def client(c: httpx.AsyncClient) -> None:
        nonlocal errors, sent
        while sent < max_requests and time.perf_counter() < end:
            text = texts[sent % len(texts)]
            sent += 1
            t0 = time.perf_counter()
            try:
                r = await c.post(path, json={"inputs": text})
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - t0)
            else:
                errors += 1

    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as c:
        await asyncio.gather(*(client(c) for _ in range(concurrency)))
    return latencies, errors, time.perf_counter() - started


def measure(
    server: ServerProcess,
    path: str,
    texts: Sequence[str],
    concurrency: int,
    max_requests: int,
    max_seconds: float,
    client: str = "auto",
) -> Phase:
    """One closed-loop phase. ``client``: "wrk" (C; bounded by ``max_seconds`` only), "python" (httpx;
    bounded by both limits) or "auto" (wrk when installed)."""
    from slimserve.bench import wrk

    if client == "wrk" or (client == "auto" and wrk.available()):
        wrk.run(server.url, path, texts, concurrency, 2)  # warm-up at this concurrency, not counted
        r = wrk.run(server.url, path, texts, concurrency, max_seconds)
        return Phase(
            server=server.name,
            concurrency=concurrency,
            requests=r.ok,
            errors=r.errors,
            seconds=r.seconds,
            rps=r.rps,
            p50_ms=r.p50_ms,
            p95_ms=r.p95_ms,
            p99_ms=r.p99_ms,
            rss_mb=server.rss_mb(),
        )
    # A short warm-up at this concurrency, not counted.
    asyncio.run(closed_loop(server.url, path, texts, concurrency, concurrency * 2, 5))
    latencies, errors, seconds = asyncio.run(
        closed_loop(server.url, path, texts, concurrency, max_requests, max_seconds)
    )
    ms = [x * 1000 for x in latencies]
    return Phase(
        server=server.name,
        concurrency=concurrency,
        requests=len(latencies),
        errors=errors,
        seconds=seconds,
        rps=len(latencies) / seconds if seconds else 0.0,
        p50_ms=percentile(ms, 50),
        p95_ms=percentile(ms, 95),
        p99_ms=percentile(ms, 99),
        rss_mb=server.rss_mb(),
    )


def python() -> str:
    return sys.executable
