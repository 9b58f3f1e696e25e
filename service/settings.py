"""One typed settings object for the serving process.

Every field is read from ``SLIMSERVE_<NAME>`` (dicts and lists as JSON) and is also a flag of
``slimserve serve``; flags win over the environment, the environment over these defaults. Each
description says why the default is what it is: it doubles as the flag's help text.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Device = Literal["auto", "cpu", "cuda"]


CGROUP = Path("/sys/fs/cgroup")


def cgroup_cpu_limit(root: Path = CGROUP) -> float | None:
    """The CPU quota of this container in cores (cgroup v2 ``cpu.max``, else v1 CFS files), or None
    when unlimited or unreadable. A pod limited to 2 CPUs on a 64-core node sees 64 cores in its
    affinity mask; sizing threads from that gives every session dozens of threads fighting over 2."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def cpu_cores() -> int:
    """Cores this process may use: the affinity mask, capped by the cgroup CPU quota (rounded down,
    at least 1), not the machine's count."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        cores = min(cores, max(1, math.floor(limit)))
    return max(1, cores)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SLIMSERVE_", extra="forbid", validate_default=True)

    # -- where and what --
    store: Path = Field(
        Path("model_store"), description="Model store to serve (the contract's default: ./model_store)."
    )
    host: str = Field(
        "127.0.0.1", description="Bind address; loopback by default so nothing is exposed by accident."
    )
    port: int = Field(8000, ge=0, le=65535, description="TCP port (8000: the usual local API port).")
    models: list[str] = Field(
        default_factory=list, description="Serve only these models; empty serves every model in the store."
    )
    pins: dict[str, int] = Field(
        default_factory=dict,
        description="Pin a model to a version (name=version); unpinned models serve their highest version.",
    )
    variant: str = Field(
        "recommended",
        description="Variant served for every model: 'recommended' (the build's choice for the device under "
        "the recipe's quality policy: the fastest keeping its share of the teacher's metric; int8 on CPU and "
        "fp16 on CUDA for manifests that record none), 'best' (the most accurate) or a variant name "
        "(fp32, int8, l3-int8, ...; a model without it fails to load).",
    )
    variants: dict[str, str] = Field(
        default_factory=dict,
        description="Per-model override of 'variant' (name=recommended|best|<variant name>).",
    )
    device: Device = Field(
        "auto",
        description="auto uses CUDA when onnxruntime sees a GPU, else CPU; the provider ONNX Runtime really "
        "uses is what gets reported.",
    )
    poll_interval_s: float = Field(
        0.0,
        ge=0,
        description="Check the store every N seconds for new versions (reloaded) and for models that "
        "appeared since start-up (loaded); 0 (off) because reloads are normally asked for explicitly with "
        "POST /v1/models/{name}/reload.",
    )

    # -- batching --
    max_batch_size: int = Field(
        32, ge=1, description="Most rows in one batch: 32 keeps int8 MiniLM near its best throughput on CPU."
    )
    max_batch_tokens: int = Field(
        4096,
        ge=1,
        description="Token budget of a batch (padded length x rows): 32 rows of 128 tokens, so a full "
        "batch stays ~0.1-0.2 s on 2 cores and short requests are not stuck behind it.",
    )
    batch_overhead_tokens: int | None = Field(
        None,
        ge=0,
        description="Padding a batch may take on per row, in tokens: what one more ONNX Runtime call costs. "
        "Unset means 8 on CPU, where a call is cheap and padding costs its full price (a 32-row batch of "
        "mixed-length sentences ran 2x slower than length-sorted groups of 4-8), and 1024 on CUDA.",
    )
    batch_wait_ms: float | None = Field(
        None,
        ge=0,
        description="How long the batcher waits for more rows before starting a batch; unset means 0 on "
        "CPU (a free runner should never idle) and 2 ms on CUDA (a fuller batch is nearly free there).",
    )
    max_queue: int = Field(
        1024,
        ge=1,
        description="Inputs admitted per model (queued or running) before new requests get 503 overloaded: "
        "about 3 s of work on 2 cores, beyond which clients are better off retrying.",
    )
    retry_after_s: int = Field(
        1, ge=0, description="Retry-After sent with 503: one second lets a queue drain."
    )

    # -- threads --
    intra_op_threads: int = Field(
        0,
        ge=0,
        description="ONNX Runtime threads per call; 0 means the cores this process may use divided among the "
        "runner threads. At most runner_threads calls run at once across all models, so cores are not "
        "oversubscribed.",
    )
    runner_threads: int | None = Field(
        None,
        ge=1,
        description="Batches run at once (runner threads per model, sharing its session; at most this many "
        "ONNX Runtime calls across all models). Unset: 2 on CPU with 2+ cores, each call then gets "
        "cores / 2 threads (on 2 cores: two single-threaded batches side by side, no per-operator "
        "synchronisation; docs/serving.md), and 1 on CUDA.",
    )
    ort_spin: bool = Field(
        False,
        description="Let idle ONNX Runtime threads busy-wait between ops. Off: on a few shared cores the "
        "spinning steals CPU from the event loop and tokenizer; turn on for a dedicated many-core box.",
    )
    tokenize_inline_chars: int = Field(
        1024,
        ge=0,
        description="Requests with at most this many characters in all are tokenized on the event loop "
        "(tens of microseconds) instead of hopping to the tokenizer thread and back, which costs more than "
        "the tokenization itself; larger ones go to the tokenizer thread so the loop never stalls. 0: never.",
    )
    tokenizer_threads: int = Field(
        1,
        ge=1,
        description="Tokenizer worker threads: one is plenty (fast Rust tokenizer, batched calls) and leaves "
        "the cores to ONNX Runtime.",
    )

    fast_path: bool = Field(
        True,
        description="Answer well-formed inference requests without FastAPI's routing, dependency and "
        "validation machinery (same schemas, bodies and errors; anything else goes through FastAPI). "
        "Off only to compare.",
    )

    # -- limits and deadlines --
    max_inputs: int = Field(
        128,
        ge=1,
        description="Most texts in one request (413 beyond): 4 full batches, a fair share.",
    )
    max_body_bytes: int = Field(
        1 << 20, ge=1, description="Largest request body (413 beyond): 1 MiB is ample for 128 long texts."
    )
    max_request_tokens: int = Field(
        16_384,
        ge=1,
        description="Most model work one request may ask for, in tokens (every row: a classification text "
        "counts up to the window, a long NER text every token of its overlapping windows); 413 beyond. "
        "16,384: 128 texts of a full 128-token window, or one NER document of ~12,000 words, about 2 s "
        "of work on 2 cores. Texts are otherwise as long as the body limit allows: classification "
        "truncates them to the window by default.",
    )
    max_queue_tokens: int = Field(
        32_768,
        ge=1,
        description="Tokens of work admitted per model (queued or running) before new requests get 503 "
        "overloaded: about 3-4 s of work on 2 cores, like max_queue for short texts. At least "
        "max_request_tokens.",
    )
    deadline_ms: float = Field(
        10_000,
        gt=0,
        description="Default per-request deadline (504 timeout beyond; queued work is dropped). A client can "
        "ask for less with the x-deadline-ms header. 10 s: longer than any healthy request takes.",
    )
    ner_stride: int = Field(
        32,
        ge=0,
        description="Tokens shared by neighbouring NER windows on long texts: enough context on both sides "
        "of a window edge without doubling the work.",
    )

    # -- security --
    api_keys: list[SecretStr] = Field(
        default_factory=list,
        description="Accepted Bearer tokens; empty disables auth (the default binds to loopback only).",
    )
    admin_keys: list[SecretStr] = Field(
        default_factory=list,
        description="Bearer tokens for the costly admin endpoints (POST /v1/models/{name}/reload); when set, "
        "inference keys do not suffice there. Empty: the api_keys guard reload too.",
    )
    metrics_auth: bool = Field(
        False,
        description="Require an API key for /metrics too; off: scrapers rarely send one.",
    )

    # -- tracing --
    tracing: bool = Field(
        False,
        description="OpenTelemetry spans per request (tokenize, queue wait, inference as children), sent "
        "over OTLP/HTTP. Off: needs the extra slimserve[tracing], and off costs nothing per request.",
    )
    otlp_endpoint: str = Field(
        "http://127.0.0.1:4318/v1/traces",
        description="Where spans go when tracing is on: an OpenTelemetry collector's OTLP/HTTP traces URL "
        "(4318: the OTLP/HTTP port).",
    )
    service_name: str = Field(
        "slimserve", description="The service.name of the spans (one name per deployment in your traces)."
    )
    trace_sample_ratio: float = Field(
        1.0,
        ge=0,
        le=1,
        description="Share of new traces recorded when tracing is on (a caller's sampled traceparent is "
        "always followed): 1 keeps every request; recording costs ~0.3-0.5 ms of CPU per request "
        "(docs/BENCHMARKS.md), so lower it on busy servers.",
    )

    # -- lifecycle --
    warmup: bool = Field(
        True,
        description="Run each sequence length once before /readyz turns 200, so first requests aren't slow.",
    )
    shutdown_grace_s: float = Field(
        30.0,
        ge=0,
        description="On SIGTERM, time given to in-flight requests (30 s: Kubernetes' default); /readyz "
        "answers 503 from the signal on. 0 exits at once. Keep it below the orchestrator's kill timeout.",
    )
    limit_concurrency: int | None = Field(
        2048,
        ge=1,
        description="Most open connections plus requests in progress before new ones get 503 from the HTTP "
        "server itself: a bound on sockets and memory far above what the queues admit (max_queue per model).",
    )
    body_timeout_s: float = Field(
        30.0,
        gt=0,
        description="A request body must arrive within this many seconds (408 request_timeout beyond): a "
        "slow or stalled client cannot hold a connection and its buffers for ever.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    debug_runner_delay_ms: float = Field(
        0.0,
        ge=0,
        description="Testing aid: sleep this long before each batch to make overload and deadlines "
        "reproducible. Keep 0 in production.",
    )

    debug_faults: dict[str, Literal["raise", "hang", "shape"]] = Field(
        default_factory=dict,
        description="Testing aid (bench/chaos.py): make a model's runner fail once it has warmed up "
        "(name=raise|hang|shape: raise an error, block past every deadline, return wrongly shaped logits). "
        "Empty in production.",
    )

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if not self.variant:
            raise ValueError("variant: empty; use 'recommended', 'best' or a variant name")
        for name, variant in self.variants.items():
            if not variant:
                raise ValueError(f"variants: empty variant for model {name!r}")
        if self.max_request_tokens > self.max_queue_tokens:
            raise ValueError(
                f"max_request_tokens ({self.max_request_tokens}) must not exceed max_queue_tokens "
                f"({self.max_queue_tokens}): such a request could never be admitted"
            )
        for name, version in self.pins.items():
            if version < 1:
                raise ValueError(f"pins: version of {name!r} must be a positive integer, got {version}")
        return self

    def effective_runner_threads(self, on_gpu: bool = False) -> int:
        if self.runner_threads is not None:
            return self.runner_threads
        return 1 if on_gpu else min(2, cpu_cores())

    def threads(self, on_gpu: bool = False) -> int:
        """ONNX Runtime threads per call: the setting, else the cores shared among the runner threads."""
        return self.intra_op_threads or max(1, cpu_cores() // self.effective_runner_threads(on_gpu))

    def effective_overhead_tokens(self, on_gpu: bool) -> int:
        if self.batch_overhead_tokens is not None:
            return self.batch_overhead_tokens
        return 1024 if on_gpu else 8

    def effective_batch_wait_ms(self, on_gpu: bool) -> float:
        if self.batch_wait_ms is not None:
            return self.batch_wait_ms
        return 2.0 if on_gpu else 0.0
