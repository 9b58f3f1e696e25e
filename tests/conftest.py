"""Shared fixtures. Tiny random models are built here; the real MiniLM only where realism matters."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA_DIR = Path(os.environ.get("SLIMSERVE_DATA_DIR", Path(__file__).parents[2] / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "sst2" / "train.tsv").is_file():
        pytest.skip(f"data mirror not found at {DATA_DIR}")
    return DATA_DIR


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """A real published store (sentiment, intent) built once per session from tiny random BERTs
    through the real build pipeline; see tests/tiny.py. Treat it as read-only."""
    from tests.tiny import build_tiny_store

    return build_tiny_store(tmp_path_factory.mktemp("tiny_store"))
