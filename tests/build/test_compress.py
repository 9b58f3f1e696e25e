"""Compressed forms on a tiny random BERT: distilled students, structured pruning, static int8,
the floor gate, all through the real steps (export, fusion, ONNX Runtime)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from slimserve.build.compress.architecture import describe, encoder_layers
from slimserve.build.compress.forms import make_student, prune_student
from slimserve.build.compress.prune import Importance, measure_importance, prune
from slimserve.build.compress.student import default_layer_map
from slimserve.build.convert.export import export
from slimserve.build.convert.optimize import OptimizeConfig, optimize
from slimserve.build.convert.quantize import to_int8_static
from slimserve.build.evaluate.verify import VariantReport, gate
from slimserve.build.recipe import FormSpec, GateSpec, parse_recipe
from slimserve.build.train.model_io import load_base
from slimserve.service.engine.runner import OnnxRunner
from slimserve.service.engine.tokenizer import TextTokenizer, pad
from slimserve.service.store import Architecture

from tests.tiny import TINY_BERT, tiny_recipe

TEXTS = ["a gorgeous , witty film", "a tedious mess", "not bad at all", "it is", "what a waste of time"]
HIDDEN, HEADS, FFN = (
    TINY_BERT["hidden_size"],
    TINY_BERT["num_attention_heads"],
    TINY_BERT["intermediate_size"],
)
HEAD_DIM = HIDDEN // HEADS


@pytest.fixture(scope="module")
def teacher(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    recipe = parse_recipe(tiny_recipe("sentiment", tiny_base))
    return load_base(recipe, tmp_path_factory.mktemp("teacher"))


def _batch(tokenizer_json: Path):  # type: ignore[no-untyped-def]
    return pad(TextTokenizer(tokenizer_json, 32).encode(TEXTS))


def _logits(model: torch.nn.Module, tokenizer_json: Path) -> np.ndarray:
    b = _batch(tokenizer_json)
    model.eval()
    with torch.no_grad():
        out = model(
            input_ids=torch.from_numpy(b.input_ids),
            attention_mask=torch.from_numpy(b.attention_mask),
            token_type_ids=torch.from_numpy(b.token_type_ids),
        )
    return out.logits.numpy()


def _onnx_run(path: Path, tokenizer_json: Path) -> np.ndarray:
    b = _batch(tokenizer_json)
    return OnnxRunner(path).run(b.input_ids, b.attention_mask, b.token_type_ids)


def test_default_layer_map_is_even_and_keeps_the_last_layer() -> None:
    assert default_layer_map(6, 3) == [1, 3, 5]
    assert default_layer_map(6, 2) == [2, 5]
    assert default_layer_map(12, 4) == [2, 5, 8, 11]
    assert default_layer_map(6, 6) == [0, 1, 2, 3, 4, 5]


def test_a_distilled_student_has_its_layers_in_the_onnx_graph(
    teacher: tuple[torch.nn.Module, Path], tmp_path: Path
) -> None:
    model, tokenizer_json = teacher
    student = make_student(model, FormSpec(name="l1", layers=1), None)
    assert student.layer_map == [1]
    assert len(encoder_layers(student.model)) == 1 and len(encoder_layers(model)) == 2  # a copy
    # The kept layer is the teacher's, weights and all.
    kept = encoder_layers(student.model)[0].output.dense.weight
    assert torch.equal(kept, encoder_layers(model)[1].output.dense.weight)
    raw = export(student.model, tmp_path / "raw.onnx")
    fused = optimize(raw, tmp_path / "fused.onnx", OptimizeConfig(HEADS, HIDDEN, 1))
    graph = onnx.load(str(fused.path)).graph
    assert sum(n.op_type == "Attention" for n in graph.node) == 1
    assert np.allclose(
        _onnx_run(fused.path, tokenizer_json), _logits(student.model, tokenizer_json), atol=1e-4
    )


def _masked_copy(model: torch.nn.Module, heads_kept: list[list[int]], neurons_kept: list[list[int]]):  # type: ignore[no-untyped-def]
    """The unpruned model with the removed units' outgoing weights zeroed: what pruning must equal."""
    import copy

    masked = copy.deepcopy(model)
    with torch.no_grad():
        for layer, heads, neurons in zip(encoder_layers(masked), heads_kept, neurons_kept, strict=True):
            for h in set(range(HEADS)) - set(heads):
                layer.attention.output.dense.weight[:, h * HEAD_DIM : (h + 1) * HEAD_DIM] = 0
            for n in set(range(FFN)) - set(neurons):
                layer.output.dense.weight[:, n] = 0
    return masked


