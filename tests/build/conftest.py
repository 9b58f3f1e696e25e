"""Fixtures for the build-stage tests: one tiny random BERT and tiny slices of the real data,
built once per session and shared read-only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.tiny import tiny_base_model, tiny_data, tiny_recipe


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_base_model(tmp_path_factory.mktemp("tiny_base"))


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    return tiny_data(tmp_path_factory.mktemp("tiny_data"), ("sentiment", "intent"))


@pytest.fixture
def write_recipe(tmp_path: Path, tiny_base: Path):  # type: ignore[no-untyped-def]
    """Write a tiny recipe (with overrides) to a YAML file and return its path."""

    def write(name: str = "sentiment", **overrides: Any) -> Path:
        path = tmp_path / f"{name}.yaml"
        base = overrides.pop("base_model", tiny_base)
        path.write_text(yaml.safe_dump(tiny_recipe(name, base, **overrides)), encoding="utf-8")
        return path

    return write
