"""Per-request cost of each API surface against /v1, of tracing on against off, and Triton's
perf_analyzer against the v2 route beside wrk against /v1.

One model, the same texts, one closed-loop wrk phase per (surface, concurrency) against one
``slimserve serve`` process; then a second server with tracing on (spans exported over OTLP/HTTP to
a local sink that answers 200, so the exporter really works) for /v1. perf_analyzer, when given,
runs against /v2/models/{model}/infer at each concurrency with one text per request.

    python -m slimserve.bench.surfaces --store STORE --model sentiment [--seconds 10]
        [--perf-analyzer "CMD"]    # the command that runs perf_analyzer (e.g. through a loader)

The machine is shared: the load average is printed with the figures, which are one run each.
"""

from __future__ import annotations

import argparse
import csv
import http.server
import json
import os
import shlex
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from slimserve.bench import wrk
from slimserve.bench.harness import ServerProcess, free_port

SURFACES: dict[str, tuple[str, Callable[[str], Any]]] = {
    "/v1": ("/v1/{route}", lambda t: {"inputs": t}),
    "/v2": (
        "/v2/models/{model}/infer",
        lambda t: {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [t]}]},
    ),
    "/hf": ("/hf/models/{model}", lambda t: {"inputs": t}),
}
V1_ROUTES = {"sentiment": "sentiment", "intent": "classify", "ner": "ner"}


def sst2_texts(data_dir: Path, n: int = 500) -> list[str]:
    with (data_dir / "sst2" / "dev.tsv").open(encoding="utf-8") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))[1:]
    return [r[0] for r in rows[:n]]


class _Sink(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # an OTLP/HTTP receiver that keeps nothing
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def serve(store: Path, name: str, env: dict[str, str]) -> ServerProcess:
    port = free_port()
    slimserve = str(Path(sys.executable).parent / "slimserve")
    cmd = [slimserve, "serve", "--store", str(store), "--port", str(port)]
    server = ServerProcess(name, cmd, port, {"SLIMSERVE_LOG_LEVEL": "warning", **env})
    server.start()
    return server


def phase(server: ServerProcess, path: str, texts: Sequence[str], c: int, seconds: float, body: Any) -> str:
    wrk.run(server.url, path, texts, c, 2, body=body)  # warm-up, not counted
    r = wrk.run(server.url, path, texts, c, seconds, body=body)
    return f"{r.rps:.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.errors}"


def perf_analyzer(command: str, url: str, model: str, concurrency: int, text: str, seconds: float) -> str:
    """One perf_analyzer run: throughput and p50/p99 latency (its CSV), or its error. It measures in
    windows until three agree on throughput and mean latency within 50% (-s 50; its default 10% is
    never met on a shared 2-core machine, nor is stabilising on p99), at most 10 windows."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "pa.csv"
        cmd = [
            *shlex.split(command), "-m", model, "-u", url.removeprefix("http://"), "-i", "http",
            "--concurrency-range", f"{concurrency}:{concurrency}", "--shape", "text:1",
            "--string-data", text, "-p", str(int(seconds * 1000)), "-s", "50", "-r", "10",
            "-f", str(report),
        ]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if done.returncode != 0 or not report.exists():
            return "failed: " + (done.stdout + done.stderr).strip().splitlines()[-1]
        row = next(csv.DictReader(report.open()))
    p50 = float(row.get("p50 latency", "nan")) / 1000
    p99 = float(row.get("p99 latency", "nan")) / 1000
    return f"{float(row['Inferences/Second']):.0f} | {p50:.2f} | {p99:.2f} | 0"


def header(first: str, rate: str = "req/s") -> None:
    print(f"\n| {first} | concurrency | {rate} | p50 ms | p99 ms | errors |")
    print("| --- | --- | --- | --- | --- | --- |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--model", default="sentiment")
    parser.add_argument(
        "--data-dir", type=Path, default=Path(os.environ.get("SLIMSERVE_DATA_DIR", "../shared/data"))
    )
    parser.add_argument("--concurrency", default="1,32")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--perf-analyzer", default="", help="command that runs perf_analyzer")
    parser.add_argument("--pa-concurrency", default="1,8,32")
    parser.add_argument("--only", choices=["surfaces", "perf", "tracing"], default=None)
    args = parser.parse_args(argv)
    if not wrk.available():
        sys.exit("wrk is not installed (apt-get install wrk)")
    texts = sst2_texts(args.data_dir)
    levels = [int(c) for c in args.concurrency.split(",")]
    route = V1_ROUTES.get(args.model, "classify")
    print(f"load average before: {os.getloadavg()}")
    if args.only in (None, "surfaces"):
        header("surface")
    server = serve(args.store, "surfaces", {})
    try:
        for name, (template, body) in SURFACES.items():
            if args.only not in (None, "surfaces"):
                break
            path = template.format(model=args.model, route=route)
            for c in levels:
                print(
                    f"| {name} `{path}` | {c} | {phase(server, path, texts, c, args.seconds, body)} |",
                    flush=True,
                )
        if args.perf_analyzer and args.only in (None, "perf"):
            header("perf_analyzer /v2", "infer/s")
            for c in (int(x) for x in args.pa_concurrency.split(",")):
                result = perf_analyzer(args.perf_analyzer, server.url, args.model, c, texts[0], args.seconds)
                print(f"| perf_analyzer | {c} | {result} |", flush=True)
            header("wrk /v1 (same server)")
            template, body = SURFACES["/v1"]
            path = template.format(model=args.model, route=route)
            for c in (int(x) for x in args.pa_concurrency.split(",")):
                print(f"| wrk | {c} | {phase(server, path, texts, c, args.seconds, body)} |", flush=True)
    finally:
        server.stop()
    if args.only not in (None, "tracing"):
        return
    sink = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{sink.server_address[1]}/v1/traces"
    header("tracing")
    template, body = SURFACES["/v1"]
    path = template.format(model=args.model, route=route)
    traced = {"SLIMSERVE_TRACING": "true", "SLIMSERVE_OTLP_ENDPOINT": endpoint}
    sampled = {**traced, "SLIMSERVE_TRACE_SAMPLE_RATIO": "0.1"}
    for label, env in (("off", {}), ("on", traced), ("on, 10 % sampled", sampled)):
        server = serve(args.store, f"tracing-{label}", env)
        try:
            for c in levels:
                print(f"| {label} | {c} | {phase(server, path, texts, c, args.seconds, body)} |", flush=True)
        finally:
            server.stop()
    sink.shutdown()
    print(f"\nload average after: {os.getloadavg()}")
    print(json.dumps({"store": str(args.store), "model": args.model, "seconds": args.seconds}))


if __name__ == "__main__":
    main()
