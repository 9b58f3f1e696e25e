"""Reading a recipe's data: files under the data directory, checked against the recipe's labels,
split into train and evaluation examples, with a content hash for the manifest.

Readers: SST-2 style TSV (no quoting: sentences contain bare quotes), CSV through the csv module
(BANKING77 has quoted fields), CoNLL column files and JSONL. The evaluation split is either the
recipe's eval file or a seeded, stratified carve-out of the train file.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slimserve.build.errors import DataError
from slimserve.build.recipe import DataSpec, Recipe, TrainSpec


@dataclass(frozen=True, slots=True)
class Examples:
    """``inputs``: texts (sequence tasks) or word lists (token tasks); ``targets``: label ids or
    tag-name lists, aligned with ``inputs``."""

    inputs: list[Any]
    targets: list[Any]

    def __len__(self) -> int:
        return len(self.inputs)

    def subset(self, rows: list[int]) -> Examples:
        return Examples([self.inputs[i] for i in rows], [self.targets[i] for i in rows])

    def take(self, indices: Sequence[int]) -> Examples:
        return Examples([self.inputs[i] for i in indices], [self.targets[i] for i in indices])


@dataclass(frozen=True, slots=True)
class Dataset:
    train: Examples
    eval: Examples
    source: str
    sha256: str


def _open_error(path: Path, exc: OSError) -> DataError:
    if isinstance(exc, FileNotFoundError):
        return DataError(f"{path}: data file not found (check --data-dir / SLIMSERVE_DATA_DIR)")
    return DataError(f"{path}: cannot read the data file ({exc.strerror or exc})")


def _columns(path: Path, header: list[str], spec: DataSpec) -> tuple[int, int]:
    missing = [c for c in (spec.text_column, spec.label_column) if c not in header]
    if missing:
        raise DataError(
            f"{path}: column(s) {missing} named by the recipe (data.text_column / data.label_column) "
            f"are not in the header {header}"
        )
    return header.index(spec.text_column), header.index(spec.label_column)


def _read_delimited(path: Path, spec: DataSpec, delimiter: str) -> list[tuple[str, str]]:
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh, delimiter=delimiter, quoting=quoting)
            header = next(reader, None)
            if header is None:
                raise DataError(f"{path}: the data file is empty (no header row)")
            ti, li = _columns(path, header, spec)
            rows = []
            for lineno, row in enumerate(reader, start=2):
                if not row:
                    continue
                if len(row) <= max(ti, li):
                    raise DataError(f"{path}: line {lineno} has {len(row)} column(s), expected {len(header)}")
                rows.append((row[ti].strip(), row[li].strip()))
            return rows
    except OSError as exc:
        raise _open_error(path, exc) from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: not readable as {spec.format.upper()} ({exc})") from exc


def _read_jsonl_pairs(path: Path, spec: DataSpec) -> list[tuple[str, str]]:
    rows = []
    lineno = 0
    try:
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):  # noqa: B007 (read in the except clause)
                if not line.strip():
                    continue
                obj = json.loads(line)
                rows.append((str(obj[spec.text_column]), str(obj[spec.label_column])))
    except OSError as exc:
        raise _open_error(path, exc) from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(
            f"{path}: line {lineno}: not a JSON object with the recipe's columns ({exc})"
        ) from exc
    return rows


def _read_tagged(path: Path, spec: DataSpec) -> list[tuple[list[str], list[str]]]:
    from slimserve.build.data import conll

    try:
        sentences = conll.read_conll(path) if spec.format == "conll" else conll.read_tagged_jsonl(path)
    except OSError as exc:
        raise _open_error(path, exc) from exc
    except ValueError as exc:
        raise DataError(f"{path}: not readable as {spec.format} ({exc})") from exc
    return [(list(s.tokens), list(s.tags)) for s in sentences]


def _read_pairs(path: Path, recipe: Recipe) -> list[Any]:
    spec = recipe.data
    token_task = recipe.task == "token-classification"
    fits = spec.format in ("conll", "jsonl") if token_task else spec.format in ("tsv", "csv", "jsonl")
    if not fits:
        raise DataError(f"{path}: data.format {spec.format!r} does not fit task {recipe.task!r}")
    if token_task:
        return _read_tagged(path, spec)
    if spec.format == "jsonl":
        return _read_jsonl_pairs(path, spec)
    return _read_delimited(path, spec, "\t" if spec.format == "tsv" else ",")


def _check(pairs: list[Any], recipe: Recipe, origin: str) -> Examples:
    """Examples from raw (input, label) pairs; every label must be one of the recipe's."""
    if not pairs:
        raise DataError(f"{origin}: no examples in the data")
    if recipe.task == "token-classification":
        unknown = sorted({t for _, tags in pairs for t in tags} - set(recipe.labels))
        if unknown:
            raise DataError(f"{origin}: tag(s) {unknown[:10]} in the data are not in the recipe's `labels`")
        return Examples([words for words, _ in pairs], [tags for _, tags in pairs])
    label_map = recipe.data.label_map or {}
    label2id = {name: i for i, name in enumerate(recipe.labels)}
    ids: list[int] = []
    unknown_raw: set[str] = set()
    for _, raw in pairs:
        name = label_map.get(raw, raw)
        if name in label2id:
            ids.append(label2id[name])
        else:
            unknown_raw.add(raw)
    if unknown_raw:
        shown = sorted(unknown_raw)[:10]
        raise DataError(
            f"{origin}: label(s) {shown}{' ...' if len(unknown_raw) > 10 else ''} in the data are not in "
            f"the recipe's `labels` (or data.label_map); add them to the recipe or fix the data"
        )
    return Examples([text for text, _ in pairs], ids)


