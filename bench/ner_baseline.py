"""The NER baseline the benchmark compares against: what one would write without slimserve.

A FastAPI app that answers ``POST /v1/ner`` with the contract's shape by calling a transformers
``pipeline("ner", aggregation_strategy="simple")`` on PyTorch fp32, once per text of each request.
Calls are serialized by a lock (one model, one worker): concurrent PyTorch calls on the same cores
would only thrash, and the comparison should be against a sensible baseline, not a broken one.

Run: ``python -m slimserve.bench.ner_baseline --model-dir DIR --port 8101`` where DIR is a
transformers model directory (``save_pretrained`` output with a tokenizer).
"""

from __future__ import annotations

import argparse
import threading
from typing import Any

from pydantic import BaseModel


class NerRequest(BaseModel):
    """The contract's request shape (module level: FastAPI resolves the annotation by name)."""

    inputs: str | list[str]
    aggregation: str = "simple"
    model: str | None = None


def create_baseline_app(model_dir: str, threads: int = 2) -> Any:
    import torch
    from fastapi import FastAPI
    from transformers import pipeline

    torch.set_num_threads(threads)
    ner = pipeline("ner", model=model_dir, tokenizer=model_dir, aggregation_strategy="simple", device="cpu")
    lock = threading.Lock()
    app = FastAPI(title="ner-baseline")

    @app.get("/readyz")
    def ready() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/v1/ner")
    def run(body: NerRequest) -> dict[str, Any]:
        texts = [body.inputs] if isinstance(body.inputs, str) else body.inputs
        results = []
        for text in texts:
            with lock, torch.inference_mode():
                found = ner(text)
            results.append(
                {
                    "entities": [
                        {
                            "entity": e["entity_group"],
                            "text": text[e["start"] : e["end"]],
                            "start": int(e["start"]),
                            "end": int(e["end"]),
                            "score": float(e["score"]),
                        }
                        for e in found
                    ]
                }
            )
        return {"model": "ner-baseline", "version": 0, "variant": "pytorch-fp32", "results": results}

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", required=True, help="transformers model directory (save_pretrained)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8101)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    args = parser.parse_args()
    uvicorn.run(
        create_baseline_app(args.model_dir, args.threads), host=args.host, port=args.port, log_level="warning"
    )


if __name__ == "__main__":
    main()
