"""What the engine needs from a task: rows to run, and a way to finish an item once they have run.

The engine batches *rows*: arrays of token ids, special tokens included, each at most the model's
window long. A task's codec (``slimserve.service.tasks``) turns request texts into :class:`Prepared`
items of one or more rows (NER covers a long text with overlapping windows); once every row of an item
has run, the engine hands the item back with one unpadded logits array per row, in the same order, and
the codec builds the item's result. The engine never looks inside an item beyond ``rows``.

Tasks depend on this module, never the reverse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np

R_co = TypeVar("R_co", covariant=True)


@dataclass(slots=True)
class Prepared:
    """One input text, ready for the batcher. Codecs subclass it to keep what ``finish`` needs."""

    rows: list[np.ndarray]
    """Token ids (int64, special tokens included) of each model row; each at most the window long."""

    @property
    def tokens(self) -> int:
        """What the item costs the runner, in tokens: the admission and fairness unit."""
        return sum(len(r) for r in self.rows)


class Codec(Protocol[R_co]):
    """Per-task pre- and post-processing around the runner."""

    token_level: bool
    """The model's logits are per token, (batch, seq, labels), rather than per row, (batch, labels)."""

    def prepare(self, texts: list[str], params: Any) -> list[Prepared]:
        """One Prepared per text, in order. Runs on the tokenizer thread for large requests.

        May raise a :class:`~slimserve.service.errors.ServiceError` (``InputTooLong`` when a text
        exceeds the window and the request asked not to truncate); it fails the whole request."""
        ...

    def finish(self, prepared: Any, logits: list[np.ndarray]) -> R_co:
        """The result for one item. ``logits`` holds one unpadded array per row of
        ``prepared.rows``, same order: shape (n_labels,) for sequence tasks, (row_len, n_labels) for
        token tasks."""
        ...
