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

# Word lists or plain strings; label ids (sequence) or tag-name lists (token).
Input = str | list[str]
Target = int | list[str]


@dataclass(frozen=True, slots=True)
class Examples:
    inputs: list[Any]
    targets: list[Any]

    def __len__(self) -> int:
        return len(self.inputs)

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


def _read_tagged(path: Path, spec: DataSpec) -> Examples:
    from slimserve.build import conll

    try:
        sentences = conll.read_conll(path) if spec.format == "conll" else conll.read_tagged_jsonl(path)
    except OSError as exc:
        raise _open_error(path, exc) from exc
    except ValueError as exc:
        raise DataError(f"{path}: not readable as {spec.format} ({exc})") from exc
    return Examples([list(s.tokens) for s in sentences], [list(s.tags) for s in sentences])


def _read_classified(path: Path, recipe: Recipe) -> Examples:
    spec = recipe.data
    if spec.format == "tsv":
        rows = _read_delimited(path, spec, "\t")
    elif spec.format == "csv":
        rows = _read_delimited(path, spec, ",")
    elif spec.format == "jsonl":
        rows = _read_jsonl_pairs(path, spec)
    else:
        raise DataError(f"{path}: data.format {spec.format!r} does not fit task {recipe.task!r}")
    label2id = {name: i for i, name in enumerate(recipe.labels)}
    texts: list[str] = []
    ids: list[int] = []
    unknown: set[str] = set()
    for text, raw in rows:
        name = spec.label_map.get(raw, raw) if spec.label_map else raw
        if name not in label2id:
            unknown.add(raw)
            continue
        texts.append(text)
        ids.append(label2id[name])
    if unknown:
        shown = sorted(unknown)[:10]
        raise DataError(
            f"{path}: label(s) {shown}{' ...' if len(unknown) > 10 else ''} in the data are not in the "
            f"recipe's `labels` (or data.label_map); add them to the recipe or fix the data"
        )
    return Examples(texts, ids)


def _read(path: Path, recipe: Recipe) -> Examples:
    if recipe.task == "token-classification":
        if recipe.data.format not in ("conll", "jsonl"):
            raise DataError(f"{path}: data.format {recipe.data.format!r} does not fit token classification")
        examples = _read_tagged(path, recipe.data)
        allowed = set(recipe.labels)
        unknown = sorted({t for tags in examples.targets for t in tags} - allowed)
        if unknown:
            raise DataError(f"{path}: tag(s) {unknown[:10]} in the data are not in the recipe's `labels`")
    else:
        examples = _read_classified(path, recipe)
    if len(examples) == 0:
        raise DataError(f"{path}: no examples in the data file")
    return examples


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


def load_dataset(recipe: Recipe, training: TrainSpec, data_dir: Path | None) -> Dataset:
    """Train and evaluation examples for one build, checked against the recipe's labels both ways."""
    spec = recipe.data
    if data_dir is None:
        raise DataError(
            "no data directory: pass --data-dir or set SLIMSERVE_DATA_DIR to the local data mirror"
            + (f" (hub fallback for {spec.hub!r} needs the `datasets` package)" if spec.hub else "")
        )
    train_path = data_dir / spec.train
    train = _read(train_path, recipe)
    files = [train_path]
    if spec.eval is not None:
        eval_path = data_dir / spec.eval
        evaluation = _read(eval_path, recipe)
        files.append(eval_path)
    else:
        train, evaluation = stratified_split(train, spec.eval_split, recipe.seed)
        if len(evaluation) == 0:
            raise DataError(f"{train_path}: too few examples to carve an evaluation split")
    missing = sorted(set(recipe.labels) - _present_labels(recipe, train))
    if recipe.task == "token-classification":
        # 'O' and rare I- tags may be absent without harm; an entity type with no B- is an error.
        missing = [m for m in missing if m.startswith("B-")]
    if missing:
        raise DataError(
            f"{train_path}: recipe label(s) {missing[:10]} never occur in the training data; "
            f"remove them from the recipe's `labels` or use the right data file"
        )
    train = subsample(train, training.max_train_rows, recipe.seed)
    evaluation = subsample(evaluation, training.max_eval_rows, recipe.seed)
    source = ", ".join(str(p.relative_to(data_dir)) for p in files)
    if spec.eval is None:
        source += f" (eval: stratified {spec.eval_split:.0%} of train, seed {recipe.seed})"
    return Dataset(train, evaluation, source, _hash_files(files))
