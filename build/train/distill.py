"""Knowledge distillation: a student trained on the teacher's softened logits and the gold labels,
by the shared training loop (only the objective differs from fine-tuning).

The teacher's logits over the training set are computed once (:func:`teacher_logits`) and reused by
every epoch and every form: on this CPU a teacher forward pass costs about a third of a training
step. Hidden-state matching (optional, ``hidden_mse``) needs the teacher's hidden states, which are
too large to keep (rows x tokens x 384 x layers), so it runs the teacher again on each batch.
For token classification, the soft and hard losses cover the labelled positions only (each word's
first piece), as the fine-tuning loss does.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from slimserve.build.evaluate.metrics import EvalBatches, headline
from slimserve.build.recipe import DistillSpec, Recipe, TrainSpec
from slimserve.build.train.finetune import IGNORE, evaluator, label_tensor
from slimserve.build.train.loop import TrainResult, train
from slimserve.build.train.model_io import forward
from slimserve.service.engine.tokenizer import Batch, pad
from slimserve.service.store import TOKEN_CLASSIFICATION
from tqdm import tqdm


def teacher_logits(
    teacher: torch.nn.Module, encodings: list[Any], pad_id: int, batch_size: int = 64
) -> list[np.ndarray]:
    """Per training row: the teacher's logits ([labels], or [pieces, labels] for token models)."""
    teacher.eval()
    out: list[np.ndarray] = [np.empty(0)] * len(encodings)
    order = np.argsort([len(e.ids) for e in encodings], kind="stable")  # little padding
    with torch.inference_mode():
        for start in tqdm(
            range(0, len(order), batch_size), desc="teacher logits", unit="batch", mininterval=1.0
        ):
            idx = order[start : start + batch_size]
            logits = forward(teacher, pad([encodings[i] for i in idx], pad_id)).logits.float().numpy()
            for row, i in enumerate(idx):
                out[i] = (
                    logits[row, : len(encodings[i].ids)].copy() if logits.ndim == 3 else logits[row].copy()
                )
    return out


def _soft_targets(soft: list[np.ndarray], idx: np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
    if len(shape) == 2:
        return torch.from_numpy(np.stack([soft[i] for i in idx]))
    out = np.zeros(shape, dtype=np.float32)
    for row, i in enumerate(idx):
        out[row, : len(soft[i])] = soft[i]
    return torch.from_numpy(out)


def distill(
    student: torch.nn.Module,
    teacher: torch.nn.Module,
    encodings: list[Any],
    targets: list[Any],
    soft: list[np.ndarray],
    recipe: Recipe,
    spec: TrainSpec,
    loss: DistillSpec,
    evaluation: EvalBatches,
    *,
    layer_map: list[int],
    desc: str,
    pad_id: int,
) -> TrainResult:
    """Train ``student`` in place; ``layer_map[i]`` is the teacher layer student layer ``i`` mimics."""
    token_level = recipe.task == TOKEN_CLASSIFICATION
    temperature = loss.temperature

    def objective(model: torch.nn.Module, batch: Batch, idx: np.ndarray) -> torch.Tensor:
        out = forward(model, batch, output_hidden_states=loss.hidden_mse > 0)
        logits = out.logits.float()  # bf16 under autocast: the soft targets need fp32's range
        gold = label_tensor(targets, idx, batch, token_level)
        teacher_out = _soft_targets(soft, idx, tuple(logits.shape))
        if token_level:
            keep = gold != IGNORE
            logits, teacher_out, gold = logits[keep], teacher_out[keep], gold[keep]
        kd = F.kl_div(
            F.log_softmax(logits / temperature, dim=-1),
            F.softmax(teacher_out / temperature, dim=-1),
            reduction="batchmean",
        ) * (temperature**2)
        total = loss.alpha * kd + (1.0 - loss.alpha) * F.cross_entropy(logits, gold)
        if loss.hidden_mse > 0:
            with torch.no_grad():
                mimic = forward(teacher, batch, output_hidden_states=True).hidden_states
            mask = torch.from_numpy(batch.attention_mask).bool()
            mse = sum(
                F.mse_loss(out.hidden_states[s + 1][mask], mimic[t + 1][mask])
                for s, t in enumerate(layer_map)
            )
            total = total + loss.hidden_mse * mse / len(layer_map)
        return total

    return train(
        student,
        encodings,
        objective,
        spec,
        seed=recipe.seed,
        evaluate=evaluator(recipe, evaluation),
        best_by=headline(recipe.task),
        desc=desc,
        pad_id=pad_id,
    )
