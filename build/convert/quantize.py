"""Compression of the fused fp32 graph: fp16 weights (the GPU variant) and int8 dynamic
quantization (the CPU variant). Each is a pure function from one ONNX file to another."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimserve.build.errors import ExportError


@dataclass(frozen=True, slots=True)
class Fp16Config:
    # fp32 inputs/outputs keep the serving contract identical for every variant.
    keep_io_types: bool = True


@dataclass(frozen=True, slots=True)
class Int8Config:
    per_channel: bool = True
    reduce_range: bool = False
    extra_options: dict[str, Any] = field(default_factory=dict)


def to_fp16(source: Path, target: Path, config: Fp16Config = Fp16Config()) -> Path:
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel

    try:
        model = OnnxModel(onnx.load(str(source)))
        model.convert_float_to_float16(keep_io_types=config.keep_io_types)
        model.save_model_to_file(str(target))
    except Exception as exc:
        raise ExportError(f"fp16 conversion of {source} failed: {exc}") from exc
    return target


def to_int8(source: Path, target: Path, config: Int8Config = Int8Config()) -> Path:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Without a default tensor type the quantizer cannot infer types through fused contrib ops.
    options: dict[str, Any] = {"DefaultTensorType": onnx.TensorProto.FLOAT, **config.extra_options}
    try:
        quantize_dynamic(
            str(source),
            str(target),
            weight_type=QuantType.QInt8,
            per_channel=config.per_channel,
            reduce_range=config.reduce_range,
            extra_options=options,
        )
    except Exception as exc:
        raise ExportError(f"int8 quantization of {source} failed: {exc}") from exc
    return target
