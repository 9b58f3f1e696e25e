"""Scoring logits against gold labels, the same way for the PyTorch model and every ONNX variant.

Decoding goes through the serving code (``slimserve.service.tasks``), so the figures in the
manifest are what users of the served model get. Metrics are fractions 0..1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from slimserve.build.data.load import Examples
from slimserve.service.engine.tokenizer import Batch, pad
from slimserve.service.store import Task, headline_metric
from slimserve.service.tasks import classification
from tokenizers import Encoding


@dataclass(frozen=True, slots=True)
class EvalBatches:
    """Evaluation examples encoded once and cut into padded batches, reused for every model."""

    encodings: list[Encoding]
    batches: list[Batch]
    examples: Examples

    @classmethod
    def build(
        cls, encodings: list[Encoding], examples: Examples, batch_size: int = 32, pad_id: int = 0
    ) -> EvalBatches:
        # Padded with the tokenizer's own pad id, as the serving batcher pads.
        batches = [pad(encodings[i : i + batch_size], pad_id) for i in range(0, len(encodings), batch_size)]
        return cls(encodings, batches, examples)


def accuracy(gold: Sequence[int], pred: Sequence[int]) -> float:
    g, p = np.asarray(gold), np.asarray(pred)
    return float((g == p).mean()) if g.size else 0.0


def macro_f1(gold: Sequence[int], pred: Sequence[int], n_labels: int) -> float:
    """Mean F1 over the classes that occur in gold or predictions (sklearn's default behaviour)."""
    g, p = np.asarray(gold), np.asarray(pred)
    scores = []
    for c in range(n_labels):
        tp = int(((g == c) & (p == c)).sum())
        fp = int(((g != c) & (p == c)).sum())
        fn = int(((g == c) & (p != c)).sum())
        if tp + fp + fn == 0:
            continue
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


def _word_predictions(
    logits: list[np.ndarray], data: EvalBatches, labels: list[str]
) -> tuple[list[list[str]], list[list[str]]]:
    from slimserve.service.tasks.token_classification import word_tags

    gold: list[list[str]] = []
    pred: list[list[str]] = []
    row = 0
    for batch_logits in logits:
        for k in range(batch_logits.shape[0]):
            enc = data.encodings[row]
            want = list(data.examples.targets[row])
            # Words cut off by the window come back as "O": the score stays honest.
            tags = list(word_tags(batch_logits[k, : len(enc.ids)], list(enc.word_ids), labels, len(want)))
            gold.append(want)
            pred.append(tags)
            row += 1
    return gold, pred


def score(task: Task, labels: list[str], logits: list[np.ndarray], data: EvalBatches) -> dict[str, float]:
    """accuracy + macro_f1 (sequence classification) or entity-level f1 (token classification)."""
    if task == "token-classification":
        from slimserve.build.evaluate.ner_metrics import entity_f1

        gold, pred = _word_predictions(logits, data, labels)
        return {"f1": float(entity_f1(gold, pred))}
    index = {name: i for i, name in enumerate(labels)}
    predicted = [index[p.label] for lg in logits for p in classification.decode(lg, labels)]
    gold_ids = list(data.examples.targets)
    return {"accuracy": accuracy(gold_ids, predicted), "macro_f1": macro_f1(gold_ids, predicted, len(labels))}


def parity(
    reference: list[np.ndarray], candidate: list[np.ndarray], data: EvalBatches
) -> tuple[float, float]:
    """(max |logit difference|, share of equal argmax labels) over real (unpadded) positions."""
    worst = 0.0
    same = 0
    total = 0
    for ref, cand, batch in zip(reference, candidate, data.batches, strict=True):
        ref32, cand32 = ref.astype(np.float32), cand.astype(np.float32)
        if ref32.ndim == 3:
            mask = batch.attention_mask.astype(bool)
            ref32, cand32 = ref32[mask], cand32[mask]
        if ref32.size:
            worst = max(worst, float(np.abs(ref32 - cand32).max()))
        agree = ref32.argmax(axis=-1) == cand32.argmax(axis=-1)
        same += int(agree.sum())
        total += int(agree.size)
    return worst, (same / total if total else 1.0)


def headline(task: Task) -> str:
    """The metric the gate compares and the fine-tuning keeps the best epoch by (the store's
    headline metric: the serving policy judges variants by the same one)."""
    return headline_metric(task)
