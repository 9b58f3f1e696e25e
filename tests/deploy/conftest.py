"""Fixtures of the image tests: a buildah storage of the session's own, the stand-in base images made
once per session in it (see buildah.py), and a fresh container of the module's ``image`` per test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.deploy import buildah


@pytest.fixture(scope="session")
def stand_in_bases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    # Every buildah call of the session, the tests' own included, goes to a private storage that is
    # wiped at the end: nothing is left in, or taken from, the machine's default one.
    storage = tmp_path_factory.mktemp("buildah-storage")
    before = {name: os.environ.get(name) for name in ("CONTAINERS_STORAGE_CONF",)}
    os.environ.update(buildah.private_storage(storage))
    try:
        yield buildah.stand_in_bases(tmp_path_factory.mktemp("base"))
    finally:
        buildah.wipe_private_storage(storage)
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture
def container(image: str) -> Iterator[str]:
    name = buildah.container(image)
    yield name
    buildah.drop(name)
