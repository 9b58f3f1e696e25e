"""Scoring logits against gold labels, the same way for the PyTorch model and every ONNX variant.

Decoding goes through the serving code (``slimserve.service.tasks``), so the figures in the
manifest are what users of the served model get. Metrics are fractions 0..1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from slimserve.build.data.load import Examples
from slimserve.service.engine.codec import Prepared
from slimserve.service.engine.tokenizer import Batch, TextTokenizer, pad
from slimserve.service.store import Task, headline_metric
from slimserve.service.tasks import classification
from tokenizers import Encoding


@dataclass(frozen=True, slots=True)
class EvalBatches:
    """Evaluation examples encoded once and cut into padded batches, reused for every model.

    For token classification the rows are what ``/v1/ner`` runs: each sentence's words joined by
    spaces into one text, tokenized by the serving codec (windows over long texts), so the score
    below goes through the served decoding (window merge, BIO aggregation, character offsets) and
    the manifest's F1 is the one users get."""

    encodings: list[Encoding] | list[np.ndarray]
    """One per row: the tokenizer's encodings, or (token classification) the serving codec's rows
    of token ids."""
    batches: list[Batch]
    examples: Examples
    items: list[Prepared] | None = None  # token classification: one per sentence, rows in order
    codec: Any = None  # token classification: the serving codec that prepared ``items``
    spans: list[list[tuple[int, int]]] | None = None  # each word's character span in its text

    @classmethod
    def build(
        cls,
        encodings: list[Encoding] | list[np.ndarray],
        examples: Examples,
        batch_size: int = 32,
        pad_id: int = 0,
    ) -> EvalBatches:
        # Padded with the tokenizer's own pad id, as the serving batcher pads.
        batches = [pad(encodings[i : i + batch_size], pad_id) for i in range(0, len(encodings), batch_size)]
        return cls(encodings, batches, examples)

    @classmethod
    def served(
        cls,
        tokenizer: TextTokenizer,
        task: Task,
        labels: list[str],
        examples: Examples,
        batch_size: int = 32,
        stride: int | None = None,
    ) -> EvalBatches:
        """The evaluation split as the served model sees it (see the class docstring); NER windows
        overlap by ``stride`` pieces (default: the server's default)."""
        if task != "token-classification":
            return cls.build(tokenizer.encode(examples.inputs), examples, batch_size, tokenizer.pad_id)
        from slimserve.service.settings import Settings
        from slimserve.service.tasks.token_classification import NerCodec

        if stride is None:
            stride = Settings.model_fields["ner_stride"].default
        codec = NerCodec(tokenizer, labels, stride)
        texts, spans = (
            zip(*(join_words(words) for words in examples.inputs), strict=True) if len(examples) else ((), ())
        )
        items = codec.prepare(list(texts), None)
        rows = [row for item in items for row in item.rows]
        plain = cls.build(rows, examples, batch_size, tokenizer.pad_id)
        return replace(plain, items=items, codec=codec, spans=list(spans))


def join_words(words: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """A sentence's words as one text (single spaces) and each word's character span in it."""
    spans = []
    at = 0
    for word in words:
        spans.append((at, at + len(word)))
        at += len(word) + 1
    return " ".join(words), spans


def entities_to_tags(entities: Sequence[Any], spans: Sequence[tuple[int, int]]) -> list[str]:
    """Word-level BIO tags from served entities: a word belongs to the entity whose character span
    it overlaps; the first such word is B-, the rest I-."""
    tags = ["O"] * len(spans)
    for entity in entities:
        inside = [
            w for w, (s, e) in enumerate(spans) if s < entity.end and entity.start < e and tags[w] == "O"
        ]
        for k, w in enumerate(inside):
            tags[w] = ("B-" if k == 0 else "I-") + entity.entity
    return tags


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


def _served_predictions(logits: list[np.ndarray], data: EvalBatches) -> list[list[str]]:
    """Each sentence's word tags as ``/v1/ner`` (aggregation ``simple``) would give them."""
    assert data.items is not None and data.spans is not None and data.codec is not None
    rows: list[np.ndarray] = []
    at = 0
    for batch_logits in logits:
        for k in range(batch_logits.shape[0]):
            rows.append(batch_logits[k, : len(data.encodings[at])])
            at += 1
    pred: list[list[str]] = []
    at = 0
    for item, spans in zip(data.items, data.spans, strict=True):
        n = len(item.rows)
        result = data.codec.finish(item, rows[at : at + n])
        at += n
        pred.append(entities_to_tags(result.entities, spans))
    return pred


def score(task: Task, labels: list[str], logits: list[np.ndarray], data: EvalBatches) -> dict[str, float]:
    """accuracy + macro_f1 (sequence classification) or entity-level f1 (token classification)."""
    if task == "token-classification":
        from slimserve.build.evaluate.ner_metrics import entity_f1

        gold = [list(tags) for tags in data.examples.targets]
        return {"f1": float(entity_f1(gold, _served_predictions(logits, data)))}
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