def _present_labels(recipe: Recipe, examples: Examples) -> set[str]:
    if recipe.task == "token-classification":
        return {t for tags in examples.targets for t in tags}
    return {recipe.labels[i] for i in examples.targets}


def stratified_split(examples: Examples, fraction: float, seed: int) -> tuple[Examples, Examples]:
    """Carve ``fraction`` of each class (at least one example of classes with two or more) for
    evaluation; seeded, so a rebuild evaluates on the same rows."""
    rng = random.Random(seed)
    by_key: dict[Any, list[int]] = defaultdict(list)
    for i, target in enumerate(examples.targets):
        # Tagged sentences are not stratified: any one key puts them in one pool.
        by_key[target if isinstance(target, int) else 0].append(i)
    train_idx: list[int] = []
    eval_idx: list[int] = []
    for key in sorted(by_key):
        idx = by_key[key]
        rng.shuffle(idx)
        k = round(len(idx) * fraction)
        if k == 0 and len(idx) >= 2:
            k = 1
        eval_idx.extend(idx[:k])
        train_idx.extend(idx[k:])
    return examples.take(sorted(train_idx)), examples.take(sorted(eval_idx))


def subsample(examples: Examples, limit: int | None, seed: int) -> Examples:
    if limit is None or len(examples) <= limit:
        return examples
    idx = list(range(len(examples)))
    random.Random(seed).shuffle(idx)
    return examples.take(sorted(idx[:limit]))


def _hash_files(paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _hash_rows(*parts: list[Any] | None) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(json.dumps(part, ensure_ascii=False).encode())
    return digest.hexdigest()


def load_dataset(recipe: Recipe, training: TrainSpec, data_dir: Path | None) -> Dataset:
    """Train and evaluation examples for one build, checked against the recipe's labels both ways."""
    spec = recipe.data
    if data_dir is not None:
        train_path = data_dir / spec.train
        origin = str(train_path)
        train = _check(_read_pairs(train_path, recipe), recipe, str(train_path))
        files = [train_path]
        evaluation: Examples | None = None
        if spec.eval is not None:
            eval_path = data_dir / spec.eval
            evaluation = _check(_read_pairs(eval_path, recipe), recipe, str(eval_path))
            files.append(eval_path)
        source = ", ".join(str(p.relative_to(data_dir)) for p in files)
        digest = _hash_files(files)
    elif spec.hub is not None:
        from slimserve.build.data.hub import hub_rows

        train_rows, eval_rows, source = hub_rows(recipe)
        origin = source
        train = _check(train_rows, recipe, f"{source} train")
        evaluation = None if eval_rows is None else _check(eval_rows, recipe, f"{source} eval")
        digest = _hash_rows(train_rows, eval_rows)
    else:
        raise DataError(
            "no data directory: pass --data-dir or set SLIMSERVE_DATA_DIR to the local data mirror"
        )
    if evaluation is None:
        train, evaluation = stratified_split(train, spec.eval_split, recipe.seed)
        if len(evaluation) == 0:
            raise DataError(f"{origin}: too few examples to carve an evaluation split")
        source += f" (eval: stratified {spec.eval_split:.0%} of train, seed {recipe.seed})"
    missing = sorted(set(recipe.labels) - _present_labels(recipe, train))
    if recipe.task == "token-classification":
        # 'O' and rare I- tags may be absent without harm; an entity type with no B- is an error.
        missing = [m for m in missing if m.startswith("B-")]
    if missing:
        raise DataError(
            f"{origin}: recipe label(s) {missing[:10]} never occur in the training data; "
            f"remove them from the recipe's `labels` or use the right data file"
        )
    train = subsample(train, training.max_train_rows, recipe.seed)
    evaluation = subsample(evaluation, training.max_eval_rows, recipe.seed)
    return Dataset(train, evaluation, source, digest)
