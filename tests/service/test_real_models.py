"""The server on real (tiny) transformer models built by the build pipeline: what it answers equals
the runner + decoder applied directly, and the serving process never imports torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from slimserve.service import store
from slimserve.service.engine.runner import OnnxRunner
from slimserve.service.engine.tokenizer import TextTokenizer, pad
from slimserve.service.tasks.classification import decode

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

TEXTS = [
    "a charming and often affecting journey",
    "unflinchingly bleak and desperate",
    "my card has not arrived yet, where is it?",
    "the exchange rate you applied to my transfer looks wrong " * 8,
]


def direct(directory: Path, variant: str, texts: list[str], top_k: int) -> list[Any]:
    manifest = store.read_manifest(directory)
    tokenizer = TextTokenizer(directory / manifest.tokenizer, manifest.max_seq_len)
    runner = OnnxRunner(directory / manifest.variants[variant].file, intra_op_threads=1)
    out = []
    for text in texts:  # one at a time: no batching, no padding
        batch = pad(tokenizer.encode([text]))
        logits = runner.run(batch.input_ids, batch.attention_mask, batch.token_type_ids)
        out.append(decode(logits, manifest.labels, top_k)[0])
    return out


def test_real_models_serve_what_the_runner_computes(tiny_store: Path, make_server: Any) -> None:
    srv = make_server(tiny_store, warmup=True)
    models = {m["name"]: m for m in httpx.get(srv.url + "/v1/models").json()["models"]}
    assert {"sentiment", "intent"} <= set(models)
    for name, path in (("sentiment", "/v1/sentiment"), ("intent", "/v1/classify")):
        info = models[name]
        directory = store.version_dir(tiny_store, name, info["version"])
        # Which variant the policy recommends for a tiny random model depends on timing noise; what
        # matters is that the server serves the manifest's CPU recommendation and says so.
        recommended = store.read_manifest(directory).recommended["cpu"]
        assert (info["variant"], info["provider"]) == (recommended, "CPUExecutionProvider")
        r = httpx.post(srv.url + path, json={"inputs": TEXTS, "top_k": 2}, timeout=60)
        assert r.status_code == 200, r.text
        expected = direct(directory, info["variant"], TEXTS, 2)
        # Dynamic int8 quantizes activations with one scale per tensor, that is per batch: the server
        # runs these texts batched and padded, `direct` one by one, so an int8 score may move in the
        # fourth decimal (1.2e-4 seen on an AVX2-only CPU). fp32 and fp16 agree to rounding.
        variant = store.read_manifest(directory).variants[info["variant"]]
        precision = store.precision_of(info["variant"], variant)
        tolerance = 2e-3 if precision in ("int8", "int8-static") else 1e-4
        for got, want in zip(r.json()["results"], expected, strict=True):
            assert got["label"] == want.label
            assert got["score"] == pytest.approx(want.score, abs=tolerance)
            assert [t["label"] for t in got["top"]] == [t.label for t in want.top]


def test_serving_never_imports_torch(tiny_store: Path) -> None:
    code = (
        "import sys, asyncio;"
        "from slimserve.service.app import create_app;"
        "from slimserve.service.settings import Settings;"
        f"app = create_app(Settings(store={str(tiny_store)!r}, warmup=False));"
        "asyncio.run(app.state.registry.load_all());"
        "bad = [m for m in ('torch', 'transformers', 'onnx', 'optimum') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
