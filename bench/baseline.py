"""The baseline server users would otherwise write: FastAPI + a transformers ``pipeline`` called per
request, PyTorch fp32, no batching across requests. Same wire shape as slimserve's endpoint, so the
same client drives both. Run as ``python -m slimserve.bench.baseline --model DIR --port P``."""

import argparse
import os
from typing import Any


def create_app(model_dir: str, pipeline_task: str, threads: int) -> Any:
    import torch
    from fastapi import FastAPI
    from pydantic import BaseModel
    from transformers import pipeline

    torch.set_num_threads(threads)
    pipe = pipeline(pipeline_task, model=model_dir, tokenizer=model_dir, device="cpu")
    app = FastAPI(title="baseline")

    class Request(BaseModel):
        inputs: str | list[str]

    @app.get("/readyz")
    def ready() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/v1/{endpoint}")
    def infer(endpoint: str, body: Request) -> dict[str, Any]:
        texts = [body.inputs] if isinstance(body.inputs, str) else body.inputs
        out = pipe(texts, truncation=True) if pipeline_task == "text-classification" else pipe(texts)
        return {"results": [o if isinstance(o, dict) else {"entities": o} for o in out]}

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="a save_pretrained directory")
    parser.add_argument("--pipeline", default="text-classification")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    app = create_app(args.model, args.pipeline, args.threads)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
