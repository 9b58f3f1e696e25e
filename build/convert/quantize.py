"""Precision conversions of an fp32 graph: fp16 weights (the GPU variant), int8 dynamic
quantization (the CPU variant) and int8 static quantization (QDQ, activations calibrated on training
rows). Each is a function from one ONNX file to another."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from slimserve.build.errors import ExportError
from slimserve.service.engine.runner import INPUT_NAMES
from slimserve.service.engine.tokenizer import Batch


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


@dataclass(frozen=True, slots=True)
class StaticInt8Config:
    per_channel: bool = True
    method: Literal["minmax", "entropy", "percentile"] = "minmax"


class _Calibration:
    """onnxruntime's CalibrationDataReader protocol over padded batches of training rows."""

    def __init__(self, batches: Sequence[Batch]) -> None:
        self._batches: Iterator[Batch] = iter(batches)

    def get_next(self) -> dict[str, Any] | None:
        batch = next(self._batches, None)
        if batch is None:
            return None
        return dict(
            zip(INPUT_NAMES, (batch.input_ids, batch.attention_mask, batch.token_type_ids), strict=True)
        )


def to_int8_static(
    source: Path, target: Path, calibration: Sequence[Batch], config: StaticInt8Config = StaticInt8Config()
) -> Path:
    """QDQ int8: weights int8 (per channel), activations uint8 with ranges calibrated on
    ``calibration`` (int8 activations made batch 1 ten times slower here, TOOLCHAIN.md). The source
    is the exported (unfused) graph: ONNX Runtime fuses the quantized graph at session start."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    prepared = target.with_name(target.stem + ".pre.onnx")
    try:
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(target),
            _Calibration(calibration),  # type: ignore[arg-type]
            quant_format=QuantFormat.QDQ,
            per_channel=config.per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=methods[config.method],
            op_types_to_quantize=["MatMul", "Gemm", "Gather"],
        )
    except Exception as exc:
        raise ExportError(f"static int8 quantization of {source} failed: {exc}") from exc
    finally:
        prepared.unlink(missing_ok=True)
    return target
