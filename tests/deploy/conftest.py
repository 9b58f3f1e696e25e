"""Fixtures of the image tests: the stand-in base images, made once per session (see buildah.py), and a
fresh container of the module's ``image`` per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.deploy import buildah


@pytest.fixture(scope="session")
def stand_in_bases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    bases = buildah.stand_in_bases(tmp_path_factory.mktemp("base"))
    yield bases
    buildah.remove(*bases.values())


@pytest.fixture
def container(image: str) -> Iterator[str]:
    name = buildah.container(image)
    yield name
    buildah.drop(name)
