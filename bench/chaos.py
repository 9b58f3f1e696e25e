"""Chaos benchmark: a real `slimserve serve` on loopback under overload, reload storms, a corrupt
newest version, SIGTERM under load, injected runner faults and badly behaved clients.

    python -m slimserve.bench.chaos --store STORE [--scale 1.0] [--only overload,reload,...]

STORE must hold `sentiment` and `ner` (any size; tests/tiny.py builds tiny ones). It is copied: the
scenarios publish good and corrupt versions into the copy. Every phase is bounded in time; ``--scale``
shortens or lengthens them all. Prints one markdown table: each line a measure, what the service
promises, and whether it held. A benchmark (figures on a possibly shared machine), not a test:
tests/bench/test_chaos.py runs it at a tiny scale and asserts only the behaviours, never timings.
"""

# ruff: noqa: B023 - each scenario's closures run (asyncio.run) within the loop iteration that made them

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import signal
import socket
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from slimserve.bench.harness import ServerProcess, free_port, percentile, python

SCENARIOS = ("overload", "reload", "restart", "sigterm", "faults", "clients")
TEXT = """
the film was a delight from start to finish though the second half drags a little and the score is loud
Angela Merkel met Emmanuel Macron in Paris on Monday to discuss trade with the European Union while
Apple and Google announced new phones in California
"""
WORDS = TEXT.split()


@dataclass(frozen=True, slots=True)
class Check:
    scenario: str
    measure: str
    value: str
    expect: str
    ok: bool | None  # None: a figure with no promise attached
    timing: bool = False  # depends on the machine's speed: tests never assert it


def sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def long_text(rng: random.Random, chars: int) -> str:
    out = ""
    while len(out) < chars - 60:
        out += sentence(rng, 10) + ". "
    return out[:chars]


# -- the server and its store ----------------------------------------------------------------------


class Chaos:
    """A copy of the store, servers started on it, and what they were asked to do."""

    def __init__(self, store: Path, scale: float, work: Path) -> None:
        self.root = work / "store"
        shutil.copytree(store, self.root)
        self.scale = scale
        self.work = work
        self.rng = random.Random(0)
        self.good = {name: self.versions(name)[-1] for name in ("sentiment", "ner")}

    def seconds(self, base: float, least: float = 1.0) -> float:
        return max(least, base * self.scale)

    def server(self, name: str, *flags: str, env: dict[str, str] | None = None) -> ServerProcess:
        port = free_port()
        cmd = [
            str(Path(python()).parent / "slimserve"),
            "serve",
            "--store",
            str(self.root),
            "--port",
            str(port),
        ]
        cmd += ["--log-level", "warning", *flags]
        return ServerProcess(f"chaos-{name}", cmd, port, env)

    def versions(self, name: str) -> list[int]:
        from slimserve.service import store

        return store.versions(self.root, name)

    def publish(self, name: str, corrupt: bool = False) -> int:
        """A new version of ``name``: a copy of its newest good one, or one whose ONNX files are garbage
        (checksums updated, so that ONNX Runtime, not the sha256 check, refuses it)."""
        from slimserve.service import store

        version = self.versions(name)[-1] + 1
        tmp = self.root / name / f".{version}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(store.version_dir(self.root, name, self.good[name]), tmp)
        manifest = store.read_manifest(tmp).model_copy(update={"version": version})
        if corrupt:
            for variant in manifest.variants.values():
                (tmp / variant.file).write_bytes(b"not an onnx graph " * 8)
                variant.sha256 = store.sha256_file(tmp / variant.file)
                variant.bytes = (tmp / variant.file).stat().st_size
        manifest.write(tmp)
        tmp.rename(store.version_dir(self.root, name, version))
        if not corrupt:
            self.good[name] = version
        return version

    def prune(self, name: str, keep: int) -> None:
        """Delete all but the ``keep`` newest versions (never the newest good one)."""
        for version in self.versions(name)[:-keep]:
            if version != self.good[name]:
                self.remove(name, version)

    def remove(self, name: str, version: int) -> None:
        from slimserve.service import store

        shutil.rmtree(store.version_dir(self.root, name, version), ignore_errors=True)


def resources(server: ServerProcess) -> tuple[float, int, int]:
    """RSS (MiB), threads and open file descriptors of the server process."""
    import psutil

    assert server.proc is not None
    p = psutil.Process(server.proc.pid)
    return p.memory_info().rss / 2**20, p.num_threads(), p.num_fds()


