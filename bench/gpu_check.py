"""The GPU path, on a GPU: what `device: cuda` really gives, measured in one run.

    python -m slimserve.bench.gpu_check --store DIR --eval DIR/eval.json [--seconds 8] [--out DIR]

The store and eval.json come from bench/gpu_store.py (a built version cut down to travel, with its
fp16 variants). Three parts, each printed as markdown and written to ``--out/gpu_check.json``:

1. the environment: onnxruntime's version and CUDA build, its providers, the device;
2. every variant through the serving runner (service/engine/runner.py, IO binding on CUDA), on CUDA
   and on CPU: the version's metric on its evaluation split (the build's scoring), CUDA against CPU
   parity, and batch-1 / batch-32 / batch-256 latency, every runner interleaved round by round like
   the build's probe;
3. served: `slimserve serve` on CUDA (recommended, and the fp16 teacher) and on CPU (recommended),
   each alone, closed loop at each --concurrency, one evaluation text a request (wrk when on PATH).

No server is started without a GPU check having passed first: a CUDA runner that falls back to CPU
is reported as such and the served part is skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from slimserve.bench.harness import ServerProcess, free_port, measure
from slimserve.build.data.load import Examples
from slimserve.build.evaluate.metrics import EvalBatches, parity, score
from slimserve.build.evaluate.probe import interleaved_medians
from slimserve.service import store as st
from slimserve.service.engine import runner as rn
from slimserve.service.engine.tokenizer import TextTokenizer, pad

PATHS = {st.SEQUENCE_CLASSIFICATION: "/v1/classify", st.TOKEN_CLASSIFICATION: "/v1/ner"}
SERVE = "import sys; from slimserve.cli import app; sys.argv[0] = 'slimserve'; sys.exit(app())"


def environment() -> dict[str, Any]:
    import onnxruntime as ort

    info: dict[str, Any] = {"onnxruntime": ort.__version__, "providers": ort.get_available_providers()}
    try:
        from onnxruntime.capi import build_and_package_info as build

        info["cuda_build"] = getattr(build, "cuda_version", "")
    except ImportError:
        info["cuda_build"] = ""
    info["gpu_available"] = rn.gpu_available()
    info["preloaded"] = rn.preload_cuda_libraries()
    try:
        info["device"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        info["device"] = "nvidia-smi unavailable"
    info["cpus"] = len(os.sched_getaffinity(0))
    return info


def runtime(
    directory: Path, manifest: st.Manifest, data: EvalBatches, pad_id: int, repeats: int
) -> list[dict]:  # type: ignore[type-arg]
    runners: dict[tuple[str, str], rn.OnnxRunner] = {}
    for name, variant in manifest.variants.items():
        path = directory / variant.file
        runners[(name, "cuda")] = rn.OnnxRunner(path, [rn.CUDA, rn.CPU], spin=False)
        runners[(name, "cpu")] = rn.OnnxRunner(path, [rn.CPU], spin=False)
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    logits: dict[tuple[str, str], list] = {}  # type: ignore[type-arg]
    for key, runner in runners.items():
        out = [runner.run(b.input_ids, b.attention_mask, b.token_type_ids) for b in data.batches]
        logits[key] = out
        rows[key] = {
            "variant": key[0],
            "device": key[1],
            "provider": runner.provider,
            "metrics": score(manifest.task, list(manifest.labels), out, data),
            "manifest_metrics": manifest.variants[key[0]].metrics,
        }
    for name in manifest.variants:
        diff, agreement = parity(logits[(name, "cpu")], logits[(name, "cuda")], data)
        rows[(name, "cuda")] |= {"max_abs_diff_vs_cpu": diff, "label_agreement_vs_cpu": agreement}
    encodings = data.encodings
    for size in (1, 32, 256):
        take = [encodings[i % len(encodings)] for i in range(size)]
        batch = pad(take, pad_id)
        inputs = (batch.input_ids, batch.attention_mask, batch.token_type_ids)
        timed = {k: r for k, r in runners.items() if size <= 32 or k[1] == "cuda"}
        rounds = repeats if size <= 32 else max(3, repeats // 3)
        for k, ms in interleaved_medians(timed, inputs, rounds, warmup=3).items():
            rows[k][f"batch_{size}_ms"] = ms
    return list(rows.values())


def served(
    store: Path, model: str, path: str, texts: list[str], seconds: float, levels: list[int]
) -> list[dict]:  # type: ignore[type-arg]
    out = []
    for device, variant in (("cuda", "recommended"), ("cuda", "fp16"), ("cpu", "recommended")):
        port = free_port()
        server = ServerProcess(
            f"{device} {variant}",
            [
                sys.executable,
                "-c",
                SERVE,
                "serve",
                "--store",
                str(store),
                "--port",
                str(port),
                "--model",
                model,
            ],
            port,
            {"SLIMSERVE_DEVICE": device, "SLIMSERVE_VARIANT": variant, "SLIMSERVE_LOG_LEVEL": "warning"},
        )
        try:
            cold = server.start()
            import httpx

            listing = httpx.get(server.url + "/v1/models", timeout=10).json()
            entries = listing.get("models", listing) if isinstance(listing, dict) else listing
            entry = next(m for m in entries if m["name"] == model)
            for level in levels:
                phase = measure(server, path, texts, level, 1_000_000, seconds)
                out.append(
                    {
                        "device": device,
                        "setting": variant,
                        "variant": entry.get("variant"),
                        "provider": entry.get("provider"),
                        "cold_start_s": round(cold, 2),
                        **{
                            k: getattr(phase, k)
                            for k in ("concurrency", "requests", "errors", "rps", "p50_ms", "p99_ms")
                        },
                    }
                )
                print(json.dumps(out[-1]), flush=True)
        finally:
            server.stop()
    return out


def markdown(env: dict[str, Any], rows: list[dict], phases: list[dict]) -> str:  # type: ignore[type-arg]
    lines = [f"environment: {json.dumps(env)}", ""]
    lines += [
        "| variant | device | provider | metric (here) | manifest (CPU build) | max diff vs CPU "
        "| b1 ms | b32 ms | b256 ms |",
        "| --- | --- | --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        metric = ", ".join(f"{k} {v:.4f}" for k, v in r["metrics"].items())
        manifest = ", ".join(f"{k} {v:.4f}" for k, v in r["manifest_metrics"].items())
        lines.append(
            f"| {r['variant']} | {r['device']} | {r['provider']} | {metric} | {manifest} | "
            f"{r.get('max_abs_diff_vs_cpu', float('nan')):.2e} | {r.get('batch_1_ms', '-')} | "
            f"{r.get('batch_32_ms', '-')} | {r.get('batch_256_ms', '-')} |"
        )
    if phases:
        lines += ["", "| server | variant | provider | concurrency | req/s | p50 ms | p99 ms | errors |"]
        lines += ["| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
        for p in phases:
            lines.append(
                f"| {p['device']} {p['setting']} | {p['variant']} | {p['provider']} | {p['concurrency']} | "
                f"{p['rps']:.1f} | {p['p50_ms']:.1f} | {p['p99_ms']:.1f} | {p['errors']} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--eval", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("."))
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="serve even when CUDA fell back to CPU (to try the script without a GPU)",
    )
    args = parser.parse_args(argv)

    evaluation = json.loads(args.eval.read_text())
    model = evaluation["model"]
    directory = args.store / model / str(max(st.versions(args.store, model)))
    manifest = st.read_manifest(directory)
    tokenizer = TextTokenizer(directory / manifest.tokenizer, manifest.max_seq_len)
    examples = Examples(evaluation["inputs"], evaluation["targets"])
    data = EvalBatches.served(tokenizer, manifest.task, list(manifest.labels), examples)
    env = environment()
    print(json.dumps(env), flush=True)
    rows = runtime(directory, manifest, data, tokenizer.pad_id, args.repeats)
    on_gpu = all(r["provider"] == rn.CUDA for r in rows if r["device"] == "cuda")
    texts = [t if isinstance(t, str) else " ".join(t) for t in evaluation["inputs"]]
    levels = [int(x) for x in args.concurrency.split(",") if x]
    go = on_gpu or args.dry_run
    phases = served(args.store, model, PATHS[manifest.task], texts, args.seconds, levels) if go else []
    report = markdown(env, rows, phases)
    print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(
        json.dumps({"environment": env, "runtime": rows, "served": phases})
    )
    (args.out / "gpu_check.md").write_text(report + "\n")
    return 0 if on_gpu else 1


if __name__ == "__main__":
    raise SystemExit(main())
