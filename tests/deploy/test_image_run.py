"""docker/Dockerfile.cpu and docker/Dockerfile.gpu built and run for real, with buildah (Debian) and no
Docker engine.

buildah builds each Dockerfile as written (every stage, layer and build-time guard: no torch, never
the CPU onnxruntime in the GPU image, the wheel's CUDA major equal to the base's) with chroot isolation,
which needs no cgroups, then runs the image's own entrypoint as its own user, with a store published
by the real build stage mounted read-only. The server is reached on loopback (chroot isolation shares
the host's network), and the image's own HEALTHCHECK command runs inside it. The GPU image runs here
without a GPU, which is the case ONNX Runtime hides: it must say that it fell back to CPU and serve
the CPU variant.

One stand-in, because the sandbox cannot reach a container registry: the pinned bases
(``python:3.11.11-slim-bookworm``, ``nvidia/cuda:...``) are replaced, through the Dockerfiles'
``PYTHON_IMAGE`` and ``CUDA_IMAGE`` arguments, by a Debian bookworm root file system made with
``debootstrap`` (Python 3.11 from Debian); for the GPU image it also carries the ``CUDA_VERSION`` the
real base sets, not CUDA itself. It carries the host's CA bundle, so pip inside the build trusts
whatever TLS proxy the host's pip trusts. Two differences from Docker, handled here: buildah mounts an
image's VOLUME over any bind mount at the same path, so the store goes to /store (``--store /store``);
and ``buildah run`` kills rather than forwards SIGTERM, so SIGTERM goes to the server process itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
BASE = "localhost/slimserve-test-base:bookworm"
UID = "10001:10001"
# flavour -> (Dockerfile, the build argument that names its base image)
FLAVOURS = {"cpu": ("docker/Dockerfile.cpu", "PYTHON_IMAGE"), "gpu": ("docker/Dockerfile.gpu", "CUDA_IMAGE")}


def _tool(name: str) -> str:
    binary = shutil.which(name)
    if binary is None:
        pytest.skip(f"`{name}` is not installed: `make sysdeps` installs the Debian package")
    return binary


def _run(*args: str, timeout: float = 900, cwd: Path | None = None) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    assert done.returncode == 0, f"{' '.join(args[:4])} ... exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done.stdout


def _cuda_version_of_the_real_base() -> str:
    text = (ROOT / "docker/Dockerfile.gpu").read_text()
    match = re.search(r"^ARG CUDA_IMAGE=nvidia/cuda:(\d+\.\d+\.\d+)-", text, re.MULTILINE)
    assert match, "Dockerfile.gpu: CUDA_IMAGE is not an nvidia/cuda release"
    return match.group(1)


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """flavour -> a stand-in base: a bookworm root file system with Python 3.11, as a local image."""
    debootstrap, buildah = _tool("debootstrap"), _tool("buildah")
    work = tmp_path_factory.mktemp("base")
    rootfs = work / "rootfs"
    _run(
        debootstrap, "--variant=minbase", "--include=python3,python3-venv,python-is-python3,ca-certificates",
        "bookworm", str(rootfs), os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian"),
    )  # fmt: skip
    host_ca = Path("/etc/ssl/certs/ca-certificates.crt")
    if host_ca.is_file():
        shutil.copyfile(host_ca, rootfs / "etc/ssl/certs/ca-certificates.crt")
    archive = work / "rootfs.tar"
    with tarfile.open(archive, "w") as tar:
        for entry in rootfs.iterdir():
            tar.add(entry, arcname=entry.name)
    container = _run(buildah, "from", "scratch").strip()
    try:
        _run(buildah, "add", container, str(archive), "/")
        _run(buildah, "config", "--env", "PIP_CERT=/etc/ssl/certs/ca-certificates.crt", container)
        _run(buildah, "commit", "--quiet", container, BASE)
        # What nvidia/cuda images declare (docker/cuda_match.py checks the wheel against it).
        _run(buildah, "config", "--env", f"CUDA_VERSION={_cuda_version_of_the_real_base()}", container)
        _run(buildah, "commit", "--quiet", container, BASE + "-cuda")
    finally:
        subprocess.run([buildah, "rm", container], capture_output=True, timeout=60)
    yield {"cpu": BASE, "gpu": BASE + "-cuda"}
    subprocess.run([buildah, "rmi", "--force", BASE, BASE + "-cuda"], capture_output=True, timeout=120)


@pytest.fixture(scope="module", params=sorted(FLAVOURS))
def flavour(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def image(flavour: str, bases: dict[str, str]) -> Iterator[str]:
    buildah = _tool("buildah")
    dockerfile, base_arg = FLAVOURS[flavour]
    tag = f"localhost/slimserve-test:{flavour}"
    # No --layers: intermediate images would outlive the test (~0.5-0.9 GB each).
    _run(
        buildah, "bud", "--isolation", "chroot", "--pull=never", "--format", "docker",
        "--build-arg", f"{base_arg}={bases[flavour]}", "-f", dockerfile, "-t", tag, ".",
        cwd=ROOT,
    )  # fmt: skip
    yield tag
    subprocess.run([buildah, "rmi", "--force", tag], capture_output=True, timeout=120)
    subprocess.run([buildah, "rmi", "--prune"], capture_output=True, timeout=120)


def _config(image: str) -> dict[str, Any]:
    inspected = json.loads(_run(_tool("buildah"), "inspect", "--type", "image", image))
    config: dict[str, Any] = inspected["Docker"]["config"]
    return config


@pytest.fixture
def container(image: str) -> Iterator[str]:
    buildah = _tool("buildah")
    name = _run(buildah, "from", "--pull=never", image).strip()
    yield name
    subprocess.run([buildah, "rm", name], capture_output=True, timeout=60)


def _exec(container: str, *command: str, options: tuple[str, ...] = ()) -> subprocess.Popen[str]:
    """``command`` inside ``container`` as the image's user; ``options``: more `buildah run` flags."""
    run = [_tool("buildah"), "run", "--isolation", "chroot", "--user", UID, *options, container, "--"]
    return subprocess.Popen([*run, *command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_image_declares_user_healthcheck_volume_and_entrypoint(image: str) -> None:
    config = _config(image)
    assert config["User"] == UID
    assert config["Entrypoint"] == ["slimserve"]
    assert config["Cmd"][0] == "serve"
    assert "/models" in config["Volumes"]
    test = config["Healthcheck"]["Test"]
    assert test[0] == "CMD" and any("/readyz" in part for part in test)


def test_the_image_has_no_torch_its_own_onnxruntime_and_runs_as_its_user(
    flavour: str, container: str
) -> None:
    code = (
        "import importlib.metadata as m, os\n"
        "def has(d):\n"
        "    try:\n        return bool(m.version(d))\n"
        "    except m.PackageNotFoundError:\n        return False\n"
        "wheels = ('torch', 'transformers', 'onnxruntime', 'onnxruntime-gpu')\n"
        "print(os.getuid(), [d for d in wheels if has(d)])"
    )
    probe = _exec(container, "python", "-c", code)
    out, _ = probe.communicate(timeout=120)
    assert probe.returncode == 0, out
    runtime = "onnxruntime-gpu" if flavour == "gpu" else "onnxruntime"
    assert out.strip().splitlines()[-1] == f"10001 ['{runtime}']"


def test_the_image_serves_a_built_store_passes_its_healthcheck_and_drains_on_sigterm(
    flavour: str, image: str, container: str, tiny_store: Path, tmp_path: Path
) -> None:
    # Only the store's root is opened up (pytest makes its folders 0700): what the build stage
    # published below it must already be readable by the image's non-root user.
    store = tmp_path / "store"
    shutil.copytree(tiny_store, store)
    store.chmod(0o755)
    port = _free_port()
    config = _config(image)
    # The image's own entrypoint and command, with the store and the loopback port swapped in.
    args = [*config["Entrypoint"], *config["Cmd"]]
    args[args.index("--store") + 1] = "/store"
    args[args.index("--host") + 1] = "127.0.0.1"
    args[args.index("--port") + 1] = str(port)
    server = _exec(container, *args, options=("-v", f"{store}:/store:ro"))
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
        assert (served["sentiment"]["variant"], served["sentiment"]["provider"]) == (
            "int8",
            "CPUExecutionProvider",
        )

        healthcheck = config["Healthcheck"]["Test"][1:]
        probe = _exec(container, *healthcheck, options=("--env", f"SLIMSERVE_PORT={port}"))
        out, _ = probe.communicate(timeout=60)
        assert probe.returncode == 0, out

        inside = f"^/opt/venv/bin/python3? /opt/venv/bin/slimserve serve .*--port {port}"
        pid = int(_run("pgrep", "-f", inside).split()[0])
        os.kill(pid, signal.SIGTERM)
        out, _ = server.communicate(timeout=60)
        assert server.returncode == 0, out
        fell_back = "CUDAExecutionProvider unavailable, ONNX Runtime runs on CPUExecutionProvider"
        assert (fell_back in out) == (flavour == "gpu"), out
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=30)
