"""The baseline server users would otherwise write: FastAPI + a transformers ``pipeline`` called per
request, PyTorch fp32, no batching across requests. Same wire shape as slimserve's endpoint, so the
same client drives both. Run as ``python -m slimserve.bench.baseline --model DIR --port P
[--pipeline text-classification|token-classification]``.

Pipeline calls are serialized by a lock (one model, one worker): concurrent PyTorch calls on the same
cores would only thrash, and the comparison should be against a sensible baseline, not a broken one.
"""

import argparse
import os
import threading
from typing import Any

PIPELINES = ("text-classification", "token-classification")


def create_app(model_dir: str, pipeline_task: str, threads: int) -> Any:
    import torch
    from fastapi import FastAPI
    from pydantic import BaseModel
    from transformers import pipeline

    if pipeline_task not in PIPELINES:
        raise ValueError(f"unknown pipeline {pipeline_task!r}; one of {', '.join(PIPELINES)}")
    torch.set_num_threads(threads)
    # For NER, what /v1/ner's default ("simple") aggregation does: whole entities, not word pieces.
    extra = {"aggregation_strategy": "simple"} if pipeline_task == "token-classification" else {}
    pipe = pipeline(pipeline_task, model=model_dir, tokenizer=model_dir, device="cpu", **extra)
    lock = threading.Lock()
    app = FastAPI(title="baseline")

    class Request(BaseModel):
        inputs: str | list[str]

    def classify(text: str) -> dict[str, Any]:
        out: dict[str, Any] = pipe(text, truncation=True)[0]
        return out

    def entities(text: str) -> dict[str, Any]:
        return {
            "entities": [
                {
                    "entity": e["entity_group"],
                    "text": text[e["start"] : e["end"]],
                    "start": int(e["start"]),
                    "end": int(e["end"]),
                    "score": float(e["score"]),
                }
                for e in pipe(text)
            ]
        }

    one = entities if pipeline_task == "token-classification" else classify

    @app.get("/readyz")
    def ready() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/v1/{endpoint}")
    def infer(endpoint: str, body: Request) -> dict[str, Any]:
        texts = [body.inputs] if isinstance(body.inputs, str) else body.inputs
        results = []
        for text in texts:
            with lock, torch.inference_mode():
                results.append(one(text))
        return {"model": "baseline", "version": 0, "variant": "pytorch-fp32", "results": results}

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a save_pretrained directory (with its tokenizer)")
    parser.add_argument(
        "--pipeline", default="text-classification", choices=PIPELINES, help="the transformers pipeline"
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads (default: all CPUs)"
    )
    args = parser.parse_args()
    app = create_app(args.model, args.pipeline, args.threads)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
