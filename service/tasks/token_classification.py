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

Long texts: the tokenizer cuts one text into windows of ``max_seq_len`` with ``stride`` pieces of
overlap (``overflowing`` encodings, offsets still into the whole text). Each piece's logits are taken
from the window where it sits most centrally, so a piece at a window border is judged with context on
both sides; after that merge the text is one sequence and entities can neither be lost nor repeated
at borders.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from slimserve.service.engine.tokenizer import TextTokenizer
from slimserve.service.tasks.base import Prepared
from slimserve.service.tasks.classification import softmax
from tokenizers import Encoding, Tokenizer

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


class NerCodec:
    """Token-classification codec for the engine (see ``slimserve.service.tasks.base.Codec``)."""

    task = "token-classification"

    def __init__(self, tokenizer: TextTokenizer, labels: list[str], stride: int) -> None:
        window = tokenizer.max_seq_len
        specials = tokenizer.backend.num_special_tokens_to_add(is_pair=False)
        if not 0 <= stride < window - specials:
            raise ValueError(
                f"NER stride {stride} must be at least 0 and below the window's content length "
                f"{window - specials} (max_seq_len {window} minus {specials} special tokens)"
            )
        self.labels = list(labels)
        self.stride = stride
        self.max_seq_len = window
        # A private copy: the shared tokenizer truncates without overlap, and changing its settings
        # would race with other threads encoding through it.
        self._tok = Tokenizer.from_str(tokenizer.backend.to_str())
        self._tok.no_padding()
        self._tok.enable_truncation(max_length=window, stride=stride)

    def prepare(self, texts: list[str], params: NerParams | Aggregation | None = None) -> list[Prepared]:
        aggregation = _aggregation(params)
        out: list[Prepared] = []
        for text, enc in zip(
            texts, self._tok.encode_batch(list(texts), add_special_tokens=True), strict=True
        ):
            rows = [enc, *enc.overflowing]
            # Overflowing encodings carry their own (empty) overflowing lists; the engine batches rows.
            out.append(Prepared(text=text, encodings=rows, params=NerParams(aggregation)))
        return out

    def finish(self, prepared: Prepared, logits: list[np.ndarray]) -> NerResult:
        params = prepared.params if isinstance(prepared.params, NerParams) else NerParams()
        pieces = merge_windows(prepared.encodings, logits, self.stride)
        return NerResult(decode_pieces(prepared.text, pieces, self.labels, params.aggregation))


def _aggregation(params: NerParams | str | None) -> Aggregation:
    if params is None:
        return "simple"
    value = params.aggregation if isinstance(params, NerParams) else params
    for known in AGGREGATIONS:
        if value == known:
            return known
    raise ValueError(f"unknown aggregation {value!r}; expected one of {AGGREGATIONS}")


def merge_windows(encodings: Sequence[Encoding], logits: Sequence[np.ndarray], stride: int) -> Pieces:
    """One sequence of content pieces from overlapping windows.

    Window k's content (its non-special pieces) starts where window k-1's content ends minus
    ``stride`` pieces. Each piece keeps the logits of the window where it is farthest from an edge."""
    if len(encodings) != len(logits):
        raise ValueError(f"{len(encodings)} windows but {len(logits)} logits arrays")
    if len(encodings) == 1:
        # The common case (a text within one window): no overlap to resolve, so no per-piece loop.
        enc = encodings[0]
        content = [i for i, special in enumerate(enc.special_tokens_mask) if not special]
        enc_offsets, enc_words = enc.offsets, enc.word_ids
        rows = np.asarray(logits[0], dtype=np.float32)[content]
        return Pieces(
            [enc_offsets[i] for i in content],
            [enc_words[i] for i in content],
            softmax(rows) if len(rows) else rows,
        )
    offsets: list[tuple[int, int]] = []
    word_ids: list[int | None] = []
    chosen: list[np.ndarray] = []
    centrality: list[int] = []
    start = 0  # global index of the current window's first content piece
    for k, (enc, rows) in enumerate(zip(encodings, logits, strict=True)):
        # Each Encoding attribute access copies the whole list out of Rust: read them once.
        enc_offsets, enc_words = enc.offsets, enc.word_ids
        content = [i for i, special in enumerate(enc.special_tokens_mask) if not special]
        n = len(content)
        if k > 0:
            start = len(offsets) - min(stride, len(offsets))
        for j, pos in enumerate(content):
            g = start + j
            central = min(j, n - 1 - j)
            if g < len(offsets):
                if offsets[g] != enc_offsets[pos]:
                    raise ValueError(f"window {k} does not overlap the previous one by {stride} pieces")
                if central > centrality[g]:
                    chosen[g], centrality[g] = rows[pos], central
            else:
                offsets.append(enc_offsets[pos])
                word_ids.append(enc_words[pos])
                chosen.append(rows[pos])
                centrality.append(central)
    n_labels = logits[0].shape[-1] if logits else 0
    stacked = np.stack(chosen).astype(np.float32) if chosen else np.zeros((0, n_labels), np.float32)
    return Pieces(offsets, word_ids, softmax(stacked) if len(stacked) else stacked)