def test_pruning_removes_exactly_the_ranked_heads_and_neurons(
    teacher: tuple[torch.nn.Module, Path], tmp_path: Path
) -> None:
    model, tokenizer_json = teacher
    rng = np.random.default_rng(0)
    importance = Importance(
        heads=[rng.random(HEADS) for _ in range(2)], neurons=[rng.random(FFN) for _ in range(2)]
    )
    pruned = prune(model, importance, heads=2, ffn=40)
    for i in range(2):
        assert pruned.heads_kept[i] == sorted(np.argsort(-importance.heads[i])[:2].tolist())
        assert pruned.neurons_kept[i] == sorted(np.argsort(-importance.neurons[i])[:40].tolist())
    # Physically smaller: q, k, v lose rows (+ bias), the output projection columns, per removed head;
    # the FFN loses intermediate rows (+ bias) and output columns per removed neuron.
    removed_width = (HEADS - 2) * HEAD_DIM
    per_layer = 3 * removed_width * (HIDDEN + 1) + removed_width * HIDDEN + (FFN - 40) * (2 * HIDDEN + 1)
    before = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for p in pruned.model.parameters()) == before - 2 * per_layer
    arch = describe(pruned.model, 128)
    assert (arch.layers, arch.heads, arch.ffn) == (2, [2, 2], [40, 40])
    assert arch.flops_per_token < describe(model, 128).flops_per_token
    # Removing a unit equals zeroing its outgoing weights in the unpruned model.
    expected = _logits(_masked_copy(model, pruned.heads_kept, pruned.neurons_kept), tokenizer_json)
    assert np.allclose(_logits(pruned.model, tokenizer_json), expected, atol=1e-5)
    # ONNX Runtime loads and runs the smaller graph (fused with the pruned head count).
    raw = export(pruned.model, tmp_path / "raw.onnx")
    fused = optimize(raw, tmp_path / "fused.onnx", OptimizeConfig(2, 2 * HEAD_DIM, 2))
    out = _onnx_run(fused.path, tokenizer_json)
    assert np.isfinite(out).all() and np.allclose(out, expected, atol=1e-4)
    assert fused.path.stat().st_size < export(model, tmp_path / "teacher.onnx").stat().st_size


def test_importance_ranks_a_silenced_head_last(teacher: tuple[torch.nn.Module, Path]) -> None:
    import copy

    model, tokenizer_json = teacher
    model = copy.deepcopy(model)
    with torch.no_grad():  # head 1 of layer 0 contributes nothing: its importance must be zero
        encoder_layers(model)[0].attention.output.dense.weight[:, HEAD_DIM : 2 * HEAD_DIM] = 0
        encoder_layers(model)[1].output.dense.weight[:, 5] = 0
    batch = _batch(tokenizer_json)
    labels = torch.tensor([1, 0, 1, 0, 0])
    importance = measure_importance(model, [(batch, labels)])
    assert importance.heads[0][1] == 0 and importance.heads[0].min() == 0 and importance.heads[0].max() > 0
    assert importance.neurons[1][5] == 0 and importance.neurons[1].max() > 0
    assert all(p.grad is None for p in model.parameters())


