"""Decoding for token classification (NER): windows over long texts, BIO merging, exact offsets.

Which piece speaks for a word: the model is trained with the tag on each word's FIRST piece only
(later pieces are ignored by the loss, see ``slimserve.build.data.align``), so a word's tag and score come
from its first piece; later pieces never vote. An entity's span still covers every piece of its
words, so ``"Merkel"`` split into ``mer ##kel`` is returned whole.

Aggregations:

- ``simple``: words are merged into entities by their BIO tags: ``B-X`` starts one, ``I-X`` continues
  one of type X, and a stray ``I-X`` (after ``O`` or another type) starts a new one (the conlleval
  rule, the same one ``build/ner_metrics`` scores with). The score is the mean, over the entity's
  words, of the probability of the tag each word got.
- ``first``, ``average``, ``max``: as Hugging Face's token-classification pipeline. Each word's label
  distribution is its first piece's (``first``), the mean of its pieces' (``average``), or that of
  its most confident piece (``max``); the word takes the argmax label and its probability. Words are
  then grouped as the pipeline's ``group_entities`` does: a word joins the previous group when its
  type is the same and its tag is not ``B-`` (so ``O`` words group together and are dropped); the
  score is the mean of the group's word scores.
- ``none``: one entry per word piece whose own argmax tag is not ``O``, with the raw tag (``B-PER``...)
  and that piece's probability; non-first pieces are included as the model scored them.

Offsets are the tokenizer's offset mapping into the text as sent (Python string indices), so
``text[start:end] == entity.text`` always holds. The BERT normalizer drops combining marks when it
strips accents and maps them to nothing, so an entity's end is extended over combining marks that
directly follow it: ``"Jose\u0301"`` is returned with its accent.

Long texts: the text is tokenized once, whole, and cut into windows of the model's content length
that share ``stride`` pieces with their neighbours; a window is only a slice of the text's pieces
(token ids with the special tokens around them), so nothing is held twice. Each piece's logits are
taken from the window where it sits most centrally, so a piece at a window border is judged with
context on both sides; after that merge the text is one sequence and entities can neither be lost nor
repeated at borders.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from slimserve.service.engine.codec import Prepared
from slimserve.service.engine.tokenizer import TextTokenizer
from slimserve.service.tasks.classification import softmax

Aggregation = Literal["simple", "first", "average", "max", "none"]
AGGREGATIONS: tuple[Aggregation, ...] = ("simple", "first", "average", "max", "none")
OUTSIDE = "O"


@dataclass(frozen=True, slots=True)
class Entity:
    entity: str
    """The entity type (``PER``) for ``simple``; the raw piece tag (``B-PER``) for ``none``."""
    text: str
    start: int
    end: int
    score: float


@dataclass(frozen=True, slots=True)
class NerResult:
    entities: list[Entity]


@dataclass(frozen=True, slots=True)
class NerParams:
    aggregation: Aggregation = "simple"


def first_pieces(word_ids: Sequence[int | None]) -> dict[int, int]:
    """word id -> position of its first piece, in order of appearance."""
    first: dict[int, int] = {}
    for pos, word in enumerate(word_ids):
        if word is not None and word not in first:
            first[word] = pos
    return first


def word_tags(
    logits: np.ndarray, word_ids: Sequence[int | None], labels: Sequence[str], n_words: int | None = None
) -> list[str]:
    """One tag per word, read from the word's first piece. ``logits`` is (seq, n_labels) aligned with
    ``word_ids``. The result has ``n_words`` entries (default: highest word id + 1); a word with no
    piece in ``word_ids`` (cut by truncation, or one the normalizer erased) is tagged ``O``."""
    first = first_pieces(word_ids)
    if n_words is None:
        n_words = max(first, default=-1) + 1
    ids = np.asarray(logits).argmax(axis=-1)
    tags = [OUTSIDE] * n_words
    for word, pos in first.items():
        if word < n_words:
            tags[word] = labels[int(ids[pos])]
    return tags


def entity_type(tag: str) -> str:
    return tag[2:] if tag[:2] in ("B-", "I-") else tag


def _extend_over_marks(text: str, end: int) -> int:
    """Move ``end`` past combining marks that the normalizer dropped from the previous piece."""
    while end < len(text) and unicodedata.category(text[end]).startswith("M"):
        end += 1
    return end


@dataclass(frozen=True, slots=True)
class Pieces:
    """One text's content pieces (no special tokens) as a single sequence, windows merged."""

    offsets: list[tuple[int, int]]
    word_ids: list[int | None]
    probs: np.ndarray
    """(n_pieces, n_labels) softmax probabilities."""


