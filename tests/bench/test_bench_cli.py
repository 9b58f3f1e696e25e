"""`slimserve bench` end to end, tiny: the real command in a subprocess against a tiny store, slimserve
only, the python client, a handful of requests. It checks that the command runs and reports real,
successful traffic for each task; the figures themselves mean nothing here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from slimserve.bench.cli import report
from slimserve.bench.harness import Phase

from tests.tiny import build_tiny_store

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ner_store(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    return build_tiny_store(tmp_path_factory.mktemp("bench_ner_store"), models=("ner",))


def run_bench(task: str, store: Path, data_dir: Path) -> str:
    cmd = [
        str(Path(sys.executable).parent / "slimserve"), "bench", "--task", task, "--store", str(store),
        "--data-dir", str(data_dir), "--skip-baseline", "--no-cold-start", "--client", "python",
        "--concurrency", "1", "--seconds", "2", "--requests", "20",
    ]  # fmt: skip
    # The limit only bounds a hung run; nothing here asserts on time.
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def slimserve_row(out: str) -> dict[str, str]:
    """The slimserve row of the first table (the phases; ratios and cold start follow)."""
    lines: list[str] = []
    for line in out.splitlines():
        if line.startswith("|"):
            lines.append(line)
        elif lines:
            break
    assert lines, out
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True)) for line in lines]
    ours = [r for r in rows if r.get("server", "").startswith("slimserve")]
    assert len(ours) == 1, out
    return ours[0]


def test_bench_sentiment(tiny_store: Path, data_dir: Path) -> None:
    row = slimserve_row(run_bench("sentiment", tiny_store, data_dir))
    assert row["concurrency"] == "1"
    assert int(row["requests"]) > 0
    assert int(row["errors"]) == 0


def test_bench_ner(ner_store: Path, data_dir: Path) -> None:
    out = run_bench("ner", ner_store, data_dir)
    row = slimserve_row(out)
    assert int(row["requests"]) > 0
    assert int(row["errors"]) == 0
    assert "to /v1/ner" in out


def test_bench_rejects_a_store_without_the_model(tiny_store: Path, data_dir: Path) -> None:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "slimserve"), "bench", "--task", "ner", "--store", str(tiny_store),
         "--data-dir", str(data_dir), "--skip-baseline"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert "no model 'ner'" in done.stderr


def test_the_report_compares_each_server_with_the_baseline_and_the_first_variant_with_the_others() -> None:
    def phase(server: str, rps: float, p50: float, p99: float) -> Phase:
        return Phase(server, 32, int(rps * 10), 0, 10.0, rps, p50, p50, p99, 150.0)

    text = report(
        [
            phase("slimserve recommended", 800.0, 30.0, 60.0),
            phase("slimserve int8", 400.0, 60.0, 90.0),
            phase("baseline fp32", 40.0, 600.0, 900.0),
        ],
        {},
        [],
    )
    rows = {tuple(c.strip() for c in line.split("|")[1:4]): line for line in text.splitlines()}
    assert "| 20.00x | 20.00x | 15.00x |" in rows[("slimserve recommended", "baseline fp32", "32")]
    assert "| 10.00x | 10.00x | 10.00x |" in rows[("slimserve int8", "baseline fp32", "32")]
    assert "| 2.00x | 2.00x | 1.50x |" in rows[("slimserve recommended", "slimserve int8", "32")]
    assert ("slimserve int8", "slimserve recommended", "32") not in rows
