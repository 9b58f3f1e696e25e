"""word_tags: the per-word view build/verify scores through."""

from __future__ import annotations

import numpy as np
from slimserve.service.tasks.token_classification import word_tags

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def one_hot(ids: list[int]) -> np.ndarray:
    out = np.zeros((len(ids), len(LABELS)), dtype=np.float32)
    out[np.arange(len(ids)), ids] = 5.0
    return out


def test_tag_comes_from_the_first_piece() -> None:
    # [CLS] angela mer ##kel berlin [SEP]; ##kel says B-LOC but only first pieces count.
    logits = one_hot([0, 1, 2, 3, 3, 0])
    assert word_tags(logits, [None, 0, 1, 1, 2, None], LABELS) == ["B-PER", "I-PER", "B-LOC"]


def test_words_without_pieces_are_outside() -> None:
    logits = one_hot([0, 1, 0])
    assert word_tags(logits, [None, 0, None], LABELS, n_words=3) == ["B-PER", "O", "O"]
    assert word_tags(logits, [None, 2, None], LABELS) == ["O", "O", "B-PER"]
