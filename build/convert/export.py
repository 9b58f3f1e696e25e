"""Export: the fine-tuned PyTorch model to an ONNX graph with the serving contract's names.

TorchScript exporter (``dynamo=False``): it is the export the ONNX Runtime fusion recognises
(see TOOLCHAIN.md). Inputs ``input_ids``, ``attention_mask``, ``token_type_ids`` (int64, dynamic
batch and sequence axes), output ``logits``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from slimserve.build.errors import ExportError
from slimserve.service.engine.runner import INPUT_NAMES, OUTPUT_NAME


@dataclass(frozen=True, slots=True)
class ExportConfig:
    opset: int = 17
    example_batch: int = 2
    example_length: int = 16


class _LogitsOnly(torch.nn.Module):
    """Positional inputs in the contract's order, logits out (no ModelOutput for the tracer)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return out.logits


def export(model: torch.nn.Module, path: Path, config: ExportConfig = ExportConfig()) -> Path:
    model.eval()
    shape = (config.example_batch, config.example_length)
    ids = torch.randint(1000, 2000, shape, dtype=torch.long)
    mask = torch.ones(shape, dtype=torch.long)
    mask[-1, shape[1] // 2 :] = 0  # one padded row, so the mask path is traced for real
    types = torch.zeros(shape, dtype=torch.long)
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
    token_level = _is_token_model(model, ids, mask, types)
    axes[OUTPUT_NAME] = {0: "batch", 1: "sequence"} if token_level else {0: "batch"}
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            # The TorchScript exporter's deprecation and tracer warnings are expected here.
            warnings.simplefilter("ignore")
            # The wrapper is put in eval mode too: the exporter restores the wrapper's training flag
            # afterwards, recursively, and a fresh module is in training mode (dropout on).
            torch.onnx.export(
                _LogitsOnly(model).eval(),
                (ids, mask, types),
                str(path),
                input_names=list(INPUT_NAMES),
                output_names=[OUTPUT_NAME],
                dynamic_axes=axes,
                opset_version=config.opset,
                dynamo=False,
                do_constant_folding=True,
            )
    except Exception as exc:
        raise ExportError(f"ONNX export to {path} failed: {exc}") from exc
    return path


def _is_token_model(
    model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor
) -> bool:
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
    return bool(logits.ndim == 3)