def metric(url: str, name: str, labels: dict[str, str] | None = None) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(url + "/metrics", timeout=10).text
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in (labels or {}).items())
    )


# -- load generators -------------------------------------------------------------------------------


@dataclass(slots=True)
class Outcome:
    status: int  # 0: no HTTP answer
    seconds: float  # as the client saw it (includes the load generator's own queueing)
    error: str = ""  # the transport error's class name when there was no answer
    retry_after: bool = False
    server_s: float = float("nan")  # x-total-time: from the server receiving it to answering


async def send(client: httpx.AsyncClient, path: str, body: dict[str, Any], **headers: str) -> Outcome:
    t0 = time.perf_counter()
    try:
        r = await client.post(path, json=body, headers=headers)
    except httpx.HTTPError as exc:
        return Outcome(0, time.perf_counter() - t0, type(exc).__name__)
    total = r.headers.get("x-total-time")
    return Outcome(
        r.status_code,
        time.perf_counter() - t0,
        retry_after="retry-after" in r.headers,
        server_s=float(total) / 1000 if total else float("nan"),
    )


async def open_loop(
    url: str,
    rate: float,
    seconds: float,
    pick: Callable[[], tuple[str, dict[str, Any]]],
    keepalive: bool = True,
) -> list[Outcome]:
    """Arrivals at ``rate`` per second whatever the answers (at most 2,000 outstanding)."""
    limits = httpx.Limits(max_connections=2000, max_keepalive_connections=2000 if keepalive else 0)
    outcomes: list[Outcome] = []
    gate = asyncio.Semaphore(2000)

    async def one(c: httpx.AsyncClient, path: str, body: dict[str, Any]) -> None:
        try:
            outcomes.append(await send(c, path, body))
        finally:
            gate.release()

    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as c:
        tasks = []
        start = time.perf_counter()
        n = 0
        while (elapsed := time.perf_counter() - start) < seconds:
            due = int(elapsed * rate) + 1
            while n < due:
                await gate.acquire()
                path, body = pick()
                tasks.append(asyncio.create_task(one(c, path, body)))
                n += 1
            await asyncio.sleep(0.002)
        await asyncio.gather(*tasks)
    return outcomes


async def closed_loop(
    url: str, clients: int, until: Callable[[], bool], pick: Callable[[], tuple[str, dict[str, Any]]]
) -> list[Outcome]:
    outcomes: list[Outcome] = []

    async def client(c: httpx.AsyncClient) -> None:
        while not until():
            path, body = pick()
            outcomes.append(await send(c, path, body))

    async with httpx.AsyncClient(base_url=url, timeout=60) as c:
        await asyncio.gather(*(client(c) for _ in range(clients)))
    return outcomes


async def probe(url: str, stop: asyncio.Event, every_s: float = 0.05) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"/healthz": [], "/readyz": []}
    async with httpx.AsyncClient(base_url=url, timeout=10) as c:
        while not stop.is_set():
            for path, seen in times.items():
                t0 = time.perf_counter()
                with contextlib.suppress(httpx.HTTPError):
                    await c.get(path)
                seen.append(time.perf_counter() - t0)
            await asyncio.sleep(every_s)
    return times


def _probe_main(url: str, seconds: float, out: Any) -> None:
    async def run() -> dict[str, list[float]]:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(seconds, stop.set)
        return await probe(url, stop)

    out.put(asyncio.run(run()))


class ProbeProcess:
    """/healthz and /readyz every 50 ms from a process of its own, so the load generator's busy event
    loop does not inflate the probes' latencies."""

    def __init__(self, url: str, seconds: float) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self.queue = ctx.Queue()
        self.proc = ctx.Process(target=_probe_main, args=(url, seconds, self.queue), daemon=True)
        self.proc.start()

    def result(self) -> dict[str, list[float]]:
        times: dict[str, list[float]] = self.queue.get(timeout=600)
        self.proc.join(10)
        return times


def ms(values: Sequence[float], q: float = 99) -> float:
    return percentile([v * 1000 for v in values], q)


def codes(outcomes: Sequence[Outcome]) -> str:
    counted = Counter(o.status or o.error for o in outcomes)
    return ", ".join(f"{k}: {v}" for k, v in sorted(counted.items(), key=lambda kv: str(kv[0])))


# -- scenarios -------------------------------------------------------------------------------------


