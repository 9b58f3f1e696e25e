"""The frontier report: the table, the Pareto frontier, the PNG + SVG plot and `slimserve report`."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from slimserve.build.report import arch_summary, markdown_table, pareto, rows, write_report
from slimserve.service.store import Architecture, DataInfo, Manifest, Policy, Variant
from typer.testing import CliRunner

from slimserve.cli import app

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def variant(
    precision: str, accuracy: float, b32_ms: float | None, form: str = "teacher", **kw: Any
) -> Variant:
    layers = 6 if form == "teacher" else 3
    return Variant(
        file=f"model.{precision}.onnx",
        sha256="0" * 64,
        bytes=kw.get("size", 90_000_000 if precision == "fp32" else 23_000_000),
        metrics={"accuracy": accuracy, "macro_f1": accuracy},
        parity={"max_abs_logit_diff": 0.0, "label_agreement": 1.0},  # type: ignore[arg-type]
        latency_ms={"batch_1": 5.0, "batch_32": b32_ms} if b32_ms else {},
        precision=precision,  # type: ignore[arg-type]
        form=form,
        architecture=Architecture(
            layers=layers,
            heads=kw.get("heads", [12] * layers),
            ffn=[1536] * layers,
            parameters=22_700_000 if layers == 6 else 17_400_000,
            flops_per_token=2_900_000_000 // (6 // layers),
        ),
    )


def manifest(version: int = 1, **changes: Any) -> Manifest:
    fields: dict[str, Any] = {
        "name": "sentiment",
        "version": version,
        "task": "sequence-classification",
        "labels": ["negative", "positive"],
        "max_seq_len": 128,
        "base_model": "minilm",
        "data": DataInfo(source="sst2", sha256="0" * 64),
        "recipe": {},
        "created_at": datetime(2026, 12, 3, tzinfo=UTC),
        "variants": {
            "fp32": variant("fp32", 0.907, 400.0),
            "int8": variant("int8", 0.9025, 200.0),
            "l3-fp32": variant("fp32", 0.889, 200.0, form="l3", size=70_000_000),
            "l3-int8": variant("int8", 0.884, 100.0, form="l3", size=18_000_000),
            "l3p-int8": variant("int8", 0.86, None, form="l3p", heads=[8, 12, 10]),  # not timed
        },
        "recommended": {"cpu": "l3-int8", "cuda": "l3-fp32"},
        "policy": Policy(metric="accuracy", min_relative_quality=0.97, teacher=0.907),
    }
    return Manifest(**(fields | changes))


def test_rows_measure_drops_against_the_teacher() -> None:
    by_name = {r.name: r for r in rows(manifest())}
    assert by_name["fp32"].drop_points == pytest.approx(0.0)
    assert by_name["l3-int8"].drop_points == pytest.approx(-2.3)
    assert by_name["l3-int8"].throughput == pytest.approx(320.0)
    assert by_name["l3-int8"].recommended == ("cpu",)
    assert by_name["l3p-int8"].throughput is None


def test_table_has_every_variant_and_column() -> None:
    table = markdown_table(manifest())
    lines = table.splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == [
        "variant",
        "precision",
        "form",
        "accuracy",
        "drop (points)",
        "batch-1 ms",
        "batch-32 seq/s",
        "MB",
        "parameters",
        "FLOPs/token",
        "recommended",
    ]
    assert set(lines[1]) <= {"|", "-", " "}
    cells = {
        line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")] for line in lines[2:]
    }
    assert list(cells) == ["fp32", "int8", "l3-fp32", "l3-int8", "l3p-int8"]
    assert cells["l3-int8"] == [
        "l3-int8",
        "int8",
        "l3",
        "0.8840",
        "-2.30",
        "5.00",
        "320",
        "18.0",
        "17.4M",
        "1.4G",
        "cpu",
    ]
    assert cells["l3p-int8"][6] == "-"


def test_pareto_frontier() -> None:
    points = [(80.0, 90.7), (160.0, 90.25), (160.0, 88.9), (320.0, 88.4), (100.0, 85.0)]
    assert pareto(points) == [0, 1, 3]


def test_arch_summary_shows_pruned_ranges() -> None:
    arch = Architecture(
        layers=3,
        heads=[8, 12, 10],
        ffn=[1024, 1536, 1536],
        parameters=17_400_000,
        flops_per_token=1_234_000_000,
    )
    assert arch_summary(arch) == "3L 8-12h 1024-1536ffn 17.4M params 1.2G FLOPs/token"
    assert arch_summary(None) == "-"


def test_write_report_writes_the_table_a_png_and_an_svg(tmp_path: Path) -> None:
    written = write_report(manifest(), tmp_path)
    assert [p.name for p in written] == ["report.md", "frontier.png", "frontier.svg"]
    text = (tmp_path / "report.md").read_text()
    assert "| l3-int8 " in text and "frontier.svg" in text and "0.97 x teacher 0.9070" in text
    assert "refused" not in text  # nothing was


def test_the_report_lists_what_the_gate_refused(tmp_path: Path) -> None:
    reason = "accuracy 0.8349 is under 97% of the fp32 teacher's 0.9070"
    write_report(manifest(refused={"l2-int8": reason}), tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert f"- `l2-int8`: {reason}" in text.split("refused by the quality gate")[1]
    assert "| l2-int8 " not in text  # not a published row
    assert (tmp_path / "frontier.png").read_bytes()[:8] == PNG_MAGIC
    root = ET.parse(tmp_path / "frontier.svg").getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    svg = (tmp_path / "frontier.svg").read_text()
    assert "recommended (cpu)" in svg and "Pareto frontier" in svg


def test_a_version_without_timings_or_policy_still_reports(tmp_path: Path) -> None:
    bare = {
        n: v.model_copy(update={"latency_ms": {}, "architecture": None})
        for n, v in manifest().variants.items()
    }
    written = write_report(manifest(variants=bare, recommended={}, policy=None), tmp_path)
    assert all(p.stat().st_size > 0 for p in written)
    assert "No quality policy recorded" in (tmp_path / "report.md").read_text()


# -- slimserve report ----------------------------------------------------------------------------------


def publish(store: Path, m: Manifest) -> None:
    directory = store / m.name / str(m.version)
    directory.mkdir(parents=True)
    m.write(directory)


def test_cli_prints_the_table_and_writes_the_plot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "store"
    publish(store, manifest(1))
    publish(store, manifest(2))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["report", "sentiment", "--store", str(store)])
    assert result.exit_code == 0, result.output
    assert "sentiment v2" in result.output and "| l3-int8 " in result.output
    assert (tmp_path / "sentiment-v2-frontier.png").read_bytes()[:8] == PNG_MAGIC
    assert (tmp_path / "sentiment-v2-frontier.svg").is_file()

    out = tmp_path / "out"
    monkeypatch.setenv("SLIMSERVE_STORE", str(store))
    result = CliRunner().invoke(app, ["report", "sentiment", "--version", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["sentiment-v1-frontier.png", "sentiment-v1-frontier.svg"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["report", "nope"], "no model 'nope'"),
        (["report", "sentiment", "--version", "7"], "no version 7"),
    ],
)
def test_cli_missing_model_or_version_is_exit_1(tmp_path: Path, args: list[str], message: str) -> None:
    store = tmp_path / "store"
    publish(store, manifest(1))
    result = CliRunner().invoke(app, [*args, "--store", str(store), "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1  # one paragraph


def test_cli_usage(tmp_path: Path) -> None:
    assert CliRunner().invoke(app, ["report"]).exit_code == 2
    assert CliRunner().invoke(app, ["report", "x", "--version", "0"]).exit_code == 2
    help_text = CliRunner().invoke(app, ["report", "--help"]).output
    assert "--version" in help_text and "--out" in help_text and "SLIMSERVE_STORE" in help_text


def test_models_lists_every_version_with_recommendations_and_architecture(tmp_path: Path) -> None:
    store = tmp_path / "store"
    publish(store, manifest(1))
    publish(store, manifest(2, recommended={"cpu": "int8", "cuda": "int8"}))
    result = CliRunner().invoke(app, ["models", "--store", str(store)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == [
        "name", "task", "version", "variant", "precision", "form", "architecture", "MB", "metrics",
        "recommended",
    ]  # fmt: skip
    v1 = lines[1:6]
    assert v1[0].split()[:6] == ["sentiment", "sequence-classification", "1", "fp32", "fp32", "teacher"]
    assert "6L 12h 1536ffn 22.7M params 2.9G FLOPs/token" in v1[0]
    assert v1[3].split()[:3] == ["l3-int8", "int8", "l3"] and v1[3].rstrip().endswith("cpu")
    assert v1[2].rstrip().endswith("cuda") and "3L 8-12h" in v1[4]
    assert lines[6].split()[:2] == ["2", "fp32"] and lines[7].rstrip().endswith("cpu,cuda")


def test_token_classification_reports_f1(tmp_path: Path) -> None:
    ner = {
        n: v.model_copy(update={"metrics": {"f1": v.metrics["accuracy"] - 0.01}})
        for n, v in manifest().variants.items()
    }
    m = manifest(
        task="token-classification",
        variants=ner,
        policy=Policy(metric="f1", min_relative_quality=0.97, teacher=0.897),
    )
    header = [c.strip() for c in markdown_table(m).splitlines()[0].strip("|").split("|")]
    assert header[3] == "f1"
    assert {r.name: r.drop_points for r in rows(m)}["fp32"] == pytest.approx(0.0)
    write_report(m, tmp_path)
    assert "f1 (%)" in (tmp_path / "frontier.svg").read_text()


def test_cli_without_matplotlib_prints_the_table_and_fails_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    store = tmp_path / "store"
    publish(store, manifest(1))
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    result = CliRunner().invoke(app, ["report", "sentiment", "--store", str(store), "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert "| l3-int8 " in result.stdout
    assert result.stderr.startswith("error: ") and "slimserve[build]" in result.stderr
    assert not list(tmp_path.glob("*.png"))


def test_cli_unwritable_out_is_exit_1(tmp_path: Path) -> None:
    store = tmp_path / "store"
    publish(store, manifest(1))
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = CliRunner().invoke(app, ["report", "sentiment", "--store", str(store), "--out", str(blocker)])
    assert result.exit_code == 1 and result.stderr.startswith("error: ")
    assert "Traceback" not in result.output
