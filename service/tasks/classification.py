"""Decoding for sequence classification: softmax over logits, best label, optional top-k."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from slimserve.service.engine.codec import Prepared
from slimserve.service.engine.tokenizer import TextTokenizer
from slimserve.service.errors import InputTooLong


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


@dataclass(frozen=True, slots=True)
class ClassifyParams:
    top_k: int = 1
    truncate: bool = True


@dataclass(slots=True)
class ClassifyItem(Prepared):
    params: ClassifyParams


class ClassificationCodec:
    """The sequence-classification codec (see ``engine/codec.py``): one row per text, cut at the
    window unless the request asked not to truncate (then a longer text is 400 input_too_long)."""

    token_level = False

    def __init__(self, tokenizer: TextTokenizer, labels: list[str]) -> None:
        self.tokenizer = tokenizer
        self.labels = labels

    def prepare(self, texts: list[str], params: Any) -> list[Prepared]:
        options = params if isinstance(params, ClassifyParams) else ClassifyParams()
        tok = self.tokenizer
        keep = tok.content_len
        out: list[Prepared] = []
        for index, enc in enumerate(tok.encode_content(texts)):
            if len(enc) > keep and not options.truncate:
                raise InputTooLong(
                    f"input {index} is {len(enc) + len(tok.prefix) + len(tok.suffix)} tokens long, over the "
                    f"model's window of {tok.max_seq_len}; send shorter text or set truncate to true",
                    index=index,
                )
            out.append(ClassifyItem([tok.row(enc.ids[:keep])], options))
        return out

    def finish(self, prepared: ClassifyItem, logits: list[np.ndarray]) -> Prediction:
        return decode(logits[0][np.newaxis, :], self.labels, prepared.params.top_k)[0]
