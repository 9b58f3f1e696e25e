"""One model's engine: tokenize -> bounded queue -> token-budget batcher -> runner threads -> decode.

The event loop admits requests, tokenizes small ones itself (larger ones on a small shared thread
pool, ``Codec.prepare``), awaits futures and answers. Admission counts what the work costs: after
tokenizing, a request's rows (NER windows included) are counted in tokens, refused with 413 beyond
``max_request_tokens`` and with 503 when the model's queue already holds ``max_queue_tokens``. Rows
wait in a :class:`~slimserve.service.engine.queue.RowQueue`; each of ``runner_threads`` runner
threads (they share the ONNX Runtime session: its Run is thread-safe) starts the next batch as soon
as it is free: requests take turns anchoring a batch, which is filled with the rows nearest the anchor
in length within a token budget (padded length x rows) and a row count. When every row of a request
has run, the codec decodes it on the runner thread (microseconds) and the batch's results are handed
back to the event loop in one call.

Faults never lose a request:

- A runner thread catches everything around a batch and answers its rows with 500 ``internal``; a
  thread that still dies is replaced (a few times, then the engine reports a problem and readiness
  turns 503). Logits of the wrong shape are refused before anything reads them.
- A watchdog thread sees each running batch. Once every row of it is past its deadline (its clients
  already have their 504), ONNX Runtime is asked to terminate the run; a run that ignores that for
  ``HANG_GRACE_S`` is abandoned: its device slot is released, a fresh runner thread takes its place,
  and the engine reports a problem once as many threads hang as it runs.
- ``stop`` hands the rows it did not run to the next engine (``EngineRetired``: the registry resubmits
  them), so a reload with no grace costs a retry, never a timeout.
- Tokenization on the shared pool honours the deadline: expired work is never tokenized and the
  504 is sent at the deadline, not when the pool gets to it.
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
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from slimserve.service.engine.codec import Codec, Prepared
from slimserve.service.engine.queue import Row, RowQueue
from slimserve.service.engine.runner import OnnxRunner, RunnerError, RunOptions
from slimserve.service.engine.tokenizer import pad_rows
from slimserve.service.errors import (
    DeadlineExceeded,
    InferenceFailed,
    Overloaded,
    PayloadTooLarge,
    ServiceError,
)
from slimserve.service.logs import REQUEST_ID
from slimserve.service.metrics import Metrics

log = logging.getLogger(__name__)

HANG_GRACE_S = 1.0  # how long a run may ignore ONNX Runtime's terminate flag before it is abandoned
WATCH_INTERVAL_S = 0.05
MAX_THREAD_DEATHS = 3  # runner threads replaced after an uncaught error before the engine gives up


class DeviceSlot(Protocol):
    """A lock or a semaphore: how many ONNX Runtime calls may run at once across engines. Released
    by the watchdog on behalf of a hung thread, hence acquire/release rather than ``with``."""

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool: ...

    def release(self) -> None: ...


class EngineRetired(Exception):
    """The engine was replaced (reload) or stopped; the caller asks the registry for the current one."""


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    max_batch_size: int = 32
    max_batch_tokens: int = 4096
    overhead_tokens: int | None = None
    wait_ms: float = 0.0
    max_queue: int = 1024
    max_queue_tokens: int = 32768
    max_request_tokens: int = 16384
    retry_after_s: int = 1
    debug_delay_ms: float = 0.0
    inline_chars: int = 0
    runner_threads: int = 1


@dataclass(slots=True)
class EngineResult:
    results: list[Any]
    queue_s: float
    inference_s: float
    batch_rows: int = 0
    """Rows in the largest batch that carried this request's rows."""
    enqueued_at: float = 0.0
    """``time.perf_counter()`` when its rows entered the queue (the tracing spans' clock)."""
    tokenized_at: float = 0.0
    tokenize_s: float = 0.0


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
    request_id: str = "-"
    batch_rows: int = 0


@dataclass(frozen=True, slots=True)
class _Slot:
    """A queued row's payload: its token ids, and where its logits go (row ``index`` of item ``item``
    of its ticket, the row's ``owner``)."""

    item: int
    index: int
    ids: np.ndarray


