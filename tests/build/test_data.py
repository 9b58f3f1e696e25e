"""Data readers: formats, label checks both ways, the seeded stratified split, the content hash."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from slimserve.build.data.load import load_dataset, stratified_split
from slimserve.build.errors import DataError
from slimserve.build.recipe import parse_recipe

from tests.tiny import tiny_recipe


def _recipe(name: str = "intent", **overrides: Any):  # type: ignore[no-untyped-def]
    return parse_recipe(tiny_recipe(name, Path("unused"), **overrides))


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_with_quoted_commas_and_newlines(tmp_path: Path) -> None:
    rows = ["text,label"]
    labels = ["card_arrival", "lost_or_stolen_card", "exchange_rate", "top_up_failed", "card_linking"]
    for i in range(10):
        for label in labels:
            rows.append(f'"where, oh where\nis it {i}?",{label}')
    _write(tmp_path / "banking77" / "train.csv", "\n".join(rows) + "\n")
    recipe = _recipe()
    data = load_dataset(recipe, recipe.training("quick"), tmp_path)
    assert len(data.train) + len(data.eval) == 50
    assert data.train.inputs[0].startswith("where, oh where\nis it")
    # stratified: every intent is in the evaluation split, once (10% of 10)
    assert Counter(data.eval.targets) == {i: 1 for i in range(5)}


def test_sst2_tsv_keeps_quotes_and_maps_labels(tmp_path: Path) -> None:
    _write(tmp_path / "sst2" / "train.tsv", 'sentence\tlabel\nit\'s "great"\t1\nawful\t0\n')
    _write(tmp_path / "sst2" / "dev.tsv", "sentence\tlabel\nfine\t1\nbad\t0\n")
    recipe = _recipe("sentiment")
    data = load_dataset(recipe, recipe.training("quick"), tmp_path)
    assert data.train.inputs == ['it\'s "great"', "awful"]
    assert data.train.targets == [1, 0]
    assert data.source == "sst2/train.tsv, sst2/dev.tsv"


def test_split_is_seeded_and_disjoint() -> None:
    from slimserve.build.data.load import Examples

    examples = Examples([f"t{i}" for i in range(200)], [i % 4 for i in range(200)])
    a_train, a_eval = stratified_split(examples, 0.1, seed=3)
    _, b_eval = stratified_split(examples, 0.1, seed=3)
    _, c_eval = stratified_split(examples, 0.1, seed=4)
    assert a_eval.inputs == b_eval.inputs
    assert a_eval.inputs != c_eval.inputs
    assert not set(a_eval.inputs) & set(a_train.inputs)
    assert len(a_eval) == 20 and Counter(a_eval.targets) == {0: 5, 1: 5, 2: 5, 3: 5}


def test_hash_follows_content(tmp_path: Path, tiny_data_dir: Path) -> None:
    recipe = _recipe("sentiment")
    first = load_dataset(recipe, recipe.training("quick"), tiny_data_dir)
    assert load_dataset(recipe, recipe.training("quick"), tiny_data_dir).sha256 == first.sha256
    for name in ("train.tsv", "dev.tsv"):
        _write(tmp_path / "sst2" / name, (tiny_data_dir / "sst2" / name).read_text(encoding="utf-8"))
    with (tmp_path / "sst2" / "dev.tsv").open("a", encoding="utf-8") as fh:
        fh.write("one more\t1\n")
    assert load_dataset(recipe, recipe.training("quick"), tmp_path).sha256 != first.sha256


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    recipe = _recipe()
    with pytest.raises(DataError, match=r"banking77/train\.csv: data file not found"):
        load_dataset(recipe, recipe.training("quick"), tmp_path)


def test_label_not_in_recipe_is_named(tmp_path: Path) -> None:
    _write(tmp_path / "sst2" / "train.tsv", "sentence\tlabel\ngood\t1\nbad\t0\nmeh\t2\n")
    _write(tmp_path / "sst2" / "dev.tsv", "sentence\tlabel\ngood\t1\n")
    recipe = _recipe("sentiment")
    with pytest.raises(DataError, match=r"train\.tsv: label\(s\) \['2'\]"):
        load_dataset(recipe, recipe.training("quick"), tmp_path)


def test_recipe_label_missing_from_data_is_named(tmp_path: Path) -> None:
    _write(tmp_path / "sst2" / "train.tsv", "sentence\tlabel\ngood\t1\nfine\t1\n")
    _write(tmp_path / "sst2" / "dev.tsv", "sentence\tlabel\ngood\t1\n")
    recipe = _recipe("sentiment")
    with pytest.raises(DataError, match=r"\['negative'\] never occur"):
        load_dataset(recipe, recipe.training("quick"), tmp_path)


@pytest.mark.parametrize("content", ["", "sentence\tlabel\n"])
def test_empty_data_is_refused(tmp_path: Path, content: str) -> None:
    _write(tmp_path / "sst2" / "train.tsv", content)
    _write(tmp_path / "sst2" / "dev.tsv", "sentence\tlabel\ngood\t1\n")
    recipe = _recipe("sentiment")
    with pytest.raises(DataError, match=r"empty|no examples"):
        load_dataset(recipe, recipe.training("quick"), tmp_path)


def test_wrong_columns_are_named(tmp_path: Path) -> None:
    _write(tmp_path / "sst2" / "train.tsv", "text\tlabel\ngood\t1\n")
    _write(tmp_path / "sst2" / "dev.tsv", "sentence\tlabel\ngood\t1\n")
    recipe = _recipe("sentiment")
    with pytest.raises(DataError, match=r"\['sentence'\].*data\.text_column"):
        load_dataset(recipe, recipe.training("quick"), tmp_path)


def test_subset_limits_rows(tiny_data_dir: Path) -> None:
    recipe = _recipe("sentiment", profiles={"quick": {"max_train_rows": 50, "max_eval_rows": 10}})
    data = load_dataset(recipe, recipe.training("quick"), tiny_data_dir)
    assert (len(data.train), len(data.eval)) == (50, 10)


def test_without_a_data_dir_the_hub_fallback_or_a_clear_error() -> None:
    recipe = _recipe("sentiment")
    with pytest.raises(DataError, match="no data directory: pass --data-dir"):
        load_dataset(recipe, recipe.training("quick"), None)
    online = _recipe("sentiment", data={**recipe.data.model_dump(), "hub": "stanfordnlp/sst2"})
    # Offline (tests never reach the network): either `datasets` is missing or the Hub is unreachable.
    with pytest.raises(DataError, match=r"stanfordnlp/sst2.*(`datasets` package|cannot load it)"):
        load_dataset(online, online.training("quick"), None)
