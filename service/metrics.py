"""Every Prometheus metric of the contract, defined once, in a registry owned by one app.

A per-app :class:`CollectorRegistry` (not the global one) lets tests run several apps in one process.
Label values come only from the store (model, version, variant, provider) and the route table
(endpoint), never from request text.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Seconds, from 50 µs (a small batch on a GPU) to 10 s (the default deadline): one set of buckets
# resolves both microsecond GPU latencies and millisecond CPU latencies.
LATENCY_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    10.0,
)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
BATCH_TOKEN_BUCKETS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
# The contract's four labels first; the rest say which model the variant is (issue: compression).
MODEL_INFO_LABELS = ("model", "version", "variant", "provider", "form", "precision", "layers", "parameters")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.request_duration = Histogram(
            "slimserve_request_duration_seconds",
            "Time from receiving a request to sending its response.",
            ["endpoint", "model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.requests = Counter(
            "slimserve_requests",
            "Requests answered, by HTTP status code.",
            ["endpoint", "model", "code"],
            registry=r,
        )
        self.queue_duration = Histogram(
            "slimserve_queue_duration_seconds",
            "Time a request's rows waited in the queue before their first batch started.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokenize_duration = Histogram(
            "slimserve_tokenize_duration_seconds",
            "Time spent tokenizing one request.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference_duration = Histogram(
            "slimserve_inference_duration_seconds",
            "Time ONNX Runtime spent on one batch.",
            ["model", "variant"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "slimserve_batch_size",
            "Rows per batch run.",
            ["model"],
            buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self.batch_tokens = Histogram(
            "slimserve_batch_tokens",
            "Padded tokens per batch run (rows x padded length).",
            ["model"],
            buckets=BATCH_TOKEN_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "slimserve_queue_depth",
            "Rows waiting for a batch.",
            ["model"],
            registry=r,
        )
        self.model_info = Gauge(
            "slimserve_model_info",
            "The version, variant and execution provider served per model (value 1), with the variant's "
            "form, precision, layers and parameters (layers and parameters empty for a version-1 manifest).",
            list(MODEL_INFO_LABELS),
            registry=r,
        )
        # Beyond the contract: reload outcomes, so a refused version is visible on a dashboard.
        self.reloads = Counter(
            "slimserve_model_reloads",
            "Model (re)loads by outcome: ok, or failed (the old version keeps serving).",
            ["model", "outcome"],
            registry=r,
        )

        self.runner_hangs = Counter(
            "slimserve_runner_hangs",
            "Runs that ignored ONNX Runtime's terminate flag past their deadline: the thread was replaced.",
            ["model"],
            registry=r,
        )
        self.runner_errors = Counter(
            "slimserve_runner_errors",
            "Batches that failed inside the engine (answered 500 internal), by model.",
            ["model"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
