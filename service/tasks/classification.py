"""Decoding for sequence classification: softmax over logits, best label, optional top-k."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from slimserve.service.engine.tokenizer import TextTokenizer, is_truncated
from slimserve.service.errors import InputTooLong
from slimserve.service.tasks.base import Prepared


@dataclass(frozen=True, slots=True)
class LabelScore:
    label: str
    score: float


@dataclass(frozen=True, slots=True)
class Prediction:
    label: str
    score: float
    top: list[LabelScore] | None = None


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def decode(logits: np.ndarray, labels: list[str], top_k: int = 1) -> list[Prediction]:
    """One prediction per row of ``logits`` (batch, classes). ``top`` only when top_k > 1."""
    probs = softmax(logits.astype(np.float32))
    k = max(1, min(top_k, len(labels)))
    order = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
    out: list[Prediction] = []
    for row, idx in zip(probs, order, strict=True):
        best = int(idx[0])
        top = [LabelScore(labels[int(i)], float(row[int(i)])) for i in idx] if top_k > 1 else None
        out.append(Prediction(labels[best], float(row[best]), top))
    return out


def predicted_ids(logits: np.ndarray) -> np.ndarray:
    """Argmax label ids, as evaluation needs them."""
    return np.asarray(logits).argmax(axis=-1)


@dataclass(frozen=True, slots=True)
class ClassifyParams:
    top_k: int = 1
    truncate: bool = True


class ClassificationCodec:
    """The sequence-classification codec (see ``tasks/base.py``): one row per text, cut at the
    window unless the request asked not to truncate."""

    task = "sequence-classification"

    def __init__(self, tokenizer: TextTokenizer, labels: list[str]) -> None:
        self.tokenizer = tokenizer
        self.labels = labels

    def prepare(self, texts: list[str], params: Any) -> list[Prepared]:
        options = params if isinstance(params, ClassifyParams) else ClassifyParams()
        encodings = self.tokenizer.encode(texts)
        if not options.truncate:
            for index, enc in enumerate(encodings):
                if is_truncated(enc):
                    raise InputTooLong(
                        f"input {index} is longer than the model's window of {self.tokenizer.max_seq_len} "
                        "tokens; send shorter text or set truncate to true",
                        index=index,
                    )
        return [Prepared(text, [enc], options) for text, enc in zip(texts, encodings, strict=True)]

    def finish(self, prepared: Prepared, logits: list[np.ndarray]) -> Prediction:
        options = prepared.params if isinstance(prepared.params, ClassifyParams) else ClassifyParams()
        return decode(logits[0][np.newaxis, :], self.labels, options.top_k)[0]
