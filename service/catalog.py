"""Reading the model store for serving: which models and versions exist, and one version's files.

Every directory scan runs on a thread of its own with a time limit, never on the event loop: on the
network volumes Kubernetes mounts, a hung mount would otherwise freeze every request, ``/healthz``
included. A scan that fails or times out raises :class:`ReloadFailed` with ``transient=True``.

Errors are classified once here (:func:`describe`): a version refused for its *content* (bad JSON,
checksum, ONNX, labels) stays refused; one refused for an I/O error is tried again later.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from slimserve.service import store
from slimserve.service.errors import ReloadFailed
from slimserve.service.settings import Settings

T = TypeVar("T")

SCAN_TIMEOUT_S = 30.0


def is_transient(exc: BaseException) -> bool:
    """True when an OSError is anywhere in the cause chain: the files may be fine on the next try."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def describe(exc: BaseException) -> str:
    """A one-line cause for logs and the 409 body. Our own errors already name their file."""
    from slimserve.service.engine.runner import RunnerError

    if isinstance(exc, store.StoreError | RunnerError | ReloadFailed):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


class Catalog:
    """What the store offers. Scans run on one dedicated thread, each bounded by ``timeout_s``."""

    def __init__(self, settings: Settings, timeout_s: float = SCAN_TIMEOUT_S) -> None:
        self.settings = settings
        self.timeout_s = timeout_s
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="store-scan")

    async def _off_loop(self, what: str, fn: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that
            # arrives as the scan finishes, and a cancelled poll or start-up would carry on.
            async with asyncio.timeout(self.timeout_s):
                return await loop.run_in_executor(self._pool, functools.partial(fn, *args))
        except TimeoutError:
            raise ReloadFailed(
                f"{what}: the store {self.settings.store} did not answer within {self.timeout_s:.0f} s",
                transient=True,
            ) from None
        except OSError as exc:
            raise ReloadFailed(f"{what}: {exc}", transient=True) from exc

    async def names(self) -> list[str]:
        """The models to serve: every model in the store, or those of the ``models`` setting."""
        names = await self._off_loop("listing models", store.model_names, self.settings.store)
        wanted = self.settings.models
        return [n for n in names if n in wanted] if wanted else names

    async def versions(self, name: str) -> list[int]:
        what = f"listing versions of {name!r}"
        return await self._off_loop(what, store.versions, self.settings.store, name)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def read_version(root: Path, name: str, version: int) -> tuple[Path, store.Manifest]:
    """Blocking: one version's directory and manifest, checked to describe that very version."""
    directory = store.version_dir(root, name, version)
    manifest = store.read_manifest(directory)
    if manifest.name != name or manifest.version != version:
        raise ReloadFailed(
            f"{directory / store.MANIFEST}: says {manifest.name!r} v{manifest.version}, "
            f"but lives at {name}/{version}"
        )
    store.inside(directory, manifest.tokenizer)
    return directory, manifest
