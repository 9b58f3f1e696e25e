"""From the fine-tuned teacher to a compressed form's PyTorch model: prune (by importance measured
on the teacher), then keep the form's layers. Training the result (distillation) is the caller's
next step; pruning first means one distillation run per form, and the importance is measured once,
on the teacher, for every form.

A form made ``from`` another starts from that form's trained student instead: it is pruned by an
importance measured on the student (a cascade: distil, then prune, then distil again), keeps the
student's depth and layer map, and records its kept heads and neurons as teacher indices."""

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
    """Whether any form is pruned straight from the teacher (forms made ``from`` another are pruned
    by an importance measured on their base student)."""
    return any(f.from_form is None and (f.heads is not None or f.ffn is not None) for f in forms)


def prune_student(base: Student, form: FormSpec, importance: Importance) -> Student:
    """``base``'s trained model pruned further to ``form``'s heads and FFN width (a copy; ``base``
    is left as it is). ``importance`` is measured on ``base.model``."""
    pruned = prune(base.model, importance, form.heads, form.ffn)
    heads_kept = [
        [base.heads_kept[i][h] for h in kept] if base.heads_kept else kept
        for i, kept in enumerate(pruned.heads_kept)
    ]
    neurons_kept = [
        [base.neurons_kept[i][n] for n in kept] if base.neurons_kept else kept
        for i, kept in enumerate(pruned.neurons_kept)
    ]
    return Student(pruned.model, list(base.layer_map), heads_kept, neurons_kept)


def make_student(teacher: torch.nn.Module, form: FormSpec, importance: Importance | None) -> Student:
    """``form`` cut from the teacher (a form made ``from`` another goes through ``prune_student``)."""
    assert form.from_form is None, "a form made from another is pruned from its base student"
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