def overload(chaos: Chaos) -> list[Check]:
    rng = chaos.rng
    deadline_ms = 2000
    flags = ["--max-inputs", "32", "--deadline-ms", str(deadline_ms)]
    server = chaos.server("overload", *flags, "--max-queue", "256", "--retry-after-s", "1")
    # Near the largest NER body the limits allow: 20 texts of 2,000 characters, ~5 overlapping windows
    # each, ~13,000 of the 16,384 tokens one request may ask for (max_request_tokens).
    ner_body = {"inputs": [long_text(rng, 2000) for _ in range(20)]}
    short = [sentence(rng, rng.randint(5, 30)) for _ in range(200)]

    def pick() -> tuple[str, dict[str, Any]]:
        if rng.random() < 0.1:
            return "/v1/ner", ner_body
        return "/v1/sentiment", {"inputs": rng.choice(short)}

    server.start()
    try:
        measure_s = chaos.seconds(10, 2)
        end = time.monotonic() + measure_s
        warm = asyncio.run(closed_loop(server.url, 8, lambda: time.monotonic() > end, pick))
        capacity = sum(o.status == 200 for o in warm) / measure_s
        rss0, threads0, fds0 = resources(server)

        # Two halves, resources sampled once each has drained: growth from the first to the second
        # is what a leak would show (the first half also warms ONNX Runtime's arena to its peak).
        seconds = chaos.seconds(60, 3)
        probing = ProbeProcess(server.url, seconds + 2)
        outcomes = asyncio.run(open_loop(server.url, 4 * capacity, seconds / 2, pick))
        time.sleep(1)
        rss_half, _, _ = resources(server)
        outcomes += asyncio.run(open_loop(server.url, 4 * capacity, seconds / 2, pick))
        probes = probing.result()
        time.sleep(1)
        rss1, threads1, fds1 = resources(server)
        alive = server.proc is not None and server.proc.poll() is None
    finally:
        server.stop()
    accepted = [o.server_s for o in outcomes if o.status == 200]
    accepted_client = [o.seconds for o in outcomes if o.status == 200]
    refused = [o for o in outcomes if o.status == 503]
    other = [o for o in outcomes if o.status not in (200, 503)]
    s = "overload"
    return [
        Check(s, "capacity, closed loop c=8 (req/s)", f"{capacity:.1f}", "", None, timing=True),
        Check(s, "offered: 4x capacity, open loop (req/s)", f"{4 * capacity:.1f}", "", None, timing=True),
        # 504s appear when the CPU, not the queue, is the bottleneck (admission counts inputs, not time).
        Check(s, "answers by status", codes(outcomes), "200 or 503", not other, timing=True),
        Check(
            s,
            "503 with Retry-After",
            f"{sum(o.retry_after for o in refused)}/{len(refused)}",
            "all",
            all(o.retry_after for o in refused),
        ),
        Check(
            s,
            "503 p99, server side (ms)",
            f"{ms([o.server_s for o in refused]):.1f}",
            "at once (< 50)",
            not refused or ms([o.server_s for o in refused]) < 50,
            timing=True,
        ),
        Check(
            s,
            "200 p99, server side / as the client saw it (ms)",
            f"{ms(accepted):.0f} / {ms(accepted_client):.0f}",
            f"< deadline {deadline_ms}",
            ms(accepted) < deadline_ms if accepted else False,
            timing=True,
        ),
        Check(
            s,
            "/healthz p99 (ms)",
            f"{ms(probes['/healthz']):.1f}",
            "< 50",
            ms(probes["/healthz"]) < 50,
            timing=True,
        ),
        Check(
            s,
            "/readyz p99 (ms)",
            f"{ms(probes['/readyz']):.1f}",
            "< 50",
            ms(probes["/readyz"]) < 50,
            timing=True,
        ),
        Check(
            s,
            "RSS MiB after warm-up -> 1st half -> 2nd half (drained)",
            f"{rss0:.0f} -> {rss_half:.0f} -> {rss1:.0f}",
            "flat after the 1st half (< +10%)",
            rss1 < rss_half * 1.1,
            timing=True,
        ),
        Check(
            s, "threads after warm-up -> end", f"{threads0} -> {threads1}", "flat", threads1 <= threads0 + 2
        ),
        Check(s, "fds after warm-up -> end", f"{fds0} -> {fds1}", "flat (< +16)", fds1 <= fds0 + 16),
        Check(s, "process alive", str(alive), "True", alive),
    ]


