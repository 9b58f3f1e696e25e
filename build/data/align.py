"""Word-level tags onto word pieces, for the token-classification loss."""

from __future__ import annotations

from collections.abc import Sequence

IGNORE_INDEX = -100
"""The label PyTorch's cross-entropy skips: special tokens and non-first pieces of a word."""


class UnknownTagError(ValueError):
    """A word's tag is not in the model's label set."""


def align_labels(
    word_ids: Sequence[int | None], word_tags: Sequence[str], label2id: dict[str, int]
) -> list[int]:
    """One label id per piece: the first piece of each word carries the word's tag; later pieces
    of the same word and special tokens (``word_id is None``) get ``IGNORE_INDEX``.

    The serving decoder reads each word's tag from its first piece too, so training and serving
    agree on which piece speaks for a word."""
    labels: list[int] = []
    previous: int | None = None
    for word in word_ids:
        if word is None or word == previous:
            labels.append(IGNORE_INDEX)
        else:
            if word >= len(word_tags):
                raise IndexError(f"word id {word} but only {len(word_tags)} word tags")
            tag = word_tags[word]
            try:
                labels.append(label2id[tag])
            except KeyError:
                raise UnknownTagError(
                    f"tag {tag!r} is not one of the model's labels {sorted(label2id)}"
                ) from None
        previous = word
    return labels
