"""bench/chaos.py at a tiny scale on the fake store: every behaviour it promises holds (timings are
the benchmark's business, never asserted here)."""

from __future__ import annotations

from pathlib import Path

import pytest
from slimserve.bench import chaos

from tests.service import fakestore

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fakestore.build(tmp_path_factory.mktemp("chaos-store"))


@pytest.mark.parametrize("scenario", chaos.SCENARIOS)
def test_scenario_behaviours_hold(store: Path, scenario: str) -> None:
    checks = chaos.run(store, scale=0.02, only=[scenario])
    assert checks
    broken = [c for c in checks if c.ok is False and not c.timing]
    assert not broken, chaos.table(broken)
    assert "| scenario |" in chaos.table(checks)


def test_the_command_line_refuses_an_unknown_scenario(store: Path) -> None:
    with pytest.raises(SystemExit):
        chaos.main(["--store", str(store), "--only", "nope"])
