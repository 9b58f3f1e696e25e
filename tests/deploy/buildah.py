"""buildah (Debian) driving the project's Dockerfiles without a Docker engine or a registry.

Builds use chroot isolation, which needs no cgroups (crun cannot start containers in this sandbox),
and share the host's network, so a server inside is reached on loopback. The pinned bases cannot be
pulled here; :func:`stand_in_bases` makes a Debian bookworm root file system with ``debootstrap``
(Python 3.11 from Debian, the host's CA bundle so that pip trusts whatever TLS proxy the host's pip
trusts) and imports it as the local images that the Dockerfiles' base arguments point at.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BASE = "localhost/slimserve-test-base:bookworm"
UID = "10001:10001"


def tool(name: str) -> str:
    binary = shutil.which(name)
    if binary is None:
        pytest.skip(f"`{name}` is not installed: `make sysdeps` installs the Debian package")
    return binary


def run(*args: str, timeout: float = 900, cwd: Path | None = None) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    assert done.returncode == 0, f"{' '.join(args[:4])} ... exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done.stdout


def cuda_version_of_the_real_base() -> str:
    text = (ROOT / "docker/Dockerfile.gpu").read_text()
    match = re.search(r"^ARG CUDA_IMAGE=nvidia/cuda:(\d+\.\d+\.\d+)-", text, re.MULTILINE)
    assert match, "Dockerfile.gpu: CUDA_IMAGE is not an nvidia/cuda release"
    return match.group(1)


def stand_in_bases(work: Path) -> dict[str, str]:
    """Import the bookworm stand-in as two local images: a plain one for the Python-based images, and
    one that also declares the ``CUDA_VERSION`` the real nvidia/cuda base declares (not CUDA itself)."""
    debootstrap, buildah = tool("debootstrap"), tool("buildah")
    rootfs = work / "rootfs"
    run(
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
    shutil.rmtree(rootfs)
    container = run(buildah, "from", "scratch").strip()
    try:
        run(buildah, "add", container, str(archive), "/")
        run(buildah, "config", "--env", "PIP_CERT=/etc/ssl/certs/ca-certificates.crt", container)
        run(buildah, "commit", "--quiet", container, BASE)
        run(buildah, "config", "--env", f"CUDA_VERSION={cuda_version_of_the_real_base()}", container)
        run(buildah, "commit", "--quiet", container, BASE + "-cuda")
    finally:
        subprocess.run([buildah, "rm", container], capture_output=True, timeout=60)
    archive.unlink()
    return {"python": BASE, "cuda": BASE + "-cuda"}


def build(dockerfile: str, tag: str, build_args: dict[str, str]) -> str:
    """``buildah bud`` of one Dockerfile as written, from the repository root."""
    args = [f"--build-arg={name}={value}" for name, value in build_args.items()]
    # No --layers: intermediate images would outlive the test (0.5-2 GB each).
    run(
        tool("buildah"), "bud", "--isolation", "chroot", "--pull=never", "--format", "docker", *args,
        "-f", dockerfile, "-t", tag, ".", cwd=ROOT,
    )  # fmt: skip
    return tag


def private_storage(work: Path) -> dict[str, str]:
    """Environment that points buildah at a storage of the test session's own, under ``work``, so the
    tests neither see nor touch the images and containers of the machine's default storage."""
    conf = work / "storage.conf"
    conf.write_text(
        f'[storage]\ndriver = "overlay"\ngraphroot = "{work / "graph"}"\nrunroot = "{work / "run"}"\n'
    )
    return {"CONTAINERS_STORAGE_CONF": str(conf)}


def wipe_private_storage(work: Path) -> None:
    """Delete every container and image of the private storage, then the storage itself."""
    buildah = tool("buildah")
    subprocess.run([buildah, "rm", "--all"], capture_output=True, timeout=300)
    subprocess.run([buildah, "rmi", "--all", "--force"], capture_output=True, timeout=300)
    # The overlay driver may keep its home bind-mounted; unmount anything left under ``work`` (deepest
    # first) so that removing the folder never reaches through a mount.
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(str(work))), key=len, reverse=True):
        subprocess.run(["umount", "--lazy", mount], capture_output=True, timeout=60)
    shutil.rmtree(work, ignore_errors=True)


def remove(*images: str) -> None:
    subprocess.run([tool("buildah"), "rmi", "--force", *images], capture_output=True, timeout=120)


def config(image: str) -> dict[str, Any]:
    inspected = json.loads(run(tool("buildah"), "inspect", "--type", "image", image))
    result: dict[str, Any] = inspected["Docker"]["config"]
    return result


def container(image: str) -> str:
    return run(tool("buildah"), "from", "--pull=never", image).strip()


def drop(container: str) -> None:
    subprocess.run([tool("buildah"), "rm", container], capture_output=True, timeout=60)


def start(container: str, *command: str, options: tuple[str, ...] = ()) -> subprocess.Popen[str]:
    """``command`` inside ``container`` as the images' user; ``options``: more `buildah run` flags."""
    prefix = [tool("buildah"), "run", "--isolation", "chroot", "--user", UID, *options, container, "--"]
    return subprocess.Popen([*prefix, *command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def whoami_and_wheels(container: str, *dists: str) -> tuple[int, list[str]]:
    """The uid commands run as inside ``container``, and which of ``dists`` are installed there."""
    code = (
        "import importlib.metadata as m, os, sys\n"
        "def has(d):\n"
        "    try:\n        return bool(m.version(d))\n"
        "    except m.PackageNotFoundError:\n        return False\n"
        "print(os.getuid(), ','.join(d for d in sys.argv[1:] if has(d)))"
    )
    probe = start(container, "python", "-c", code, *dists)
    out, _ = probe.communicate(timeout=120)
    assert probe.returncode == 0, out
    uid, _, found = out.strip().splitlines()[-1].partition(" ")
    return int(uid), [d for d in found.split(",") if d]