@dataclass(eq=False, slots=True)
class _Running:
    """A batch inside ONNX Runtime, as the watchdog sees it."""

    rows: list[Row]
    deadline: float  # the latest of its rows' deadlines
    options: RunOptions
    thread: threading.Thread
    slot_held: bool = False
    terminated_at: float | None = None
    abandoned: bool = False


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
        self._queue = RowQueue()
        self._cond = threading.Condition()
        self._sweep = False  # a request was cancelled: drop its rows before the next batch
        self._stop = False
        self._closed = False
        # Inputs and tokens admitted and not yet answered; touched on the event loop only.
        self._admitted = 0
        self._admitted_tokens = 0
        self._idle = asyncio.Event()
        self._batch_ids = itertools.count(1)
        self._threads: list[threading.Thread] = []
        self._running: dict[int, _Running] = {}  # by id(thread); guarded by self._book
        self._hung = 0  # abandoned threads still inside ONNX Runtime
        self._deaths = 0
        self._watch_stop = threading.Event()
        self._watchdog: threading.Thread | None = None
        self.width: int | None = None  # logits width, learnt at warm-up

    @property
    def provider(self) -> str:
        return self.runner.provider

    @property
    def admitted(self) -> int:
        return self._admitted

    @property
    def problem(self) -> str | None:
        """Why this engine cannot serve (readiness reports it), or None when healthy."""
        if self._deaths > MAX_THREAD_DEATHS:
            return f"{self._deaths} runner threads died (see the log)"
        if self._hung >= max(1, self.policy.runner_threads):
            return f"{self._hung} runner threads are stuck in ONNX Runtime"
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
            self._device_lock.acquire()  # a reload's warm-up must not oversubscribe the cores serving traffic
            try:
                out = self.runner.run(ids, np.ones_like(ids), np.zeros_like(ids))
            finally:
                self._device_lock.release()
            width = int(out.shape[-1])
        self.width = width
        return width

    def start(self) -> None:
        for _ in range(max(1, self.policy.runner_threads)):
            self._spawn_runner()
        self._watchdog = threading.Thread(target=self._watch, name=f"watchdog-{self.name}-v{self.version}")
        self._watchdog.daemon = True
        self._watchdog.start()

    def _spawn_runner(self) -> None:
        n = len(self._threads)
        thread = threading.Thread(target=self._thread_main, name=f"runner-{self.name}-v{self.version}-{n}")
        thread.daemon = True
        self._threads.append(thread)
        thread.start()

    async def stop(self, grace_s: float) -> None:
        """Refuse new requests, let admitted ones finish (up to ``grace_s``), hand the rows still queued
        to the next engine (their requests are resubmitted), then end the threads."""
        self._closed = True
        if self._admitted:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), grace_s)
        with self._cond:
            self._stop = True
            leftover = self._queue.drop(lambda _: False)
            self._cond.notify_all()
        for ticket in leftover:
            if not ticket.cancelled:
                self._fail(ticket, EngineRetired(self.name))
        self._watch_stop.set()
        self.runner.close()
        for thread in [*self._threads, self._watchdog]:
            # A thread stuck inside ONNX Runtime cannot be joined: it was abandoned (daemon) already.
            if thread is not None and thread.is_alive() and not self._is_abandoned(thread):
                await asyncio.to_thread(thread.join, 5.0)
        self._metrics.queue_depth.labels(self.name).set(0)

    # -- the event-loop side -----------------------------------------------------------------------

    async def submit(self, texts: list[str], params: Any, deadline: float) -> EngineResult:
        """Results for ``texts`` in order. ``deadline`` is a ``time.monotonic()`` instant."""
        if self._closed:
            raise EngineRetired(self.name)
        n = len(texts)
        if n > self.policy.max_queue:  # could never be admitted: not a reason to retry
            raise PayloadTooLarge(
                f"{n} inputs in one request; model {self.name!r} admits at most {self.policy.max_queue} "
                "at a time (setting max_queue)"
            )
        problem = self.problem
        if problem is not None:
            raise InferenceFailed(f"model {self.name!r} is unhealthy: {problem}")
        if self._admitted + n > self.policy.max_queue:
            raise Overloaded(
                f"model {self.name!r} has {self._admitted} inputs in flight (limit {self.policy.max_queue}); "
                "retry shortly",
                self.policy.retry_after_s,
            )
        self._admitted += n
        self._idle.clear()
        tokens = 0
        ticket: _Ticket | None = None
        try:
            loop = asyncio.get_running_loop()
            started = time.perf_counter()
            if sum(map(len, texts)) <= self.policy.inline_chars:
                # A sentence tokenizes in ~20-50 us; a hop to the tokenizer thread and back costs more
                # than that in wake-ups and GIL hand-overs, so small requests tokenize right here.
                prepared = self.codec.prepare(texts, params)
            else:
                # The pool is shared by every model: wait for it no longer than the deadline, and let
                # work whose deadline passed in the pool's queue be skipped, not tokenized.
                job = loop.run_in_executor(self._pool, _prepare_before, deadline, self.codec, texts, params)
                try:
                    prepared = await asyncio.wait_for(job, max(deadline - time.monotonic(), 0.0))
                except TimeoutError:
                    raise DeadlineExceeded(
                        "the request's deadline passed while it waited to be tokenized"
                    ) from None
            tokenize_s = time.perf_counter() - started
            self._metrics.tokenize_duration.labels(self.name).observe(tokenize_s)
            if time.monotonic() >= deadline:
                raise DeadlineExceeded("the request's deadline passed while it was being tokenized")
            tokens = self._admit_tokens(prepared)
            ticket = self._enqueue(prepared, loop, deadline)
            remaining = deadline - time.monotonic()
            try:
                result = await asyncio.wait_for(asyncio.shield(ticket.future), max(remaining, 0.0))
                result.tokenized_at, result.tokenize_s = started, tokenize_s
                return result
            except TimeoutError:
                raise DeadlineExceeded(
                    f"the request waited longer than its deadline ({remaining * 1000:.0f} ms left at enqueue)"
                ) from None
        finally:
            if ticket is not None and not ticket.future.done():
                ticket.cancelled = True  # its queued rows are dropped before the next batch
                with self._cond:
                    self._sweep = True
            self._admitted -= n
            self._admitted_tokens -= tokens
            if self._admitted == 0:
                self._idle.set()

    def _admit_tokens(self, prepared: list[Prepared]) -> int:
        """Count the request's work in tokens (every row, windows included) and admit it, or refuse:
        413 when one request asks for more than ``max_request_tokens``, 503 when the queue is full."""
        policy = self.policy
        tokens = sum(p.tokens for p in prepared)
        if tokens > policy.max_request_tokens:
            raise PayloadTooLarge(
                f"the request needs {tokens} tokens of model work (every text, long NER texts in "
                f"overlapping windows); one request may ask for at most {policy.max_request_tokens}: "
                "send fewer or shorter texts per request"
            )
        if self._admitted_tokens and self._admitted_tokens + tokens > policy.max_queue_tokens:
            raise Overloaded(
                f"model {self.name!r} has {self._admitted_tokens} tokens of work in flight (limit "
                f"{policy.max_queue_tokens}); retry shortly",
                policy.retry_after_s,
            )
        self._admitted_tokens += tokens
        return tokens

    def _enqueue(self, prepared: list[Prepared], loop: asyncio.AbstractEventLoop, deadline: float) -> _Ticket:
        future: asyncio.Future[EngineResult] = loop.create_future()
        slots: list[list[np.ndarray | None]] = [[None] * len(p.rows) for p in prepared]
        ticket = _Ticket(
            prepared=prepared,
            future=future,
            loop=loop,
            deadline=deadline,
            enqueued_at=time.perf_counter(),
            remaining=sum(len(s) for s in slots),
            logits=slots,
            request_id=REQUEST_ID.get(),
        )
        if ticket.remaining == 0:  # nothing to run (a codec may produce no rows for an empty text)
            done = self._finish(ticket)
            if done is not None:
                _resolve_all([done])
            return ticket
        rows = [
            Row(ticket, len(ids), _Slot(item, index, ids))
            for item, p in enumerate(prepared)
            for index, ids in enumerate(p.rows)
        ]
        with self._cond:
            if self._stop:
                raise EngineRetired(self.name)
            self._queue.push(ticket, rows)
            self._metrics.queue_depth.labels(self.name).set(len(self._queue))
            self._cond.notify()
        return ticket

    # -- the runner thread -------------------------------------------------------------------------

    def _next_batch(self) -> list[Row] | None:
        """Blocks until there is work; None when stopping."""
        with self._cond:
            while True:
                if self._stop:
                    return None
                if self._sweep:  # requests were cancelled or timed out: free their rows now
                    self._sweep = False
                    self._queue.drop(lambda t: not t.cancelled)
                if len(self._queue):
                    break
                self._metrics.queue_depth.labels(self.name).set(0)
                self._cond.wait()
            p = self.policy
            if p.wait_ms > 0 and len(self._queue) < p.max_batch_size:
                self._cond.wait(p.wait_ms / 1000)
            now = time.monotonic()
            batch = self._queue.take(
                p.max_batch_size, p.max_batch_tokens, p.overhead_tokens,
                alive=lambda t: not t.cancelled and t.deadline > now,
            )  # fmt: skip
            self._metrics.queue_depth.labels(self.name).set(len(self._queue))
            if len(self._queue) and len(self._threads) > 1:
                self._cond.notify()  # an idle runner thread takes the rest
            return batch

    def _thread_main(self) -> None:
        me = threading.current_thread()
        try:
            self._run_loop(me)
        except BaseException:
            log.critical(
                "model %s v%d: runner thread %s died", self.name, self.version, me.name, exc_info=True
            )
            raise
        finally:
            self._on_thread_end(me)

    def _run_loop(self, me: threading.Thread) -> None:
        while not self._stop:
            try:
                batch = self._next_batch()
            except Exception:
                log.exception("model %s v%d: forming a batch failed", self.name, self.version)
                time.sleep(0.01)
                continue
            if batch is None:
                return
            if not batch:
                continue
            try:
                self._run_batch(batch, me)
            except BaseException as exc:
                ids = ",".join(sorted({r.owner.request_id for r in batch}))
                log.exception("model %s v%d: batch failed (requests %s)", self.name, self.version, ids)
                self._metrics.runner_errors.labels(self.name).inc()
                error = (
                    exc
                    if isinstance(exc, ServiceError)
                    else InferenceFailed(f"inference failed for {self.name!r}")
                )
                for row in batch:
                    self._fail(row.owner, error)
                if not isinstance(exc, Exception):
                    raise
            if self._is_abandoned(me):
                return  # a replacement took over while this thread hung

    def _on_thread_end(self, me: threading.Thread) -> None:
        with self._book:
            running = self._running.pop(id(me), None)
            if running is not None and running.slot_held:
                running.slot_held = False
                self._device_lock.release()
        if self._stop or self._is_abandoned(me):
            return
        self._deaths += 1
        problem = self.problem
        if problem is not None:
            self._answer_queue(InferenceFailed(f"model {self.name!r} is unhealthy: {problem}"))
            return
        log.error("model %s v%d: starting a runner thread in place of %s", self.name, self.version, me.name)
        self._spawn_runner()

    def _answer_queue(self, error: ServiceError) -> None:
        with self._cond:
            tickets = self._queue.drop(lambda _: False)
        for ticket in tickets:
            self._fail(ticket, error)

    def _is_abandoned(self, me: threading.Thread) -> bool:
        return getattr(me, "slimserve_abandoned", False)

    # -- the watchdog thread -----------------------------------------------------------------------

    def _watch(self) -> None:
        while not self._watch_stop.wait(WATCH_INTERVAL_S):
            now = time.monotonic()
            with self._book:
                running = [r for r in self._running.values() if not r.abandoned]
            for run in running:
                if run.terminated_at is None and now >= run.deadline:
                    run.terminated_at = now
                    run.options.terminate = True
                    log.warning(
                        "model %s v%d: a batch of %d rows ran past every deadline in it; asked ONNX Runtime "
                        "to stop it", self.name, self.version, len(run.rows),
                    )  # fmt: skip
                    for row in run.rows:
                        self._fail(
                            row.owner,
                            DeadlineExceeded("the batch carrying the request ran past its deadline"),
                        )
                elif run.terminated_at is not None and now - run.terminated_at >= HANG_GRACE_S:
                    self._abandon(run)

    def _abandon(self, run: _Running) -> None:
        """A run ignores terminate: give its slot back, replace its thread, and count it."""
        with self._book:
            if run.abandoned:
                return
            run.abandoned = True
            run.thread.slimserve_abandoned = True  # type: ignore[attr-defined]
            if run.slot_held:
                run.slot_held = False
                self._device_lock.release()
            self._hung += 1
            hung = self._hung
        self._metrics.runner_hangs.labels(self.name).inc()
        log.error(
            "model %s v%d: runner thread %s is stuck in ONNX Runtime; its slot is released and a new thread "
            "takes its place (%d stuck)", self.name, self.version, run.thread.name, hung,
        )  # fmt: skip
        problem = self.problem
        if problem is not None:
            self._answer_queue(InferenceFailed(f"model {self.name!r} is unhealthy: {problem}"))
        if not self._stop:
            self._spawn_runner()

    def _run_batch(self, rows: list[Row], me: threading.Thread) -> None:
        batch_id = next(self._batch_ids)
        started = time.perf_counter()
        for row in rows:
            t = row.owner
            if t.started_at is None:
                t.started_at = started  # rows of one ticket in two concurrent batches: either start is fine
                self._metrics.queue_duration.labels(self.name).observe(started - t.enqueued_at)
        batch = pad_rows([r.payload.ids for r in rows], self._pad_id)
        if self.policy.debug_delay_ms:  # a test seam: the runner is observably busy
            time.sleep(self.policy.debug_delay_ms / 1000)
        run = _Running(rows, max(r.owner.deadline for r in rows), RunOptions(), me)
        self._device_lock.acquire()
        with self._book:
            run.slot_held = True
            self._running[id(me)] = run
        try:
            t0 = time.perf_counter()
            logits = self.runner.run(batch.input_ids, batch.attention_mask, batch.token_type_ids, run.options)
            elapsed = time.perf_counter() - t0
        except RunnerError as exc:
            ids = ",".join(sorted({r.owner.request_id for r in rows}))
            log.error("model %s v%d: %s (requests %s)", self.name, self.version, exc, ids)
            self._metrics.runner_errors.labels(self.name).inc()
            for row in rows:
                self._fail(row.owner, InferenceFailed(f"inference failed for model {self.name!r}"))
            return
        finally:
            with self._book:
                self._running.pop(id(me), None)
                if run.slot_held:
                    run.slot_held = False
                    self._device_lock.release()
                if run.abandoned:
                    self._hung -= 1
        if run.abandoned or run.terminated_at is not None:
            return  # its rows were answered with 504 by the watchdog
        self._check_shape(logits, len(rows), batch.input_ids.shape[1])
        finished: list[tuple[_Ticket, EngineResult]] = []
        complete: list[_Ticket] = []
        with self._book:
            for i, row in enumerate(rows):
                t, slot = row.owner, row.payload
                if t.last_batch != batch_id:
                    t.last_batch = batch_id
                    t.inference_s += elapsed
                    t.batch_rows = max(t.batch_rows, len(rows))
                t.logits[slot.item][slot.index] = logits[i] if logits.ndim == 2 else logits[i, : row.length]
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
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_resolve_all, mine)
        self._metrics.inference_duration.labels(self.name, self.variant).observe(elapsed)
        self._metrics.batch_size.labels(self.name).observe(len(rows))
        self._metrics.batch_tokens.labels(self.name).observe(batch.tokens)

    def _check_shape(self, logits: Any, rows: int, length: int) -> None:
        """Refuse logits that do not fit the batch before anything indexes them."""
        token_level = self.codec.token_level
        shape = getattr(logits, "shape", None)
        expected = (rows, length, self.width) if token_level else (rows, self.width)
        if (
            shape is None
            or len(shape) != len(expected)
            or shape[0] != rows
            or (token_level and shape[1] != length)
            or (self.width is not None and shape[-1] != self.width)
        ):
            raise InferenceFailed(
                f"model {self.name!r} returned logits of shape {shape} for a batch of {rows} x {length} "
                f"(expected {expected})"
            )

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
        return ticket, EngineResult(
            results, queue_s, ticket.inference_s, ticket.batch_rows, ticket.enqueued_at
        )

    def _fail(self, ticket: _Ticket, error: BaseException) -> None:
        ticket.cancelled = True
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            ticket.loop.call_soon_threadsafe(_resolve, ticket.future, None, error)


def _prepare_before(deadline: float, codec: Codec[Any], texts: list[str], params: Any) -> list[Prepared]:
    """On the tokenizer pool: skip work whose deadline passed while it waited for a thread."""
    if time.monotonic() >= deadline:
        raise DeadlineExceeded("the request's deadline passed while it waited to be tokenized")
    return codec.prepare(texts, params)


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