def test_a_form_made_from_another_prunes_its_trained_student(teacher: tuple[torch.nn.Module, Path]) -> None:
    """A cascade: the base student (1 layer, 3 heads) is pruned again by an importance measured on
    the student itself; the result keeps the base's depth, records teacher indices, and equals the
    teacher cut once with those indices (the base is untrained here, so its weights are the teacher's)."""
    model, tokenizer_json = teacher
    rng = np.random.default_rng(1)
    teacher_importance = Importance(
        heads=[rng.random(HEADS) for _ in range(2)], neurons=[rng.random(FFN) for _ in range(2)]
    )
    base = make_student(model, FormSpec(name="b", layers=1, heads=3), teacher_importance)
    assert base.layer_map == [1] and len(base.heads_kept[0]) == 3  # type: ignore[index]
    # A silenced head of the student is what the student's own importance drops first.
    silenced = 1
    with torch.no_grad():
        encoder_layers(base.model)[0].attention.output.dense.weight[
            :, silenced * HEAD_DIM : (silenced + 1) * HEAD_DIM
        ] = 0
    labels = torch.tensor([1, 0, 1, 0, 0])
    student_importance = measure_importance(base.model, [(_batch(tokenizer_json), labels)])
    cascade = prune_student(base, FormSpec(name="c", **{"from": "b"}, heads=2, ffn=16), student_importance)
    assert cascade.layer_map == [1]
    arch = describe(cascade.model, 128)
    assert (arch.layers, arch.heads, arch.ffn) == (1, [2], [16])
    assert describe(base.model, 128).heads == [3]  # the base student is left as it was
    kept_heads = cascade.heads_kept[0]  # type: ignore[index]
    assert base.heads_kept[0][silenced] not in kept_heads  # type: ignore[index]
    assert set(kept_heads) < set(base.heads_kept[0])  # type: ignore[index]  # teacher head indices
    assert len(cascade.neurons_kept[0]) == 16  # type: ignore[index]
    # The same cut made in one step from the teacher, with the composed indices, gives the same model.
    onehot = [np.zeros(HEADS), np.zeros(HEADS)]
    onehot[1][kept_heads] = 1
    ffn_onehot = [np.zeros(FFN), np.zeros(FFN)]
    ffn_onehot[1][cascade.neurons_kept[0]] = 1  # type: ignore[index]
    direct = make_student(
        model, FormSpec(name="d", layers=1, heads=2, ffn=16), Importance(heads=onehot, neurons=ffn_onehot)
    )
    # (The silenced head's weights went with it: what is left is the teacher's.)
    assert direct.heads_kept == cascade.heads_kept and direct.neurons_kept == cascade.neurons_kept
    assert np.allclose(
        _logits(direct.model, tokenizer_json), _logits(cascade.model, tokenizer_json), atol=1e-5
    )


