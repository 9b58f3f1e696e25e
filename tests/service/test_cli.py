"""`slimserve serve`'s flags are derived from the Settings object: every field is a flag, parsed into it."""

from __future__ import annotations

from pathlib import Path

import pytest
from slimserve.service import cli
from slimserve.service.settings import Settings
from typer.testing import CliRunner

from slimserve.cli import app


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[Settings]:
    seen: list[Settings] = []

    def run_server(settings: Settings) -> int:
        seen.append(settings)
        return 0

    monkeypatch.setattr(cli, "run_server", run_server)
    return seen


def test_every_setting_is_a_flag() -> None:
    result = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for name in Settings.model_fields:
        flag = "--" + cli.SINGULAR.get(name, name.replace("_", "-"))
        assert flag in result.output, flag


def test_flags_reach_the_settings(captured: list[Settings], tmp_path: Path) -> None:
    args = [
        "serve", "--store", str(tmp_path), "--port", "9001", "--model", "ner", "--model", "intent",
        "--pin", "intent=3", "--variant", "ner=fp32", "--no-fast-path", "--deadline-ms", "2500",
        "--api-key", "k1", "--max-request-tokens", "4096", "--device", "cpu", "--runner-threads", "1",
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    (s,) = captured
    assert (s.store, s.port, s.models, s.pins, s.variants) == (
        tmp_path,
        9001,
        ["ner", "intent"],
        {"intent": 3},
        {"ner": "fp32"},
    )
    assert (s.fast_path, s.deadline_ms, s.max_request_tokens, s.device, s.runner_threads) == (
        False,
        2500.0,
        4096,
        "cpu",
        1,
    )
    assert [k.get_secret_value() for k in s.api_keys] == ["k1"]


def test_unset_flags_leave_environment_and_defaults(
    captured: list[Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLIMSERVE_MAX_BATCH_SIZE", "7")
    result = CliRunner().invoke(app, ["serve", "--max-batch-size", "9"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, ["serve"])
    assert [s.max_batch_size for s in captured] == [9, 7]
    assert captured[1].host == Settings.model_fields["host"].default


@pytest.mark.parametrize(
    "args",
    [
        ["--pin", "intent"],
        ["--pin", "intent=x"],
        ["--port", "70000"],
        ["--device", "tpu"],
        ["--max-queue", "0"],
    ],
)
def test_bad_values_exit_2(captured: list[Settings], args: list[str]) -> None:
    result = CliRunner().invoke(app, ["serve", *args])
    assert result.exit_code == 2, (args, result.output)
    assert not captured


def test_variant_flag_sets_every_model_or_one(captured: list[Settings]) -> None:
    result = CliRunner().invoke(app, ["serve", "--variant", "best", "--variant", "ner=fp32"])
    assert result.exit_code == 0, result.output
    (s,) = captured
    assert (s.variant, s.variants) == ("best", {"ner": "fp32"})
    assert CliRunner().invoke(app, ["serve", "--variant", "best", "--variant", "int8"]).exit_code == 2