def reload_storm(chaos: Chaos) -> list[Check]:
    checks: list[Check] = []
    for grace in ("0", "0.2", "30"):
        # 50 reloads per grace; 100 at grace 0, the RSS-after-100-reloads figure.
        reloads = max(4, round((100 if grace == "0" else 50) * chaos.scale))
        server = chaos.server(f"reload-{grace}", "--model", "sentiment", "--shutdown-grace-s", grace)
        server.start()
        done = False
        statuses: Counter[int] = Counter()
        rss: list[float] = []
        try:
            rss.append(resources(server)[0])

            async def storm() -> list[Outcome]:
                nonlocal done
                loop = asyncio.get_running_loop()
                clients = asyncio.create_task(
                    closed_loop(server.url, 8, lambda: done, lambda: ("/v1/sentiment", {"inputs": "steady"}))
                )
                async with httpx.AsyncClient(base_url=server.url, timeout=120) as c:
                    for i in range(reloads):
                        await loop.run_in_executor(None, chaos.publish, "sentiment", i % 2 == 1)
                        r = await c.post("/v1/models/sentiment/reload")
                        statuses[r.status_code] += 1
                        if r.status_code == 200:
                            await loop.run_in_executor(None, chaos.prune, "sentiment", 2)
                        if i == reloads // 2:
                            rss.append(resources(server)[0])
                done = True
                return await clients

            outcomes = asyncio.run(storm())
            rss.append(resources(server)[0])
        finally:
            done = True
            server.stop()
        failed = [o for o in outcomes if o.status != 200]
        s = f"reload, grace {grace} s"
        good, bad = (reloads + 1) // 2, reloads // 2
        checks += [
            Check(
                s,
                "reloads: 200 / 409",
                f"{statuses[200]} / {statuses[409]}",
                f"{good} / {bad}",
                statuses[200] == good and statuses[409] == bad,
            ),
            Check(
                s,
                "client requests, failed",
                f"{len(outcomes)}, {len(failed)} ({codes(failed) or '-'})",
                "0 failed",
                not failed,
            ),
            Check(
                s,
                "RSS MiB start -> half -> end",
                " -> ".join(f"{x:.0f}" for x in rss),
                "flat after warm-up",
                rss[-1] < rss[1] * 1.25 + 20,
                timing=True,
            ),
        ]
    return checks


def restart_with_a_corrupt_newest(chaos: Chaos) -> list[Check]:
    for version in chaos.versions("sentiment"):  # what a reload storm left: only the good one
        if version != chaos.good["sentiment"]:
            chaos.remove("sentiment", version)
    good = chaos.good["sentiment"]
    bad = chaos.publish("sentiment", corrupt=True)
    server = chaos.server("restart", "--model", "sentiment")
    try:
        seconds = server.start()
        body = httpx.get(server.url + "/v1/models", timeout=10).json()
    finally:
        server.stop()
        chaos.remove("sentiment", bad)
    served = body["models"][0]["version"]
    refused = [(r["version"], "..." + r["reason"][-60:]) for r in body["refused"]]
    s = "restart, corrupt newest"
    return [
        Check(s, "ready in (s)", f"{seconds:.2f}", "", None, timing=True),
        Check(s, "version served", str(served), f"v{good} (previous)", served == good),
        Check(s, "refused in /v1/models", str(refused), f"v{bad}", [v for v, _ in refused] == [bad]),
    ]


