"""Entity-level F1 follows conlleval: exact spans and types, stray I- starts an entity."""

from __future__ import annotations

import pytest
from slimserve.build.evaluate.ner_metrics import entity_f1


def test_perfect_and_empty() -> None:
    tags = [["B-PER", "I-PER", "O", "B-LOC"]]
    assert entity_f1(tags, tags) == 1.0
    assert entity_f1([["O", "O"]], [["O", "O"]]) == 1.0


def test_boundary_error_costs_the_entity() -> None:
    true = [["B-PER", "I-PER", "O", "B-LOC"]]
    pred = [["B-PER", "O", "O", "B-LOC"]]
    # 1 of 2 predicted correct, 1 of 2 true found.
    assert entity_f1(true, pred) == pytest.approx(0.5)


def test_stray_i_counts_as_an_entity_start() -> None:
    assert entity_f1([["B-LOC", "I-LOC"]], [["I-LOC", "I-LOC"]]) == 1.0


def test_type_error_and_micro_average() -> None:
    true = [["B-PER", "O"], ["B-ORG", "B-LOC"]]
    pred = [["B-ORG", "O"], ["B-ORG", "B-LOC"]]
    # tp 2, fp 1, fn 1 -> precision 2/3, recall 2/3
    assert entity_f1(true, pred) == pytest.approx(2 / 3)


def test_lengths_must_match() -> None:
    with pytest.raises(ValueError, match="sentence 0: 2 true tags but 1 predicted"):
        entity_f1([["O", "O"]], [["O"]])
