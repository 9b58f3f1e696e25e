"""The Hugging Face Hub fallback for a recipe's data, used only when no data directory is given
(the contract: without SLIMSERVE_DATA_DIR, recipes fall back to the Hub). Needs network access and
the `datasets` package, neither of which the tests or the defaults depend on.

Rows come back as the local readers' raw pairs, so the label checks are the same either way.
"""

from __future__ import annotations

from typing import Any

from slimserve.build.errors import DataError
from slimserve.build.recipe import Recipe
from slimserve.service.store import TOKEN_CLASSIFICATION

EVAL_SPLITS = ("validation", "dev", "test")


def _names(feature: Any) -> list[str] | None:
    """Class names of a ClassLabel feature (or of a sequence of them), else None."""
    inner = getattr(feature, "feature", feature)
    names = getattr(inner, "names", None)
    return list(names) if names else None


def _raw(value: Any, names: list[str] | None) -> str:
    return names[value] if names is not None and isinstance(value, int) else str(value)


def hub_rows(recipe: Recipe) -> tuple[list[Any], list[Any] | None, str]:
    """(train rows, eval rows or None, source) where a row is (text, raw label) or (words, tags)."""
    spec = recipe.data
    assert spec.hub is not None
    try:
        import datasets
    except ImportError as exc:
        raise DataError(
            f"no data directory, and the hub fallback for {spec.hub!r} needs the `datasets` package: "
            "pass --data-dir / set SLIMSERVE_DATA_DIR, or pip install datasets"
        ) from exc
    try:
        loaded = datasets.load_dataset(spec.hub)
    except Exception as exc:  # datasets raises many unrelated types (network, format, auth)
        raise DataError(f"hub dataset {spec.hub!r}: cannot load it ({exc})") from exc
    token_task = recipe.task == TOKEN_CLASSIFICATION
    text_col = "tokens" if token_task else spec.text_column
    label_col = "ner_tags" if token_task else spec.label_column

    def rows(split: str) -> list[Any]:
        part = loaded[split]
        missing = [c for c in (text_col, label_col) if c not in part.column_names]
        if missing:
            raise DataError(f"hub dataset {spec.hub!r} split {split!r} has no column(s) {missing}")
        names = _names(part.features[label_col])
        if token_task:
            return [(list(r[text_col]), [_raw(t, names) for t in r[label_col]]) for r in part]
        return [(str(r[text_col]), _raw(r[label_col], names)) for r in part]

    if "train" not in loaded:
        raise DataError(f"hub dataset {spec.hub!r} has no train split")
    train = rows("train")
    # Without a recipe eval file the split is carved from train, as with local files.
    evaluation = None
    if spec.eval is not None:
        split = next((s for s in EVAL_SPLITS if s in loaded), None)
        if split is None:
            raise DataError(f"hub dataset {spec.hub!r} has none of the splits {EVAL_SPLITS}")
        evaluation = rows(split)
    return train, evaluation, f"hf://{spec.hub}"
