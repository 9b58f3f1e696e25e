"""Print the pip requirements of one image flavour, read from pyproject.toml.

The images install dependencies in their own layer before the source is copied, so an edit to the
code does not reinstall onnxruntime or torch. The GPU flavour swaps ``onnxruntime`` for
``onnxruntime-gpu`` here, at the list level, because the two wheels write the same files and must
never be installed side by side: the project itself is then installed with ``--no-deps``.

Usage: ``python docker/deps.py cpu|gpu|build [PYPROJECT]``
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

FLAVOURS = ("cpu", "gpu", "build")


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement.strip())
    if match is None:
        raise ValueError(f"unparsable requirement {requirement!r} in pyproject.toml")
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def requirements(flavour: str, pyproject: Path) -> list[str]:
    """The requirement strings an image of ``flavour`` installs before the project itself."""
    if flavour not in FLAVOURS:
        raise ValueError(f"unknown flavour {flavour!r}: expected one of {', '.join(FLAVOURS)}")
    project = tomllib.loads(pyproject.read_text())["project"]
    serving: list[str] = list(project["dependencies"])
    extras: dict[str, list[str]] = project.get("optional-dependencies", {})
    if flavour == "cpu":
        return serving
    if flavour == "gpu":
        return [r for r in serving if _name(r) != "onnxruntime"] + list(extras["gpu"])
    return serving + list(extras["build"])


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3) or argv[1] not in FLAVOURS:
        print(__doc__, file=sys.stderr)
        return 2
    pyproject = Path(argv[2]) if len(argv) == 3 else Path("pyproject.toml")
    print("\n".join(requirements(argv[1], pyproject)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
