"""Each build step on a tiny random BERT: export, fusion, fp16, int8, verification, the gate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from slimserve.build.convert.export import export
from slimserve.build.convert.optimize import OptimizeConfig, optimize
from slimserve.build.convert.quantize import to_fp16, to_int8
from slimserve.build.data.load import Examples
from slimserve.build.evaluate.metrics import EvalBatches, macro_f1, score
from slimserve.build.evaluate.probe import probe
from slimserve.build.evaluate.verify import Candidate, VariantReport, gate, verify_variant
from slimserve.build.recipe import GateSpec, parse_recipe
from slimserve.build.train.model_io import load_base, logits_of
from slimserve.service.engine.runner import OnnxRunner
from slimserve.service.engine.tokenizer import TextTokenizer, pad

from tests.tiny import tiny_recipe

TEXTS = ["my card has not arrived", "what is the exchange rate today?", "top up failed", "lost it", "hi"]


@pytest.fixture(scope="module")
def steps(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path) -> dict[str, object]:
    work = tmp_path_factory.mktemp("steps")
    recipe = parse_recipe(tiny_recipe("intent", tiny_base))
    model, tokenizer_json = load_base(recipe, work)
    raw = export(model, work / "raw.onnx")
    fused = optimize(raw, work / "fp32.onnx", OptimizeConfig(4, 32, 2))
    fp16 = to_fp16(fused.path, work / "fp16.onnx")
    int8 = to_int8(fused.path, work / "int8.onnx")
    tok = TextTokenizer(tokenizer_json, recipe.max_seq_len)
    examples = Examples(TEXTS, [0, 1, 2, 3, 4])
    data = EvalBatches.build(tok.encode(TEXTS), examples, batch_size=2)
    return {
        "recipe": recipe,
        "model": model,
        "raw": raw,
        "fused": fused,
        "fp16": fp16,
        "int8": int8,
        "data": data,
    }


def _ops(path: Path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def test_export_has_contract_names_and_dynamic_axes(steps: dict) -> None:
    graph = onnx.load(str(steps["raw"])).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [o.name for o in graph.output] == ["logits"]
    for tensor in graph.input:
        dims = tensor.type.tensor_type.shape.dim
        assert all(d.dim_param for d in dims), f"{tensor.name} has a fixed axis"
        assert tensor.type.tensor_type.elem_type == onnx.TensorProto.INT64


def test_fusion_fuses_attention_in_every_layer(steps: dict) -> None:
    fused = steps["fused"]
    assert fused.fused["Attention"] == 2
    assert "Attention" in _ops(fused.path)
    assert "Softmax" not in _ops(fused.path)


def test_fp16_keeps_fp32_outputs_and_int8_is_quantized(steps: dict) -> None:
    fp16 = onnx.load(str(steps["fp16"]))
    assert fp16.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(init.data_type == onnx.TensorProto.FLOAT16 for init in fp16.graph.initializer)
    assert _ops(steps["int8"]) & {"MatMulInteger", "QAttention", "DynamicQuantizeMatMul", "QGemm"}
    sizes = {k: Path(steps[k]).stat().st_size for k in ("fp16", "int8")}
    assert sizes["int8"] < sizes["fp16"] < steps["fused"].path.stat().st_size


@pytest.mark.parametrize("variant", ["raw", "fp32", "fp16", "int8"])
def test_variants_follow_pytorch_at_any_shape(steps: dict, variant: str) -> None:
    path = steps["fused"].path if variant == "fp32" else steps[variant]
    data: EvalBatches = steps["data"]
    reference = logits_of(steps["model"], data)
    precision = "fp32" if variant == "raw" else variant
    candidate = Candidate(variant, Path(path), precision)
    report = verify_variant(candidate, "sequence-classification", steps["recipe"].labels, reference, data)
    tolerance = {"raw": 1e-4, "fp32": 1e-4, "fp16": 1e-2, "int8": 0.2}[variant]
    assert report.max_abs_logit_diff < tolerance
    assert report.bytes == Path(path).stat().st_size
    assert (report.name, report.precision, report.form) == (variant, precision, "teacher")
    # a single row and a longer padded batch than any evaluation batch
    runner = OnnxRunner(Path(path))
    batch = pad(TextTokenizer(Path(steps["raw"]).parent / "tokenizer.json", 128).encode([*TEXTS, "x " * 200]))
    assert runner.run(batch.input_ids, batch.attention_mask, batch.token_type_ids).shape == (6, 5)


def test_scores_use_the_serving_decoder(steps: dict) -> None:
    data: EvalBatches = steps["data"]
    labels = steps["recipe"].labels
    perfect = [np.eye(5, dtype=np.float32)[[0, 1]], np.eye(5, dtype=np.float32)[[2, 3]], np.eye(5)[[4]]]
    assert score("sequence-classification", labels, perfect, data) == {"accuracy": 1.0, "macro_f1": 1.0}
    assert macro_f1([0, 0, 1, 1], [0, 0, 0, 1], 2) == pytest.approx((0.8 + 2 / 3) / 2)


def _report(name: str, accuracy: float) -> VariantReport:
    return VariantReport(name, Path(name), {"accuracy": accuracy, "macro_f1": accuracy}, 0.0, 1.0, 1, name)


def test_probe_times_every_variant_at_batch_1_and_32(steps: dict) -> None:
    paths = {"fp32": steps["fused"].path, "int8": Path(steps["int8"])}
    times = probe(paths, steps["data"], repeats=3)
    assert set(times) == {"fp32", "int8"}
    for measured in times.values():
        assert set(measured) == {"batch_1", "batch_32"} and all(ms > 0 for ms in measured.values())


def test_gate_refuses_a_variant_beyond_the_allowance() -> None:
    reports = [_report("fp32", 0.90), _report("fp16", 0.895), _report("int8", 0.885)]
    pytorch = {"teacher": {"accuracy": 0.90}}
    gate(reports, pytorch, "sequence-classification", GateSpec(max_accuracy_drop=1.0))
    assert [r.passed for r in reports] == [True, True, False]
    assert "1.50 points below" in reports[2].reason and "max_accuracy_drop = 1.0" in reports[2].reason


def test_gate_uses_f1_for_token_classification() -> None:
    report = VariantReport("fp32", Path("x"), {"f1": 0.80}, 0.0, 1.0, 1, "fp32")
    pytorch = {"teacher": {"f1": 0.85}}
    gate([report], pytorch, "token-classification", GateSpec(max_accuracy_drop=100, max_f1_drop=2.0))
    assert not report.passed and "max_f1_drop" in report.reason


def test_length_grouped_batches_cover_every_row_once_and_cut_padding() -> None:
    from slimserve.build.train.loop import length_grouped_batches

    rng = np.random.default_rng(0)
    lengths = list(rng.integers(3, 60, size=1000))
    batches = length_grouped_batches(lengths, 32, np.random.default_rng(1))
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(1000))
    assert all(len(b) <= 32 for b in batches)
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    shuffled = np.random.default_rng(1).permutation(1000)
    naive = sum(32 * max(lengths[i] for i in shuffled[s : s + 32]) for s in range(0, 1000, 32))
    assert padded < 0.7 * naive
    again = length_grouped_batches(lengths, 32, np.random.default_rng(1))
    assert all((a == b).all() for a, b in zip(batches, again, strict=True))


def test_export_leaves_the_model_in_eval_mode(tiny_base: Path, tmp_path: Path) -> None:
    # The exporter restores its wrapper's training flag recursively: a fresh wrapper would switch
    # the model (and dropout) back on for whatever runs on it next (distillation's teacher).
    model, _ = load_base(parse_recipe(tiny_recipe("sentiment", tiny_base)), tmp_path)
    export(model, tmp_path / "model.onnx")
    assert not model.training and not any(m.training for m in model.modules())
