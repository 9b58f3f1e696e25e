"""Prepare what the GPU check (bench/gpu_check.py) carries: a store cut from a built version, small
enough to travel, with the GPU's own variants in it, and the evaluation split it is scored on.

    python -m slimserve.bench.gpu_store --store STORE --model intent --out DIR \\
        --fp16 fp32,l3-h4-f384-fp32 --keep l3-h4-f384-int8

Each ``--fp16`` variant (an fp32 variant of the version) becomes an fp16 one by the build's own
conversion (build/convert/quantize.py ``to_fp16``) and is scored here, on CPU, through the serving
runtime like the build's verify step (parity against the fp32 graph it comes from, not against
PyTorch: the fp32 graph matched PyTorch within the manifest's parity). ``--keep`` variants are
copied as they are. The manifest lists the variants written and recommends among them by the
build's policy (build/evaluate/policy.py); the fp32 teacher's metric stays the policy's reference.
``DIR/eval.json`` holds the version's evaluation split (texts and gold labels), recomputed from the
recipe the manifest records, so the device needs no data mirror.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path
from typing import Any

from slimserve.bench.probe import _evaluation, _version_dir
from slimserve.build.convert.quantize import to_fp16
from slimserve.build.evaluate.metrics import score
from slimserve.build.evaluate.policy import recommend
from slimserve.build.evaluate.verify import Candidate, verify_variant
from slimserve.service import store as st
from slimserve.service.engine.runner import OnnxRunner


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--version", type=int)
    parser.add_argument(
        "--out", type=Path, required=True, help="the new store's root (the model goes under it)"
    )
    parser.add_argument("--fp16", default="", help="fp32 variants to convert, comma separated")
    parser.add_argument("--keep", default="", help="variants to copy as they are, comma separated")
    parser.add_argument(
        "--data-dir", type=Path, default=Path(os.environ.get("SLIMSERVE_DATA_DIR", "../shared/data"))
    )
    args = parser.parse_args(argv)

    source = _version_dir(args.store, args.model, args.version)
    manifest: dict[str, Any] = json.loads((source / "manifest.json").read_text())
    target = args.out / args.model / source.name
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    data, _ = _evaluation(source, manifest, args.data_dir)
    task, labels = manifest["task"], list(manifest["labels"])
    variants: dict[str, Any] = {}
    for name in [v for v in args.keep.split(",") if v]:
        entry = manifest["variants"][name]
        shutil.copy2(source / entry["file"], target / entry["file"])
        variants[name] = entry
    for name in [v for v in args.fp16.split(",") if v]:
        entry = manifest["variants"][name]
        if entry.get("precision", name) != "fp32":
            raise SystemExit(f"--fp16 {name}: not an fp32 variant")
        form = entry.get("form", st.TEACHER)
        fp16_name = "fp16" if form == st.TEACHER else f"{form}-fp16"
        path = to_fp16(source / entry["file"], target / f"model.{fp16_name}.onnx")
        runner = OnnxRunner(source / entry["file"])
        reference = [runner.run(b.input_ids, b.attention_mask, b.token_type_ids) for b in data.batches]
        report = verify_variant(Candidate(fp16_name, path, "fp16", form), task, labels, reference, data)
        variants[fp16_name] = {
            "file": path.name,
            "sha256": st.sha256_file(path),
            "bytes": report.bytes,
            "metrics": report.metrics,
            "parity": {
                "max_abs_logit_diff": report.max_abs_logit_diff,
                "label_agreement": report.label_agreement,
            },
            "latency_ms": {},  # not probed: the GPU check times it
            "precision": "fp16",
            "form": form,
            "architecture": entry.get("architecture"),
        }
        fp32_metric = score(task, labels, reference, data)
        print(
            f"{fp16_name}: {report.metrics} (its fp32 {fp32_metric}), "
            f"max |logit diff| {report.max_abs_logit_diff:.2e}"
        )
    for extra in ("tokenizer.json",):
        shutil.copy2(source / extra, target / extra)
    manifest["variants"] = variants
    parsed = {n: st.Variant.model_validate(v) for n, v in variants.items()}
    policy = manifest["policy"]
    manifest["recommended"] = recommend(parsed, task, policy["teacher"], policy["min_relative_quality"])
    manifest["refused"] = {}
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2))
    st.verify_checksums(target, st.read_manifest(target))
    (args.out / "eval.json").write_text(
        json.dumps(
            {
                "model": args.model,
                "inputs": list(data.examples.inputs),
                "targets": list(data.examples.targets),
            }
        )
    )
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(
        f"{target}: {sorted(variants)}; recommended {manifest['recommended']}; {size / 2**20:.1f} MiB in all"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
