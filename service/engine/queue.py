"""The rows waiting for a runner, and how the next batch is chosen from them.

Rows (one model row each: a text, or one window of a long NER text) wait in length buckets. A batch
is formed around an *anchor*: the oldest waiting row of the request whose turn it is. Requests take
turns (round robin, one batch anchored on each in turn), so a request of thousands of windows cannot
hold the runners while a one-sentence request waits behind all of them; with one request at a time
the turn order is plain arrival order. Around the anchor the batch takes the rows nearest to it in
length, oldest first at each length, within a token budget (padded length x rows), a row count, and
a padding allowance (``overhead_tokens``).

Choosing a batch costs O(rows taken + lengths visited), never a sort of the whole queue: lengths are
bounded by the model's window, so walking the buckets outwards from the anchor's length is cheap.
Taken and dropped rows leave their bucket lazily (when they reach its head); the queue compacts
itself when such leftovers outnumber the live rows.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(eq=False, slots=True)
class Row:
    """One model row of one request (``owner``: the engine's ticket; only its identity is used here)."""

    owner: Any
    length: int
    payload: Any = None
    taken: bool = False


@dataclass(eq=False, slots=True)
class _Turn:
    """One request's rows not yet taken, in order."""

    owner: Any
    rows: deque[Row] = field(default_factory=deque)


class RowQueue:
    """Not thread-safe: the engine calls it under its condition variable."""

    def __init__(self) -> None:
        self._buckets: dict[int, deque[Row]] = {}
        self._lengths: list[int] = []  # sorted lengths whose bucket is non-empty
        self._turns: deque[_Turn] = deque()
        self._live = 0  # rows waiting (not taken, not dropped)
        self._alive: Callable[[Any], bool] | None = None
        self._stored = 0  # rows physically in buckets, leftovers included

    def __len__(self) -> int:
        return self._live

    def push(self, owner: Any, rows: list[Row]) -> None:
        """Queue one request's rows; it takes its first turn after every request already waiting."""
        if not rows:
            return
        self._turns.append(_Turn(owner, deque(rows)))
        for row in rows:
            bucket = self._buckets.get(row.length)
            if bucket is None:
                bucket = self._buckets[row.length] = deque()
            if not bucket:
                bisect.insort(self._lengths, row.length)
            bucket.append(row)
        self._live += len(rows)
        self._stored += len(rows)

    def drop(self, alive: Callable[[Any], bool]) -> list[Any]:
        """Remove every request whose owner is no longer ``alive``; returns those owners. O(queue):
        the engine calls it only when a request was cancelled or may have expired."""
        dropped = []
        kept: deque[_Turn] = deque()
        for turn in self._turns:
            if alive(turn.owner):
                kept.append(turn)
                continue
            dropped.append(turn.owner)
            self._discard(turn.rows)
        self._turns = kept
        if dropped:
            self._maybe_compact()
        return dropped

    def take(
        self,
        max_rows: int,
        max_tokens: int,
        overhead_tokens: int | None = None,
        alive: Callable[[Any], bool] | None = None,
    ) -> list[Row]:
        """The next batch, shortest row first; empty when nothing waits.

        The anchor row is always taken, even alone over the budget. A neighbour joins while
        ``rows x longest <= max_tokens`` and ``rows <= max_rows``, and only when the padding it causes
        is below ``overhead_tokens`` (what one more runner call costs, in tokens of compute): a shorter
        row when ``longest - its length`` is, a longer one when ``rows x (its length - longest)`` is.
        None: no padding rule, only the budget. Between two that fit, the one nearer the anchor's
        length joins first. Rows whose owner is not ``alive`` (cancelled, past its deadline) are
        dropped as they are met."""
        self._alive = alive
        anchor = self._next_anchor()
        if anchor is None:
            return []
        anchor.taken = True
        self._live -= 1
        batch = [anchor]
        target = longest = anchor.length
        slack = float("inf") if overhead_tokens is None else overhead_tokens
        lengths = self._lengths
        right = bisect.bisect_left(lengths, target)  # the anchor's own bucket: distance 0
        left = right - 1
        while len(batch) < max_rows:
            n = len(batch)
            lrow, left = self._peek(left, -1)
            rrow, right = self._peek(right, +1)
            fits_left = (
                lrow is not None and (n + 1) * longest <= max_tokens and longest - lrow.length <= slack
            )
            fits_right = (
                rrow is not None
                and (n + 1) * max(longest, rrow.length) <= max_tokens
                and n * (rrow.length - longest) <= slack
            )
            chosen: Row | None
            if fits_left and fits_right:
                assert lrow is not None and rrow is not None
                chosen = lrow if target - lrow.length <= rrow.length - target else rrow
            else:
                chosen = lrow if fits_left else rrow if fits_right else None
            if chosen is None:
                break
            chosen.taken = True
            self._live -= 1
            longest = max(longest, chosen.length)
            batch.append(chosen)
        self._prune_lengths()
        self._maybe_compact()
        batch.sort(key=lambda r: r.length)
        return batch

    # -- internals ---------------------------------------------------------------------------------

    def _next_anchor(self) -> Row | None:
        """The oldest waiting row of the request whose turn it is; that request goes to the back."""
        turns = self._turns
        while turns:
            turn = turns[0]
            rows = turn.rows
            if rows and not self._is_alive(turn.owner):
                self._discard(rows)
            while rows and rows[0].taken:
                rows.popleft()
            if not rows:
                turns.popleft()
                continue
            anchor = rows.popleft()
            if rows:
                turns.rotate(-1)
            else:
                turns.popleft()
            return anchor
        return None

    def _is_alive(self, owner: Any) -> bool:
        return self._alive is None or self._alive(owner)

    def _discard(self, rows: deque[Row]) -> None:
        for row in rows:
            if not row.taken:
                row.taken = True
                self._live -= 1
        rows.clear()

    def _peek(self, index: int, step: int) -> tuple[Row | None, int]:
        """The oldest waiting row at ``lengths[index]``, moving by ``step`` past exhausted lengths."""
        lengths = self._lengths
        while 0 <= index < len(lengths):
            bucket = self._buckets[lengths[index]]
            while bucket and (bucket[0].taken or not self._is_alive(bucket[0].owner)):
                row = bucket.popleft()
                self._stored -= 1
                if not row.taken:
                    row.taken = True
                    self._live -= 1
            if bucket:
                return bucket[0], index
            index += step
        return None, index

    def _prune_lengths(self) -> None:
        buckets = self._buckets
        if any(not buckets[n] for n in self._lengths):
            self._lengths = [n for n in self._lengths if buckets[n]]

    def _maybe_compact(self) -> None:
        if self._stored <= 2 * self._live + 1024:
            return
        for length in list(self._buckets):
            kept = deque(r for r in self._buckets[length] if not r.taken)
            if kept:
                self._buckets[length] = kept
            else:
                del self._buckets[length]
        self._lengths = sorted(self._buckets)
        self._stored = sum(len(b) for b in self._buckets.values())
