"""A shallower student cut from the fine-tuned teacher: a copy that keeps some of its layers.

Default mapping for N student layers out of L: evenly spaced and ending at the last layer
(6 -> 3 keeps teacher layers 1, 3, 5). Why: the fine-tuned classifier head was trained on the last
layer's output, so keeping that layer gives the student a working head from its first step, and
spacing the rest keeps features from every depth (DistilBERT's "one layer out of two"). The recipe
may name another mapping (``layer_map``).
"""

from __future__ import annotations

import copy

import torch
from slimserve.build.compress.architecture import encoder_layers
from slimserve.build.errors import RecipeError


def default_layer_map(teacher_layers: int, student_layers: int) -> list[int]:
    step = teacher_layers / student_layers
    return [round((i + 1) * step) - 1 for i in range(student_layers)]


def keep_layers(model: torch.nn.Module, keep: list[int]) -> torch.nn.Module:
    """A deep copy of ``model`` with only the encoder layers ``keep`` (teacher indices, in order)."""
    total = len(encoder_layers(model))
    if not keep or max(keep) >= total:
        raise RecipeError(f"layer_map {keep} does not fit a teacher of {total} layers")
    student = copy.deepcopy(model)
    layers = encoder_layers(student)
    student.base_model.encoder.layer = torch.nn.ModuleList([layers[i] for i in keep])  # type: ignore[union-attr]
    for new_index, layer in enumerate(encoder_layers(student)):
        # Attention modules remember their index for KV caches; an encoder never uses it, but keep it true.
        if hasattr(layer.attention.self, "layer_idx"):
            layer.attention.self.layer_idx = new_index
    student.config.num_hidden_layers = len(keep)  # type: ignore[union-attr]
    return student
