"""Recipes are validated before any work, and a bad field is named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from slimserve.build.errors import RecipeError
from slimserve.build.recipe import FormSpec, load_recipe, parse_recipe

RECIPES = Path(__file__).parents[2] / "build" / "recipes"


def _valid() -> dict[str, Any]:
    return yaml.safe_load((RECIPES / "sentiment.yaml").read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", ["sentiment", "intent", "ner"])
def test_shipped_recipes_validate(name: str) -> None:
    recipe = load_recipe(RECIPES / f"{name}.yaml")
    assert recipe.name == name
    assert set(recipe.profiles) == {"quick", "full"}
    assert recipe.variants == ["fp32", "fp16", "int8", "int8-static"]
    # Compression in both profiles: a pruned form in quick; in full that one, a shallower student
    # and a pruned shallower student, heads and/or FFN neurons removed (3 layers; NER's keep 4: its
    # 3-layer ones fell under the floor).
    quick, full = recipe.compress.forms_for("quick"), recipe.compress.forms_for("full")
    assert [f.name for f in quick] == ["pruned-h8-f512"] and quick[0].heads and quick[0].ffn
    assert {f.name for f in quick} < {f.name for f in full}
    depth = 4 if name == "ner" else 3
    by_name = {f.name: f for f in full}

    def layers(form: FormSpec) -> int | None:  # a form made `from` another has its base's depth
        return form.layers if form.from_form is None else layers(by_name[form.from_form])

    assert any(f.layers == depth and not f.heads for f in full)
    assert any(layers(f) == depth and (f.heads or f.ffn) for f in full)
    assert recipe.policy.min_relative_quality == recipe.gate.min_relative_quality == 0.97


def test_intent_recipe_has_77_distinct_intents() -> None:
    recipe = load_recipe(RECIPES / "intent.yaml")
    assert len(recipe.labels) == 77
    assert recipe.data.eval is None and recipe.data.eval_split == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("profiles", "quick", "epochs"), -1, "profiles.quick.epochs"),
        (("profiles", "quick", "learning_rat"), 1e-4, "profiles.quick.learning_rat"),
        (("task",), "summarization", "task"),
        (("max_seq_len",), 4096, "max_seq_len"),
        (("data", "format"), "parquet", "data.format"),
        (("variants",), ["fp32", "int4"], "variants.1"),
        (("name",), "Has Spaces", "name"),
        (("gate", "max_accuracy_dro"), 1.0, "gate.max_accuracy_dro"),
    ],
)
def test_bad_field_is_named(path: tuple[str, ...], value: Any, field: str) -> None:
    raw = _valid()
    node = raw
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(RecipeError) as info:
        parse_recipe(raw, "x.yaml")
    assert f"field `{field}`" in str(info.value)
    assert str(info.value).startswith("x.yaml:")


def test_missing_required_field_is_named() -> None:
    raw = _valid()
    del raw["labels"]
    with pytest.raises(RecipeError, match="field `labels`"):
        parse_recipe(raw)


def test_label_map_must_map_to_known_labels() -> None:
    raw = _valid()
    raw["data"]["label_map"] = {"0": "negative", "1": "glad"}
    with pytest.raises(RecipeError, match=r"data\.label_map.*glad"):
        parse_recipe(raw)


def test_duplicate_labels_are_refused() -> None:
    raw = _valid()
    raw["labels"] = ["negative", "negative"]
    with pytest.raises(RecipeError, match="duplicate"):
        parse_recipe(raw)


def test_epochs_0_means_an_already_fine_tuned_teacher_but_students_always_train() -> None:
    raw = _valid()
    raw["profiles"]["full"]["epochs"] = 0
    recipe = parse_recipe(raw)  # full's forms have their own compress.training entry
    assert recipe.fine_tuned_base("full") and not recipe.fine_tuned_base("quick")
    assert recipe.student_training("full").epochs >= 1
    del raw["compress"]["training"]["full"]  # the forms would inherit the teacher's 0 epochs
    with pytest.raises(RecipeError, match=r"compress\.training\.full.*epochs >= 1"):
        parse_recipe(raw)
    raw = _valid()
    raw["compress"]["training"]["quick"]["epochs"] = 0
    with pytest.raises(RecipeError, match="at least one epoch"):
        parse_recipe(raw)


def test_unknown_profile_is_refused() -> None:
    recipe = parse_recipe(_valid())
    with pytest.raises(RecipeError, match="no profile 'huge'"):
        recipe.training("huge")


def test_not_yaml_and_not_a_mapping(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed", encoding="utf-8")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(bad)
    bad.write_text("- just\n- a list\n", encoding="utf-8")
    with pytest.raises(RecipeError, match="mapping"):
        load_recipe(bad)
    with pytest.raises(RecipeError, match="cannot read"):
        load_recipe(tmp_path / "missing.yaml")
