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
    """Wraps a `tokenizers.Tokenizer` with no padding (the batcher pads each batch to its own longest
    row). ``encode`` truncates at the model's window (evaluation, warm-up); serving encodes whole texts
    without special tokens (``encode_content``) and makes its own rows of at most ``content_len``
    pieces with ``row``, so nothing the request does not use (overflow encodings) is ever built."""

    def __init__(self, path: Path, max_seq_len: int) -> None:
        self.max_seq_len = max_seq_len
        self._tok = Tokenizer.from_file(str(path))
        self._tok.no_padding()
        self._tok.enable_truncation(max_length=max_seq_len)
        self.pad_id = self._tok.token_to_id("[PAD]") or 0
        self._whole = Tokenizer.from_str(self._tok.to_str())
        self._whole.no_truncation()
        # The single-sequence template (BERT: [CLS] text [SEP]), read off a one-word encoding.
        probe = self._whole.encode("a", add_special_tokens=True)
        mask, ids = probe.special_tokens_mask, probe.ids
        content = [i for i, special in enumerate(mask) if not special]
        if not content or content != list(range(content[0], content[-1] + 1)) or any(probe.type_ids):
            raise ValueError(f"{path}: unsupported post-processor (expected specials around one sequence)")
        self.prefix = np.asarray(ids[: content[0]], dtype=np.int64)
        self.suffix = np.asarray(ids[content[-1] + 1 :], dtype=np.int64)
        self.content_len = max_seq_len - len(self.prefix) - len(self.suffix)
        if self.content_len < 1:
            raise ValueError(f"max_seq_len {max_seq_len} leaves no room for text beside the special tokens")

    @property
    def backend(self) -> Tokenizer:
        return self._tok

    def encode(self, texts: Sequence[str]) -> list[Encoding]:
        """Encodings truncated to the window; a truncated one has a non-empty ``overflowing``."""
        return self._tok.encode_batch(list(texts), add_special_tokens=True)

    def encode_content(self, texts: Sequence[str]) -> list[Encoding]:
        """Whole texts, no special tokens, no truncation: the serving codecs cut rows themselves."""
        return self._whole.encode_batch(list(texts), add_special_tokens=False)

    def row(self, content: Sequence[int] | np.ndarray) -> np.ndarray:
        """One model row: the template's special tokens around at most ``content_len`` pieces."""
        return np.concatenate((self.prefix, np.asarray(content, dtype=np.int64), self.suffix))

    def encode_words(self, words: Sequence[Sequence[str]]) -> list[Encoding]:
        """Pre-split words (NER evaluation data); ``Encoding.word_ids`` maps pieces to words."""
        return self._tok.encode_batch([list(w) for w in words], is_pretokenized=True)


def pad(encodings: Sequence[Encoding | np.ndarray], pad_id: int = 0) -> Batch:
    """A batch from encodings (their ids and type ids), or from rows of ids (``pad_rows``)."""
    if all(isinstance(e, np.ndarray) for e in encodings):
        return pad_rows(encodings, pad_id)  # type: ignore[arg-type]
    length = max(len(e) for e in encodings)
    n = len(encodings)
    ids = np.full((n, length), pad_id, dtype=np.int64)
    mask = np.zeros((n, length), dtype=np.int64)
    types = np.zeros((n, length), dtype=np.int64)
    for row, enc in enumerate(encodings):
        k = len(enc)
        ids[row, :k] = enc if isinstance(enc, np.ndarray) else enc.ids
        mask[row, :k] = 1
        if not isinstance(enc, np.ndarray):
            types[row, :k] = enc.type_ids
    return Batch(ids, mask, types)


def pad_rows(rows: Sequence[np.ndarray], pad_id: int = 0) -> Batch:
    """A batch from rows of token ids (type ids 0: single sequences)."""
    length = max(len(r) for r in rows)
    n = len(rows)
    ids = np.full((n, length), pad_id, dtype=np.int64)
    mask = np.zeros((n, length), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    return Batch(ids, mask, np.zeros((n, length), dtype=np.int64))