def decode_pieces(text: str, pieces: Pieces, labels: Sequence[str], aggregation: Aggregation) -> list[Entity]:
    if aggregation == "none":
        return _decode_none(text, pieces, labels)
    if aggregation == "simple":
        return _decode_simple(text, pieces, labels)
    if aggregation in ("first", "average", "max"):
        return _decode_words(text, pieces, labels, aggregation)
    raise ValueError(f"unknown aggregation {aggregation!r}; expected one of {AGGREGATIONS}")


def _decode_none(text: str, pieces: Pieces, labels: Sequence[str]) -> list[Entity]:
    out: list[Entity] = []
    best, score = _best(pieces.probs)
    for pos, (start, end) in enumerate(pieces.offsets):
        tag = labels[best[pos]]
        if tag == OUTSIDE or end <= start:
            continue
        end = _extend_over_marks(text, end)
        out.append(Entity(tag, text[start:end], start, end, score[pos]))
    return out


def _best(probs: np.ndarray) -> tuple[list[int], list[float]]:
    """Each piece's argmax label and its probability, as Python lists: the decoders walk pieces in
    Python, and indexing numpy arrays element by element costs ~10x more than lists."""
    best = probs.argmax(axis=-1)
    return best.tolist(), probs[np.arange(len(best)), best].tolist()


def _decode_simple(text: str, pieces: Pieces, labels: Sequence[str]) -> list[Entity]:
    # Each word: its span over all its pieces, its tag and score from its first piece.
    spans: dict[int, list[int]] = {}
    for (start, end), word in zip(pieces.offsets, pieces.word_ids, strict=True):
        if word is None or end <= start:
            continue
        span = spans.setdefault(word, [start, end])
        span[0] = min(span[0], start)
        span[1] = max(span[1], end)
    first = first_pieces(pieces.word_ids)
    best, best_score = _best(pieces.probs)

    out: list[Entity] = []
    current: tuple[str, int, int, list[float]] | None = None  # type, start, end, word scores

    def close() -> None:
        if current is not None:
            kind, start, end, scores = current
            end = _extend_over_marks(text, end)
            out.append(Entity(kind, text[start:end], start, end, sum(scores) / len(scores)))

    for word, pos in first.items():
        if word not in spans:
            continue
        tag = labels[best[pos]]
        score = best_score[pos]
        start, end = spans[word]
        if tag == OUTSIDE:
            close()
            current = None
        elif tag.startswith("I-") and current is not None and current[0] == entity_type(tag):
            current[3].append(score)
            current = (current[0], current[1], end, current[3])
        else:  # B-X, a stray I-X, or a bare type: a new entity starts here
            close()
            current = (entity_type(tag), start, end, [score])
    close()
    return out


def _decode_words(text: str, pieces: Pieces, labels: Sequence[str], strategy: str) -> list[Entity]:
    """Hugging Face's word-level aggregations (``first`` / ``average`` / ``max``), then its grouping."""
    words: dict[int, list[int]] = {}  # word id -> its piece positions, in order of appearance
    for pos, ((start, end), word) in enumerate(zip(pieces.offsets, pieces.word_ids, strict=True)):
        if word is not None and end > start:
            words.setdefault(word, []).append(pos)
    out: list[Entity] = []
    group: tuple[str, int, int, list[float]] | None = None  # type, start, end, word scores

    def close() -> None:
        if group is not None and group[0] != OUTSIDE:
            kind, start, end, scores = group
            end = _extend_over_marks(text, end)
            out.append(Entity(kind, text[start:end], start, end, sum(scores) / len(scores)))

    for positions in words.values():
        rows = pieces.probs[positions]
        if strategy == "first":
            dist = rows[0]
        elif strategy == "average":
            dist = rows.mean(axis=0)
        else:  # max: the piece whose best label is the most probable speaks for the word
            dist = rows[int(rows.max(axis=-1).argmax())]
        best = int(dist.argmax())
        tag, score = labels[best], float(dist[best])
        start = min(pieces.offsets[p][0] for p in positions)
        end = max(pieces.offsets[p][1] for p in positions)
        kind = entity_type(tag)
        if group is not None and group[0] == kind and not tag.startswith("B-"):
            group[3].append(score)
            group = (kind, group[1], end, group[3])
        else:
            close()
            group = (kind, start, end, [score])
    close()
    return out


