"""Readers for word-tagged NER data: the CoNLL column format and JSONL (``tokens`` + ``tags``).

Both return :class:`TaggedSentence` lists whose tags are valid BIO (IOB2): ``O``, ``B-X`` or ``I-X``,
where an ``I-X`` always follows ``B-X`` or ``I-X``.

IOB1 input (an ``I-X`` that starts an entity, as in the original CoNLL-2003 release) is handled by
the ``iob1`` argument: ``"convert"`` (the default) rewrites each such ``I-X`` to ``B-X`` and logs one
warning naming the file and how many tags changed; ``"reject"`` raises :class:`TagSchemeError` at the
first one, naming the file and line. Conversion is lossless: IOB1 and IOB2 describe the same spans.

Errors derive from :class:`TaggedDataError` and name the file and the (1-based) line.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TextIO

log = logging.getLogger(__name__)

DOCSTART = "-DOCSTART-"
IOB1Policy = Literal["convert", "reject"]


class TaggedDataError(ValueError):
    """A tagged data file cannot be read as NER training or evaluation data."""


class MalformedLineError(TaggedDataError):
    """A line does not have the expected shape (columns, JSON fields)."""


class TagSchemeError(TaggedDataError):
    """A tag is not BIO: an unknown prefix, or IOB1 input while ``iob1="reject"``."""


@dataclass(slots=True)
class TaggedSentence:
    tokens: list[str]
    tags: list[str]


def read_conll(path: Path | str, iob1: IOB1Policy = "convert") -> list[TaggedSentence]:
    """Sentences from a CoNLL column file: one token per line, the tag in the last column, blank
    lines (any number) between sentences, ``-DOCSTART-`` lines skipped (they also end a sentence)."""
    path = Path(path)
    sentences: list[TaggedSentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    lines: list[int] = []
    fixed = 0

    def flush() -> None:
        nonlocal fixed
        if tokens:
            fixed += _to_iob2(tags, path, lines, iob1)
            sentences.append(TaggedSentence(list(tokens), list(tags)))
        tokens.clear()
        tags.clear()
        lines.clear()

    with _open(path) as fh:
        for number, raw in enumerate(fh, start=1):
            line = raw.rstrip("\r\n")
            if not line.strip():
                flush()
                continue
            if line.startswith(DOCSTART):
                flush()
                continue
            columns = line.split()
            if len(columns) < 2:
                raise MalformedLineError(
                    f"{path}:{number}: expected a token and a tag separated by whitespace "
                    f"(tag in the last column), got {line!r}"
                )
            tokens.append(columns[0])
            tags.append(columns[-1])
            lines.append(number)
    flush()
    _report(path, fixed)
    return sentences


def read_tagged_jsonl(path: Path | str, iob1: IOB1Policy = "convert") -> list[TaggedSentence]:
    """Sentences from JSON Lines: one object per line with ``tokens`` and ``tags`` (equal-length lists
    of strings). Blank lines are skipped."""
    path = Path(path)
    sentences: list[TaggedSentence] = []
    fixed = 0
    with _open(path) as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise MalformedLineError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
            if not isinstance(obj, dict) or "tokens" not in obj or "tags" not in obj:
                raise MalformedLineError(f"{path}:{number}: expected an object with 'tokens' and 'tags'")
            tokens, tags = obj["tokens"], obj["tags"]
            if not _str_list(tokens) or not _str_list(tags):
                raise MalformedLineError(f"{path}:{number}: 'tokens' and 'tags' must be lists of strings")
            if len(tokens) != len(tags):
                raise MalformedLineError(
                    f"{path}:{number}: {len(tokens)} tokens but {len(tags)} tags (they must pair up)"
                )
            if not tokens:
                continue
            fixed += _to_iob2(tags, path, [number] * len(tags), iob1)
            sentences.append(TaggedSentence(list(tokens), list(tags)))
    _report(path, fixed)
    return sentences


def read_tagged(path: Path | str, iob1: IOB1Policy = "convert") -> list[TaggedSentence]:
    """Dispatch on the suffix: ``.jsonl``/``.json`` as JSON Lines, anything else as CoNLL."""
    path = Path(path)
    if path.suffix.lower() in {".jsonl", ".json"}:
        return read_tagged_jsonl(path, iob1)
    return read_conll(path, iob1)


def entity_types(tags: list[str]) -> list[str]:
    """The entity types a BIO tag list uses, in first-seen order (``B-PER`` -> ``PER``)."""
    seen: dict[str, None] = {}
    for tag in tags:
        if tag != "O":
            seen.setdefault(tag[2:], None)
    return list(seen)


def _open(path: Path) -> TextIO:
    try:
        return path.open(encoding="utf-8")
    except OSError as exc:
        raise TaggedDataError(f"{path}: cannot open ({exc.strerror or exc})") from exc


def _str_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _to_iob2(tags: list[str], path: Path, lines: list[int], iob1: IOB1Policy) -> int:
    """Validate one sentence's tags in place; returns how many IOB1 ``I-`` tags became ``B-``."""
    fixed = 0
    previous = "O"
    for i, tag in enumerate(tags):
        if tag != "O" and (len(tag) < 3 or tag[:2] not in ("B-", "I-")):
            raise TagSchemeError(
                f"{path}:{lines[i]}: tag {tag!r} is not BIO (expected 'O', 'B-TYPE' or 'I-TYPE')"
            )
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            if iob1 == "reject":
                raise TagSchemeError(
                    f"{path}:{lines[i]}: {tag!r} starts an entity after {previous!r}: this is IOB1, "
                    "not BIO (IOB2); convert the file or read it with iob1='convert'"
                )
            tag = "B-" + tag[2:]
            tags[i] = tag
            fixed += 1
        previous = tag
    return fixed


def _report(path: Path, fixed: int) -> None:
    if fixed:
        log.warning(
            "%s: %d tag(s) were IOB1 (an I- starting an entity) and were converted to B- (BIO/IOB2)",
            path,
            fixed,
        )