def sigterm(chaos: Chaos) -> list[Check]:
    checks: list[Check] = []
    for grace in ("5", "0"):
        server = chaos.server(f"sigterm-{grace}", "--model", "sentiment", "--shutdown-grace-s", grace)
        server.start()
        assert server.proc is not None
        before_s = chaos.seconds(4, 1)
        rate = 40.0

        async def run() -> tuple[list[Outcome], float, float]:
            loop = asyncio.get_running_loop()
            load = asyncio.create_task(
                open_loop(
                    server.url,
                    rate,
                    before_s + float(grace) + 2,
                    lambda: ("/v1/sentiment", {"inputs": sentence(chaos.rng, 20)}),
                    keepalive=False,
                )
            )
            await asyncio.sleep(before_s)
            assert server.proc is not None
            signalled = time.perf_counter()
            server.proc.send_signal(signal.SIGTERM)
            unready = float("nan")
            async with httpx.AsyncClient(base_url=server.url, timeout=2) as c:
                while time.perf_counter() - signalled < 5:
                    try:
                        if (await c.get("/readyz")).status_code != 200:
                            break
                    except httpx.HTTPError:
                        break  # the listener is closed: no new connection is accepted
                    await asyncio.sleep(0.005)
                unready = time.perf_counter() - signalled
            code = await loop.run_in_executor(None, server.proc.wait, 60)
            exited = time.perf_counter() - signalled
            assert code is not None
            return await load, unready, exited if code == 0 else -exited

        outcomes, unready, exited = asyncio.run(run())
        server.stop()
        answered = [o for o in outcomes if o.status]
        refused = [o for o in outcomes if o.error == "ConnectError"]
        lost = [o for o in outcomes if not o.status and o.error != "ConnectError"]
        s = f"SIGTERM, grace {grace} s"
        checks += [
            Check(
                s,
                "/readyz not 200 after the signal (ms)",
                f"{unready * 1000:.0f}",
                "at once",
                unready < 1.0,
                timing=True,
            ),
            Check(
                s,
                "answered / refused at connect / lost",
                f"{len(answered)} / {len(refused)} / {len(lost)}" + (f" ({codes(lost)})" if lost else ""),
                "0 lost" if grace != "0" else "",
                not lost if grace != "0" else None,
            ),
            Check(s, "answers by status", codes(answered), "", None),
            Check(
                s,
                "exit code 0, after (s)",
                f"{exited:.2f}",
                f"within {grace} s + exit",
                0 <= exited < float(grace) + 5,
            ),
        ]
    return checks


def faults(chaos: Chaos) -> list[Check]:
    checks: list[Check] = []
    for fault in ("raise", "shape", "hang"):
        server = chaos.server(f"fault-{fault}", "--debug-fault", f"sentiment={fault}")
        server.start()
        try:

            async def run() -> tuple[list[Outcome], list[Outcome]]:
                async with httpx.AsyncClient(base_url=server.url, timeout=30) as c:
                    bad = [
                        send(c, "/v1/sentiment", {"inputs": f"text {i}"}, **{"x-deadline-ms": "1000"})
                        for i in range(6)
                    ]
                    good = [send(c, "/v1/ner", {"inputs": f"Angela Merkel in Paris {i}"}) for i in range(6)]
                    results = await asyncio.gather(*bad, *good)
                    return list(results[:6]), list(results[6:])

            first, others = asyncio.run(run())
            time.sleep(1.5)  # a hung run is abandoned HANG_GRACE_S after its deadline
            after, _ = asyncio.run(run())
            ready = httpx.get(server.url + "/readyz", timeout=10)
            errors = metric(server.url, "slimserve_runner_errors_total", {"model": "sentiment"})
            hangs = metric(server.url, "slimserve_runner_hangs_total", {"model": "sentiment"})
        finally:
            server.stop()
        s = f"fault: runner {fault}s" if fault != "shape" else "fault: wrongly shaped logits"
        expected = {"raise": "500 internal", "shape": "500 internal", "hang": "504 then 500 (unhealthy)"}[
            fault
        ]
        worst = max(o.seconds for o in first + after)
        ok_codes = {o.status for o in first + after} <= ({500} if fault != "hang" else {500, 504})
        checks += [
            Check(s, "faulty model: answers", codes(first + after), expected, ok_codes),
            Check(
                s,
                "faulty model: slowest answer (s)",
                f"{worst:.2f}",
                "deadline 1 s + 1 s at most",
                worst < 2.5,
                timing=True,
            ),
            Check(
                s,
                "other model (ner): answers",
                codes(others),
                "all 200",
                all(o.status == 200 for o in others),
            ),
            Check(
                s,
                "/readyz after",
                str(ready.status_code),
                "503 if hung, else 200",
                ready.status_code == (503 if fault == "hang" else 200),
            ),
            Check(
                s,
                "runner errors / hangs counted",
                f"{errors:.0f} / {hangs:.0f}",
                "> 0",
                (hangs if fault == "hang" else errors) > 0,
            ),
        ]
    return checks


