"""A real Prometheus scraping a real `slimserve serve`: the metrics, the dashboard and the rules meet.

Starts the service on the session's tiny store and the Debian `prometheus` binary (installed by
`make sysdeps`) with a generated config that scrapes it every second and loads the project's rules,
sends traffic (successes and client errors), then reads back from Prometheus's HTTP API:
- the p99 of `slimserve_request_duration_seconds` via `histogram_quantile`;
- every PromQL expression of the Grafana dashboard and of the recording and alerting rules, each of
  which must return data.
All waits are bounded polls; nothing asserts on timing.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.deploy.promql import RULES, Expression, dashboard_expressions, rule_expressions

pytestmark = [pytest.mark.slow, pytest.mark.integration]

SCRAPE_INTERVAL = "1s"
WINDOW = "30s"  # what the dashboard's $__rate_interval becomes here (see promql.GRAFANA_VARIABLES)
SENTENCES = [
    "a gorgeous, witty, seductive movie.",
    "the plot is nothing but boilerplate clichés from start to finish.",
    "my card has not arrived yet, when will it be delivered?",
    "I lost my card yesterday",
    "what is the exchange rate for euros to dollars today and is there a fee for it",
    "top up failed again",
]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_until(
    what: str, check: Callable[[], bool], timeout_s: float, process: subprocess.Popen[bytes]
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{what}: the process exited with {process.returncode} before it was ready")
        with contextlib.suppress(httpx.HTTPError):
            if check():
                return
        time.sleep(0.2)
    pytest.fail(f"{what} was not ready within {timeout_s:.0f} s")


@contextlib.contextmanager
def _running(
    command: list[str], log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def _prometheus_binary() -> str:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("the `prometheus` binary is not installed and this run cannot install it: `make sysdeps`")
    return binary


@pytest.fixture(scope="module")
def slimserve_url(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    log = tmp_path_factory.mktemp("slimserve") / "serve.log"
    slimserve = Path(sys.executable).with_name("slimserve")
    command = [
        str(slimserve),
        "serve",
        "--store",
        str(tiny_store),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    with _running(command, log, env) as process:
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_until(
                "slimserve /readyz",
                lambda: httpx.get(f"{url}/readyz", timeout=2).status_code == 200,
                90,
                process,
            )
        except BaseException:
            print(log.read_text(errors="replace")[-4000:])
            raise
        yield url


@pytest.fixture(scope="module")
def prometheus_url(slimserve_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = _prometheus_binary()
    work = tmp_path_factory.mktemp("prometheus")
    port = _free_port()
    config = {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {
                # The job name the compose config and the TargetDown alert use.
                "job_name": "slimserve",
                "static_configs": [{"targets": [slimserve_url.removeprefix("http://")]}],
            }
        ],
    }
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    command = [
        binary,
        f"--config.file={work / 'prometheus.yml'}",
        f"--storage.tsdb.path={work / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    with _running(command, work / "prometheus.log") as process:
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_until(
                "prometheus /-/ready", lambda: httpx.get(f"{url}/-/ready", timeout=2).is_success, 60, process
            )
        except BaseException:
            print((work / "prometheus.log").read_text(errors="replace")[-4000:])
            raise
        yield url


class Traffic:
    """Bounded background load: a request every ~0.1 s until stopped, at most `limit` requests.

    Kept running while expressions are evaluated so every `rate()` window holds fresh samples.
    """

    def __init__(self, url: str, limit: int = 3000) -> None:
        self.url = url
        self.limit = limit
        self.codes: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    def _send(self, client: httpx.Client, i: int) -> None:
        text = SENTENCES[i % len(SENTENCES)]
        requests: list[tuple[str, dict[str, Any]]] = [
            ("/v1/sentiment", {"inputs": text}),
            ("/v1/classify", {"inputs": [text, SENTENCES[(i + 1) % len(SENTENCES)]], "top_k": 3}),
            ("/v1/classify", {"inputs": text, "model": "sentiment"}),
        ]
        if i % 5 == 0:  # client errors, so the error-rate panels have series to show
            requests += [
                ("/v1/classify", {"inputs": text, "model": "no-such-model"}),
                ("/v1/sentiment", {"inputs": []}),
            ]
        for path, body in requests:
            code = client.post(self.url + path, json=body).status_code
            self.codes[code] = self.codes.get(code, 0) + 1

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            for i in range(self.limit):
                if self._stop.is_set():
                    return
                with contextlib.suppress(httpx.HTTPError):
                    self._send(client, i)
                self._stop.wait(0.1)

    def burst(self, requests: int = 48, clients: int = 8) -> None:
        """Concurrent requests so the batcher coalesces some (batch size > 1 shows on the dashboard)."""

        def one(i: int) -> None:
            with contextlib.suppress(httpx.HTTPError):
                httpx.post(
                    f"{self.url}/v1/sentiment", json={"inputs": SENTENCES[i % len(SENTENCES)]}, timeout=10
                )

        threads = [
            threading.Thread(target=lambda c=c: [one(c + k) for k in range(0, requests, clients)])
            for c in range(clients)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def _query(prometheus_url: str, promql: str) -> dict[str, Any]:
    response = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": promql}, timeout=10)
    body: dict[str, Any] = response.json()
    assert body.get("status") == "success", f"Prometheus refused {promql!r}: {body}"
    return body["data"]


def _evaluate_until_data(
    prometheus_url: str, expressions: list[Expression], timeout_s: float
) -> dict[str, str]:
    """Poll each expression until it returns data; what is still empty at the deadline, with why."""
    pending = {e.source: e.promql for e in expressions}
    deadline = time.monotonic() + timeout_s
    while pending and time.monotonic() < deadline:
        for source, promql in list(pending.items()):
            if _query(prometheus_url, promql)["result"]:
                del pending[source]
        if pending:
            time.sleep(1)
    return pending


@pytest.fixture(scope="module")
def traffic(slimserve_url: str, prometheus_url: str) -> Iterator[Traffic]:
    with Traffic(slimserve_url) as load:
        load.burst()
        yield load


def test_prometheus_scrapes_slimserve(prometheus_url: str, traffic: Traffic) -> None:
    missing = _evaluate_until_data(prometheus_url, [Expression("up", 'up{job="slimserve"} == 1')], 30)
    assert not missing, "Prometheus never scraped slimserve successfully"
    targets = httpx.get(f"{prometheus_url}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
    assert [t["health"] for t in targets] == ["up"], targets


def test_p99_latency_reads_back_from_prometheus(prometheus_url: str, traffic: Traffic) -> None:
    promql = (
        f"histogram_quantile(0.99, sum by (le) (rate(slimserve_request_duration_seconds_bucket[{WINDOW}])))"
    )
    deadline = time.monotonic() + 60
    value = math.nan
    while time.monotonic() < deadline:
        result = _query(prometheus_url, promql)["result"]
        if result:
            value = float(result[0]["value"][1])
            if math.isfinite(value):
                break
        time.sleep(1)
    assert math.isfinite(value), f"no finite p99 from {promql!r} (last: {value})"
    # Sane: positive, and below the largest finite bucket a loopback request on a tiny model could need.
    assert 0 < value < 30, value
    assert traffic.codes.get(200, 0) > 0, traffic.codes


def test_every_dashboard_and_rule_expression_returns_data(prometheus_url: str, traffic: Traffic) -> None:
    expressions = dashboard_expressions() + rule_expressions()
    missing = _evaluate_until_data(prometheus_url, expressions, 90)
    assert not missing, (
        f"{len(missing)} of {len(expressions)} expressions returned no data after traffic "
        f"(responses sent: {traffic.codes}):\n" + "\n".join(f"- {s}: {q}" for s, q in missing.items())
    )


def test_rules_load_and_evaluate_without_errors(prometheus_url: str, traffic: Traffic) -> None:
    groups = httpx.get(f"{prometheus_url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    expected = sum(len(group["rules"]) for group in yaml.safe_load(RULES.read_text())["groups"])
    assert len(rules) == expected
    broken = [(r["name"], r.get("lastError")) for r in rules if r["health"] == "err"]
    assert not broken, broken
