"""The training loop's cheaper settings (quick profiles): bfloat16 autocast and frozen word embeddings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from slimserve.build.errors import RecipeError
from slimserve.build.recipe import TrainSpec, parse_recipe
from slimserve.build.train.loop import bf16_supported, train
from slimserve.build.train.model_io import forward, load_base
from slimserve.service.engine.tokenizer import Batch, TextTokenizer

from tests.tiny import tiny_recipe

TEXTS = ["a fine film", "dull and long", "the best thing this year", "not good", "it works"] * 8


Run = tuple[torch.nn.Module, dict[str, torch.Tensor], list[torch.dtype]]
WORDS = "bert.embeddings.word_embeddings.weight"


def _run(tiny_base: Path, work: Path, **spec: object) -> Run:
    recipe = parse_recipe(tiny_recipe("sentiment", tiny_base))
    model, tokenizer_json = load_base(recipe, work)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    encodings = TextTokenizer(tokenizer_json, 32).encode(TEXTS)
    labels = torch.tensor([i % 2 for i in range(len(TEXTS))])
    dtypes: list[torch.dtype] = []

    def objective(m: torch.nn.Module, batch: Batch, idx: np.ndarray) -> torch.Tensor:
        out = forward(m, batch, labels=labels[torch.from_numpy(idx)])
        dtypes.append(out.logits.dtype)
        return out.loss

    settings = TrainSpec.model_validate({"epochs": 1, "batch_size": 8, "learning_rate": 1e-3, **spec})
    result = train(
        model,
        encodings,
        objective,
        settings,
        seed=0,
        evaluate=lambda m: {"accuracy": 0.5},
        best_by="accuracy",
        desc="test",
    )
    return result.model, before, dtypes


def test_frozen_word_embeddings_stay_and_the_rest_trains(tiny_base: Path, tmp_path: Path) -> None:
    model, before, _ = _run(tiny_base, tmp_path, freeze_word_embeddings=True)
    words = model.get_input_embeddings().weight
    assert torch.equal(words, before[WORDS])
    assert words.requires_grad  # handed back trainable: the next form starts from a normal model
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert "classifier.weight" in changed and "bert.encoder.layer.0.attention.self.query.weight" in changed


def test_frozen_lower_layers_stay_and_the_layers_above_train(tiny_base: Path, tmp_path: Path) -> None:
    model, before, _ = _run(tiny_base, tmp_path, freeze_layers=1)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    below = {n for n in before if n.startswith(("bert.embeddings.", "bert.encoder.layer.0."))}
    assert below and not changed & below
    assert "bert.encoder.layer.1.attention.self.query.weight" in changed and "classifier.weight" in changed
    assert all(p.requires_grad for p in model.parameters())  # handed back trainable


def test_freezing_every_layer_is_refused(tiny_base: Path, tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="keep at least one"):
        _run(tiny_base, tmp_path, freeze_layers=99)


def test_word_embeddings_train_by_default(tiny_base: Path, tmp_path: Path) -> None:
    model, before, dtypes = _run(tiny_base, tmp_path)
    assert not torch.equal(model.get_input_embeddings().weight, before[WORDS])
    assert set(dtypes) == {torch.float32}


@pytest.mark.skipif(not bf16_supported(), reason="this CPU has no native bfloat16")
def test_bf16_runs_the_forward_in_bfloat16_and_keeps_fp32_weights(tiny_base: Path, tmp_path: Path) -> None:
    model, before, dtypes = _run(tiny_base, tmp_path, compute="bf16")
    assert set(dtypes) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert not torch.equal(dict(model.named_parameters())["classifier.weight"], before["classifier.weight"])
