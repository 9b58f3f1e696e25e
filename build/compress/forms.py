"""From the fine-tuned teacher to a compressed form's PyTorch model: prune (by importance measured
on the teacher), then keep the form's layers. Training the result (distillation) is the caller's
next step; pruning first means one distillation run per form, and the importance is measured once,
on the teacher, for every form."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from slimserve.build.compress.architecture import encoder_layers
from slimserve.build.compress.prune import Importance, prune
from slimserve.build.compress.student import default_layer_map, keep_layers
from slimserve.build.recipe import FormSpec


@dataclass(frozen=True)
class Student:
    model: torch.nn.Module
    layer_map: list[int]  # teacher layer behind each student layer
    heads_kept: list[list[int]] | None = None  # per student layer, teacher head indices
    neurons_kept: list[list[int]] | None = None


def needs_importance(forms: list[FormSpec]) -> bool:
    return any(f.heads is not None or f.ffn is not None for f in forms)


def make_student(teacher: torch.nn.Module, form: FormSpec, importance: Importance | None) -> Student:
    depth = len(encoder_layers(teacher))
    layer_map = form.layer_map or (
        default_layer_map(depth, form.layers) if form.layers else list(range(depth))
    )
    model = teacher
    heads_kept = neurons_kept = None
    if form.heads is not None or form.ffn is not None:
        assert importance is not None, "importance is measured before pruned forms are made"
        pruned = prune(teacher, importance, form.heads, form.ffn)
        model = pruned.model
        heads_kept = [pruned.heads_kept[i] for i in layer_map]
        neurons_kept = [pruned.neurons_kept[i] for i in layer_map]
    if layer_map != list(range(depth)):
        model = keep_layers(model, layer_map)
    elif model is teacher:
        model = copy.deepcopy(teacher)
    return Student(model, layer_map, heads_kept, neurons_kept)
