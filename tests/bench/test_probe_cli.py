"""`python -m slimserve.bench.probe`: the build's probe re-run over a published version's variants.
Asserts what the table says about the store (every variant, the int8 reference at 1.00, the manifest's
own figure beside), and that the manifest is left as it was; the timings themselves mean nothing here."""

from __future__ import annotations

from pathlib import Path

import pytest
from slimserve.bench.probe import main


def test_every_variant_is_timed_against_int8_and_the_manifest_is_untouched(
    tiny_store: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tiny_store / "sentiment" / "1" / "manifest.json"
    before = manifest.read_bytes()
    args = ["sentiment", "--store", str(tiny_store), "--data-dir", str(data_dir)]
    args += ["--runs", "2", "--repeats", "1"]
    assert main(args) == 0
    rows = {
        line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("| ") and not line.startswith(("| variant", "| ---"))
    }
    assert set(rows) == {"fp32", "fp16", "int8", "int8-static"}
    assert rows["int8"][2:5] == ["1.00", "1.00", "**1.00**"]  # both runs and the median
    assert all(float(cells[1]) > 0 and cells[-1] != "-" for cells in rows.values())
    assert manifest.read_bytes() == before


def test_a_missing_model_is_a_clear_exit(tmp_path: Path, data_dir: Path) -> None:
    with pytest.raises(SystemExit, match="no published version"):
        main(["sentiment", "--store", str(tmp_path), "--data-dir", str(data_dir)])