def test_static_int8_has_qdq_nodes_and_runs(teacher: tuple[torch.nn.Module, Path], tmp_path: Path) -> None:
    model, tokenizer_json = teacher
    raw = export(model, tmp_path / "raw.onnx")
    target = to_int8_static(raw, tmp_path / "static.onnx", [_batch(tokenizer_json)])
    ops = {n.op_type for n in onnx.load(str(target)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    out = _onnx_run(target, tokenizer_json)
    assert np.isfinite(out).all()
    assert (out.argmax(-1) == _logits(model, tokenizer_json).argmax(-1)).mean() >= 0.6


def _report(name: str, form: str, precision: str, accuracy: float) -> VariantReport:
    arch = Architecture(layers=1, heads=[1], ffn=[1], parameters=1, flops_per_token=1)
    return VariantReport(name, Path(name), {"accuracy": accuracy}, 0.0, 1.0, 1, precision, form, arch)


def test_gate_holds_forms_to_the_teacher_floor_and_quantized_variants_to_their_fp32() -> None:
    reports = [
        _report("fp32", "teacher", "fp32", 0.90),
        _report("int8", "teacher", "int8", 0.885),  # 1.5 points under its fp32: refused
        _report("l3-fp32", "l3", "fp32", 0.88),  # >= 0.97 x 0.90 = 0.873: passes
        _report("l3-int8", "l3", "int8", 0.875),  # within a point of l3-fp32 and over the floor
        _report("l1-fp32", "l1", "fp32", 0.86),  # under the floor
        _report("l1-int8", "l1", "int8", 0.86),  # under the floor too, though equal to its fp32
    ]
    pytorch = {"teacher": {"accuracy": 0.90}, "l3": {"accuracy": 0.881}, "l1": {"accuracy": 0.86}}
    gate(
        reports,
        pytorch,
        "sequence-classification",
        GateSpec(max_accuracy_drop=1.0, min_relative_quality=0.97),
    )
    verdict = {r.name: r.passed for r in reports}
    assert verdict == {
        "fp32": True, "int8": False, "l3-fp32": True, "l3-int8": True, "l1-fp32": False, "l1-int8": False,
    }  # fmt: skip
    by_name = {r.name: r for r in reports}
    assert "its fp32 graph (fp32)" in by_name["int8"].reason
    assert "min_relative_quality" in by_name["l1-int8"].reason and "0.8730" in by_name["l1-int8"].reason


def test_recipe_refuses_inconsistent_forms(tiny_base: Path) -> None:
    from slimserve.build.errors import RecipeError

    def recipe(**compress: object) -> None:
        parse_recipe(tiny_recipe("sentiment", tiny_base, compress=compress))

    with pytest.raises(RecipeError, match="set at least one of layers, heads, ffn"):
        recipe(forms=[{"name": "nothing"}])
    with pytest.raises(RecipeError, match="layer_map needs"):
        recipe(forms=[{"name": "l2", "layers": 2, "layer_map": [0]}])
    with pytest.raises(RecipeError, match="clash"):
        recipe(forms=[{"name": "int8", "layers": 1}])
    with pytest.raises(RecipeError, match="duplicate"):
        recipe(forms=[{"name": "a", "layers": 1}, {"name": "a", "ffn": 8}])
    with pytest.raises(RecipeError, match="must name a form listed before it"):
        recipe(forms=[{"name": "b", "from": "a", "ffn": 8}, {"name": "a", "layers": 1}])
    with pytest.raises(RecipeError, match="keeps its depth"):
        recipe(forms=[{"name": "a", "layers": 1}, {"name": "b", "from": "a", "layers": 1, "ffn": 8}])
    with pytest.raises(RecipeError, match="not built in profile"):
        recipe(forms=[{"name": "a", "layers": 1, "profiles": ["full"]}, {"name": "b", "from": "a", "ffn": 8}])


def _hidden_gap(student: torch.nn.Module, model: torch.nn.Module, batch, layer_map: list[int]) -> float:  # type: ignore[no-untyped-def]
    """Mean squared distance between each student layer's output and its mapped teacher layer's."""
    from slimserve.build.train.model_io import forward

    with torch.no_grad():
        mine = forward(student.eval(), batch, output_hidden_states=True).hidden_states
        theirs = forward(model.eval(), batch, output_hidden_states=True).hidden_states
    mask = torch.from_numpy(batch.attention_mask).bool()
    return float(
        sum(torch.mean((mine[s + 1][mask] - theirs[t + 1][mask]) ** 2) for s, t in enumerate(layer_map))
    )


def test_hidden_state_mse_pulls_student_layers_toward_their_teacher_layers(
    teacher: tuple[torch.nn.Module, Path], tiny_base: Path
) -> None:
    """With ``hidden_mse`` the student's layer outputs move toward the teacher layers they are mapped
    to; with logits alone they stay about as far. Both runs start from the same student, knocked off
    its teacher layer by noise so that there is a gap to close."""
    from slimserve.build.data.load import Examples
    from slimserve.build.evaluate.metrics import EvalBatches
    from slimserve.build.recipe import DistillSpec, TrainSpec
    from slimserve.build.train.distill import distill, teacher_logits

    model, tokenizer_json = teacher
    recipe = parse_recipe(tiny_recipe("sentiment", tiny_base))
    tokenizer = TextTokenizer(tokenizer_json, 32)
    texts = TEXTS * 8
    encodings = tokenizer.encode(texts)
    targets = [i % 2 for i in range(len(texts))]
    evaluation = EvalBatches.build(encodings[:5], Examples(texts[:5], targets[:5]))
    soft = teacher_logits(model, encodings, tokenizer.pad_id)
    batch = _batch(tokenizer_json)
    gaps: dict[float, tuple[float, float]] = {}
    for hidden_mse in (0.0, 5.0):
        student = make_student(model, FormSpec(name="l1", layers=1), None)
        torch.manual_seed(0)
        with torch.no_grad():
            for p in encoder_layers(student.model)[0].output.parameters():
                p.add_(0.3 * torch.randn_like(p))
        before = _hidden_gap(student.model, model, batch, student.layer_map)
        distill(
            student.model,
            model,
            encodings,
            targets,
            soft,
            recipe,
            TrainSpec(epochs=3, batch_size=8, learning_rate=1e-3),
            DistillSpec(hidden_mse=hidden_mse),
            evaluation,
            layer_map=student.layer_map,
            desc="test",
            pad_id=tokenizer.pad_id,
        )
        gaps[hidden_mse] = (before, _hidden_gap(student.model, model, batch, student.layer_map))
    assert gaps[0.0][0] == pytest.approx(gaps[5.0][0])  # the same start
    assert gaps[5.0][1] < 0.5 * gaps[5.0][0]
    assert gaps[5.0][1] < 0.5 * gaps[0.0][1]
