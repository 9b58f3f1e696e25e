"""One model's engine: tokenize -> bounded queue -> token-budget batcher -> runner threads -> decode.

The event loop admits requests, tokenizes small ones itself (larger ones on a small shared thread
pool, ``Codec.prepare``), awaits futures and answers. Rows (one encoding each) wait in a queue; each
of ``runner_threads`` runner threads, which alone touch the ONNX Runtime session (its Run is
thread-safe), starts the next batch as soon as it is free: it drops rows whose request was cancelled
or expired, then forms a batch around the *oldest* row from the rows closest to it in length (less
padding, and no row waits behind an endless stream of others) within a token budget (padded length x
rows) and a row count. When every row of a request has run, the codec decodes it on the runner thread
(microseconds) and the batch's results are handed back to the event loop in one call.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from slimserve.service.engine.runner import OnnxRunner, RunnerError
from slimserve.service.engine.tokenizer import pad
from slimserve.service.errors import DeadlineExceeded, InferenceFailed, Overloaded, ServiceError
from slimserve.service.metrics import Metrics
from slimserve.service.tasks.base import Codec, Prepared
from tokenizers import Encoding

log = logging.getLogger(__name__)


DeviceSlot = contextlib.AbstractContextManager[Any]
"""A lock or a semaphore: how many ONNX Runtime calls may run at once across engines."""


class EngineRetired(Exception):
    """The engine was replaced (reload) or stopped; the caller asks the registry for the current one."""


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    max_batch_size: int = 32
    max_batch_tokens: int = 4096
    overhead_tokens: int | None = None
    wait_ms: float = 0.0
    max_queue: int = 1024
    retry_after_s: int = 1
    debug_delay_ms: float = 0.0
    inline_chars: int = 0
    runner_threads: int = 1


@dataclass(slots=True)
class EngineResult:
    results: list[Any]
    queue_s: float
    inference_s: float


@dataclass(eq=False, slots=True)
class _Ticket:
    """One request inside the engine."""

    prepared: list[Prepared]
    future: asyncio.Future[EngineResult]
    loop: asyncio.AbstractEventLoop
    deadline: float
    enqueued_at: float
    remaining: int
    logits: list[list[np.ndarray | None]]
    cancelled: bool = False
    started_at: float | None = None
    inference_s: float = 0.0
    last_batch: int = -1


@dataclass(eq=False, slots=True)
class _Row:
    ticket: _Ticket
    item: int
    index: int
    encoding: Encoding
    length: int
    seq: int


@dataclass(slots=True)
class _Queue:
    rows: list[_Row] = field(default_factory=list)
    seq: int = 0


def select_batch(
    rows: Sequence[_Row], max_rows: int, max_tokens: int, overhead_tokens: int | None = None
) -> list[_Row]:
    """The rows of the next batch, shortest first: the oldest row plus its nearest neighbours in
    length while ``rows x longest <= max_tokens`` and ``rows <= max_rows``. ``rows`` is in arrival
    order; the oldest row is always taken, even alone over the budget.

    ``overhead_tokens`` is what one more runner call costs, in tokens of compute. A neighbour joins
    only when the padding it causes is below that: a shorter row when ``longest - its length`` is,
    a longer one when ``rows x (its length - longest)`` is. On CPU a call costs a few tokens and
    padding costs its full price (one 32-row batch of SST-2 sentences ran 2x slower than the same
    rows in length-sorted groups), so batches stay near-uniform in length; on a GPU a call costs
    hundreds of tokens and batches fill up. None: no padding rule, only the budget."""
    if not rows:
        return []
    ordered = sorted(rows, key=lambda r: (r.length, r.seq))
    anchor = ordered.index(rows[0])
    lo = hi = anchor
    longest = ordered[anchor].length
    target = longest
    slack = float("inf") if overhead_tokens is None else overhead_tokens
    while hi - lo + 1 < max_rows:
        n = hi - lo + 1
        left = ordered[lo - 1] if lo > 0 else None
        right = ordered[hi + 1] if hi + 1 < len(ordered) else None
        fits_left = left is not None and (n + 1) * longest <= max_tokens and longest - left.length <= slack
        fits_right = (
            right is not None
            and (n + 1) * max(longest, right.length) <= max_tokens
            and n * (right.length - longest) <= slack
        )
        if fits_left and fits_right:
            assert left is not None and right is not None
            take_left = target - left.length <= right.length - target
        elif fits_left or fits_right:
            take_left = fits_left
        else:
            break
        if take_left:
            lo -= 1
        else:
            hi += 1
            longest = max(longest, ordered[hi].length)
    return ordered[lo : hi + 1]


class Engine:
    """Serves one model version. ``submit`` from the event loop; everything else is internal."""

    def __init__(
        self,
        *,
        name: str,
        version: int,
        variant: str,
        runner: OnnxRunner,
        codec: Codec[Any],
        metrics: Metrics,
        policy: BatchPolicy,
        tokenize_pool: Executor,
        device_lock: DeviceSlot | None = None,
        pad_id: int = 0,
    ) -> None:
        self.name = name
        self.version = version
        self.variant = variant
        self.runner = runner
        self.codec = codec
        self.policy = policy
        self._metrics = metrics
        self._pool = tokenize_pool
        self._device_lock: DeviceSlot = device_lock or threading.Lock()
        self._book = threading.Lock()  # tickets' row bookkeeping, when several runner threads share them
        self._pad_id = pad_id
        self._queue = _Queue()
        self._cond = threading.Condition()
        self._stop = False
        self._closed = False
        self._admitted = 0  # inputs admitted and not yet answered; touched on the event loop only
        self._idle = asyncio.Event()
        self._batch_ids = itertools.count(1)
        self._threads: list[threading.Thread] = []

    @property
    def provider(self) -> str:
        return self.runner.provider

    @property
    def admitted(self) -> int:
        return self._admitted

    @property
    def problem(self) -> str | None:
        """Why this engine cannot serve (readiness reports it), or None when healthy."""
        return None

    # -- lifecycle ---------------------------------------------------------------------------------

    def warmup(self, lengths: Sequence[int], filler: Sequence[int]) -> int:
        """Run each length at batch 1, and a multi-row batch at the shortest; returns the logits width.

        ``filler`` is a real encoding's ids (the model's own vocabulary), tiled to each length. Called
        before ``start`` on the loading thread, so first requests find initialized kernels and arenas.
        A full-budget batch is left out on purpose: it costs ~0.1-1 s of CPU per model at start-up and
        teaches ORT nothing a first real batch would not."""
        width = 0
        shortest = min(lengths)
        shapes = [(1, n) for n in sorted(set(lengths))] + [(min(8, self.policy.max_batch_size), shortest)]
        for rows, length in shapes:
            row = np.resize(np.asarray(filler, dtype=np.int64), length)
            ids = np.tile(row, (rows, 1))
            with self._device_lock:  # a reload's warm-up must not oversubscribe the cores serving traffic
                out = self.runner.run(ids, np.ones_like(ids), np.zeros_like(ids))
            width = int(out.shape[-1])
        return width

    def start(self) -> None:
        for i in range(max(1, self.policy.runner_threads)):
            thread = threading.Thread(target=self._run_loop, name=f"runner-{self.name}-v{self.version}-{i}")
            thread.daemon = True
            thread.start()
            self._threads.append(thread)

    async def stop(self, grace_s: float) -> None:
        """Refuse new requests, let admitted ones finish (up to ``grace_s``), then end the thread."""
        self._closed = True
        if self._admitted:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), grace_s)
        with self._cond:
            self._stop = True
            for row in self._queue.rows:
                row.ticket.cancelled = True
            self._queue.rows.clear()
            self._cond.notify_all()
        for thread in self._threads:
            await asyncio.to_thread(thread.join, 5.0)
        self._metrics.queue_depth.labels(self.name).set(0)

    # -- the event-loop side -----------------------------------------------------------------------

    async def submit(self, texts: list[str], params: Any, deadline: float) -> EngineResult:
        """Results for ``texts`` in order. ``deadline`` is a ``time.monotonic()`` instant."""
        if self._closed:
            raise EngineRetired(self.name)
        n = len(texts)
        if self._admitted + n > self.policy.max_queue:
            raise Overloaded(
                f"model {self.name!r} has {self._admitted} inputs in flight (limit {self.policy.max_queue}); "
                "retry shortly",
                self.policy.retry_after_s,
            )
        self._admitted += n
        self._idle.clear()
        ticket: _Ticket | None = None
        try:
            loop = asyncio.get_running_loop()
            started = time.perf_counter()
            if sum(map(len, texts)) <= self.policy.inline_chars:
                # A sentence tokenizes in ~20-50 us; a hop to the tokenizer thread and back costs more
                # than that in wake-ups and GIL hand-overs, so small requests tokenize right here.
                prepared = self.codec.prepare(texts, params)
            else:
                prepared = await loop.run_in_executor(self._pool, self.codec.prepare, texts, params)
            self._metrics.tokenize_duration.labels(self.name).observe(time.perf_counter() - started)
            if time.monotonic() >= deadline:
                raise DeadlineExceeded("the request's deadline passed while it was being tokenized")
            ticket = self._enqueue(prepared, loop, deadline)
            remaining = deadline - time.monotonic()
            try:
                return await asyncio.wait_for(asyncio.shield(ticket.future), max(remaining, 0.0))
            except TimeoutError:
                raise DeadlineExceeded(
                    f"the request waited longer than its deadline ({remaining * 1000:.0f} ms left at enqueue)"
                ) from None
        finally:
            if ticket is not None:
                ticket.cancelled = True  # a no-op once answered; drops queued rows otherwise
            self._admitted -= n
            if self._admitted == 0:
                self._idle.set()

    def _enqueue(self, prepared: list[Prepared], loop: asyncio.AbstractEventLoop, deadline: float) -> _Ticket:
        future: asyncio.Future[EngineResult] = loop.create_future()
        slots: list[list[np.ndarray | None]] = [[None] * len(p.encodings) for p in prepared]
        ticket = _Ticket(
            prepared=prepared,
            future=future,
            loop=loop,
            deadline=deadline,
            enqueued_at=time.perf_counter(),
            remaining=sum(len(s) for s in slots),
            logits=slots,
        )
        if ticket.remaining == 0:  # nothing to run (a codec may produce no rows for an empty text)
            done = self._finish(ticket)
            if done is not None:
                _resolve_all([done])
            return ticket
        with self._cond:
            queue = self._queue
            for item, p in enumerate(prepared):
                for index, enc in enumerate(p.encodings):
                    queue.rows.append(_Row(ticket, item, index, enc, len(enc.ids), queue.seq))
                    queue.seq += 1
            self._metrics.queue_depth.labels(self.name).set(len(queue.rows))
            self._cond.notify()
        return ticket

    # -- the runner thread -------------------------------------------------------------------------

    def _next_batch(self) -> list[_Row] | None:
        """Blocks until there is work; None when stopping."""
        with self._cond:
            while True:
                if self._stop:
                    return None
                now = time.monotonic()
                live = [r for r in self._queue.rows if not r.ticket.cancelled and r.ticket.deadline > now]
                if len(live) != len(self._queue.rows):
                    for r in self._queue.rows:
                        if not r.ticket.cancelled and r.ticket.deadline <= now:
                            self._fail(
                                r.ticket, DeadlineExceeded("the request's deadline passed in the queue")
                            )
                    self._queue.rows = [r for r in self._queue.rows if not r.ticket.cancelled]
                if self._queue.rows:
                    break
                self._metrics.queue_depth.labels(self.name).set(0)
                self._cond.wait()
            if self.policy.wait_ms > 0 and len(self._queue.rows) < self.policy.max_batch_size:
                self._cond.wait(self.policy.wait_ms / 1000)
            p = self.policy
            batch = select_batch(self._queue.rows, p.max_batch_size, p.max_batch_tokens, p.overhead_tokens)
            taken = set(map(id, batch))
            self._queue.rows = [r for r in self._queue.rows if id(r) not in taken]
            self._metrics.queue_depth.labels(self.name).set(len(self._queue.rows))
            if self._queue.rows and len(self._threads) > 1:
                self._cond.notify()  # an idle runner thread takes the rest
            return batch

    def _run_loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            if batch:
                self._run_batch(batch)

    def _run_batch(self, rows: list[_Row]) -> None:
        batch_id = next(self._batch_ids)
        started = time.perf_counter()
        for row in rows:
            t = row.ticket
            if t.started_at is None:
                t.started_at = started  # rows of one ticket in two concurrent batches: either start is fine
                self._metrics.queue_duration.labels(self.name).observe(started - t.enqueued_at)
        batch = pad([r.encoding for r in rows], self._pad_id)
        if self.policy.debug_delay_ms:  # a test seam: the runner is observably busy
            time.sleep(self.policy.debug_delay_ms / 1000)
        try:
            with self._device_lock:
                t0 = time.perf_counter()
                logits = self.runner.run(batch.input_ids, batch.attention_mask, batch.token_type_ids)
                elapsed = time.perf_counter() - t0
        except RunnerError as exc:
            log.error("model %s v%d: %s", self.name, self.version, exc)
            for row in rows:
                self._fail(row.ticket, InferenceFailed(f"inference failed for model {self.name!r}"))
            return
        finished: list[tuple[_Ticket, EngineResult]] = []
        complete: list[_Ticket] = []
        with self._book:
            for i, row in enumerate(rows):
                t = row.ticket
                if t.last_batch != batch_id:
                    t.last_batch = batch_id
                    t.inference_s += elapsed
                t.logits[row.item][row.index] = logits[i] if logits.ndim == 2 else logits[i, : row.length]
                t.remaining -= 1
                if t.remaining == 0 and not t.cancelled:
                    complete.append(t)
        for t in complete:
            done = self._finish(t)
            if done is not None:
                finished.append(done)
        if finished:
            # One wake-up of the event loop per batch, not one per request: each call_soon_threadsafe
            # writes to the loop's self-pipe and costs the loop a wake-up and a GIL hand-over.
            loops = {id(t.loop): t.loop for t, _ in finished}
            for key, loop in loops.items():
                mine = finished if len(loops) == 1 else [f for f in finished if id(f[0].loop) == key]
                loop.call_soon_threadsafe(_resolve_all, mine)
        self._metrics.inference_duration.labels(self.name, self.variant).observe(elapsed)
        self._metrics.batch_size.labels(self.name).observe(len(rows))
        self._metrics.batch_tokens.labels(self.name).observe(batch.tokens)

    def _finish(self, ticket: _Ticket) -> tuple[_Ticket, EngineResult] | None:
        """The decoded result, ready to hand to the event loop; None when decoding failed (the
        ticket is then failed)."""
        try:
            results = [
                self.codec.finish(p, [x for x in slots if x is not None])
                for p, slots in zip(ticket.prepared, ticket.logits, strict=True)
            ]
        except Exception:
            log.exception("model %s: decoding failed", self.name)
            self._fail(ticket, InferenceFailed(f"decoding failed for model {self.name!r}"))
            return None
        queue_s = (ticket.started_at or ticket.enqueued_at) - ticket.enqueued_at
        return ticket, EngineResult(results, queue_s, ticket.inference_s)

    def _fail(self, ticket: _Ticket, error: ServiceError) -> None:
        ticket.cancelled = True
        ticket.loop.call_soon_threadsafe(_resolve, ticket.future, None, error)


def _resolve_all(finished: list[tuple[_Ticket, EngineResult]]) -> None:
    for ticket, result in finished:
        _resolve(ticket.future, result, None)


def _resolve(
    future: asyncio.Future[EngineResult], result: EngineResult | None, error: BaseException | None
) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        assert result is not None
        future.set_result(result)
