"""docker/Dockerfile.cpu and docker/Dockerfile.gpu built and run for real, with buildah (Debian) and no
Docker engine (tests/deploy/buildah.py says how, and what stands in for the pinned bases).

Each Dockerfile is built as written: every stage, layer and build-time guard (no torch, never the CPU
onnxruntime in the GPU image, the wheel's CUDA major equal to the base's). The image's own entrypoint
and command then run as its own user, with a store published by the real build stage mounted
read-only; the image's own HEALTHCHECK command runs inside it. The GPU image runs here without a GPU,
which is the case ONNX Runtime hides: it must say that it fell back to CPU and serve the CPU variant.

Two differences from Docker, handled here: buildah mounts an image's VOLUME over any bind mount at the
same path, so the store goes to /store (``--store /store``); and ``buildah run`` kills rather than
forwards SIGTERM, so SIGTERM goes to the server process itself.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from slimserve.service.store import read_manifest, version_dir

from tests.deploy import buildah

pytestmark = [pytest.mark.slow, pytest.mark.integration]

# flavour -> (Dockerfile, the build argument that names its base, which stand-in base)
FLAVOURS = {
    "cpu": ("docker/Dockerfile.cpu", "PYTHON_IMAGE", "python"),
    "gpu": ("docker/Dockerfile.gpu", "CUDA_IMAGE", "cuda"),
}


@pytest.fixture(scope="module", params=sorted(FLAVOURS))
def flavour(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def image(flavour: str, stand_in_bases: dict[str, str]) -> Iterator[str]:
    dockerfile, base_arg, base = FLAVOURS[flavour]
    tag = buildah.build(dockerfile, f"localhost/slimserve-test:{flavour}", {base_arg: stand_in_bases[base]})
    yield tag
    buildah.remove(tag)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_image_declares_user_healthcheck_volume_and_entrypoint(image: str) -> None:
    config = buildah.config(image)
    assert config["User"] == buildah.UID
    assert config["Entrypoint"] == ["slimserve"]
    assert config["Cmd"][0] == "serve"
    assert "/models" in config["Volumes"]
    test = config["Healthcheck"]["Test"]
    assert test[0] == "CMD" and any("/readyz" in part for part in test)


def test_the_image_has_its_onnxruntime_no_torch_and_runs_as_its_user(flavour: str, container: str) -> None:
    wheels = ("torch", "transformers", "onnxruntime", "onnxruntime-gpu")
    runtime = "onnxruntime-gpu" if flavour == "gpu" else "onnxruntime"
    assert buildah.whoami_and_wheels(container, *wheels) == (10001, [runtime])


def test_the_image_serves_a_built_store_passes_its_healthcheck_and_drains_on_sigterm(
    flavour: str, image: str, container: str, tiny_store: Path, tmp_path: Path
) -> None:
    # Only the store's root is opened up (pytest makes its folders 0700): what the build stage
    # published below it must already be readable by the image's non-root user.
    store = tmp_path / "store"
    shutil.copytree(tiny_store, store)
    store.chmod(0o755)
    port = _free_port()
    config = buildah.config(image)
    # The image's own entrypoint and command, with the store and the loopback port swapped in.
    args = [*config["Entrypoint"], *config["Cmd"]]
    args[args.index("--store") + 1] = "/store"
    args[args.index("--host") + 1] = "127.0.0.1"
    args[args.index("--port") + 1] = str(port)
    server = buildah.start(container, *args, options=("-v", f"{store}:/store:ro"))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        ready = 0
        while time.monotonic() < deadline and server.poll() is None:
            with contextlib.suppress(httpx.HTTPError):
                ready = httpx.get(url + "/readyz", timeout=2).status_code
                if ready == 200:
                    break
            time.sleep(0.2)
        assert ready == 200, server.stdout.read() if server.poll() is not None and server.stdout else ready

        r = httpx.post(url + "/v1/sentiment", json={"inputs": ["fine", "dull"]}, timeout=30)
        assert r.status_code == 200, r.text
        assert len(r.json()["results"]) == 2
        served = {m["name"]: m for m in httpx.get(url + "/v1/models", timeout=10).json()["models"]}
        # No GPU here: the GPU image must fall back to the CPU variant, and say so, not run fp16 on CPU.
        sentiment = served["sentiment"]
        manifest = read_manifest(version_dir(store, "sentiment", sentiment["version"]))
        assert (sentiment["variant"], sentiment["provider"]) == (
            manifest.recommended["cpu"],
            "CPUExecutionProvider",
        )

        healthcheck = config["Healthcheck"]["Test"][1:]
        probe = buildah.start(container, *healthcheck, options=("--env", f"SLIMSERVE_PORT={port}"))
        out, _ = probe.communicate(timeout=60)
        assert probe.returncode == 0, out

        inside = f"^/opt/venv/bin/python3? /opt/venv/bin/slimserve serve .*--port {port}"
        pid = int(buildah.run("pgrep", "-f", inside).split()[0])
        os.kill(pid, signal.SIGTERM)
        out, _ = server.communicate(timeout=60)
        assert server.returncode == 0, out
        fell_back = "CUDAExecutionProvider unavailable, ONNX Runtime runs on CPUExecutionProvider"
        assert (fell_back in out) == (flavour == "gpu"), out
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=30)
