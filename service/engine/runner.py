"""The one module that imports onnxruntime: a session, its providers, and how inputs reach it."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime import RunOptions  # per call: the watchdog sets `terminate` on a run past its deadline

log = logging.getLogger(__name__)

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME = "logits"
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


class RunnerError(Exception):
    """The ONNX file cannot be loaded or run."""


def available_providers() -> list[str]:
    return list(ort.get_available_providers())


def gpu_available() -> bool:
    """True when onnxruntime-gpu is installed *and* can see a device.

    onnxruntime-gpu lists CUDAExecutionProvider even without a GPU, so listing is not enough:
    a tiny probe session tells (see ``OnnxRunner.provider``)."""
    return CUDA in available_providers()


@functools.cache
def preload_cuda_libraries() -> bool:
    """Load the CUDA and cuDNN libraries of the ``nvidia-*`` pip packages, if any, before the first
    CUDA session. onnxruntime-gpu installed from PyPI with them (``onnxruntime-gpu[cuda,cudnn]``)
    otherwise finds them only through ``LD_LIBRARY_PATH`` and silently runs on CPU; in an image with
    a system CUDA (docker/Dockerfile.gpu) the loader finds them anyway and this changes nothing.
    Best effort: a failure is logged and ONNX Runtime reports the provider it really got."""
    preload = getattr(ort, "preload_dlls", None)  # onnxruntime-gpu >= 1.21
    if preload is None:
        return False
    try:
        preload(cuda=True, cudnn=True, msvc=False)
    except Exception as exc:  # it raises whatever the loader raised
        log.warning("onnxruntime.preload_dlls failed (%s); CUDA libraries come from the loader path", exc)
        return False
    return True


class OnnxRunner:
    """Owns one InferenceSession. ``run`` may be called from several threads at once (ONNX Runtime's
    ``InferenceSession.run`` is thread-safe): the engine's runner threads share one session, and the
    device slots, not this class, bound how many calls run together."""

    def __init__(
        self,
        path: Path,
        providers: Sequence[str] = (CPU,),
        intra_op_threads: int = 0,
        spin: bool = True,
    ) -> None:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # 0 lets ORT use every core; the engine passes an explicit count so that tokenization
        # threads and ORT threads never oversubscribe the machine.
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        if not spin:
            # Idle ORT threads otherwise busy-wait for the next op, taking cycles from the event loop,
            # the tokenizer and other processes on a small or shared CPU.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        if CUDA in providers:
            preload_cuda_libraries()
        try:
            self.session = ort.InferenceSession(str(path), options, providers=list(providers))
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise RunnerError(f"{path}: cannot load ONNX model: {exc}") from exc
        self.path = path
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        # The provider that really runs: onnxruntime-gpu falls back to CPU silently.
        self.provider: str = self.session.get_providers()[0]
        self._use_io_binding = self.provider == CUDA

    def run(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        token_type_ids: np.ndarray | None = None,
        options: RunOptions | None = None,
    ) -> np.ndarray:
        """Logits for one padded batch: (batch, classes) or (batch, seq, classes)."""
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in self.input_names:
            feeds["token_type_ids"] = (
                token_type_ids if token_type_ids is not None else np.zeros_like(input_ids)
            )
        try:
            if self._use_io_binding:
                return self._run_bound(feeds, options)
            return self.session.run([self.output_names[0]], feeds, options)[0]
        except Exception as exc:
            raise RunnerError(f"{self.path.name}: inference failed: {exc}") from exc

    def _run_bound(self, feeds: dict[str, np.ndarray], options: RunOptions | None) -> np.ndarray:
        binding = self.session.io_binding()
        for name, value in feeds.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(value))
        binding.bind_output(self.output_names[0])
        self.session.run_with_iobinding(binding, options)
        return binding.copy_outputs_to_cpu()[0]

    def close(self) -> None:
        """The engine is done with this runner (the session is freed with the object)."""


class FaultyRunner(OnnxRunner):
    """A testing aid (setting ``debug_faults``, off by default): a real runner that fails on purpose
    once armed, so the engine's fault handling can be shown on a real server.

    ``raise``: every run raises an unexpected error; ``hang``: every run blocks, ignoring ONNX Runtime's
    terminate flag, until the engine stops; ``shape``: runs return logits with a row missing."""

    FAULTS = ("raise", "hang", "shape")

    def __init__(self, inner: OnnxRunner, fault: str) -> None:
        if fault not in self.FAULTS:
            raise ValueError(f"unknown fault {fault!r}; one of {self.FAULTS}")
        self.__dict__.update(inner.__dict__)
        self.fault = fault
        self.armed = False
        self._released = threading.Event()

    def run(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        token_type_ids: np.ndarray | None = None,
        options: RunOptions | None = None,
    ) -> np.ndarray:
        if not self.armed:
            return super().run(input_ids, attention_mask, token_type_ids, options)
        if self.fault == "raise":
            raise ZeroDivisionError("injected fault (debug_faults): the runner raised")
        if self.fault == "hang":
            self._released.wait()
        out = super().run(input_ids, attention_mask, token_type_ids, options)
        return out[:-1]

    def close(self) -> None:
        self._released.set()
