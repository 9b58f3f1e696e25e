"""`wrk` (C, from Debian) as the closed-loop load generator: POST bodies cycle over real texts.

The load generator shares the machine's cores with the server under test; a Python client spends
about as much CPU per request as a fast server does, so it caps and distorts what it measures. wrk
costs a few microseconds per request. Each of ``-c`` connections sends a request, waits for the
answer, sends the next, for ``-d`` seconds; a Lua script picks the bodies and prints the figures.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MARK = "WRK_JSON "

# One body per line (JSON has no raw newlines); each wrk thread starts at its own offset.
SCRIPT = r"""
local bodies = {}
local n = 0
local counter = 0
local thread_id = 0
local threads = {}
local next_id = 0

function setup(thread)
  thread:set("thread_id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  for line in io.lines(args[1]) do
    n = n + 1
    bodies[n] = line
  end
  counter = (thread_id * 7919) % n
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  counter = counter % n + 1
  return wrk.format(nil, nil, nil, bodies[counter])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '__MARK__{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,' ..
    '"timeout":%d,"p50_us":%d,"p95_us":%d,"p99_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.mean))
end
""".replace("__MARK__", MARK)


@dataclass(frozen=True, slots=True)
class WrkResult:
    ok: int
    errors: int
    seconds: float
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float


def available() -> bool:
    return shutil.which("wrk") is not None


def run(
    url: str,
    path: str,
    texts: Sequence[str],
    concurrency: int,
    seconds: float,
    body_key: str = "inputs",
    timeout_s: float = 60.0,
    body: Callable[[str], Any] | None = None,
) -> WrkResult:
    """One closed-loop phase of ``seconds``; ``ok`` counts 2xx answers only, and throughput is theirs.
    Each body is ``{body_key: text}``, or ``body(text)`` when given (another API surface's shape)."""
    with tempfile.TemporaryDirectory(prefix="slimserve-wrk-") as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(SCRIPT, encoding="utf-8")
        bodies = Path(tmp) / "bodies.jsonl"
        make = body or (lambda t: {body_key: t})
        bodies.write_text("".join(json.dumps(make(t)) + "\n" for t in texts), encoding="utf-8")
        threads = max(1, min(2, concurrency))
        cmd = [
            "wrk", f"-t{threads}", f"-c{concurrency}", f"-d{max(1, round(seconds))}s",
            f"--timeout={timeout_s:.0f}s", "-s", str(script), url + path, "--", str(bodies),
        ]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    line = next((x for x in out.splitlines() if x.startswith(MARK)), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    s = json.loads(line[len(MARK) :])
    errors = s["status"] + s["timeout"] + s["connect"] + s["read"] + s["write"]
    ok = max(0, s["requests"] - s["status"])
    elapsed = s["duration_us"] / 1e6
    return WrkResult(
        ok=ok,
        errors=errors,
        seconds=elapsed,
        rps=ok / elapsed if elapsed else 0.0,
        p50_ms=s["p50_us"] / 1000,
        p95_ms=s["p95_us"] / 1000,
        p99_ms=s["p99_us"] / 1000,
    )
