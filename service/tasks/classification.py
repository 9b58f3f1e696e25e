"""Decoding for sequence classification: softmax over logits, best label, optional top-k."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
