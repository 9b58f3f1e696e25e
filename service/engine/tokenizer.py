"""Tokenization with the `tokenizers` library from a model version's tokenizer.json.

Shared by the engine (serving) and build/verify (evaluation), so both see identical ids."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Encoding, Tokenizer


@dataclass(frozen=True, slots=True)
class Batch:
    """A padded batch, int64 as the exported graphs expect."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray

    @property
    def tokens(self) -> int:
        """Padded size (rows x padded length): what a batch costs the runner."""
        return int(self.input_ids.size)


class TextTokenizer:
    """Wraps a `tokenizers.Tokenizer` with truncation at the model's window and no padding
    (the batcher pads each batch to its own longest row)."""

    def __init__(self, path: Path, max_seq_len: int) -> None:
        self.max_seq_len = max_seq_len
        self._tok = Tokenizer.from_file(str(path))
        self._tok.no_padding()
        self._tok.enable_truncation(max_length=max_seq_len)
        self.pad_id = self._tok.token_to_id("[PAD]") or 0

    @property
    def backend(self) -> Tokenizer:
        return self._tok

    def encode(self, texts: Sequence[str]) -> list[Encoding]:
        """Encodings truncated to the window; a truncated one has a non-empty ``overflowing``."""
        return self._tok.encode_batch(list(texts), add_special_tokens=True)

    def encode_words(self, words: Sequence[Sequence[str]]) -> list[Encoding]:
        """Pre-split words (NER evaluation data); ``Encoding.word_ids`` maps pieces to words."""
        return self._tok.encode_batch([list(w) for w in words], is_pretokenized=True)


def is_truncated(encoding: Encoding) -> bool:
    return len(encoding.overflowing) > 0


def pad(encodings: Sequence[Encoding], pad_id: int = 0) -> Batch:
    length = max(len(e.ids) for e in encodings)
    n = len(encodings)
    ids = np.full((n, length), pad_id, dtype=np.int64)
    mask = np.zeros((n, length), dtype=np.int64)
    types = np.zeros((n, length), dtype=np.int64)
    for row, enc in enumerate(encodings):
        k = len(enc.ids)
        ids[row, :k] = enc.ids
        mask[row, :k] = 1
        types[row, :k] = enc.type_ids
    return Batch(ids, mask, types)
