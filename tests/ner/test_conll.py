"""The CoNLL and JSONL readers on the edge cases real files have."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from slimserve.build.data.conll import (
    MalformedLineError,
    TaggedDataError,
    TaggedSentence,
    TagSchemeError,
    read_conll,
    read_tagged,
    read_tagged_jsonl,
)


def write(tmp_path: Path, text: str, name: str = "data.txt") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_docstart_blocks_and_blank_runs_are_skipped(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "-DOCSTART- -X- -X- O\n\n\n"
        "EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n\n\n"
        "Peter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n"
        "-DOCSTART- -X- -X- O\n"
        "BRUSSELS NNP B-NP B-LOC\n\n",
    )
    assert read_conll(path) == [
        TaggedSentence(["EU", "rejects"], ["B-ORG", "O"]),
        TaggedSentence(["Peter", "Blackburn"], ["B-PER", "I-PER"]),
        TaggedSentence(["BRUSSELS"], ["B-LOC"]),
    ]


def test_tag_is_the_last_column_and_crlf_and_no_final_newline(tmp_path: Path) -> None:
    path = write(tmp_path, "Paris B-LOC\r\nis\tVBZ O\r\n\r\nRome I-NP B-LOC")
    assert read_conll(path) == [
        TaggedSentence(["Paris", "is"], ["B-LOC", "O"]),
        TaggedSentence(["Rome"], ["B-LOC"]),
    ]


def test_iob1_is_converted_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path, "New I-LOC\nYork I-LOC\nand O\nJohn I-PER\nSmith I-PER\nMary B-PER\n")
    with caplog.at_level(logging.WARNING):
        sentences = read_conll(path)
    assert sentences[0].tags == ["B-LOC", "I-LOC", "O", "B-PER", "I-PER", "B-PER"]
    assert "2 tag(s) were IOB1" in caplog.text
    assert str(path) in caplog.text


def test_iob1_after_another_type_is_converted(tmp_path: Path) -> None:
    path = write(tmp_path, "A B-ORG\nB I-LOC\n")
    assert read_conll(path)[0].tags == ["B-ORG", "B-LOC"]


def test_iob1_is_rejected_on_request_naming_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "x O\n\nNew O\nYork I-LOC\n")
    with pytest.raises(TagSchemeError, match=r"data\.txt:4: 'I-LOC' starts an entity after 'O'"):
        read_conll(path, iob1="reject")


def test_valid_bio_logs_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path, "New B-LOC\nYork I-LOC\n")
    with caplog.at_level(logging.WARNING):
        read_conll(path, iob1="reject")
    assert caplog.text == ""


def test_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "EU B-ORG\nrejects\n")
    with pytest.raises(MalformedLineError, match=r"data\.txt:2: expected a token and a tag"):
        read_conll(path)


def test_unknown_tag_prefix_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "EU S-ORG\n")
    with pytest.raises(TagSchemeError, match=r"data\.txt:1: tag 'S-ORG' is not BIO"):
        read_conll(path)


def test_missing_file_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(TaggedDataError, match=r"missing\.txt: cannot open"):
        read_conll(tmp_path / "missing.txt")


def test_jsonl_reader(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '{"tokens": ["Angela", "Merkel"], "tags": ["B-PER", "I-PER"]}\n\n'
        '{"tokens": ["x"], "tags": ["I-ORG"]}\n',
        "data.jsonl",
    )
    assert read_tagged(path) == [
        TaggedSentence(["Angela", "Merkel"], ["B-PER", "I-PER"]),
        TaggedSentence(["x"], ["B-ORG"]),
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"tokens": ["a"]}', "expected an object with 'tokens' and 'tags'"),
        ('{"tokens": ["a", "b"], "tags": ["O"]}', "2 tokens but 1 tags"),
        ('{"tokens": "a", "tags": "O"}', "'tokens' and 'tags' must be lists of strings"),
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = write(tmp_path, '{"tokens": ["a"], "tags": ["O"]}\n' + line + "\n", "bad.jsonl")
    with pytest.raises(MalformedLineError, match=rf"bad\.jsonl:2: {message}"):
        read_tagged_jsonl(path)


def test_reads_the_real_validation_split(data_dir: Path) -> None:
    sentences = read_conll(data_dir / "conll2003" / "valid.txt", iob1="reject")
    assert len(sentences) == 3250
    assert {t for s in sentences for t in s.tags} == {
        "O",
        "B-PER",
        "I-PER",
        "B-ORG",
        "I-ORG",
        "B-LOC",
        "I-LOC",
        "B-MISC",
        "I-MISC",
    }