@dataclass(slots=True)
class NerItem(Prepared):
    """One text: its rows (windows), and what decoding needs of its pieces, kept once."""

    text: str
    offsets: np.ndarray
    """(n_pieces, 2) character offsets of the text's pieces into ``text``."""
    word_ids: np.ndarray
    """(n_pieces,) word index of each piece, -1 for none."""
    starts: list[int]
    """The first piece of each window."""
    params: NerParams


class NerCodec:
    """Token-classification codec for the engine (see ``slimserve.service.engine.codec``)."""

    token_level = True

    def __init__(self, tokenizer: TextTokenizer, labels: list[str], stride: int) -> None:
        window = tokenizer.content_len
        if not 0 <= stride < window:
            raise ValueError(
                f"NER stride {stride} must be at least 0 and below the window's content length "
                f"{window} (max_seq_len {tokenizer.max_seq_len} minus "
                f"{tokenizer.max_seq_len - window} special tokens)"
            )
        self.labels = list(labels)
        self.stride = stride
        self.max_seq_len = tokenizer.max_seq_len
        self.tokenizer = tokenizer

    def prepare(self, texts: list[str], params: NerParams | Aggregation | None = None) -> list[Prepared]:
        options = NerParams(_aggregation(params))
        tok = self.tokenizer
        out: list[Prepared] = []
        for text, enc in zip(texts, tok.encode_content(texts), strict=True):
            ids = np.asarray(enc.ids, dtype=np.int64)
            starts = window_starts(len(ids), tok.content_len, self.stride)
            rows = [tok.row(ids[s : s + tok.content_len]) for s in starts]
            offsets = np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2)
            words = np.asarray([-1 if w is None else w for w in enc.word_ids], dtype=np.int64)
            out.append(NerItem(rows, text, offsets, words, starts, options))
        return out

    def finish(self, prepared: NerItem, logits: list[np.ndarray]) -> NerResult:
        pieces = merge_windows(prepared, logits, len(self.tokenizer.prefix), self.tokenizer.content_len)
        return NerResult(decode_pieces(prepared.text, pieces, self.labels, prepared.params.aggregation))


def window_starts(n: int, window: int, stride: int) -> list[int]:
    """First piece of each window over ``n`` pieces: ``window`` pieces each, neighbours sharing
    ``stride``; one (possibly empty) window when the text fits."""
    starts = [0]
    while starts[-1] + window < n:
        starts.append(starts[-1] + window - stride)
    return starts


def _aggregation(params: NerParams | str | None) -> Aggregation:
    if params is None:
        return "simple"
    value = params.aggregation if isinstance(params, NerParams) else params
    for known in AGGREGATIONS:
        if value == known:
            return known
    raise ValueError(f"unknown aggregation {value!r}; expected one of {AGGREGATIONS}")


def merge_windows(item: NerItem, logits: Sequence[np.ndarray], prefix: int, window: int) -> Pieces:
    """One sequence of the text's pieces from its overlapping windows.

    ``logits[k]`` covers window k's row: ``prefix`` special tokens, then pieces ``starts[k]`` onwards.
    Each piece keeps the logits of the window where it is farthest from an edge (the earlier window
    on a tie)."""
    n = len(item.offsets)
    if len(logits) != len(item.starts):
        raise ValueError(f"{len(item.starts)} windows but {len(logits)} logits arrays")
    n_labels = logits[0].shape[-1] if logits else 0
    if len(logits) == 1:
        # The common case (a text within one window): no overlap to resolve.
        chosen = np.asarray(logits[0], dtype=np.float32)[prefix : prefix + n]
    else:
        chosen = np.zeros((n, n_labels), dtype=np.float32)
        best = np.full(n, -1, dtype=np.int64)
        for start, rows in zip(item.starts, logits, strict=True):
            end = min(start + window, n)
            j = np.arange(end - start)
            central = np.minimum(j, end - start - 1 - j)
            better = central > best[start:end]
            best[start:end][better] = central[better]
            chosen[start:end][better] = rows[prefix + j[better]]
    words = item.word_ids.tolist()
    return Pieces(
        [tuple(o) for o in item.offsets.tolist()],
        [None if w < 0 else w for w in words],
        softmax(chosen) if len(chosen) else chosen.reshape(0, n_labels),
    )
