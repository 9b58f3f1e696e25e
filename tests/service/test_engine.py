"""The engine on its own: batch selection, and batched results equal to unbatched ones."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from slimserve.service import store
from slimserve.service.engine.batcher import BatchPolicy, Engine
from slimserve.service.engine.queue import Row, RowQueue
from slimserve.service.engine.runner import OnnxRunner
from slimserve.service.engine.tokenizer import TextTokenizer
from slimserve.service.metrics import Metrics
from slimserve.service.tasks.classification import ClassificationCodec, ClassifyParams
from slimserve.service.tasks.token_classification import NerCodec, NerParams


def queue_of(lengths: list[int]) -> tuple[RowQueue, list[Row]]:
    """One single-row request per length, in arrival order."""
    queue = RowQueue()
    rows = []
    for i, n in enumerate(lengths):
        row = Row(owner=i, length=n)
        queue.push(i, [row])
        rows.append(row)
    return queue, rows


def test_oldest_row_is_always_taken_and_budget_holds() -> None:
    queue, rows = queue_of([100, 5, 6, 7, 90, 8])
    batch = queue.take(max_rows=32, max_tokens=200)
    assert rows[0] in batch
    assert len(batch) * max(r.length for r in batch) <= 200
    assert [r.length for r in batch] == sorted(r.length for r in batch)


def test_similar_lengths_are_grouped() -> None:
    queue, _ = queue_of([10, 100, 11, 99, 12, 98])
    batch = queue.take(max_rows=3, max_tokens=10_000)
    assert sorted(r.length for r in batch) == [10, 11, 12]


def test_a_row_over_the_budget_still_runs_alone() -> None:
    queue, rows = queue_of([500, 5])
    assert queue.take(max_rows=8, max_tokens=100) == [rows[0]]


def test_padding_beyond_the_call_overhead_is_refused() -> None:
    queue, _ = queue_of([20, 21, 27, 40, 19, 12])
    batch = queue.take(max_rows=32, max_tokens=10_000, overhead_tokens=4)
    assert sorted(r.length for r in batch) == [19, 20, 21]
    assert len(queue_of([20, 21, 27, 40, 19, 12])[0].take(max_rows=32, max_tokens=10_000)) == 6


@given(
    lengths=st.lists(st.integers(1, 64), min_size=1, max_size=60),
    max_rows=st.integers(1, 16),
    max_tokens=st.integers(1, 512),
    overhead=st.none() | st.integers(0, 64),
)
def test_selection_invariants(
    lengths: list[int], max_rows: int, max_tokens: int, overhead: int | None
) -> None:
    queue, rows = queue_of(lengths)
    batch = queue.take(max_rows, max_tokens, overhead)
    assert rows[0] in batch
    assert len(batch) == len({id(r) for r in batch}) <= max_rows
    assert len(batch) == 1 or len(batch) * max(r.length for r in batch) <= max_tokens
    if overhead is not None:
        longest = max(r.length for r in batch)
        assert all(longest - r.length <= overhead * len(batch) for r in batch)
    # Draining the queue takes every row exactly once.
    seen = {id(r) for r in batch}
    while len(queue):
        more = queue.take(max_rows, max_tokens, overhead)
        assert more and not seen & {id(r) for r in more}
        seen |= {id(r) for r in more}
    assert seen == {id(r) for r in rows}


def test_requests_take_turns_so_a_huge_one_cannot_starve_a_small_one() -> None:
    """Was: the batch anchored on the oldest row, so a request of 2,000 NER windows ran whole before a
    one-sentence request that came a moment later."""
    queue = RowQueue()
    queue.push("huge", [Row("huge", 128) for _ in range(2000)])
    queue.push("small", [Row("small", 12)])
    first = queue.take(max_rows=32, max_tokens=4096, overhead_tokens=8)
    second = queue.take(max_rows=32, max_tokens=4096, overhead_tokens=8)
    assert {r.owner for r in first} == {"huge"}
    assert [r.owner for r in second] == ["small"]
    assert {r.owner for r in queue.take(max_rows=32, max_tokens=4096, overhead_tokens=8)} == {"huge"}
    # Without a padding rule a small request's batch fills up with the huge one's rows: still its turn.
    queue.push("other", [Row("other", 12)])
    queue.take(max_rows=32, max_tokens=4096)  # the huge request's turn
    assert queue.take(max_rows=32, max_tokens=4096)[0].owner == "other"


class CountingRow(Row):
    """Counts reads of ``length``: how many rows choosing a batch looked at."""

    reads = 0

    def __getattribute__(self, name: str) -> Any:
        if name == "length":
            CountingRow.reads += 1
        return super().__getattribute__(name)


def test_choosing_a_batch_does_not_look_at_the_whole_queue() -> None:
    """Was: every batch re-sorted the whole queue (O(n log n) per batch under the queue's lock)."""
    queue = RowQueue()
    for i in range(5000):
        queue.push(i, [CountingRow(i, 1 + (i * 7919) % 120)])
    CountingRow.reads = 0
    batch = queue.take(max_rows=32, max_tokens=4096, overhead_tokens=8)
    assert 1 <= len(batch) <= 32
    assert CountingRow.reads < 500


def test_dropped_requests_leave_nothing_behind() -> None:
    queue = RowQueue()
    queue.push("gone", [Row("gone", 10) for _ in range(50)])
    queue.push("kept", [Row("kept", 10)])
    assert queue.drop(lambda owner: owner != "gone") == ["gone"]
    assert len(queue) == 1
    assert [r.owner for r in queue.take(max_rows=32, max_tokens=4096)] == ["kept"]
    # Expired rows met while choosing are dropped too.
    queue.push("late", [Row("late", 10)])
    queue.push("live", [Row("live", 10)])
    taken = queue.take(max_rows=32, max_tokens=4096, alive=lambda owner: owner != "late")
    assert [r.owner for r in taken] == ["live"] and len(queue) == 0


class EngineHarness:
    """One engine per model on a private event loop thread, for direct ``submit`` calls."""

    def __init__(self, directory: Path, policy: BatchPolicy, device_lock: Any = None) -> None:
        manifest = store.read_manifest(directory)
        tokenizer = TextTokenizer(directory / "tokenizer.json", manifest.max_seq_len)
        codec: Any
        if manifest.task == "token-classification":
            codec = NerCodec(tokenizer, manifest.labels, stride=8)
        else:
            codec = ClassificationCodec(tokenizer, manifest.labels)
        self.metrics = Metrics()
        self.pool = ThreadPoolExecutor(1)
        self.engine = Engine(
            name=manifest.name,
            version=1,
            variant="fp32",
            runner=OnnxRunner(directory / "model.fp32.onnx", intra_op_threads=1),
            codec=codec,
            metrics=self.metrics,
            policy=policy,
            tokenize_pool=self.pool,
            device_lock=device_lock,
        )
        self.engine.start()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def close(self) -> None:
        self.run(self.engine.stop(1.0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.pool.shutdown()


@pytest.fixture(scope="module")
def sentiment_engine(fake_store: Path) -> Any:
    # A debug delay lets concurrent submissions pile up, so batches really mix lengths.
    h = EngineHarness(
        store.version_dir(fake_store, "sentiment", 1), BatchPolicy(max_batch_tokens=256, debug_delay_ms=2)
    )
    yield h
    h.close()


@pytest.fixture(scope="module")
def ner_engine(fake_store: Path) -> Any:
    h = EngineHarness(
        store.version_dir(fake_store, "ner", 1), BatchPolicy(max_batch_tokens=512, debug_delay_ms=2)
    )
    yield h
    h.close()


WORDS = ["good", "bad", "film", "the", "not", "angela", "merkel", "visited", "paris", "unbelievably", "!"]
texts_strategy = st.lists(
    st.lists(st.sampled_from(WORDS), min_size=0, max_size=80).map(" ".join), min_size=1, max_size=24
)


async def _together(engine: Engine, groups: list[list[str]], params: Any) -> list[Any]:
    deadline = time.monotonic() + 60
    done = await asyncio.gather(*(engine.submit(g, params, deadline) for g in groups))
    return [r for d in done for r in d.results]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=texts_strategy, split=st.integers(1, 6))
def test_batched_equals_unbatched_classification(sentiment_engine: Any, texts: list[str], split: int) -> None:
    params = ClassifyParams(top_k=2)
    groups = [texts[i::split] for i in range(split) if texts[i::split]]
    alone = [sentiment_engine.run(_together(sentiment_engine.engine, [[t]], params))[0] for t in texts]
    mixed = sentiment_engine.run(_together(sentiment_engine.engine, groups, params))
    order = [t for g in groups for t in g]
    by_text = {t: r for t, r in zip(texts, alone, strict=True)}
    for text, result in zip(order, mixed, strict=True):
        expected = by_text[text]
        assert result.label == expected.label
        assert result.score == pytest.approx(expected.score, abs=1e-6)
        assert [t.label for t in result.top] == [t.label for t in expected.top]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=texts_strategy)
def test_batched_equals_unbatched_ner(ner_engine: Any, texts: list[str]) -> None:
    params = NerParams("none")
    alone = [ner_engine.run(_together(ner_engine.engine, [[t]], params))[0] for t in texts]
    mixed = ner_engine.run(_together(ner_engine.engine, [[t] for t in texts], params))
    for text, a, b in zip(texts, alone, mixed, strict=True):
        assert [(e.entity, e.start, e.end) for e in a.entities] == [
            (e.entity, e.start, e.end) for e in b.entities
        ]
        assert np.allclose([e.score for e in a.entities], [e.score for e in b.entities], atol=1e-6)
        assert all(text[e.start : e.end] == e.text for e in b.entities)


class _Counting:
    """A device slot that records how many ONNX Runtime calls were ever in flight at once. The first
    caller is held (up to 10 s) until a second one arrives, so that concurrency, if the engine has
    it, is observed rather than left to timing."""

    def __init__(self, permits: int) -> None:
        self._sem = threading.BoundedSemaphore(permits)
        self._lock = threading.Lock()
        self._meet = threading.Barrier(2, timeout=10)
        self._met = False
        self.inside = 0
        self.most = 0

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        self._sem.acquire()
        with self._lock:
            self.inside += 1
            self.most = max(self.most, self.inside)
        if not self._met:
            with contextlib.suppress(threading.BrokenBarrierError):
                self._meet.wait()
            self._met = True
        return True

    def release(self) -> None:
        with self._lock:
            self.inside -= 1
        self._sem.release()


def test_two_runner_threads_give_the_same_results(fake_store: Path, ner_engine: Any) -> None:
    """Rows of one request spread over batches that run at the same time on two runner threads
    (one row per batch, long texts of several windows) still come back whole and in order."""
    slot = _Counting(2)
    two = EngineHarness(
        store.version_dir(fake_store, "ner", 1),
        BatchPolicy(max_batch_size=1, runner_threads=2, debug_delay_ms=5),
        device_lock=slot,
    )
    try:
        texts = [" ".join(WORDS[(i + j) % len(WORDS)] for j in range(5 + 9 * i)) for i in range(12)]
        params = NerParams("none")
        groups = [texts[i::3] for i in range(3)]
        want = ner_engine.run(_together(ner_engine.engine, groups, params))
        got = two.run(_together(two.engine, groups, params))
    finally:
        two.close()
    assert slot.most == 2  # both runner threads had a batch in flight at once
    for a, b in zip(want, got, strict=True):
        assert [(e.entity, e.start, e.end) for e in a.entities] == [
            (e.entity, e.start, e.end) for e in b.entities
        ]
        assert np.allclose([e.score for e in a.entities], [e.score for e in b.entities], atol=1e-6)
