"""The one training loop: fine-tuning and distillation differ only in their objective.

Dynamic padding over length-grouped batches (each batch padded to its own longest row), AdamW
(fused: about a quarter of the step time on this CPU), linear warm-up then linear decay, gradient
clipping, seeded shuffling, evaluation after every epoch and the best epoch kept. Two cheaper
settings for quick profiles: bfloat16 autocast, frozen word embeddings and frozen lower layers
(``TrainSpec``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from slimserve.build.errors import RecipeError
from slimserve.build.recipe import TrainSpec
from slimserve.service.engine.tokenizer import Batch, pad
from tqdm import tqdm

# (model, padded batch, the batch's row indices into the training set) -> scalar loss
Objective = Callable[[torch.nn.Module, Batch, np.ndarray], torch.Tensor]
# model -> metrics on the evaluation split (the key named ``best_by`` decides the best epoch)
Evaluate = Callable[[torch.nn.Module], dict[str, float]]


@dataclass
class TrainResult:
    model: torch.nn.Module
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0


def length_grouped_batches(lengths: list[int], batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled batches of similar-length rows: shuffle, sort within windows of 50 batches, cut,
    shuffle the batches. Padding (wasted compute with dynamic padding) drops a lot on data whose
    lengths vary as much as SST-2's phrases; the order stays random from epoch to epoch."""
    order = rng.permutation(len(lengths))
    window = batch_size * 50
    batches: list[np.ndarray] = []
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        chunk = chunk[np.argsort([-lengths[i] for i in chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def bf16_supported() -> bool:
    """Whether this CPU computes bfloat16 natively; elsewhere autocast would emulate it, slower than fp32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def frozen_below(model: torch.nn.Module, layers: int) -> list[torch.nn.Parameter]:
    """The embeddings' and the first ``layers`` encoder layers' parameters: with none of them
    trainable, autograd stops at the first trained layer and the backward pass below it is skipped."""
    encoder = model.base_model.encoder.layer
    if layers >= len(encoder):
        raise RecipeError(
            f"freeze_layers: {layers} would freeze all {len(encoder)} encoder layers; "
            "keep at least one to train"
        )
    modules = [model.base_model.embeddings, *encoder[:layers]]
    return [p for m in modules for p in m.parameters()]


def train(
    model: torch.nn.Module,
    encodings: list[Any],
    objective: Objective,
    spec: TrainSpec,
    *,
    seed: int,
    evaluate: Evaluate,
    best_by: str,
    desc: str,
    pad_id: int = 0,
) -> TrainResult:
    """Train ``model`` in place on ``encodings`` and leave it at its best epoch."""
    torch.manual_seed(seed)
    per_epoch = math.ceil(len(encodings) / spec.batch_size)
    total = per_epoch * spec.epochs
    if spec.max_steps is not None:
        total = min(total, spec.max_steps)
    warmup = int(total * spec.warmup_ratio)

    def decays(name: str, p: torch.nn.Parameter) -> bool:
        return p.ndim >= 2 and "LayerNorm" not in name

    # Only what is trainable now is frozen here, and only that is handed back trainable at the end.
    candidates = frozen_below(model, spec.freeze_layers) if spec.freeze_layers else []
    if spec.freeze_word_embeddings:
        candidates.append(model.get_input_embeddings().weight)
    frozen = [p for p in dict.fromkeys(candidates) if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    autocast = spec.compute == "bf16" and bf16_supported()
    if spec.compute == "bf16" and not autocast:
        tqdm.write(f"{desc}: this CPU has no native bfloat16; training in fp32")
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for n, p in params if decays(n, p)], "weight_decay": spec.weight_decay},
            {"params": [p for n, p in params if not decays(n, p)], "weight_decay": 0.0},
        ],
        lr=spec.learning_rate,
        fused=True,
    )

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    rng = np.random.default_rng(seed)
    lengths = [len(e.ids) for e in encodings]
    best_score = -1.0
    best_state: dict[str, torch.Tensor] | None = None
    result = TrainResult(model, 0)
    step = 0
    smoothed: float | None = None
    bar = tqdm(total=total, desc=desc, unit="step", mininterval=1.0, dynamic_ncols=True)
    try:
        for epoch in range(1, spec.epochs + 1):
            if step >= total:
                break
            model.train()
            for idx in length_grouped_batches(lengths, spec.batch_size, rng):
                if step >= total:
                    break
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                    loss = objective(model, pad([encodings[i] for i in idx], pad_id), idx)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                value = float(loss.detach())
                smoothed = value if smoothed is None else 0.9 * smoothed + 0.1 * value
                bar.set_postfix(epoch=epoch, loss=f"{smoothed:.4f}", refresh=False)
                bar.update(1)
            metrics = evaluate(model)
            metrics["epoch"] = float(epoch)
            metrics["train_loss"] = float(smoothed or 0.0)
            result.history.append(metrics)
            bar.write(
                f"{desc} epoch {epoch}: "
                + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k != "epoch")
            )
            if metrics[best_by] > best_score:
                best_score = metrics[best_by]
                result.best_epoch = epoch
                # Only one copy is kept in memory; MiniLM is ~90 MB.
                best_state = copy.deepcopy(model.state_dict()) if spec.epochs > 1 else None
    finally:
        bar.close()
        for p in frozen:
            p.requires_grad_(True)
    if best_state is not None and result.best_epoch != len(result.history):
        model.load_state_dict(best_state)
    model.eval()
    result.steps = step
    return result
