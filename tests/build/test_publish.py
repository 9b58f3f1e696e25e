"""Atomic publish: a version appears whole or not at all, and no temporary directory survives."""

from __future__ import annotations

import errno
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from slimserve.build import publish as publish_mod
from slimserve.build.errors import PublishError
from slimserve.build.publish import publish
from slimserve.service.store import DataInfo, Manifest, Parity, Variant, read_manifest, sha256_file, versions


def _writer(fail_after_file: bool = False):  # type: ignore[no-untyped-def]
    def write(directory: Path, version: int) -> Manifest:
        model = directory / "model.fp32.onnx"
        model.write_bytes(b"not really onnx")
        if fail_after_file:
            raise OSError(errno.ENOSPC, "No space left on device")
        manifest = Manifest(
            name="m",
            version=version,
            task="sequence-classification",
            labels=["a", "b"],
            max_seq_len=16,
            base_model="x",
            data=DataInfo(source="s", sha256="0" * 64),
            recipe={},
            created_at=datetime.now(UTC),
            variants={
                "fp32": Variant(
                    file=model.name,
                    sha256=sha256_file(model),
                    bytes=model.stat().st_size,
                    metrics={"accuracy": 1.0},
                    parity=Parity(max_abs_logit_diff=0.0, label_agreement=1.0),
                )
            },
        )
        manifest.write(directory)
        return manifest

    return write


def _leftovers(store: Path) -> list[str]:
    return sorted(p.name for p in store.rglob("*"))


def test_versions_count_up(tmp_path: Path) -> None:
    assert publish(tmp_path, "m", _writer())[0] == 1
    version, path = publish(tmp_path, "m", _writer())
    assert version == 2 and path == tmp_path / "m" / "2"
    assert read_manifest(path).version == 2
    assert versions(tmp_path, "m") == [1, 2]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_full_disk_while_writing_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(PublishError, match=r"disk is full.*Nothing was published"):
        publish(tmp_path, "m", _writer(fail_after_file=True))
    assert _leftovers(tmp_path) == []


def test_failed_rename_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    publish(tmp_path, "m", _writer())
    before = _leftovers(tmp_path)

    def broken_rename(src: object, dst: object) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(publish_mod.os, "rename", broken_rename)
    with pytest.raises(PublishError, match="Input/output error"):
        publish(tmp_path, "m", _writer())
    assert _leftovers(tmp_path) == before
    assert versions(tmp_path, "m") == [1]


def test_a_version_taken_meanwhile_is_skipped(tmp_path: Path) -> None:
    inner = _writer()

    def racing(directory: Path, version: int) -> Manifest:
        # Another build publishes this very number while we are still writing.
        (tmp_path / "m" / str(version)).mkdir(parents=True)
        (tmp_path / "m" / str(version) / "manifest.json").write_text("{}", encoding="utf-8")
        return inner(directory, version)

    version, path = publish(tmp_path, "m", racing)
    assert version == 2
    assert read_manifest(path).version == 2


def test_unwritable_store_is_a_publish_error(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        blocker = tmp_path / "file"
        blocker.write_text("x", encoding="utf-8")
        store = blocker / "store"  # a path below a regular file cannot be created, even by root
    else:
        store = tmp_path / "ro"
        store.mkdir(mode=0o500)
    with pytest.raises(PublishError, match="cannot write to the model store"):
        publish(store, "m", _writer())


def test_every_served_file_is_checksummed_in_the_manifest(tmp_path: Path) -> None:
    """tokenizer.json and ONNX external data are covered by a sha256, like the variant files."""
    inner = _writer()

    def write(directory: Path, version: int) -> Manifest:
        (directory / "tokenizer.json").write_text("{}", encoding="utf-8")
        (directory / "model.fp32.onnx.data").write_bytes(b"weights")
        (directory / "report.md").write_text("# report", encoding="utf-8")
        return inner(directory, version)

    _, path = publish(tmp_path, "m", write)
    files = read_manifest(path).files
    assert files == {
        "tokenizer.json": sha256_file(path / "tokenizer.json"),
        "model.fp32.onnx.data": sha256_file(path / "model.fp32.onnx.data"),
    }
