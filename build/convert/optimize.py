"""Optimize: ONNX Runtime's transformer fusions (Attention, EmbedLayerNormalization,
SkipLayerNormalization, BiasGelu) on the exported fp32 graph.

Fusion barely moves fp32 speed on CPU but it is what lets int8 use QAttention; a graph in which
Attention did not fuse still works, so that is a warning in the build log, not a failure.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from slimserve.build.errors import ExportError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OptimizeConfig:
    num_heads: int
    hidden_size: int
    num_layers: int
    model_type: str = "bert"


@dataclass(frozen=True, slots=True)
class OptimizeResult:
    path: Path
    fused: dict[str, int]

    @property
    def attention_fused(self) -> bool:
        return self.fused.get("Attention", 0) > 0


def optimize(source: Path, target: Path, config: OptimizeConfig) -> OptimizeResult:
    from onnxruntime.transformers.optimizer import optimize_model

    try:
        model = optimize_model(
            str(source),
            model_type=config.model_type,
            num_heads=config.num_heads,
            hidden_size=config.hidden_size,
            opt_level=0,  # ORT applies its own level-99 graph rewrites at session start
        )
        fused = {k: int(v) for k, v in model.get_fused_operator_statistics().items() if v}
        model.save_model_to_file(str(target))
    except Exception as exc:
        raise ExportError(f"ONNX Runtime fusion of {source} failed: {exc}") from exc
    result = OptimizeResult(target, fused)
    if fused.get("Attention", 0) != config.num_layers:
        log.warning(
            "fusion: %d Attention node(s) for %d layers (fused: %s); int8 will be slower",
            fused.get("Attention", 0),
            config.num_layers,
            fused,
        )
    return result
