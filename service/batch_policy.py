"""From settings to one engine's batching policy, per device (CPU and CUDA want different defaults)."""

from __future__ import annotations

from slimserve.service.engine.batcher import BatchPolicy
from slimserve.service.settings import Settings


def batch_policy(settings: Settings, on_gpu: bool) -> BatchPolicy:
    s = settings
    return BatchPolicy(
        max_batch_size=s.max_batch_size,
        max_batch_tokens=s.max_batch_tokens,
        overhead_tokens=s.effective_overhead_tokens(on_gpu),
        wait_ms=s.effective_batch_wait_ms(on_gpu),
        max_queue=s.max_queue,
        max_queue_tokens=s.max_queue_tokens,
        max_request_tokens=s.max_request_tokens,
        retry_after_s=s.retry_after_s,
        debug_delay_ms=s.debug_runner_delay_ms,
        inline_chars=s.tokenize_inline_chars,
        runner_threads=s.effective_runner_threads(on_gpu),
    )


def warmup_lengths(max_seq_len: int, full: bool = True) -> list[int]:
    """Sequence lengths run once before a version serves: each power of two below the window and the
    window itself (``full``), or one short length (warm-up off: the graph is still proven to run)."""
    if not full:
        return [min(16, max_seq_len)]
    lengths = [n for n in (16, 32, 64, 128, 256, 512) if n < max_seq_len]
    return [*lengths, max_seq_len]
