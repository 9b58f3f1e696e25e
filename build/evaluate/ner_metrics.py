"""Entity-level scores for NER, with seqeval.

seqeval's default mode is used: it reproduces the CoNLL shared task's ``conlleval`` script, where an
entity is a maximal run of ``B-X``/``I-X`` of one type and a stray ``I-X`` (after ``O`` or another
type) starts a new entity. That is the same rule the serving decoder (``aggregation="simple"``) uses,
so the manifest's F1 counts the entities users receive. A predicted entity counts only when its
type and both boundaries match a true one exactly (micro-averaged over all types).
"""

from __future__ import annotations

from collections.abc import Sequence

from seqeval.metrics import classification_report, f1_score


def _check(true: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> None:
    if len(true) != len(pred):
        raise ValueError(f"{len(true)} true sentences but {len(pred)} predicted")
    for i, (t, p) in enumerate(zip(true, pred, strict=True)):
        if len(t) != len(p):
            raise ValueError(f"sentence {i}: {len(t)} true tags but {len(p)} predicted")


def entity_f1(true: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> float:
    """Entity-level micro F1 in 0..1 (conlleval rules, see the module docstring)."""
    _check(true, pred)
    if not any(tag != "O" for sent in true for tag in sent) and not any(
        tag != "O" for sent in pred for tag in sent
    ):
        return 1.0  # nothing to find and nothing found; seqeval would warn and return 0
    return float(f1_score([list(s) for s in true], [list(s) for s in pred], average="micro", zero_division=0))


def entity_report(true: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> str:
    """Per-type precision/recall/F1 table, for logs."""
    _check(true, pred)
    return str(
        classification_report([list(s) for s in true], [list(s) for s in pred], digits=4, zero_division=0)
    )
