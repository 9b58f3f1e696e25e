"""Publish: write a model version into the store atomically.

Everything is written into a temporary directory ``<store>/.<name>.tmp-XXXX`` (same filesystem as
the store, so the final step is a rename), checksummed, and renamed to ``<store>/<name>/<version>``.
A crash or an error before the rename leaves no version visible; the temporary directory is
removed on any failure. Two concurrent builds of one model cannot take the same version: the
rename of the loser fails (the target exists and is not empty) and it retries with the next number.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

from slimserve.build.errors import PublishError
from slimserve.service.store import MANIFEST, PYTORCH_DIR, Manifest, sha256_file, versions

MAX_RACE_RETRIES = 5
# Written beside a version for people, never read by the service: left out of the manifest's `files`.
NOT_SERVED = {MANIFEST, "report.md", "frontier.png", "frontier.svg"}

# Fills the temporary directory; receives it and the version number, returns the manifest.
Writer = Callable[[Path, int], Manifest]


def next_version(store: Path, name: str) -> int:
    found = versions(store, name)
    return (found[-1] + 1) if found else 1


def copy_files(files: Mapping[str, Path], directory: Path) -> dict[str, str]:
    """Copy artefacts under their published names; returns name -> sha256."""
    digests = {}
    for published, source in files.items():
        target = directory / published
        shutil.copyfile(source, target)
        digests[published] = sha256_file(target)
    return digests


def served_files(directory: Path, manifest: Manifest) -> dict[str, str]:
    """sha256 of every file the service may read besides the variant files (which carry their own):
    tokenizer.json and what it needs, ONNX external data. The service checks them before serving."""
    variant_files = {v.file for v in manifest.variants.values()}
    found = {}
    for entry in sorted(directory.rglob("*")):
        relative = entry.relative_to(directory)
        if not entry.is_file() or relative.parts[0] == PYTORCH_DIR or relative.name.startswith("."):
            continue
        name = relative.as_posix()
        if name not in NOT_SERVED and name not in variant_files:
            found[name] = sha256_file(entry)
    return found


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(store: Path, name: str, write: Writer) -> tuple[int, Path]:
    """Run ``write`` in a fresh temporary directory, then rename it into place as the next version."""
    try:
        store.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=store))
        # mkdtemp makes 0700; a published version must be readable by the serving user (the images
        # run as non-root over a store that a build container, often root, wrote).
        tmp.chmod(0o755)
    except OSError as exc:
        raise PublishError(f"{store}: cannot write to the model store ({exc.strerror or exc})") from exc
    model_dir = store / name
    created_model_dir = False
    try:
        version = next_version(store, name)
        manifest = write(tmp, version)
        manifest = manifest.model_copy(update={"files": {**served_files(tmp, manifest), **manifest.files}})
        manifest.write(tmp)
        for entry in tmp.rglob("*"):
            if entry.is_file():
                with entry.open("rb") as fh:
                    os.fsync(fh.fileno())
        if not model_dir.is_dir():
            model_dir.mkdir()
            created_model_dir = True
        for _ in range(MAX_RACE_RETRIES):
            target = model_dir / str(version)
            try:
                os.rename(tmp, target)
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                # Another build took this number between our read and our rename.
                version = next_version(store, name)
                manifest = manifest.model_copy(update={"version": version})
                manifest.write(tmp)
                continue
            _fsync_dir(model_dir)
            return version, target
        raise PublishError(f"{model_dir}: could not claim a version number after {MAX_RACE_RETRIES} tries")
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if created_model_dir:
            with contextlib.suppress(OSError):
                model_dir.rmdir()
        if isinstance(exc, OSError):
            hint = " (the disk is full)" if exc.errno == errno.ENOSPC else ""
            raise PublishError(
                f"{store}: publishing {name!r} failed{hint}: {exc.strerror or exc}. Nothing was published"
            ) from exc
        raise
