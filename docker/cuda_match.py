"""Build-time guard of the GPU image: onnxruntime-gpu's CUDA major must be the base image's.

A mismatch builds cleanly and shows only on a GPU at run time: ONNX Runtime cannot load its CUDA
provider ("Require cuDNN 9.* and CUDA 13.*" for the 1.31 wheels) and serves on CPU instead. nvidia/cuda
images set ``CUDA_VERSION``; a CUDA build of onnxruntime records its own in ``build_and_package_info``.

Usage (inside the image, after the dependencies are installed): ``python docker/cuda_match.py``;
exit 1 with the reason on a mismatch.
"""

from __future__ import annotations

import os
import sys


def mismatch(wheel_cuda: str, image_cuda: str | None) -> str | None:
    """Why the wheel cannot use the image's CUDA, or None when their major versions agree."""
    if not wheel_cuda:
        return "the installed onnxruntime is not a CUDA build (is the CPU wheel installed?)"
    if not image_cuda:
        return "CUDA_VERSION is not set: the base image is not an nvidia/cuda image"
    if wheel_cuda.split(".")[0] != image_cuda.split(".")[0]:
        return (
            f"onnxruntime-gpu is built for CUDA {wheel_cuda} but the base image has CUDA {image_cuda}: "
            "pick a CUDA_IMAGE of the same major version, or an onnxruntime-gpu built for this one"
        )
    return None


def main() -> int:
    from onnxruntime.capi import build_and_package_info as info

    problem = mismatch(getattr(info, "cuda_version", ""), os.environ.get("CUDA_VERSION"))
    if problem is not None:
        print(f"cuda_match: {problem}", file=sys.stderr)
        return 1
    image_cuda = os.environ["CUDA_VERSION"]
    print(f"cuda_match: onnxruntime-gpu {info.__version__} (CUDA {info.cuda_version}) on CUDA {image_cuda}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
