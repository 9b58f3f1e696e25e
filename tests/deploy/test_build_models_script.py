"""docker/build-models.sh, the build image's default command, run here with `slimserve` replaced by a
recorder on PATH: the script's own decisions (which models, which data, which store) are what is tested;
`slimserve build` itself is tested in tests/build."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "docker" / "build-models.sh"


def _run(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    calls = tmp_path / "calls.txt"
    recorder = bin_dir / "slimserve"
    recorder.write_text(f'#!/bin/sh\necho "$* data=${{SLIMSERVE_DATA_DIR:-hub}}" >> {calls}\n')
    recorder.chmod(recorder.stat().st_mode | stat.S_IEXEC)
    full_env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "RECIPES_DIR": "/recipes"} | env
    result = subprocess.run(["sh", str(SCRIPT)], env=full_env, capture_output=True, text=True, timeout=30)
    return result, calls.read_text().splitlines() if calls.exists() else []


def test_builds_only_the_models_the_store_lacks_from_the_mounted_data(tmp_path: Path) -> None:
    store = tmp_path / "store"
    (store / "sentiment" / "1").mkdir(parents=True)
    data = tmp_path / "data"
    (data / "banking77").mkdir(parents=True)
    (data / "banking77" / "train.csv").write_text("text,label\n")
    result, calls = _run(tmp_path, SLIMSERVE_STORE=str(store), DATA_MOUNT=str(data))
    assert result.returncode == 0, result.stderr
    assert calls == [
        f"build /recipes/intent.yaml --profile quick --store {store} data={data}",
        f"build /recipes/ner.yaml --profile quick --store {store} data={data}",
        f"models --store {store} data={data}",
    ]


def test_without_a_data_mirror_the_recipes_use_the_hub_and_force_rebuilds(tmp_path: Path) -> None:
    store = tmp_path / "store"
    (store / "sentiment" / "1").mkdir(parents=True)
    result, calls = _run(
        tmp_path,
        SLIMSERVE_STORE=str(store),
        DATA_MOUNT=str(tmp_path / "empty"),
        SLIMSERVE_DATA_DIR="/somewhere/else",
        MODELS="sentiment",
        PROFILE="full",
        FORCE="1",
    )
    assert result.returncode == 0, result.stderr
    assert calls[0] == f"build /recipes/sentiment.yaml --profile full --store {store} data=hub"
    assert "Hugging Face Hub" in result.stderr


def test_a_failed_build_fails_the_script(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    failing = bin_dir / "slimserve"
    failing.write_text("#!/bin/sh\nexit 1\n")
    failing.chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "SLIMSERVE_STORE": str(tmp_path / "store")}
    result = subprocess.run(["sh", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
