"""The interface between the engine and a task: what a codec prepares and how it finishes.

The engine batches *rows* (one ``tokenizers.Encoding`` each) under a token budget. A task's codec
turns request texts into :class:`Prepared` items of one or more rows (NER covers a long text with
overlapping windows), and once every row of an item has run, the engine hands the item back with one
unpadded logits array per row, in the same order, and the codec builds the item's result.

This interface is stable: the classification and token-classification codecs are written against it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np
from slimserve.service.errors import InputTooLong
from tokenizers import Encoding

__all__ = ["Codec", "InputTooLong", "Prepared"]

R_co = TypeVar("R_co", covariant=True)


@dataclass(slots=True)
class Prepared:
    """One input text, ready for the batcher."""

    text: str
    encodings: list[Encoding]
    """One or more model rows; each is at most the model's window long."""
    params: Any = None
    """Per-request options the codec needs in ``finish`` (top_k, aggregation, ...)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free space for the codec (e.g. window offsets); the engine never reads it."""


class Codec(Protocol[R_co]):
    """Per-task pre- and post-processing around the runner."""

    task: str
    """The manifest task it serves: "sequence-classification" | "token-classification"."""

    def prepare(self, texts: list[str], params: Any) -> list[Prepared]:
        """One Prepared per text, in order. Runs on the tokenizer thread, off the event loop.

        May raise :class:`InputTooLong` (for example when a text exceeds the window and the request
        asked not to truncate); it fails the whole request with 400."""
        ...

    def finish(self, prepared: Prepared, logits: list[np.ndarray]) -> R_co:
        """The result for one item. ``logits`` holds one unpadded array per row of
        ``prepared.encodings``, same order: shape (n_labels,) for sequence tasks,
        (row_len, n_labels) for token tasks, where row_len == len(encoding.ids)."""
        ...
