"""Fine-tuning: the base encoder with a fresh head, trained on the gold labels (cross-entropy) by
the shared training loop; the best epoch by the evaluation metric is kept."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from slimserve.build.data.load import Examples
from slimserve.build.evaluate.metrics import EvalBatches, headline, score
from slimserve.build.recipe import Recipe, TrainSpec
from slimserve.build.train.loop import TrainResult, train
from slimserve.build.train.model_io import encode, forward, logits_of
from slimserve.service.engine.tokenizer import Batch, TextTokenizer

IGNORE = -100


def token_labels(encodings: list[Any], examples: Examples, labels: list[str]) -> list[list[int]]:
    """Per-piece label ids: each word's first piece carries its tag, every other piece IGNORE."""
    from slimserve.build.data.align import align_labels

    label2id = {name: i for i, name in enumerate(labels)}
    return [
        list(align_labels(list(enc.word_ids), list(tags), label2id))
        for enc, tags in zip(encodings, examples.targets, strict=True)
    ]


def label_tensor(targets: list[Any], idx: np.ndarray, batch: Batch, token_level: bool) -> torch.Tensor:
    """The gold labels of a padded batch (token level: IGNORE on padding and later pieces)."""
    if not token_level:
        return torch.tensor([targets[i] for i in idx], dtype=torch.long)
    out = np.full(batch.input_ids.shape, IGNORE, dtype=np.int64)
    for row, i in enumerate(idx):
        out[row, : len(targets[i])] = targets[i]
    return torch.from_numpy(out)


def gold_targets(recipe: Recipe, encodings: list[Any], examples: Examples) -> list[Any]:
    if recipe.task == "token-classification":
        return token_labels(encodings, examples, recipe.labels)
    return list(examples.targets)


def evaluator(recipe: Recipe, evaluation: EvalBatches) -> Any:
    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        return score(recipe.task, recipe.labels, logits_of(model, evaluation), evaluation)

    return evaluate


def finetune(
    model: torch.nn.Module,
    tokenizer: TextTokenizer,
    recipe: Recipe,
    training: TrainSpec,
    train_examples: Examples,
    evaluation: EvalBatches,
) -> TrainResult:
    encodings = encode(tokenizer, recipe.task, train_examples)
    targets = gold_targets(recipe, encodings, train_examples)
    token_level = recipe.task == "token-classification"

    def objective(m: torch.nn.Module, batch: Batch, idx: np.ndarray) -> torch.Tensor:
        return forward(m, batch, labels=label_tensor(targets, idx, batch, token_level)).loss

    return train(
        model,
        encodings,
        objective,
        training,
        seed=recipe.seed,
        evaluate=evaluator(recipe, evaluation),
        best_by=headline(recipe.task),
        desc=f"fine-tune {recipe.name}",
        pad_id=tokenizer.pad_id,
    )
