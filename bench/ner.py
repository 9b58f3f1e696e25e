"""NER serving benchmark: slimserve's ``/v1/ner`` against the transformers-pipeline baseline.

One run starts each server in its own process (one after the other, so they never share the CPU),
sends the same CoNLL-2003 validation sentences at concurrency 1 and 32 (one text per request, a
bounded number of requests and a bounded time per phase), and prints throughput and p50/p99 latency.

Run: ``python -m slimserve.bench.ner --store model_store --baseline-model DIR``
(DIR: the PyTorch model as ``save_pretrained`` wrote it, the same weights the store's ONNX came from).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx


@dataclass(frozen=True, slots=True)
class Phase:
    server: str
    concurrency: int
    requests: int
    errors: int
    seconds: float
    throughput_rps: float
    p50_ms: float
    p99_ms: float


def conll_texts(path: Path, n: int, seed: int = 0) -> list[str]:
    """Sentences of the validation split, words joined by spaces (what a client would send)."""
    from slimserve.build.conll import read_conll

    sentences = [" ".join(s.tokens) for s in read_conll(path) if len(s.tokens) >= 6]
    random.Random(seed).shuffle(sentences)
    return sentences[:n]


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


async def load(url: str, texts: Sequence[str], concurrency: int, requests: int, max_seconds: float) -> Phase:
    latencies: list[float] = []
    errors = 0
    counter = iter(range(requests))
    deadline = time.perf_counter() + max_seconds

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors
        for i in counter:
            if time.perf_counter() > deadline:
                return
            t0 = time.perf_counter()
            response = await client.post("/v1/ner", json={"inputs": texts[i % len(texts)]})
            if response.status_code != 200:
                errors += 1  # a failed request counts in neither throughput nor latency
                continue
            latencies.append(time.perf_counter() - t0)

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    done = len(latencies)
    return Phase(
        server="",
        concurrency=concurrency,
        requests=done,
        errors=errors,
        seconds=round(elapsed, 2),
        throughput_rps=round(done / elapsed, 2) if elapsed else 0.0,
        p50_ms=round(_percentile(latencies, 50) * 1000, 1),
        p99_ms=round(_percentile(latencies, 99) * 1000, 1),
    )


def _wrk_phase(url: str, texts: Sequence[str], concurrency: int, seconds: float) -> Phase:
    from slimserve.bench import wrk

    wrk.run(url, "/v1/ner", texts, concurrency, 2)  # warm-up at this concurrency, not reported
    r = wrk.run(url, "/v1/ner", texts, concurrency, seconds)
    return Phase(
        server="",
        concurrency=concurrency,
        requests=r.ok,
        errors=r.errors,
        seconds=round(r.seconds, 2),
        throughput_rps=round(r.rps, 2),
        p50_ms=round(r.p50_ms, 1),
        p99_ms=round(r.p99_ms, 1),
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(url: str, process: subprocess.Popen[bytes], seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before it was ready ({url})")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready within {seconds:.0f} s")


def _run_server(
    name: str, command: list[str], port: int, phases: list[tuple[int, int]], args: argparse.Namespace
) -> list[Phase]:
    url = f"http://127.0.0.1:{port}"
    texts = conll_texts(args.data_dir / "conll2003" / "valid.txt", 500)
    process = subprocess.Popen(command, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    try:
        _wait_ready(url, process)
        from slimserve.bench import wrk

        use_wrk = args.client == "wrk" or (args.client == "auto" and wrk.available())
        if not use_wrk:
            asyncio.run(load(url, texts, 4, 20, 30))  # warm-up, not reported
        out = []
        for concurrency, requests in phases:
            if use_wrk:
                phase = _wrk_phase(url, texts, concurrency, args.seconds)
            else:
                phase = asyncio.run(load(url, texts, concurrency, requests, args.max_seconds))
            out.append(Phase(**{**asdict(phase), "server": name}))
            print(
                f"{name:>10} c={concurrency:<3} {phase.throughput_rps:8.1f} req/s  "
                f"p50 {phase.p50_ms:7.1f} ms  "
                f"p99 {phase.p99_ms:7.1f} ms  ({phase.requests} req, {phase.errors} errors)",
                file=sys.stderr,
                flush=True,
            )
        return out
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def run(args: argparse.Namespace) -> list[Phase]:
    phases = [(c, args.requests * c if c > 1 else args.requests) for c in args.concurrency]
    phases = [(c, min(n, args.max_requests)) for c, n in phases]
    results: list[Phase] = []
    port = _free_port()
    cli = "from slimserve.cli import app; app()"
    serve = [
        sys.executable,
        "-c",
        cli,
        "serve",
        "--store",
        str(args.store),
        "--port",
        str(port),
        "--model",
        "ner",
    ]
    results += _run_server("slimserve", serve, port, phases, args)
    if args.baseline_model is not None:
        port = _free_port()
        base = [sys.executable, "-m", "slimserve.bench.ner_baseline", "--model-dir", str(args.baseline_model),
                "--port", str(port), "--threads", str(args.threads)]  # fmt: skip
        results += _run_server("baseline", base, port, phases, args)
    return results


def table(results: Sequence[Phase]) -> str:
    lines = [
        "| server | concurrency | requests | throughput (req/s) | p50 (ms) | p99 (ms) | errors |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        cells = [r.server, r.concurrency, r.requests, r.throughput_rps, r.p50_ms, r.p99_ms, r.errors]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    by = {(r.server, r.concurrency): r for r in results}
    for c in sorted({r.concurrency for r in results}):
        if ("slimserve", c) in by and ("baseline", c) in by and by[("baseline", c)].throughput_rps:
            ratio = by[("slimserve", c)].throughput_rps / by[("baseline", c)].throughput_rps
            lines.append(f"\nthroughput ratio at concurrency {c}: {ratio:.1f}x")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="slimserve /v1/ner vs a transformers pipeline baseline")
    p.add_argument("--store", type=Path, default=Path(os.environ.get("SLIMSERVE_STORE", "model_store")))
    p.add_argument("--baseline-model", type=Path, default=None, help="transformers model dir; omit to skip")
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("SLIMSERVE_DATA_DIR", "data")))
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    p.add_argument("--requests", type=int, default=100, help="requests at concurrency 1; x concurrency above")
    p.add_argument("--max-requests", type=int, default=640, help="cap per phase")
    p.add_argument("--max-seconds", type=float, default=90, help="time cap per phase")
    p.add_argument("--threads", type=int, default=2, help="torch threads of the baseline")
    p.add_argument(
        "--client",
        choices=["auto", "wrk", "python"],
        default="auto",
        help="load generator: wrk (C; phases of --seconds), python (httpx; --requests/--max-seconds), "
        "auto (wrk when installed). A Python client costs the shared CPU as much as the server does.",
    )
    p.add_argument("--seconds", type=float, default=15, help="phase length with wrk")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    from slimserve.bench import wrk

    if args.client == "wrk" and not wrk.available():
        raise SystemExit("bench.ner: --client wrk but wrk is not installed (apt-get install -y wrk)")
    results = run(args)
    print(table(results))
    use_wrk = args.client == "wrk" or (args.client == "auto" and wrk.available())
    load = os.getloadavg()
    print(
        f"\nload generator: {f'wrk, {args.seconds:.0f} s per phase' if use_wrk else 'httpx'}; "
        f"{len(os.sched_getaffinity(0))} CPUs; load average at the end {load[0]:.2f} / {load[1]:.2f}"
    )
    if args.out is not None:
        args.out.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