def badly_behaved_clients(chaos: Chaos) -> list[Check]:
    rng = chaos.rng
    server = chaos.server("clients", "--body-timeout-s", "2", "--max-inputs", "32")
    server.start()
    host, port = server.url.removeprefix("http://").split(":")
    seconds = chaos.seconds(10, 3)
    ner_body = {"inputs": [long_text(rng, 2000) for _ in range(20)]}
    try:
        before = metric(server.url, "slimserve_batch_size_sum", {"model": "ner"})

        def loris() -> str:
            sock = socket.create_connection((host, int(port)), timeout=seconds + 10)
            try:
                sock.sendall(b"POST /v1/sentiment HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 1000\r\n\r\n{")  # fmt: skip
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    try:
                        sock.sendall(b" ")
                    except OSError:
                        break
                    time.sleep(0.5)
                    sock.setblocking(False)
                    try:
                        answer = sock.recv(4096).decode(errors="replace")
                        return answer.split("\r\n")[0]
                    except BlockingIOError:
                        pass
                    finally:
                        sock.setblocking(True)
                return "no answer"
            finally:
                sock.close()

        async def run() -> tuple[list[str], list[Outcome], int]:
            loop = asyncio.get_running_loop()
            lorises = [loop.run_in_executor(None, loris) for _ in range(20)]
            end = time.monotonic() + seconds
            good = asyncio.create_task(
                closed_loop(
                    server.url,
                    4,
                    lambda: time.monotonic() > end,
                    lambda: ("/v1/sentiment", {"inputs": sentence(rng, 15)}),
                )
            )
            vanished = 0
            async with httpx.AsyncClient(base_url=server.url, timeout=0.05) as c:
                for _ in range(30):
                    try:
                        await c.post("/v1/ner", json=ner_body)
                    except httpx.TimeoutException:
                        vanished += 1
            return list(await asyncio.gather(*lorises)), await good, vanished

        loris_answers, good, vanished = asyncio.run(run())
        time.sleep(1)
        gone = metric(server.url, "slimserve_requests_total", {"code": "499"})
        rows_run = metric(server.url, "slimserve_batch_size_sum", {"model": "ner"}) - before
    finally:
        server.stop()
    s = "slow and vanishing clients"
    rows_sent = vanished * 20
    return [
        Check(
            s,
            "slow-loris bodies (20): answers",
            dict(Counter(loris_answers)).__repr__(),
            "408 request_timeout",
            all(a.startswith("HTTP/1.1 408") for a in loris_answers),
        ),
        Check(s, "well-behaved clients: answers", codes(good), "all 200", all(o.status == 200 for o in good)),
        Check(
            s, "well-behaved clients: p99 (ms)", f"{ms([o.seconds for o in good]):.0f}", "", None, timing=True
        ),
        Check(
            s,
            "vanished mid-queue: counted 499",
            f"{gone:.0f} of {vanished}",
            "counted",
            gone > 0,
            timing=True,
        ),
        Check(
            s,
            "NER rows run / sent by vanished clients",
            f"{rows_run:.0f} / {rows_sent}",
            "work dropped",
            rows_run < rows_sent,
            timing=True,
        ),
    ]


RUNNERS: dict[str, Callable[[Chaos], list[Check]]] = {
    "overload": overload,
    "reload": reload_storm,
    "restart": restart_with_a_corrupt_newest,
    "sigterm": sigterm,
    "faults": faults,
    "clients": badly_behaved_clients,
}


def run(store: Path, scale: float = 1.0, only: Sequence[str] = SCENARIOS) -> list[Check]:
    with tempfile.TemporaryDirectory(prefix="slimserve-chaos-") as tmp:
        chaos = Chaos(store, scale, Path(tmp))
        checks: list[Check] = []
        for name in only:
            checks += RUNNERS[name](chaos)
        return checks


def table(checks: Sequence[Check]) -> str:
    lines = ["| scenario | measure | value | promise | held |", "| --- | --- | --- | --- | --- |"]
    for c in checks:
        held = "" if c.ok is None else ("yes" if c.ok else "**no**")
        lines.append(f"| {c.scenario} | {c.measure} | {c.value} | {c.expect} | {held} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, default=Path(os.environ.get("SLIMSERVE_STORE", "model_store")))
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every phase's length")
    parser.add_argument(
        "--only", default=",".join(SCENARIOS), help=f"comma-separated, of {','.join(SCENARIOS)}"
    )
    args = parser.parse_args(argv)
    only = [s for s in args.only.split(",") if s]
    unknown = sorted(set(only) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenarios {unknown}")
    load = os.getloadavg()
    started = time.perf_counter()
    checks = run(args.store, args.scale, only)
    print(table(checks))
    print(
        f"\n{len(checks)} measures in {time.perf_counter() - started:.0f} s; {os.cpu_count()} CPUs; "
        f"load average before {load[0]:.2f}, after {os.getloadavg()[0]:.2f}"
    )
    return 0 if all(c.ok is not False for c in checks if not c.timing) else 1


if __name__ == "__main__":
    raise SystemExit(main())
