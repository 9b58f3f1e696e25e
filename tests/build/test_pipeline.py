"""The whole build, end to end: the CLI on a few hundred real rows, the gate refusing a variant,
failures that leave the store untouched."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper
from slimserve.build import publish as publish_mod
from slimserve.build.errors import BaseModelError, GateError, PublishError
from slimserve.build.evaluate.verify import VerifyConfig
from slimserve.build.pipeline import BuildOptions, run_build
from slimserve.build.recipe import parse_recipe
from slimserve.service.store import model_names, read_manifest, verify_checksums, version_dir

from tests.tiny import tiny_recipe

pytestmark = pytest.mark.slow
SLIMSERVE = str(Path(sys.executable).with_name("slimserve"))
QUIET = BuildOptions(verify=VerifyConfig(latency_repeats=2), say=lambda _m: None)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("SLIMSERVE_DATA_DIR", None)
    return subprocess.run([SLIMSERVE, *args], capture_output=True, text=True, env=env, timeout=300)


def _store_is_empty(store: Path) -> bool:
    return not store.exists() or not any(store.iterdir())


def test_cli_build_publishes_and_models_lists(
    tmp_path: Path, tiny_data_dir: Path, write_recipe: Callable[..., Path]
) -> None:
    store = tmp_path / "store"
    recipe = write_recipe("sentiment")
    done = _cli(
        "build", str(recipe), "--profile", "quick", "--store", str(store), "--data-dir", str(tiny_data_dir)
    )
    assert done.returncode == 0, done.stderr
    assert "published sentiment version 1" in done.stdout
    directory = version_dir(store, "sentiment", 1)
    manifest = read_manifest(directory)
    verify_checksums(directory, manifest)
    assert set(manifest.variants) == {"fp32", "fp16", "int8", "int8-static"}
    assert manifest.recipe["profile"] == "quick" and manifest.recipe["name"] == "sentiment"
    assert manifest.data.source == "sst2/train.tsv, sst2/dev.tsv"
    assert manifest.build["train_examples"] == 200  # type: ignore[attr-defined]
    # Where a build's time went, per phase; no compressed forms, so no compress phase.
    phases = manifest.build["step_seconds"]  # type: ignore[attr-defined]
    assert list(phases) == ["finetune", "convert", "verify", "probe"]
    assert all(v >= 0 for v in phases.values()) and phases["finetune"] > 0
    assert " s: finetune " in done.stderr
    for variant in manifest.variants.values():
        assert variant.parity.label_agreement >= 0.9
        assert variant.latency_ms["batch_1"] > 0
    assert sorted(p.name for p in directory.iterdir()) == [
        "frontier.png",
        "frontier.svg",
        "manifest.json",
        "model.fp16.onnx",
        "model.fp32.onnx",
        "model.int8-static.onnx",
        "model.int8.onnx",
        "report.md",
        "tokenizer.json",
    ]
    # Readable by a serving user other than the builder (mkdtemp alone would leave it 0700).
    assert directory.stat().st_mode & 0o777 == 0o755
    listing = _cli("models", "--store", str(store))
    assert listing.returncode == 0
    lines = listing.stdout.splitlines()
    assert lines[1].split()[:6] == ["sentiment", "sequence-classification", "1", "fp32", "fp32", "teacher"]
    assert [line.split()[0] for line in lines[2:5]] == ["fp16", "int8", "int8-static"]


def test_keep_pytorch_publishes_a_checkpoint_the_transformers_pipeline_loads(
    tmp_path: Path, tiny_data_dir: Path, write_recipe: Callable[..., Path]
) -> None:
    from transformers import pipeline

    store = tmp_path / "store"
    done = _cli(
        "build", str(write_recipe("sentiment")), "--store", str(store),
        "--data-dir", str(tiny_data_dir), "--keep-pytorch",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    directory = version_dir(store, "sentiment", 1)
    verify_checksums(directory, read_manifest(directory))
    classify = pipeline("text-classification", model=str(directory / "pytorch"), device="cpu")
    out = classify(["a gorgeous film", "a tedious mess"])
    # The recipe's label names travel with the checkpoint, so the baseline answers like slimserve.
    assert len(out) == 2 and {o["label"] for o in out} <= {"negative", "positive"}


def _break(tmp_path: Path, tiny_data_dir: Path, how: str) -> tuple[Path, str]:
    data = tmp_path / "data"
    (data / "sst2").mkdir(parents=True)
    dev = (tiny_data_dir / "sst2" / "dev.tsv").read_text(encoding="utf-8")
    train = (tiny_data_dir / "sst2" / "train.tsv").read_text(encoding="utf-8")
    (data / "sst2" / "dev.tsv").write_text(dev, encoding="utf-8")
    if how == "missing":
        return data, "sst2/train.tsv: data file not found"
    if how == "unknown label":
        train += "a sentence with a third label\t7\n"
        expect = "label(s) ['7'] in the data are not in the recipe"
    else:
        train = "sentence\tlabel\n"
        expect = "no examples"
    (data / "sst2" / "train.tsv").write_text(train, encoding="utf-8")
    return data, expect


@pytest.mark.parametrize("how", ["missing", "unknown label", "empty"])
def test_cli_data_errors_exit_1_and_write_nothing(
    tmp_path: Path, tiny_data_dir: Path, write_recipe: Callable[..., Path], how: str
) -> None:
    data, expect = _break(tmp_path, tiny_data_dir, how)
    store = tmp_path / "store"
    done = _cli("build", str(write_recipe("sentiment")), "--store", str(store), "--data-dir", str(data))
    assert done.returncode == 1
    assert done.stderr.startswith("error: ") and expect in done.stderr
    assert "Traceback" not in done.stderr
    assert _store_is_empty(store)


def test_cli_bad_recipe_field_and_bad_base_model(
    tmp_path: Path, tiny_data_dir: Path, write_recipe: Callable[..., Path]
) -> None:
    store = tmp_path / "store"
    bad = write_recipe("sentiment", max_seq_len="long")
    done = _cli("build", str(bad), "--store", str(store), "--data-dir", str(tiny_data_dir))
    assert done.returncode == 1 and "field `max_seq_len`" in done.stderr

    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{not json", encoding="utf-8")
    done = _cli(
        "build", str(write_recipe("sentiment", base_model=str(broken))), "--store", str(store),
        "--data-dir", str(tiny_data_dir),
    )  # fmt: skip
    assert done.returncode == 1
    assert "cannot load the base model" in done.stderr and str(broken) in done.stderr
    assert "Traceback" not in done.stderr
    assert _store_is_empty(store)


def test_cli_bad_usage_exits_2(write_recipe: Callable[..., Path]) -> None:
    assert _cli("build", str(write_recipe("sentiment")), "--profile", "huge").returncode == 2
    assert _cli("build").returncode == 2


def _flip_classes(files: dict[str, Path]) -> None:
    """Swap the two output classes of the int8 file: every prediction becomes the other label."""
    model = onnx.load(str(files["int8"]))
    for init in model.graph.initializer:
        if "classifier" in init.name:
            array = numpy_helper.to_array(init)
            axis = next(i for i, n in enumerate(array.shape) if n == 2)
            init.CopyFrom(numpy_helper.from_array(np.flip(array, axis=axis).copy(), init.name))
    onnx.save(model, str(files["int8"]))


def test_gate_refuses_a_degraded_variant_and_publishes_the_rest(tiny_base: Path, tmp_path: Path) -> None:
    # Evaluate on the training rows after many steps: the tiny model memorises them, so the
    # reference accuracy is far above chance and the flipped int8 far below it.
    data = tmp_path / "data"
    (data / "sst2").mkdir(parents=True)
    rows = ["sentence\tlabel", *[f"good film number {i} , lovely\t1" for i in range(24)]]
    rows += [f"bad film number {i} , awful\t0" for i in range(24)]
    for name in ("train.tsv", "dev.tsv"):
        (data / "sst2" / name).write_text("\n".join(rows) + "\n", encoding="utf-8")
    raw = tiny_recipe("sentiment", tiny_base, gate={"max_accuracy_drop": 1.0})
    raw["profiles"]["quick"] |= {"epochs": 15, "learning_rate": 3e-3, "batch_size": 8}
    store = tmp_path / "store"
    options = BuildOptions(verify=QUIET.verify, say=QUIET.say, on_variants=_flip_classes)
    result = run_build(parse_recipe(raw), "quick", store, data, options)
    manifest = result.manifest
    assert manifest.reference_metrics["accuracy"] >= 0.9
    assert set(manifest.variants) == {"fp32", "fp16", "int8-static"}
    assert [r.name for r in result.refused] == ["int8"]
    assert "max_accuracy_drop = 1.0" in manifest.refused["int8"]  # type: ignore[attr-defined]
    assert not (result.path / "model.int8.onnx").exists()
    verify_checksums(result.path, manifest)


def test_no_passing_variant_fails_and_publishes_nothing(
    tiny_base: Path, tiny_data_dir: Path, tmp_path: Path
) -> None:
    # A negative allowance demands that a variant beat PyTorch: none can.
    raw = tiny_recipe("sentiment", tiny_base, gate={"max_accuracy_drop": -1.0}, variants=["fp32", "int8"])
    store = tmp_path / "store"
    with pytest.raises(GateError, match=r"no variant passed.*fp32: .*int8: .*nothing published"):
        run_build(parse_recipe(raw), "quick", store, tiny_data_dir, QUIET)
    assert model_names(store) == []
    assert _store_is_empty(store)


def test_full_disk_during_publish_leaves_no_trace(
    tiny_base: Path, tiny_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_copy = publish_mod.shutil.copyfile
    copied: list[str] = []

    def filling_copy(src: Path, dst: Path) -> object:
        if copied:
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        copied.append(str(dst))
        return real_copy(src, dst)

    monkeypatch.setattr(publish_mod.shutil, "copyfile", filling_copy)
    store = tmp_path / "store"
    with pytest.raises(PublishError, match="disk is full"):
        run_build(parse_recipe(tiny_recipe("intent", tiny_base)), "quick", store, tiny_data_dir, QUIET)
    assert copied, "the injected failure never ran"
    assert sorted(p.name for p in store.rglob("*")) == []


def test_int8_from_the_exported_graph_when_the_recipe_says_so(
    tiny_base: Path, tiny_data_dir: Path, tmp_path: Path
) -> None:
    seen: dict[str, set[str]] = {}

    def ops(files: dict[str, Path]) -> None:
        seen.update({k: {n.op_type for n in onnx.load(str(p)).graph.node} for k, p in files.items()})

    raw = tiny_recipe(
        "intent", tiny_base, variants=["fp32", "int8"], quantization={"int8_source": "exported"}
    )
    options = BuildOptions(verify=QUIET.verify, say=QUIET.say, on_variants=ops)
    result = run_build(parse_recipe(raw), "quick", tmp_path / "store", tiny_data_dir, options)
    assert "Attention" in seen["fp32"]
    assert "QAttention" not in seen["int8"] and "MatMulInteger" in seen["int8"]
    assert result.manifest.recipe["quantization"]["int8_source"] == "exported"
    assert result.manifest.variants["int8"].parity.label_agreement >= 0.9


def test_a_rebuild_with_the_same_seed_is_identical(
    tiny_base: Path, tiny_data_dir: Path, tmp_path: Path
) -> None:
    recipe = parse_recipe(tiny_recipe("intent", tiny_base, variants=["fp32"]))
    first = run_build(recipe, "quick", tmp_path / "store", tiny_data_dir, QUIET)
    second = run_build(recipe, "quick", tmp_path / "store", tiny_data_dir, QUIET)
    assert (first.version, second.version) == (1, 2)
    assert first.manifest.variants["fp32"].sha256 == second.manifest.variants["fp32"].sha256
    assert first.manifest.build["history"] == second.manifest.build["history"]  # type: ignore[attr-defined]


def _fp32_logits(directory: Path, texts: list[str]) -> np.ndarray:
    from slimserve.service.engine.tokenizer import TextTokenizer, pad

    tokenizer = TextTokenizer(directory / "tokenizer.json", 32)
    batch = pad(tokenizer.encode(texts), tokenizer.pad_id)
    session = ort.InferenceSession(str(directory / "model.fp32.onnx"), providers=["CPUExecutionProvider"])
    feeds = {i.name: getattr(batch, i.name) for i in session.get_inputs()}
    return session.run(None, feeds)[0]  # type: ignore[no-any-return]


def test_an_already_fine_tuned_base_with_epochs_0_is_the_teacher_as_it_is(
    tiny_base: Path, tiny_data_dir: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    raw = tiny_recipe("sentiment", tiny_base, variants=["fp32"])
    kept = BuildOptions(verify=QUIET.verify, say=QUIET.say, keep_pytorch=True)
    first = run_build(parse_recipe(raw), "quick", store, tiny_data_dir, kept)
    assert first.manifest.build["steps"] > 0  # type: ignore[attr-defined]

    again = tiny_recipe("sentiment", first.path / "pytorch", variants=["fp32"])
    again["profiles"]["quick"]["epochs"] = 0
    second = run_build(parse_recipe(again), "quick", store, tiny_data_dir, QUIET)
    assert second.version == 2
    assert second.manifest.build["steps"] == 0 and second.manifest.build["history"] == []  # type: ignore[attr-defined]
    # Its head was kept, not drawn afresh: the same weights answer the same.
    texts = ["a gorgeous , witty film", "a tedious , joyless mess", "it is a film"]
    np.testing.assert_allclose(
        _fp32_logits(second.path, texts), _fp32_logits(first.path, texts), rtol=1e-4, atol=1e-5
    )
    assert second.manifest.variants["fp32"].metrics == first.manifest.variants["fp32"].metrics

    # A head with other labels (or in another order), or none at all, is refused before any work.
    checkpoint = first.path / "pytorch"
    swapped = tiny_recipe("sentiment", checkpoint, variants=["fp32"], labels=["positive", "negative"])
    swapped["profiles"]["quick"]["epochs"] = 0
    with pytest.raises(BaseModelError, match=r"labels are \['negative', 'positive'\]"):
        run_build(parse_recipe(swapped), "quick", store, tiny_data_dir, QUIET)
    headless = tiny_recipe("sentiment", tiny_base, variants=["fp32"])
    headless["profiles"]["quick"]["epochs"] = 0
    with pytest.raises(BaseModelError, match="ForSequenceClassification"):
        run_build(parse_recipe(headless), "quick", store, tiny_data_dir, QUIET)
    assert sorted(p.name for p in (store / "sentiment").iterdir()) == ["1", "2"]


def _memorisable_sst2(tmp_path: Path) -> Path:
    """Rows a tiny model learns by heart: evaluated on its training rows, accuracy is far above
    chance, so a flipped variant is far below it."""
    data = tmp_path / "data"
    (data / "sst2").mkdir(parents=True)
    rows = ["sentence\tlabel", *[f"good film number {i} , lovely\t1" for i in range(24)]]
    rows += [f"bad film number {i} , awful\t0" for i in range(24)]
    for name in ("train.tsv", "dev.tsv"):
        (data / "sst2" / name).write_text("\n".join(rows) + "\n", encoding="utf-8")
    return data


def _flip(name: str) -> Callable[[dict[str, Path]], None]:
    def flip(files: dict[str, Path]) -> None:
        _flip_classes({"int8": files[name]})

    return flip


def test_compressed_forms_are_built_verified_gated_and_recommended(tiny_base: Path, tmp_path: Path) -> None:
    raw = tiny_recipe(
        "sentiment",
        tiny_base,
        variants=["fp32", "int8", "int8-static"],
        gate={"max_accuracy_drop": 1.0, "min_relative_quality": 0.9},
        compress={
            "forms": [
                {"name": "l1", "layers": 1},
                {
                    "name": "l1-h2-f32",
                    "layers": 1,
                    "heads": 2,
                    "ffn": 32,
                    "precisions": ["fp32", "int8"],
                    "distill": {"temperature": 1.0, "hidden_mse": 0.5},  # its own loss
                },
                {"name": "big", "ffn": 48, "profiles": ["full"]},  # not in the quick profile
                # A cascade: the trained l1 student pruned again, by its own importance.
                {"name": "l1-f24", "from": "l1", "ffn": 24, "precisions": ["fp32"]},
            ],
            "training": {"quick": {"epochs": 15, "learning_rate": 3e-3, "batch_size": 8}},
        },
    )
    raw["profiles"]["quick"] |= {"epochs": 15, "learning_rate": 3e-3, "batch_size": 8}
    # The distilled l1's fp32 graph is made to answer wrongly: under the teacher floor, refused;
    # its int8 (not flipped) still passes, gated against the teacher floor, not only its fp32.
    options = BuildOptions(verify=QUIET.verify, say=QUIET.say, on_variants=_flip("l1-fp32"))
    result = run_build(parse_recipe(raw), "quick", tmp_path / "store", _memorisable_sst2(tmp_path), options)
    manifest = result.manifest
    assert manifest.schema_version == 2
    assert [r.name for r in result.refused] == ["l1-fp32"]
    assert "min_relative_quality" in manifest.refused["l1-fp32"]  # type: ignore[attr-defined]
    assert set(manifest.variants) == {
        "fp32", "int8", "int8-static", "l1-fp16", "l1-int8", "l1-h2-f32-fp32", "l1-h2-f32-int8",
        "l1-f24-fp32",
    }  # fmt: skip
    teacher = manifest.variants["fp32"]
    assert teacher.metrics["accuracy"] >= 0.9
    for name, v in manifest.variants.items():
        assert v.architecture is not None and v.precision is not None
        assert set(v.latency_ms) == {"batch_1", "batch_32"}
        assert v.metrics["accuracy"] >= 0.9 * teacher.metrics["accuracy"], name
    assert manifest.variants["int8-static"].precision == "int8-static"
    small = manifest.variants["l1-h2-f32-int8"]
    assert (small.form, small.architecture.layers, small.architecture.heads, small.architecture.ffn) == (
        "l1-h2-f32", 1, [2], [32],
    )  # fmt: skip
    assert small.architecture.parameters < teacher.architecture.parameters  # type: ignore[union-attr]
    assert small.architecture.flops_per_token < teacher.architecture.flops_per_token / 2  # type: ignore[union-attr]
    # The recommendation is the policy's: the fastest variant within 97% of the fp32 teacher.
    from slimserve.build.evaluate.policy import recommend

    assert manifest.policy is not None and manifest.policy.teacher == teacher.metrics["accuracy"]
    assert manifest.recommended == recommend(
        manifest.variants, "sequence-classification", teacher.metrics["accuracy"], 0.97
    )
    forms = manifest.build["forms"]  # type: ignore[attr-defined]
    assert set(forms) == {"l1", "l1-h2-f32", "l1-f24"} and forms["l1"]["layer_map"] == [1]
    phases = manifest.build["step_seconds"]  # type: ignore[attr-defined]
    assert list(phases) == ["finetune", "convert", "compress", "verify", "probe"]
    assert phases["compress"] > 0
    assert forms["l1-f24"]["from"] == "l1" and forms["l1-f24"]["layer_map"] == [1]
    assert forms["l1-f24"]["neurons_kept_count"] == [24] and forms["l1"]["from"] is None
    cascade = manifest.variants["l1-f24-fp32"].architecture
    assert (cascade.layers, cascade.ffn) == (1, [24])  # type: ignore[union-attr]
    assert len(forms["l1-h2-f32"]["heads_kept"][0]) == 2
    assert forms["l1"]["distill"] == {"temperature": 2.0, "alpha": 0.5, "hidden_mse": 0.0}
    assert forms["l1-h2-f32"]["distill"] == {"temperature": 1.0, "alpha": 0.5, "hidden_mse": 0.5}
    # The build's frontier report lands beside the manifest; every published file is checksummed.
    assert {"report.md", "frontier.png", "frontier.svg"} <= {p.name for p in result.path.iterdir()}
    verify_checksums(result.path, manifest)
